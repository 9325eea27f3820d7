"""The `leadledger` command line (also `python -m lifecycle`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import click
import orjson

from lifecycle import commands as cmd
from lifecycle.application import LeadLedger, Outcome
from lifecycle.settings import Settings, SettingsError

F = TypeVar("F", bound=Callable[..., Any])


# ---------------------------------------------------------------- helpers


def parse_user_time(value: str, flag: str = "time") -> datetime:
    """RFC 3339 with a zone, or a bare date meaning 00:00 UTC that day."""
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date (2026-02-01) or an RFC 3339 time (2026-02-01T09:30:00Z)",
            param_hint=flag,
        ) from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone; add Z or +01:00", param_hint=flag)
    return parsed.astimezone(UTC)


class TimeParam(click.ParamType):
    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        return parse_user_time(str(value), f"--{param.name.replace('_', '-')}" if param and param.name else "time")


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
            from lifecycle.bootstrap import bootstrap

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


# ---------------------------------------------------------------- the group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


# ---------------------------------------------------------------- write path


@cli.command()
@click.option("--email", required=True, help="The person's e-mail (identity).")
@click.option("--channel", required=True, help="Source channel, e.g. webinar.")
@click.option("--campaign")
@click.option("--name")
@click.option("--company")
@click.option("--phone")
@click.option("--consent/--no-consent", default=None, help="Marketing consent given with the capture.")
@at_option
@json_option
@pass_ctx
def capture(ctx: Context, email: str, channel: str, campaign: str | None, name: str | None,
            company: str | None, phone: str | None, consent: bool | None, at: datetime | None,
            as_json: bool) -> None:
    """Capture a lead (a known e-mail becomes a touch on its lead)."""
    outcome = ctx.app.execute(cmd.Capture(**common(ctx, at), email=email, channel=channel, campaign=campaign,
                                          name=name, company=company, phone=phone, consent=consent))
    report(ctx, outcome, as_json)


@cli.command()
@click.argument("lead")
@click.option("--channel", required=True)
@click.option("--campaign")
@click.option("--kind", help="e.g. email_open, page_view, demo_request")
@at_option
@json_option
@pass_ctx
def touch(ctx: Context, lead: str, channel: str, campaign: str | None, kind: str | None,
          at: datetime | None, as_json: bool) -> None:
    """Record an engagement of LEAD (lead id or e-mail) on a channel."""
    report(ctx, ctx.app.execute(cmd.Touch(**common(ctx, at), lead=lead_ref(lead), channel=channel,
                                          campaign=campaign, kind=kind)), as_json)


@cli.command()
@click.argument("lead")
@click.option("--total", required=True, type=int, help="Score total 0-100.")
@click.option("--fit", type=int)
@click.option("--behaviour", type=int)
@at_option
@json_option
@pass_ctx
def score(ctx: Context, lead: str, total: int, fit: int | None, behaviour: int | None,
          at: datetime | None, as_json: bool) -> None:
    """Record LEAD's latest score."""
    report(ctx, ctx.app.execute(cmd.Score(**common(ctx, at), lead=lead_ref(lead), total=total, fit=fit,
                                          behaviour=behaviour)), as_json)


@cli.command()
@click.argument("lead")
@click.option("--owner", required=True)
@click.option("--rule", help="The routing rule that chose the owner.")
@at_option
@json_option
@pass_ctx
def assign(ctx: Context, lead: str, owner: str, rule: str | None, at: datetime | None, as_json: bool) -> None:
    """Assign LEAD to an owner."""
    report(ctx, ctx.app.execute(cmd.Assign(**common(ctx, at), lead=lead_ref(lead), owner=owner, rule=rule)),
           as_json)


@cli.command()
@click.argument("lead")
@click.option("--owner", help="Default: the lead's current owner.")
@at_option
@json_option
@pass_ctx
def contact(ctx: Context, lead: str, owner: str | None, at: datetime | None, as_json: bool) -> None:
    """Record the owner's contact with LEAD."""
    report(ctx, ctx.app.execute(cmd.Contact(**common(ctx, at), lead=lead_ref(lead), owner=owner)), as_json)


@cli.command()
@click.argument("lead")
@click.argument("trigger")
@click.option("--reason")
@click.option("--amount", type=float)
@click.option("--currency")
@click.option("--override", is_flag=True, help="qualify_mql below the threshold (needs --reason).")
@click.option("--budget")
@click.option("--authority")
@click.option("--need")
@click.option("--timeline")
@at_option
@json_option
@pass_ctx
def transition(ctx: Context, lead: str, trigger: str, reason: str | None, amount: float | None,
               currency: str | None, override: bool, budget: str | None, authority: str | None,
               need: str | None, timeline: str | None, at: datetime | None, as_json: bool) -> None:
    """Move LEAD by TRIGGER: nurture, qualify_mql, accept, reject, qualify_sql, win, lose, recycle, disqualify."""
    bant = {"budget": budget, "authority": authority, "need": need, "timeline": timeline}
    bant_given = {k: v for k, v in bant.items() if v is not None}
    report(ctx, ctx.app.execute(cmd.Transition(
        **common(ctx, at), lead=lead_ref(lead), trigger=trigger, reason=reason, amount=amount,
        currency=currency, override=override, bant=bant_given or None)), as_json)


@cli.command()
@click.argument("lead")
@click.option("--given/--withdrawn", required=True)
@click.option("--purpose")
@at_option
@json_option
@pass_ctx
def consent(ctx: Context, lead: str, given: bool, purpose: str | None, at: datetime | None,
            as_json: bool) -> None:
    """Record consent given or withdrawn for LEAD."""
    report(ctx, ctx.app.execute(cmd.Consent(**common(ctx, at), lead=lead_ref(lead), given=given,
                                            purpose=purpose)), as_json)


@cli.command()
@click.argument("lead")
@click.option("--reason")
@json_option
@pass_ctx
def erase(ctx: Context, lead: str, reason: str | None, as_json: bool) -> None:
    """Right to be forgotten: destroy LEAD's data key (its lifecycle stays, anonymous)."""
    report(ctx, ctx.app.execute(cmd.Erase(**common(ctx, None), lead=lead_ref(lead), reason=reason)), as_json)


# ---------------------------------------------------------------- audit


def _resolve(ctx: Context, lead: str) -> UUID:
    return ctx.app.lead_id_for(lead_ref(lead))


@cli.command()
@click.argument("lead")
@click.option("--as-of", type=TIME, help="Only events that occurred at or before this time.")
@click.option("--known-at", type=TIME, help="...and were recorded at or before this time.")
@json_option
@pass_ctx
def history(ctx: Context, lead: str, as_of: datetime | None, known_at: datetime | None, as_json: bool) -> None:
    """Every event of LEAD and its stage at --as-of."""
    from lifecycle.audit import history as lead_history

    lead_id = _resolve(ctx, lead)
    result = lead_history(ctx.app.store, lead_id, as_of, known_at)
    if result is None:
        fail(f"unknown lead {lead}: no events stored for it")
    assert result is not None
    if as_json:
        emit_json(result)
        return
    from lifecycle.tables import history_table

    history_table(result)


@cli.command()
@click.argument("lead", required=False)
@json_option
@pass_ctx
def verify(ctx: Context, lead: str | None, as_json: bool) -> None:
    """Check hash chains and versions (all leads, or LEAD); non-zero exit names the first bad event."""
    from lifecycle.audit import verify as run_verify

    result = run_verify(ctx.app.store, _resolve(ctx, lead) if lead else None)
    problems = result.problems or []
    if as_json:
        emit_json({"ok": result.ok, "leads": result.leads, "events": result.events, "root": result.root,
                   "problems": [{"lead_id": str(p.lead_id), "version": p.version, "reason": p.reason}
                                for p in problems]})
    elif result.ok:
        click.echo(f"ok: {result.events} events of {result.leads} leads verified (hash chains and versions intact)")
        click.echo(f"root {result.root}  (publish it: a later verify of the same store must match)")
    if not result.ok:
        for p in problems[:20]:
            click.echo(f"TAMPERED {p}", err=True)
        if len(problems) > 20:
            click.echo(f"... and {len(problems) - 20} more leads", err=True)
        fail(f"verification failed for {len(problems)} lead(s); first: {problems[0]}")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="File to write (default stdout).")
@click.option("--decrypt", is_flag=True, help="Open personal data (default: it stays sealed).")
@pass_ctx
def export(ctx: Context, fmt: str, output: Path | None, decrypt: bool) -> None:
    """Every event in store order as CloudEvents JSON lines."""
    from lifecycle.audit import export_envelopes

    out = output.open("wb") if output else sys.stdout.buffer
    count = 0
    try:
        for envelope in export_envelopes(ctx.app.store, decrypt=decrypt):
            out.write(orjson.dumps(envelope) + b"\n")
            count += 1
    finally:
        if output:
            out.close()
    if output:
        click.echo(f"exported {count} events to {output}", err=True)


# ---------------------------------------------------------------- bulk write


def _read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            stripped = line.rstrip(b"\r\n")
            if stripped.strip():
                yield number, stripped


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dead-letters", type=click.Path(path_type=Path), help="Default: FILE.dead.jsonl")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True)
@json_option
@pass_ctx
def ingest(ctx: Context, file: Path, dead_letters: Path | None, batch_size: int, as_json: bool) -> None:
    """Apply a file of inbound messages (JSON lines) exactly as the Kafka consumer would."""
    from lifecycle.inbound import InboundHandler, Tally

    dead_path = dead_letters or file.with_name(file.name + ".dead.jsonl")
    tally = Tally()
    handler = InboundHandler(ctx.app, batch_size=batch_size)
    dead_out = None
    try:
        for result in handler.handle_stream(_read_lines(file)):
            tally.add(result)
            if result.status == "dead":
                if dead_out is None:
                    dead_out = dead_path.open("wb")
                dead_out.write(orjson.dumps({
                    "line": result.position, "reason": result.reason,
                    "raw": result.raw.decode("utf-8", errors="replace"),
                }) + b"\n")
    finally:
        if dead_out is not None:
            dead_out.close()
    if as_json:
        emit_json(tally.as_json())
    else:
        click.echo(f"applied {tally.applied}, duplicates ignored {tally.duplicates}, "
                   f"dead-lettered {tally.dead_lettered}")
        if tally.dead_lettered:
            click.echo(f"dead letters (with reasons): {dead_path}")


@cli.command()
@click.option("--leads", type=click.IntRange(1, 10_000_000), default=2000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--start", type=TIME, default="2026-01-05", show_default=True, help="First capture day.")
@click.option("--days", type=click.IntRange(1, 3650), default=120, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Write the inbound messages here instead of applying them.")
@json_option
@pass_ctx
def simulate(ctx: Context, leads: int, seed: int, start: datetime, days: int, out: Path | None,
             as_json: bool) -> None:
    """Deterministic realistic traffic through the write path (same path as ingest)."""
    from lifecycle.inbound import InboundHandler, Tally
    from lifecycle.simulate import generate

    messages = generate(leads=leads, seed=seed, start=start, days=days,
                        mql_threshold=ctx.settings.mql_threshold)
    if out is not None:
        n = 0
        with out.open("wb") as fh:
            for message in messages:
                fh.write(orjson.dumps(message) + b"\n")
                n += 1
        click.echo(f"wrote {n} inbound messages for {leads} leads to {out}")
        return
    tally = Tally()
    handler = InboundHandler(ctx.app, batch_size=1000)
    stream = ((i, orjson.dumps(m)) for i, m in enumerate(messages, start=1))
    refused: list[str] = []
    example: UUID | None = None  # the first lead that was won: a story worth showing
    for result in handler.handle_stream(stream):
        tally.add(result)
        if result.status == "dead" and len(refused) < 5:
            refused.append(f"message {result.position}: {result.reason}")
        if example is None and result.event == "LeadWon":
            example = result.lead_id
    if as_json:
        emit_json({"leads": leads, "seed": seed, **tally.as_json(),
                   "example_won_lead": str(example) if example else None})
    else:
        click.echo(f"simulated {leads} leads (seed {seed}): {tally.applied} events applied, "
                   f"{tally.duplicates} duplicates ignored, {tally.dead_lettered} refused")
        if example:
            click.echo(f"a lead that was won: {example}  (try: leadledger history {example})")
    for line in refused:
        click.echo(f"  refused {line}", err=True)


def main() -> None:
    from consumers.cli import register as register_consumers
    from projections.cli import register as register_projections
    from projections.web_cli import register as register_web

    register_projections(cli)
    register_web(cli)
    register_consumers(cli)
    from consumers.status import register as register_status

    register_status(cli)
    cli(prog_name="leadledger")


if __name__ == "__main__":
    main()
