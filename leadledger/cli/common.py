"""What every `leadledger` command shares: the invocation context, output, options, parameters."""

from __future__ import annotations

import logging
import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar
from uuid import UUID

import click
import orjson

from leadledger import csvout
from leadledger.bootstrap import EVENTS_DB, bootstrap
from lifecycle.application import LeadLedger, Outcome
from lifecycle.domain import commands as cmd
from lifecycle.settings import Settings, SettingsError
from schemas.times import TimeFormatError, parse_user_time

F = TypeVar("F", bound=Callable[..., Any])

class TimeParam(click.ParamType):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        flag = f"--{param.name.replace('_', '-')}" if param and param.name else "time"
        try:
            return parse_user_time(str(value))
        except TimeFormatError as exc:
            raise click.BadParameter(str(exc), param_hint=flag) from None
        except OverflowError:  # a year 1 or 9999 time whose zone moves it out of the calendar
            raise click.BadParameter(f"{value!r} is out of range: give a time between years 1 and 9999 in UTC",
                                     param_hint=flag) from None


TIME = TimeParam()


#: the commands that only read the store: in a folder without one they refuse instead of creating it.
#: The long-running roles `project` and `relay` are not among them: a pipeline starts them before the
#: first event is stored, and they wait for it.
READ_ONLY = frozenset({"funnel", "velocity", "attribution", "speed", "leads", "report", "history", "verify",
                       "export", "status", "serve", "replay", "sla", "routing", "scoring", "qualification",
                       "reasons", "pipeline"})

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)


def emit_json(obj: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta["leadledger.json_emitted"] = True


def wants_json() -> bool:
    """Whether the running command was given --json and has printed no JSON yet."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.meta.get("leadledger.json_emitted"):
        return False
    while ctx is not None:
        if ctx.params.get("as_json") or ctx.params.get("fmt") == "json":
            return True
        ctx = ctx.parent
    return False


def error_json(message: str, lead_id: str | None = None) -> dict[str, Any]:
    """The JSON a failed command prints on stdout under --json: the error, and the lead it names."""
    named = lead_id or next(iter(_UUID.findall(message)), None)
    return {"error": message, **({"lead_id": named.lower()} if named else {})}


def fail(message: str, code: int = 1, *, lead_id: str | None = None) -> NoReturn:
    """One line on stderr (and, under --json, `{"error": ...}` on stdout), then exit `code`."""
    if wants_json():
        emit_json(error_json(message, lead_id))
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class Context:
    """Lazily bootstrapped application, shared by the commands of one invocation."""

    def __init__(self, settings: Settings, command: str | None = None) -> None:
        self.settings = settings
        self.read_only = command in READ_ONLY
        self._app: LeadLedger | None = None

    def check_store(self) -> Settings:
        """The settings, once the embedded home is usable: a read-only command refuses a folder
        without a store (instead of creating one, with a new secret); a home that is a file is
        named as such before SQLite says "unable to open database file"."""
        if self.settings.postgres_dsn:
            return self.settings
        home = self.settings.home
        try:
            if home.exists() and not home.is_dir():
                fail(f"LEADLEDGER_HOME {home} is a file, not a folder; set LEADLEDGER_HOME (or --home) to a folder", 2)
            if self.read_only and not (home / EVENTS_DB).exists():
                fail(f"no store at {home.absolute()}; set LEADLEDGER_HOME or --home to the folder that holds "
                     f"{EVENTS_DB} (write commands such as capture, ingest and simulate create one)", 2)
        except PermissionError:
            pass  # the error boundary names the folder that may not be entered
        return self.settings

    @property
    def app(self) -> LeadLedger:
        if self._app is None:
            try:
                self._app = bootstrap(self.check_store())
            except SettingsError as exc:
                fail(str(exc), 2)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.store.close()


pass_ctx = click.make_pass_decorator(Context)


class GuardedGroup(click.Group):
    """A group whose subcommands run inside the CLI's error boundary (the root group's `guard`), so
    under --json an error also answers `{"error": ...}` on stdout."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        guard = getattr(ctx.find_root().command, "guard", None)
        if (command is not None and command.callback is not None and guard is not None
                and not getattr(command.callback, "__leadledger_guarded__", False)):
            command.callback = guard(command.callback)
        return command


def lead_ref(value: str) -> cmd.LeadRef:
    """A lead argument: a lead id, or an e-mail."""
    if "@" in value:
        return cmd.LeadRef(email=value)
    try:
        return cmd.LeadRef(lead_id=UUID(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a lead id (UUID) nor an e-mail", param_hint="LEAD") from None


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Exact JSON instead of text.")(func)


#: what a query prints: a readable table, exact JSON, or CSV
FORMATS = ("table", "json", "csv")


def output_options(func: F) -> F:
    """`--format table|json|csv` and `--json` (the same as `--format json`)."""
    func = click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                        help="table (the default), json (the same as --json) or csv: RFC 4180 with a header, one "
                             "row per group and figure (the lead list and a history: one row per lead or event).")(func)
    return json_option(func)


def output_format(as_json: bool, fmt: str | None) -> str:
    """The one format `--json` and `--format` ask for (refused when they contradict)."""
    if as_json and fmt not in (None, "json"):
        fail(f"--json and --format {fmt} contradict each other: give one of them", 2)
    return "json" if as_json else fmt or "table"


def emit_csv(obj: dict[str, Any]) -> None:
    sys.stdout.write(csvout.render(obj))
    sys.stdout.flush()


def at_option(func: F) -> F:
    return click.option("--at", "at", type=TIME, help="When it happened (RFC 3339 or date; default now).")(func)


def report(ctx: Context, outcome: Outcome, as_json: bool, lead: cmd.LeadRef | None = None) -> None:
    if as_json:
        body = outcome.as_json()
        if body.get("lead_id") is None and outcome.status == "refused":
            named = str(lead.lead_id) if lead is not None and lead.lead_id else None
            body["lead_id"] = error_json(outcome.error or "", named).get("lead_id")
        emit_json(body)
    if outcome.status == "refused":
        fail(outcome.error or "refused")
    if not as_json:
        if outcome.status == "duplicate" and outcome.event == "LeadPersonalDataErased":
            click.echo(f"lead {outcome.lead_id} was already erased; repeated the key deletion and disk scrub")
        elif outcome.status == "duplicate":
            click.echo("duplicate: this message was applied before; nothing changed")
        else:
            click.echo(f"{outcome.event} lead={outcome.lead_id} version={outcome.version}")
    if outcome.warning:
        fail(outcome.warning)


def common(ctx: Context, at: datetime | None) -> dict[str, Any]:
    return {"occurred_at": at or datetime.now(UTC), "actor": ctx.settings.actor, "message_key": None}


def log_to_stderr() -> None:
    """Progress lines of the roles on stderr (the `leadledger.*` loggers, INFO)."""
    logger = logging.getLogger("leadledger")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@contextmanager
def stop_on_signals() -> Iterator[Callable[[], bool]]:
    """Yields `should_stop()`: true after the first SIGTERM/SIGINT; the second aborts at once."""
    requested = {"stop": False}

    def on_signal(signum: int, _frame: Any) -> None:
        if requested["stop"]:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: abort the batch in hand")
        requested["stop"] = True
        logging.getLogger("leadledger").info(
            "%s: stopping after the batch in hand (again to abort it)", signal.Signals(signum).name
        )

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: requested["stop"]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
