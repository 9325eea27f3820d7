"""The write path, one command at a time: capture, touch, score, assign, contact, transition, consent, erase."""

from __future__ import annotations

from datetime import datetime

import click

from leadledger.cli.common import Context, at_option, common, fail, json_option, lead_ref, pass_ctx, report
from lifecycle.domain import commands as cmd
from lifecycle.domain import stages
from lifecycle.domain.stages import BANT_FIELDS, RULES
from schemas.firmographics import MAX_EMPLOYEES, MAX_TEXT, InvalidAttribute, clean_attributes

#: the `transition` flags each trigger's event records, read off the stage table's payload builders
FLAGS_OF_PAYLOAD: dict[object, tuple[str, ...]] = {
    stages.no_payload: (),
    stages.owner_payload: (),  # the owner comes from the lead (assign it first)
    stages.reason_payload: ("reason",),
    stages.mql_payload: ("override", "reason"),
    stages.bant_payload: BANT_FIELDS,
    stages.deal_payload: ("amount", "currency"),
    stages.sql_payload: (*BANT_FIELDS, "amount", "currency"),
}


def flags_of(trigger: str) -> tuple[str, ...] | None:
    """The flags `trigger` takes (None: an unknown trigger, or a payload this table does not know)."""
    rule = RULES.get(trigger)
    return None if rule is None else FLAGS_OF_PAYLOAD.get(rule.payload)


@click.command()
@click.option("--email", required=True, help="The person's e-mail (identity).")
@click.option("--channel", required=True, help="Source channel, e.g. webinar.")
@click.option("--campaign", help="Source campaign, e.g. q1-cloud.")
@click.option("--name", help="The person's name (personal data: sealed in the store).")
@click.option("--company", help="The person's company.")
@click.option("--phone", help="The person's phone (personal data: sealed in the store).")
@click.option("--consent/--no-consent", default=None, help="Marketing consent given with the capture.")
@click.option("--country", help="Firmographic: the ISO 3166-1 alpha-2 country code, e.g. DE (any case).")
@click.option("--industry", help=f"Firmographic: the company's industry, e.g. software (at most {MAX_TEXT} characters).")
@click.option("--employees", type=int, help=f"Firmographic: the company's number of employees (0 to {MAX_EMPLOYEES}).")
@click.option("--role", help="Firmographic: the person's role category, e.g. executive, manager, practitioner.")
@click.option("--language", help="Firmographic: the ISO 639-1 language code, e.g. de (any case).")
@at_option
@json_option
@pass_ctx
def capture(ctx: Context, email: str, channel: str, campaign: str | None, name: str | None,
            company: str | None, phone: str | None, consent: bool | None, country: str | None,
            industry: str | None, employees: int | None, role: str | None, language: str | None,
            at: datetime | None, as_json: bool) -> None:
    """Capture a lead (a known e-mail becomes a touch on its lead).

    The firmographic options are not personal data: they are stored in clear on the capture,
    with whether the e-mail's domain is a free-mail one and, if not, an account key of the
    domain (routing and scoring match on these). A re-capture records none of them."""
    try:
        attributes = clean_attributes(country=country, industry=industry, employees=employees, role=role,
                                      language=language)
    except InvalidAttribute as exc:
        fail(f"--{exc}", 2)
    outcome = ctx.app.execute(cmd.Capture(**common(ctx, at), email=email, channel=channel, campaign=campaign,
                                          name=name, company=company, phone=phone, consent=consent,
                                          **attributes))
    report(ctx, outcome, as_json)


@click.command()
@click.argument("lead")
@click.option("--channel", required=True, help="The channel of the engagement, e.g. email.")
@click.option("--campaign", help="Its campaign.")
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
@click.option("--fit", type=int, help="The fit part of the score.")
@click.option("--behaviour", type=int, help="The behaviour part of the score.")
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
@click.option("--owner", required=True, help="Who owns the lead from now on.")
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
@click.option("--reason", help="Why (reject, lose, recycle, disqualify; qualify_mql with --override).")
@click.option("--amount", type=float,
              help="win: the deal's amount; qualify_sql: the expected amount (optional). Greater than 0.")
@click.option("--currency",
              help="win: the deal's ISO 4217 currency, e.g. EUR; qualify_sql: the expected amount's (with --amount).")
@click.option("--override", is_flag=True, help="qualify_mql below the score threshold (needs --reason).")
@click.option("--budget", help="qualify_sql: BANT budget.")
@click.option("--authority", help="qualify_sql: BANT authority (who decides).")
@click.option("--need", help="qualify_sql: BANT need.")
@click.option("--timeline", help="qualify_sql: BANT timeline.")
@at_option
@json_option
@pass_ctx
def transition(ctx: Context, lead: str, trigger: str, reason: str | None, amount: float | None,
               currency: str | None, override: bool, budget: str | None, authority: str | None,
               need: str | None, timeline: str | None, at: datetime | None, as_json: bool) -> None:
    """Move LEAD by TRIGGER: nurture, qualify_mql, accept, reject, qualify_sql, win, lose, recycle, disqualify.

    \b
    Each trigger takes only its own flags:
      nurture, accept                    none (accept needs an assigned owner)
      qualify_mql                        --override --reason (below the threshold)
      reject, lose, recycle, disqualify  --reason (required)
      qualify_sql                        --budget --authority --need --timeline (all four),
                                         and optionally --amount --currency (the expected deal)
      win                                --amount --currency
    A flag another trigger takes is refused, not ignored."""
    given = {"reason": reason, "amount": amount, "currency": currency, "override": override or None,
             "budget": budget, "authority": authority, "need": need, "timeline": timeline}
    takes = flags_of(trigger)
    stray = [name for name, value in given.items() if value is not None and takes is not None and name not in takes]
    if stray:
        flags = " ".join(f"--{name}" for name in stray)
        fail(f"{trigger} does not take {flags} (it takes {' '.join(f'--{n}' for n in takes or ()) or 'no flags'}); "
             "leave them out", 2)
    bant = {"budget": budget, "authority": authority, "need": need, "timeline": timeline}
    bant_given = {k: v for k, v in bant.items() if v is not None}
    ref = lead_ref(lead)
    report(ctx, ctx.app.execute(cmd.Transition(
        **common(ctx, at), lead=ref, trigger=trigger, reason=reason, amount=amount,
        currency=currency, override=override, bant=bant_given or None)), as_json, ref)


@click.command()
@click.argument("lead")
@click.option("--given/--withdrawn", required=True, help="Consent given, or withdrawn.")
@click.option("--purpose", help="What the consent is for, e.g. marketing.")
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
@click.option("--reason", required=True, help="Why (e.g. the request's reference); recorded with the erasure.")
@json_option
@pass_ctx
def erase(ctx: Context, lead: str, reason: str, as_json: bool) -> None:
    """Right to be forgotten: destroy LEAD's data key (its lifecycle stays, anonymous)."""
    if not reason.strip():
        fail("--reason must not be blank: say why the lead's personal data is erased", 2)
    ref = lead_ref(lead)
    report(ctx, ctx.app.execute(cmd.Erase(**common(ctx, None), lead=ref, reason=reason)), as_json, ref)
