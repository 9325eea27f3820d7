"""`leadledger score LEAD --total N` records a score; `leadledger score explain LEAD [--at T]` says how the
scoring model of the policy arrives at the lead's score at an instant (lifecycle/operations/scoring.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from leadledger.cli.common import (
    TIME,
    Context,
    GuardedGroup,
    emit_json,
    fail,
    json_option,
    lead_ref,
    pass_ctx,
)
from leadledger.cli.tables import literal, literal_table, show
from leadledger.cli.write import score as record
from lifecycle.audit import checked_records
from lifecycle.operations import scoring
from lifecycle.policies import PolicyStream, Published
from schemas.codec import EventRecord, format_time


class _ScoreGroup(GuardedGroup):
    """`score LEAD ...` is `score record LEAD ...`: recording stays the short form."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["record", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ScoreGroup)
def score() -> None:
    """Record LEAD's latest score (`score LEAD --total N`), or explain it (`score explain LEAD`).

    \b
    leadledger score LEAD --total 74 [--fit F --behaviour B] [--at T]
    leadledger score explain LEAD [--at T] [--version N] [--json]"""


score.add_command(record, "record")


@score.command(epilog="""\b
The model: by default the policy version named by the lead's latest score
from leadledger's scorer at or before --at, else the latest published
version with a [scoring] section; --version N picks one. The score uses the
lead's capture attributes and its touches that occurred at or before --at,
as stored now (a touch stored late, after the scorer ran, counts here).""")
@click.argument("lead")
@click.option("--at", "at", type=TIME, help="The instant (default: now; a date means 00:00 UTC).")
@click.option("--version", "number", type=click.IntRange(min=1), help="The policy version whose model to use.")
@json_option
@pass_ctx
def explain(ctx: Context, lead: str, at: datetime | None, number: int | None, as_json: bool) -> None:
    """LEAD's score at --at under the policy's scoring model, with every rule's contribution (or why it
    gave none), the threshold, and the scores recorded for the lead up to then."""
    ctx.read_only = True
    lead_id = ctx.app.lead_id_for(lead_ref(lead))
    records = checked_records(ctx.app.store, lead_id)
    if not records:
        fail(f"unknown lead {lead}: no events stored for it")
    when = at or datetime.now(UTC)
    captured = records[0].occurred_at
    if when < captured:
        fail(f"--at {format_time(when)} is before the lead's capture at {format_time(captured)}: it had no score", 2)
    version = _version(ctx, records, when, number)
    model = version.policy.scoring
    assert model is not None
    attributes, touches = scoring.lead_inputs((r.name, r.occurred_at, r.data) for r in records)
    result, lines = scoring.explain(model, attributes, touches, scoring.us(when))
    threshold = scoring.threshold_of(model, ctx.settings.mql_threshold)
    answer = {
        "lead_id": str(lead_id), "at": format_time(when), "model": scoring.model_name(version.version),
        "policy_version": version.version, "threshold": threshold, "auto_mql": model.auto_mql,
        **result.payload(), "reaches_threshold": result.total >= threshold,
        "rules": [{"rule": line.rule, "section": line.section, "points": round(line.points, 6),
                   "matched": line.matched, "touches": line.touches, "note": line.note} for line in lines],
        "recorded": [_recorded(r) for r in records if r.name == "LeadScored" and r.occurred_at <= when],
    }
    if as_json:
        emit_json(answer)
    else:
        _render(answer)


def _version(ctx: Context, records: list[EventRecord], when: datetime, number: int | None) -> Published:
    versions = PolicyStream(ctx.app.store).versions()
    scored = [v for v in versions if v.policy.scoring is not None]
    if number is not None:
        found = next((v for v in versions if v.version == number), None)
        if found is None:
            fail(f"there is no policy version {number} (published: {len(versions)}); see 'leadledger policy show'", 2)
        if found.policy.scoring is None:
            fail(f"policy version {number} has no [scoring] section: it scores nothing", 2)
        return found
    if not scored:
        fail("no published policy has a [scoring] section: publish one (leadledger policy publish FILE) to "
             "score leads, or see the scores recorded from upstream with 'leadledger history'", 2)
    named = [r.data.get("policy_version") for r in records
             if r.name == "LeadScored" and r.actor == "scorer" and r.occurred_at <= when]
    if named and named[-1] is not None:
        return next((v for v in scored if v.version == named[-1]), scored[-1])
    return scored[-1]


def _recorded(record: EventRecord) -> dict[str, Any]:
    return {"at": format_time(record.occurred_at), "model": record.data.get("model", "external"),
            "total": record.data.get("total"), "actor": record.actor}


def _render(answer: dict[str, Any]) -> None:
    title = (f"score of {answer['lead_id']} at {answer['at']} ({answer['model']}): {answer['total']} "
             f"(fit {answer['fit']} + behaviour {answer['behaviour']:g}); threshold {answer['threshold']}"
             f"{' reached' if answer['reaches_threshold'] else ' not reached'}")
    table = literal_table(literal(title))
    for col in ("rule", "section", "points", "touches", "why"):
        table.add_column(col, justify="right" if col in ("points", "touches") else "left")
    for line in answer["rules"]:
        table.add_row(*(literal(c) for c in (
            line["rule"], line["section"], f"{line['points']:g}", line["touches"] if line["section"] == "behaviour"
            else "", line["note"] or ("" if line["matched"] else "no match"))))
    show(table)
    recorded = answer["recorded"]
    if recorded:
        last = recorded[-1]
        click.echo(f"scores recorded up to then: {len(recorded)}; the latest {last['total']} at {last['at']} "
                   f"({last['model']})")
    else:
        click.echo("no score recorded for the lead up to then")
