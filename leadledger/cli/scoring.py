"""`leadledger scoring backtest FILE`: what the scoring model of a candidate policy would have done with
the stored leads, side by side with the published model (lifecycle/operations/scoring_backtest.py).

It only reads the store: nothing the back-test decides is written."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from leadledger.answers import tidy
from leadledger.cli.common import Context, GuardedGroup, emit_json, fail, json_option, pass_ctx
from leadledger.cli.routing import _candidate, _when, _window, window_options
from leadledger.cli.tables import literal, literal_table, show
from lifecycle.operate import decode
from lifecycle.operations.operator import Seen
from lifecycle.operations.policy import _parse_duration
from lifecycle.operations.scoring_backtest import Model
from lifecycle.operations.scoring_backtest import backtest as run_backtest
from lifecycle.policies import PolicyStream
from projections.report.charts import fmt_duration, fmt_percent

BACKTEST_HELP = """\b
The leads: those whose capture occurred in [--from, --to) (a date means
00:00 UTC; default: every lead). Their later events count whenever they
occurred, --to only chooses which leads are compared.
\b
Evaluation instants: a lead's capture and each of its touches. The score at
an instant uses the lead's capture attributes and only the touches that
occurred at or before it, so nothing that happened later can change a
decision (leak-free).
\b
Would-be MQL: the first evaluation instant at which the model's score
reaches its threshold (the model's own, else --mql-threshold) while the
lead is captured, nurtured or recycled. The stage at an instant follows the
lead's stored stage changes up to it, except leadledger's scorer's own
automatic qualifications (so the published model's decisions hide no lead
from the candidate); a lead qualified by hand is nobody's would-be MQL.
\b
Reached sal / sql / won: of the would-be MQLs, the leads whose history
enters that stage (at any time, by anyone). Precision: won / would-be MQLs.
Recall: of the won leads, those that were would-be MQLs at or before their
first win. Median capture -> MQL: nearest rank, over the would-be MQLs.
\b
Score at age: the score at capture + --at-age, for the leads old enough for
that instant to be at or before the latest stored event (the others are
counted as too young). AUC: the chance that a won lead scores higher than a
lead not won (ties count half; none when every lead or no lead was won).
Deciles: the leads sorted by that score (ties: by capture time, then lead
id) in ten groups as equal as possible, decile 1 the lowest scores; per
decile the leads, the won ones, the won rate and the scores' range."""


@click.group(cls=GuardedGroup)
def scoring() -> None:
    """What a candidate scoring model would have done with the stored leads (backtest).

    A backtest reads the store only and writes nothing."""


def _age(value: str) -> timedelta:
    parsed = _parse_duration(value)
    if isinstance(parsed, str):
        raise click.BadParameter(parsed, param_hint="--at-age")
    return parsed


def _model(path: Path, name: str) -> Model:
    policy = _candidate(path)
    if policy.scoring is None:
        fail(f"{path} has no [scoring] section: there is no scoring model in it to back-test", 2)
    return Model(name, str(path), policy.scoring)


def _published(ctx: Context) -> Model:
    """The [scoring] of the latest published policy version that has one."""
    scored = [v for v in PolicyStream(ctx.app.store).versions() if v.policy.scoring is not None]
    if not scored:
        fail("no published policy has a [scoring] section to compare with: publish one (leadledger policy "
             "publish FILE) or name the model to compare with (--against FILE2)", 2)
    latest = scored[-1]
    assert latest.policy.scoring is not None
    return Model("published", latest.label, latest.policy.scoring)


def _events(ctx: Context) -> Iterator[Seen]:
    """Every stored event, checked as read, in store order (streamed: the back-test keeps what it needs)."""
    for row in ctx.app.store.iter_raw(0, batch=20_000):
        yield decode(row)


# ---------------------------------------------------------------- rendering


def _score_range(decile: dict[str, Any]) -> str:
    low, high = decile["min_score"], decile["max_score"]
    if low is None:
        return "–"
    return str(low) if low == high else f"{low}-{high}"


def _render(answer: dict[str, Any], file: Path, age: str) -> None:
    models = answer["models"]
    window = f"[{_when(answer['from'], '-inf')}, {_when(answer['to'], '+inf')})"
    table = literal_table(literal(f"scoring backtest of {file} against {models[1]['source']}, "
                                  f"leads captured in {window}"))
    table.add_column("")
    for m in models:
        table.add_column(f"{m['name']}\n{m['source']}", justify="right")
    rows: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("threshold", lambda m: m["threshold"]),
        ("would-be MQLs", lambda m: m["would_be_mql"]),
        ("… reached sal", lambda m: m["reached"]["sal"]),
        ("… reached sql", lambda m: m["reached"]["sql"]),
        ("… reached won", lambda m: m["reached"]["won"]),
        ("precision (won / would-be MQLs)", lambda m: fmt_percent(m["precision"])),
        (f"recall (of {answer['won']} won: MQL by their win)",
         lambda m: f"{fmt_percent(m['recall'])} ({m['recalled']})"),
        ("median capture -> MQL", lambda m: fmt_duration(m["median_to_mql_s"])),
        (f"AUC of the score at {age} vs won", lambda m: "–" if m["auc"] is None else f"{m['auc']:.3f}"),
    ]
    for label, cell in rows:
        table.add_row(literal(label), *(literal(cell(m)) for m in models))
    show(table)
    deciles = literal_table(literal(f"won rate per decile of the score at capture + {age} "
                                    f"({answer['scored_at_age']} leads old enough)"))
    deciles.add_column("decile", justify="right")
    for m in models:
        for col in ("scores", "leads", "won", "won rate"):
            deciles.add_column(f"{m['name']}\n{col}", justify="right")
    for k in range(len(models[0]["deciles"])):
        cells: list[Any] = [k + 1]
        for m in models:
            d = m["deciles"][k]
            cells += [_score_range(d), d["leads"], d["won"], fmt_percent(d["won_rate"])]
        deciles.add_row(*(literal(c) for c in cells))
    show(deciles)
    horizon = answer["horizon"] or "none"
    click.echo(f"{answer['leads']} leads captured in the window, {answer['won']} won; {answer['too_young']} too "
               f"young for the score at {age} (the latest stored event occurred at {horizon}); "
               f"nothing was written")


# ---------------------------------------------------------------- the command


@scoring.command(epilog=BACKTEST_HELP + """
\b
JSON: from, to, at_age_s, horizon (the latest stored event's occurred_at),
leads, won, scored_at_age, too_young, and per model (the candidate first):
name, source (its file, or policy:vN), threshold, would_be_mql, reached
{sal, sql, won}, precision, recalled, recall, median_to_mql_s, auc and
deciles [{decile, leads, won, won_rate, min_score, max_score}].""")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@window_options
@click.option("--at-age", "at_age", default="7d", show_default=True,
              help="The age (Ns, Nm, Nh or Nd after capture) of the score the AUC and the deciles rank.")
@click.option("--against", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Compare with this policy file's [scoring] (default: the latest published one).")
@json_option
@pass_ctx
def backtest(ctx: Context, file: Path, from_: datetime | None, to: datetime | None, at_age: str,
             against: Path | None, as_json: bool) -> None:
    """Replay every lead captured in [--from, --to) through the scoring model of the policy FILE and
    through the published one (or --against FILE2), leak-free, and report them side by side: would-be
    MQLs, how many reached sal, sql and won, precision, recall, the median time from capture to MQL,
    and the AUC and won rate per decile of the score at capture + --at-age. It writes nothing."""
    age = _age(at_age)
    candidate = _model(file, "candidate")
    window = _window(from_, to)
    ctx.read_only = True  # refuse a folder without a store instead of creating one
    other = _model(against, "against") if against is not None else _published(ctx)
    result = run_backtest(_events(ctx), [candidate, other], window, at_age=age,
                          default_threshold=ctx.settings.mql_threshold)
    answer = dict(tidy(result.as_json()))
    if as_json:
        emit_json(answer)
    else:
        _render(answer, file, at_age.strip())
