"""`leadledger routing fairness | backtest FILE`: how fairly the router shared the leads, and what a
candidate policy would have decided instead (lifecycle/operations/fairness.py and backtest.py).

Both only read the store: the backtest's decisions are never written."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.text import Text

from leadledger.answers import tidy
from leadledger.cli.common import TIME, Context, emit_json, fail, json_option, pass_ctx
from leadledger.cli.common import GuardedGroup as _GuardedGroup
from leadledger.cli.tables import literal, literal_table, show
from lifecycle.operate import decode
from lifecycle.operations.backtest import backtest as run_backtest
from lifecycle.operations.fairness import InForce, Tally, Window
from lifecycle.operations.fairness import fairness as run_fairness
from lifecycle.operations.operator import Seen
from lifecycle.operations.policy import Policy, PolicyError, parse_policy
from lifecycle.policies import PolicyStream
from projections.report.charts import fmt_duration, fmt_percent
from schemas.codec import format_time

F = TypeVar("F", bound=Callable[..., Any])

FIGURES_HELP = """\b
Per rep: assignments (the router's, any method: round robin, sticky,
fallback, queue releases); share = of the router's assignments by rules
whose pool names the rep, the fraction the rep got; weight share = the
rep's weight / the total weight of that rule's whole pool, averaged over
those same assignments (the share weights alone would give); peak open =
the most open leads (mql, sal, sql) the rep held at the instant of any
router decision in the window.
\b
Per rule: queued = queue decisions in the window; released = of those,
assigned (by the router or by hand) before the window's end, with their
median wait (release - queued, nearest rank); still queued at the end;
left = left the routing stages first."""


@click.group(cls=_GuardedGroup)
def routing() -> None:
    """How the router shared the leads (fairness), and what a candidate policy would have done (backtest).

    Both read the store only; a backtest writes nothing."""


def window_options(func: F) -> F:
    func = click.option("--to", "to", type=TIME,
                        help="Window end, exclusive (default: just after the latest stored event).")(func)
    return click.option("--from", "from_", type=TIME,
                        help="Window start, inclusive (date = 00:00 UTC; default: the first stored event).")(func)


def _window(from_: datetime | None, to: datetime | None) -> Window:
    if from_ is not None and to is not None and to <= from_:
        fail(f"--to {format_time(to)} must be after --from {format_time(from_)} (the window is [from, to))", 2)
    return Window(from_, to)


def _history(ctx: Context) -> tuple[list[Seen], list[InForce]]:
    """Every stored event (checked as read) in store order, and the published policy versions."""
    ctx.read_only = True  # refuse a folder without a store instead of creating one
    store = ctx.app.store
    events = [decode(row) for row in store.iter_raw(0, batch=20_000)]
    versions = [InForce(v.version, v.position, v.policy) for v in PolicyStream(store).versions()]
    return events, versions


def _candidate(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{path} is not UTF-8 text ({exc}); save the policy as UTF-8 TOML", 2)
    try:
        return parse_policy(text)
    except PolicyError as exc:
        lines = "\n".join(f"  {p}" for p in exc.problems)
        fail(f"{path} is not a valid policy ({len(exc.problems)} problem(s)):\n{lines}", 2)


def _times(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, dict):
        return {k: _times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_times(v) for v in value]
    return value


def _answer(window: Window, result: Tally, **head: Any) -> dict[str, Any]:
    body = {"from": window.start, "to": window.end, **head, **result.as_json()}
    return dict(tidy(_times(body)))


# ---------------------------------------------------------------- rendering


def _when(value: str | None, empty: str) -> str:
    if value is None:
        return empty
    if value.endswith("T00:00:00.000000Z"):
        return value[:10]
    return value[:19].replace("T", " ") + "Z"


def _title(what: str, answer: dict[str, Any]) -> Text:
    """The window as given, and the instants it covers (an open end: up to the latest event, included)."""
    span = answer.get("span")
    given = f"[{_when(answer['from'], '-inf')}, {_when(answer['to'], '+inf')})"
    if span is None:
        return literal(f"{what}, window {given}: no events")
    start = _when(span["from"], "")
    if answer["to"] is None:
        last = format_time(datetime.fromisoformat(span["to"]) - timedelta(microseconds=1))
        covers = f"[{start}, {_when(last, '')}] (up to the latest event)"
    else:
        covers = f"[{start}, {_when(span['to'], '')})"
    return literal(f"{what}, window {given}" + (f" = {covers}" if given != covers else ""))


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _render(answer: dict[str, Any], what: str, *, fairness: bool) -> None:
    table = literal_table(_title(what, answer))
    columns = ["rep", "assignments"]
    if not fairness:
        columns.append("in fact")
    columns += ["round robin", "sticky", "fallback", "pool decisions", "share", "weight share", "peak open"]
    if fairness:
        columns += ["candidate h", "per candidate h"]
    for col in columns:
        table.add_column(col, justify="left" if col == "rep" else "right")
    for rep in answer["reps"]:
        methods = rep["by_method"]
        cells = [rep["rep"], rep["assignments"]]
        if not fairness:
            cells.append(rep["actual_assignments"])
        cells += [methods["round_robin"], methods["sticky"], methods["fallback"], rep["pool_decisions"],
                  fmt_percent(rep["share"]), fmt_percent(rep["weight_share"]), rep["peak_open"]]
        if fairness:
            cells += [_number(rep["candidate_hours"]), fmt_percent(rep["share_per_candidate_hour"])]
        table.add_row(*(literal(c) for c in cells))
    show(table)
    if answer["rules"]:
        rules = literal_table(literal("per routing rule: the queue"))
        for col in ("rule", "assignments", "queued", "released", "median wait", "still queued", "left"):
            rules.add_column(col, justify="left" if col == "rule" else "right")
        for rule in answer["rules"]:
            rules.add_row(*(literal(c) for c in (
                rule["rule"], rule["assignments"], rule["queued"], rule["released"],
                fmt_duration(rule["median_wait_s"]), rule["still_queued"], rule["left"])))
        show(rules)
    d = answer["decisions"]
    click.echo(f"decisions in the window: {d['assign']} assigned, {d['queue']} queued, {d['warn']} SLA warnings, "
               f"{d['breach']} breaches")
    changed = answer.get("changed_owner")
    if changed is not None:
        click.echo(f"changed owner: {changed['changed']} of {changed['of']} leads routed in the window "
                   f"({changed['other_owner']} to another rep, {changed['only_by_candidate']} routed only by "
                   f"the candidate, {changed['not_by_candidate']} not routed by it); nothing was written")


# ---------------------------------------------------------------- commands


@routing.command(epilog=FIGURES_HELP + """
\b
Candidate hours: the rep's working hours in the window (their calendar,
holidays off) on days they were not absent, while a policy version in force
named them in a routing pool; capacity is ignored (a rep at capacity still
counts). A version is in force from the occurred_at of the first event stored
after it was published. Per candidate hour: the rep's assignments / candidate
hours, normalized to sum to 1 over the reps with candidate hours.""")
@window_options
@json_option
@pass_ctx
def fairness(ctx: Context, from_: datetime | None, to: datetime | None, as_json: bool) -> None:
    """What the router did in [--from, --to): per rep assignments, share vs weight share, peak open
    leads, and the share per hour the rep was a candidate; per rule the queue."""
    window = _window(from_, to)
    events, versions = _history(ctx)
    answer = _answer(window, run_fairness(events, versions, window))
    if as_json:
        emit_json(answer)
    else:
        _render(answer, "routing fairness", fairness=True)


@routing.command(epilog=FIGURES_HELP + """
\b
In fact: what the router assigned the rep in the window. Changed owner: the
leads whose first router owner in the window would differ from the one they
had (a lead routed by only one of the two counts).""")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@window_options
@json_option
@pass_ctx
def backtest(ctx: Context, file: Path, from_: datetime | None, to: datetime | None, as_json: bool) -> None:
    """Replay the triggers of [--from, --to) through the policy FILE and report what it would have
    decided, writing nothing.

    Everything stored before the window stands (decisions included); in the window every event but
    leadledger's own decisions is handled, in store order, by an operator under FILE (manual
    assignments count as they happened), whose clock then moves to the window's end."""
    policy = _candidate(file)
    window = _window(from_, to)
    events, versions = _history(ctx)
    result = run_backtest(events, policy, window, versions)
    answer = _answer(window, result, policy={"file": str(file), "sha256": policy.sha256})
    if as_json:
        emit_json(answer)
    else:
        _render(answer, f"routing backtest of {file}", fairness=False)
