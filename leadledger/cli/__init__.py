"""The `leadledger` command group (also `python -m lifecycle` and `python -m leadledger`).

Commands live in one module per kind of user (write, bulk, audit, queries, roles). The group
imports a command's module only when that command runs (or `--help` lists them all), so
`leadledger capture` does not pay for FastAPI, uvicorn and kafka-python (≈ 0.5 s of imports
that only the long-running roles need).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from leadledger.cli.common import Context, fail
from lifecycle.settings import Settings, SettingsError

#: command name -> "module:attribute" of its click command, by kind of user
COMMANDS: dict[str, str] = {
    **{name: f"leadledger.cli.write:{name}" for name in
       ("capture", "touch", "score", "assign", "contact", "transition", "consent", "erase")},
    **{name: f"leadledger.cli.bulk:{name}" for name in ("ingest", "simulate")},
    **{name: f"leadledger.cli.audit:{name}" for name in ("history", "verify", "export")},
    **{name: f"leadledger.cli.queries:{name}" for name in ("funnel", "velocity", "attribution", "speed", "report")},
    "leads": "leadledger.cli.queries:leads_command",
    **{name: f"leadledger.cli.projector:{name}" for name in ("project", "replay")},
    **{name: f"leadledger.cli.roles:{name}" for name in ("consume", "relay", "status", "serve")},
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (click's documented lazy pattern)."""

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
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(path_type=Path), help="Embedded data folder [env LEADLEDGER_HOME].")
@click.option("--postgres-dsn", help="Use PostgreSQL as the store [env LEADLEDGER_POSTGRES_DSN].")
@click.option("--mql-threshold", type=click.IntRange(0, 100), help="Score needed for MQL [env LEADLEDGER_MQL_THRESHOLD].")
@click.version_option(package_name="leadledger")
@click.pass_context
def cli(click_ctx: click.Context, home: Path | None, postgres_dsn: str | None, mql_threshold: int | None) -> None:
    """leadledger: every lead an auditable stream of events.

    Write leads with capture/touch/score/assign/contact/transition or ingest a
    file of inbound messages; audit them with history/verify/export.
    """
    try:
        settings = Settings.from_env().with_overrides(
            home=home, postgres_dsn=postgres_dsn, mql_threshold=mql_threshold
        )
    except SettingsError as exc:
        fail(str(exc), 2)
    ctx = Context(settings)
    click_ctx.obj = ctx
    click_ctx.call_on_close(ctx.close)


def main() -> None:
    cli(prog_name="leadledger")
