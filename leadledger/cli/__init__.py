"""The `leadledger` command group (also `python -m lifecycle` and `python -m leadledger`).

Commands live in one module per kind of user (write, bulk, audit, queries, roles). The group
imports a command's module only when that command runs (or `--help` lists them all), so
`leadledger capture` does not pay for FastAPI, uvicorn and kafka-python (≈ 0.5 s of imports
that only the long-running roles need).

`LazyGroup.main` is the one error boundary: an exception a person can cause (a path, a
permission, a full disk, a damaged file, an unreachable database, a wrong secret) ends as one
or two lines on stderr (`errors.explain`) and exit 1 (2 for a bad setting); the traceback only
with `--debug` or LEADLEDGER_DEBUG=1.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from leadledger.cli.common import Context, fail
from leadledger.cli.errors import explain
from lifecycle.settings import Settings, SettingsError

#: a PostgreSQL schema leadledger can use: the library writes it into SQL unquoted
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

#: command name -> "module:attribute" of its click command, by kind of user
COMMANDS: dict[str, str] = {
    **{name: f"leadledger.cli.write:{name}" for name in
       ("capture", "touch", "assign", "contact", "transition", "consent", "erase")},
    "score": "leadledger.cli.score:score",
    **{name: f"leadledger.cli.bulk:{name}" for name in ("ingest", "simulate")},
    **{name: f"leadledger.cli.audit:{name}" for name in ("history", "verify", "export")},
    **{name: f"leadledger.cli.queries:{name}" for name in ("funnel", "velocity", "attribution", "speed", "report")},
    "leads": "leadledger.cli.queries:leads_command",
    "sla": "leadledger.cli.queries:sla",
    "qualification": "leadledger.cli.queries:qualification",
    "plan": "leadledger.cli.plan:plan",
    "reasons": "leadledger.cli.queries:reasons",
    "pipeline": "leadledger.cli.pipeline:pipeline",
    **{name: f"leadledger.cli.projector:{name}" for name in ("project", "replay")},
    **{name: f"leadledger.cli.roles:{name}" for name in ("consume", "relay", "status", "serve")},
    "alerts": "leadledger.cli.alerts:alerts",
    "routing": "leadledger.cli.routing:routing",
    "scoring": "leadledger.cli.scoring:scoring",
    **{name: f"leadledger.cli.operations:{name}" for name in ("policy", "operate")},
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (click's documented lazy pattern),
    and the CLI's error boundary (`main`)."""

    #: set by the group's callback for the boundary: --debug, and the settings in force
    debug: bool = False
    settings: Settings | None = None

    def main(self, *args: Any, **kwargs: Any) -> Any:
        self.debug = os.environ.get("LEADLEDGER_DEBUG", "") not in ("", "0")
        self.settings = None
        try:
            return super().main(*args, **kwargs)
        except Exception as exc:  # what escaped a command (closing it, the group); SystemExit passes
            if self.debug:
                raise
            explained = explain(exc, self.settings)
            click.echo(f"error: {explained.message}", err=True)
            sys.exit(explained.code)

    def guard(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        """A command's callback inside the boundary: still in the command's context, so a --json
        command also answers `{"error": ...}` on stdout."""

        @functools.wraps(callback)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except Exception as exc:
                if self.debug or isinstance(exc, click.ClickException | click.exceptions.Exit | click.Abort):
                    raise
                explained = explain(exc, self.settings)
                fail(explained.message, explained.code)

        guarded.__leadledger_guarded__ = True  # type: ignore[attr-defined]
        return guarded

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        if command.callback is not None and not getattr(command.callback, "__leadledger_guarded__", False):
            command.callback = self.guard(command.callback)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(path_type=Path), help="Embedded data folder [env LEADLEDGER_HOME].")
@click.option("--postgres-dsn", help="Use PostgreSQL as the store [env LEADLEDGER_POSTGRES_DSN].")
@click.option("--mql-threshold", type=click.IntRange(0, 100), help="Score needed for MQL [env LEADLEDGER_MQL_THRESHOLD].")
@click.option("--debug", is_flag=True, help="Show the Python traceback of an error [env LEADLEDGER_DEBUG=1].")
@click.version_option(package_name="leadledger")
@click.pass_context
def cli(click_ctx: click.Context, home: Path | None, postgres_dsn: str | None, mql_threshold: int | None,
        debug: bool) -> None:
    """leadledger: every lead an auditable stream of events.

    Write leads with capture/touch/score/assign/contact/transition or ingest a
    file of inbound messages; audit them with history/verify/export; ask the
    read models with funnel/velocity/attribution/speed/leads/report or serve.
    Read-only commands refuse a folder without a store (set LEADLEDGER_HOME or
    --home); an error is one line on stderr, its traceback only with --debug.
    """
    group = click_ctx.command
    if isinstance(group, LazyGroup) and debug:
        group.debug = True
    try:
        settings = Settings.from_env().with_overrides(
            home=home, postgres_dsn=postgres_dsn, mql_threshold=mql_threshold
        )
    except SettingsError as exc:
        fail(str(exc), 2)
    if settings.postgres_dsn and not _SCHEMA_NAME.fullmatch(settings.postgres_schema):
        fail(f"LEADLEDGER_POSTGRES_SCHEMA must be a plain name (a letter or _, then letters, digits or _, "
             f"at most 63), got {settings.postgres_schema!r}", 2)
    if isinstance(group, LazyGroup):
        group.settings = settings
    ctx = Context(settings, click_ctx.invoked_subcommand)
    click_ctx.obj = ctx
    click_ctx.call_on_close(ctx.close)


def main() -> None:
    cli(prog_name="leadledger")
