"""`--format csv` says exactly what `--json` says, for every query: read back, the CSV rebuilds the
JSON answer's groups (every figure, nothing more) and its window columns; the lead list and a history
have a row per lead or event with the same fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from leadledger.cli import cli
from leadledger.csvout import parse_cell, read

SECRET = "csv-answers-test-secret"
ENV = {"LEADLEDGER_SECRET": SECRET, "LEADLEDGER_POSTGRES_DSN": ""}
CONTEXT = ("window", "window_from", "window_to", "interval_label", "interval_from", "interval_to", "section")


def run(home: Path, *args: str) -> bytes:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], env=ENV, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("csv")
    run(home, "policy", "publish", str(Path(__file__).parents[3] / "lifecycle/simulate/default_policy.toml"))
    run(home, "simulate", "--leads", "250", "--seed", "5", "--operate")
    return home


QUERIES = [
    ["funnel"], ["funnel", "--by", "campaign", "--mode", "period", "--from", "2026-02-01", "--to", "2026-04-01"],
    ["funnel", "--by", "channel", "--interval", "month"],
    ["funnel", "--interval", "week", "--from", "2026-02-01", "--to", "2026-03-01", "--as-of", "2026-04-01"],
    ["funnel", "--by", "channel", "--from", "2026-03-01", "--to", "2026-04-01", "--compare-to", "previous"],
    ["velocity"], ["velocity", "--by", "channel", "--from", "2026-02-01", "--to", "2026-03-01",
                   "--compare-to", "2026-01-01..2026-02-01"],
    ["attribution", "--by", "channel"], ["attribution", "--model", "u_shaped", "--conversion", "sql", "--by", "campaign",
                                         "--from", "2026-02-01", "--to", "2026-04-01", "--compare-to", "previous"],
    ["speed", "--by", "owner"], ["speed", "--from", "2026-02-01", "--to", "2026-03-01", "--compare-to", "previous"],
    ["sla", "--as-of", "2026-06-01"], ["sla", "--by", "owner", "--as-of", "2026-05-01"],
    ["qualification"],
    ["plan", "--revenue", "250000", "--period", "2026-07-01..2026-10-01", "--by", "channel", "--as-of", "2026-06-01"],
    ["plan", "--revenue", "1e6", "--period", "2026-07-01..2027-01-01", "--lookback", "26w", "--as-of", "2026-07-01"],
    ["reasons", "--stage", "lost"], ["reasons", "--stage", "recycled", "--by", "owner", "--from", "2026-02-01"],
    ["reasons", "--stage", "disqualified", "--by", "channel", "--as-of", "2026-03-01"],
    ["pipeline"], ["pipeline", "--by", "channel", "--as-of", "2026-03-01"],
    ["pipeline", "--by", "campaign", "--as-of", "2026-04-15T12:00:00Z", "--known-at", "2099-01-01"],
]


def nest(figures: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in figures.items():
        node = out
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        assert last not in node, path
        node[last] = value
    return out


def rebuilt(text: str, meta: int) -> tuple[list[str], dict[tuple[Any, ...], dict[str, Any]]]:
    """The CSV's groups keyed by (context columns, identity columns), each rebuilt from its figure rows;
    the first `meta` columns are the answer's own fields."""
    header, rows = read(text)
    assert header[-2:] == ["figure", "value"]
    idents = [c for c in header[meta:-2] if c not in CONTEXT]
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = (tuple(row.get(c, "") for c in CONTEXT), tuple((c, row[c]) for c in idents))
        groups.setdefault(key, {})[row["figure"]] = parse_cell(row["value"])
    return header, {k: nest(v) for k, v in groups.items()}


def cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def expected(answer: dict[str, Any], idents: list[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The JSON answer's groups keyed like `rebuilt`, written out here from the answer's shape."""
    parts: list[tuple[dict[str, str], dict[str, Any]]] = []
    if "compare" in answer:
        parts = [({"window": "current", "window_from": cell(answer["from"]), "window_to": cell(answer["to"])}, answer),
                 ({"window": "compare", "window_from": cell(answer["compare"]["from"]),
                   "window_to": cell(answer["compare"]["to"])}, answer["compare"]),
                 ({"window": "difference"}, answer["difference"])]
    else:
        parts = [({}, answer)]
    parts += [({"interval_label": iv["label"], "interval_from": iv["from"], "interval_to": iv["to"]}, iv)
              for iv in answer.get("intervals", [])]
    # every list of groups is a section, an empty one too (it has no rows, but the header says it is there)
    lists = {name for _, part in parts for name, v in part.items()
             if name not in ("compare", "difference", "intervals")
             and (isinstance(v, list) or (isinstance(v, dict) and v))}
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for context, part in parts:
        for name in lists:
            value = part.get(name)
            for group in (value if isinstance(value, list) else [value] if value else []):
                ctx = {**context, **({"section": name} if len(lists) > 1 else {})}
                where = tuple(ctx.get(c, "") for c in CONTEXT)
                nested = {k: v for k, v in group.items() if isinstance(v, list) and v and k not in idents}
                key = (where, tuple((c, cell(group.get(c))) for c in idents))
                out[key] = without_empty({k: v for k, v in group.items() if k not in idents and k not in nested})
                for list_name, items in nested.items():  # a reasons group's reasons: a row set each
                    for item in items:
                        sub = {**{c: group.get(c) for c in idents}, **{c: item[c] for c in idents if c in item}}
                        out[(where, tuple((c, cell(sub.get(c))) for c in idents))] = {
                            list_name: {k: v for k, v in item.items() if k not in idents}}
    return out


def without_empty(figures: dict[str, Any]) -> dict[str, Any]:
    """`figures` without the empty maps (`unconverted: {}`): a map's figures are its entries, an empty one has none."""
    return {k: without_empty(v) if isinstance(v, dict) else v for k, v in figures.items()
            if not (isinstance(v, dict) and not v)}


@pytest.mark.parametrize("args", QUERIES, ids=[" ".join(a) for a in QUERIES])
def test_the_csv_of_every_query_rebuilds_its_json(home: Path, args: list[str]) -> None:
    answer = orjson.loads(run(home, *args, "--json"))
    text = run(home, *args, "--format", "csv").decode()
    assert text.endswith("\r\n") and "\r\n" in text  # RFC 4180 line ends
    meta = [k for k, v in answer.items() if not isinstance(v, dict | list)]
    header, groups = rebuilt(text, len(meta))
    assert header[:len(meta)] == meta
    _, rows = read(text)
    assert all(tuple(row[k] for k in meta) == tuple(cell(answer[k]) for k in meta) for row in rows)
    idents = [c for c in header[len(meta):-2] if c not in CONTEXT]
    want = expected(answer, idents)
    assert groups.keys() == want.keys()
    for key, figures in want.items():
        assert groups[key] == figures, key


def test_the_lead_list_and_a_history_are_one_row_per_lead_or_event(home: Path) -> None:
    answer = orjson.loads(run(home, "leads", "--limit", "20", "--json"))
    header, rows = read(run(home, "leads", "--limit", "20", "--format", "csv").decode())
    assert header == ["as_of", "known_at", *answer["leads"][0]]
    assert [{k: parse_cell(v) if k == "score" else (v or None) for k, v in r.items() if k in answer["leads"][0]}
            for r in rows] == answer["leads"]
    lead = answer["leads"][0]["lead_id"]
    history = orjson.loads(run(home, "history", lead, "--json"))
    header, rows = read(run(home, "history", lead, "--format", "csv").decode())
    assert len(rows) == len(history["events"])
    for row, event in zip(rows, history["events"], strict=True):
        assert row["id"] == event["id"] and row["type"] == event["type"]
        assert orjson.loads(row["data"]) == event["data"]


def test_a_drill_down_page_is_one_row_per_lead_after_the_cells_columns(home: Path) -> None:
    args = ["leads", "--reached", "mql", "--by", "campaign", "--key", "(none)", "--mode", "period", "--from",
            "2026-01-01", "--limit", "5"]
    answer = orjson.loads(run(home, *args, "--json"))
    header, rows = read(run(home, *args, "--format", "csv").decode())
    meta = ["mode", "from", "to", "as_of", "known_at", "reached", "by", "key", "next"]
    assert header == [*meta, *answer["leads"][0]]
    assert len(rows) == len(answer["leads"]) == 5
    assert all(row["reached"] == "mql" and row["key"] == "(none)" and row["next"] == answer["next"] != ""
               for row in rows)
    assert [{k: parse_cell(v) if k == "score" else (v or None) for k, v in r.items() if k in answer["leads"][0]}
            for r in rows] == answer["leads"]


def test_json_and_another_format_together_are_refused(home: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "funnel", "--json", "--format", "csv"], env=ENV)
    assert result.exit_code == 2
    assert "--json and --format csv contradict each other" in result.output
