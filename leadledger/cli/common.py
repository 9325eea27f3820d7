"""What every `leadledger` command shares: the invocation context, output, options, parameters."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import click
import orjson

from leadledger.bootstrap import bootstrap
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


TIME = TimeParam()


def emit_json(obj: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class Context:
    """Lazily bootstrapped application, shared by the commands of one invocation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: LeadLedger | None = None

    @property
    def app(self) -> LeadLedger:
        if self._app is None:
            try:
                self._app = bootstrap(self.settings)
            except SettingsError as exc:
                fail(str(exc), 2)
        assert self._app is not None
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.store.close()


pass_ctx = click.make_pass_decorator(Context)


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


def at_option(func: F) -> F:
    return click.option("--at", "at", type=TIME, help="When it happened (RFC 3339 or date; default now).")(func)


def report(ctx: Context, outcome: Outcome, as_json: bool) -> None:
    if as_json:
        emit_json(outcome.as_json())
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
