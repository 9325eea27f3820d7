"""The write path, one command at a time: capture, touch, score, assign, contact, transition, consent, erase."""

from __future__ import annotations

from datetime import datetime

import click

from leadledger.cli.common import Context, at_option, common, json_option, lead_ref, pass_ctx, report
from lifecycle.domain import commands as cmd


@click.command()
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


@click.command()
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


@click.command()
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


@click.command()
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


@click.command()
@click.argument("lead")
@click.option("--owner", help="Default: the lead's current owner.")
@at_option
@json_option
@pass_ctx
def contact(ctx: Context, lead: str, owner: str | None, at: datetime | None, as_json: bool) -> None:
    """Record the owner's contact with LEAD."""
    report(ctx, ctx.app.execute(cmd.Contact(**common(ctx, at), lead=lead_ref(lead), owner=owner)), as_json)


@click.command()
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


@click.command()
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


@click.command()
@click.argument("lead")
@click.option("--reason")
@json_option
@pass_ctx
def erase(ctx: Context, lead: str, reason: str | None, as_json: bool) -> None:
    """Right to be forgotten: destroy LEAD's data key (its lifecycle stays, anonymous)."""
    report(ctx, ctx.app.execute(cmd.Erase(**common(ctx, None), lead=lead_ref(lead), reason=reason)), as_json)
