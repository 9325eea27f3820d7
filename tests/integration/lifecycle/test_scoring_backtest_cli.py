"""`leadledger scoring backtest FILE` over a real store (SQLite and PostgreSQL) whose automatic MQLs
leadledger's scorer made.

The published model (policy v1, auto_mql): large company +30, webinar +25, threshold 50. The candidate:
large company +30, executive +25, webinar +10, threshold 50. Four leads captured Monday 2026-03-02 09:00:

- A large executive, webinar at +1h (the scorer qualifies it then), won by hand at +5d;
- B small practitioner, webinars at +1h and +2h (the scorer qualifies it at +2h);
- C large practitioner, no touch, qualified by hand at +1d and won at +5d;
- D small executive, a page view at +10d (the latest event).

Candidate: A at capture (55); B 20, C 30, D 25 never. Published: A at +1h (55), B at +2h (50).
Scores at +7d: candidate A 65, B 20, C 30, D 25; published A 55, B 50, C 30, D 0.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
from click.testing import CliRunner, Result

from leadledger.bootstrap import bootstrap
from leadledger.cli import cli
from lifecycle.application import LeadLedger
from lifecycle.domain import commands as cmd
from lifecycle.operate import OperatorRunner
from lifecycle.policies import PolicyStream
from lifecycle.settings import Settings
from tests.support.cli import postgres_rows, raw_bytes_of_files, runner_env
from tests.support.env import sqlite_settings

MON = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
PUBLISHED = """
[scoring]
threshold = 50
auto_mql = true
[[scoring.fit]]
id = "large"
when = { employees_gte = 200 }
points = 30
[[scoring.behaviour]]
id = "webinar"
when = { touch_kind = "webinar_attended" }
points = 25
"""
CANDIDATE = """
[scoring]
threshold = 50
[[scoring.fit]]
id = "large"
when = { employees_gte = 200 }
points = 30
[[scoring.fit]]
id = "executive"
when = { role = "executive" }
points = 25
[[scoring.behaviour]]
id = "webinar"
when = { touch_kind = "webinar_attended" }
points = 10
"""
#: the published rules with a threshold of 60, which no lead reaches
STRICTER = PUBLISHED.replace("threshold = 50", "threshold = 60").replace("auto_mql = true\n", "")


def run_cli(s: Settings, *args: str) -> Result:
    env = dict(runner_env(s.home))
    if s.postgres_dsn:
        env.update(LEADLEDGER_POSTGRES_DSN=s.postgres_dsn, LEADLEDGER_POSTGRES_SCHEMA=s.postgres_schema)
    return CliRunner().invoke(cli, ["--home", str(s.home), *args], env=env)


def answer(s: Settings, *args: str) -> dict[str, Any]:
    result = run_cli(s, "scoring", "backtest", *args, "--json")
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = orjson.loads(result.stdout)
    return body


def _do(app: LeadLedger, command: cmd.Touch | cmd.Assign | cmd.Transition) -> None:
    outcome = app.execute(command)
    assert outcome.status == "applied", outcome.error


def _capture(app: LeadLedger, name: str, employees: int, role: str) -> UUID:
    out = app.execute(cmd.Capture(occurred_at=MON, actor="web-forms", message_key=None,
                                  email=f"{name}@example.com", channel="web", employees=employees, role=role))
    assert out.lead_id is not None
    return out.lead_id


def _touch(app: LeadLedger, lead: UUID, at: datetime, kind: str) -> None:
    _do(app, cmd.Touch(occurred_at=at, actor="marketing-automation", message_key=None,
                       lead=cmd.LeadRef(lead_id=lead), channel="web", kind=kind))


def _win(app: LeadLedger, lead: UUID, qualify: bool) -> None:
    """By hand: (qualified at +1d,) assigned and accepted at +2d, sql at +3d, won at +5d."""
    ref = cmd.LeadRef(lead_id=lead)
    common: dict[str, Any] = {"actor": "cli:maria", "message_key": None}
    if qualify:
        _do(app, cmd.Transition(occurred_at=MON + D, lead=ref, trigger="qualify_mql", override=True,
                                reason="met at a fair", **common))
    _do(app, cmd.Assign(occurred_at=MON + 2 * D, lead=ref, owner="maria", **common))
    _do(app, cmd.Transition(occurred_at=MON + 2 * D, lead=ref, trigger="accept", **common))
    _do(app, cmd.Transition(occurred_at=MON + 3 * D, lead=ref, trigger="qualify_sql",
                            bant={"budget": "yes", "authority": "cfo", "need": "crm", "timeline": "q2"}, **common))
    _do(app, cmd.Transition(occurred_at=MON + 5 * D, lead=ref, trigger="win", amount=1000.0, currency="EUR",
                            **common))


@pytest.fixture
def ledger(backend_settings: Settings) -> Settings:
    app = bootstrap(backend_settings)
    try:
        PolicyStream(app.store).publish(PUBLISHED, actor="test", now=MON - D)
        a = _capture(app, "ada", 500, "executive")
        b = _capture(app, "bob", 10, "practitioner")
        c = _capture(app, "cy", 500, "practitioner")
        d = _capture(app, "dee", 10, "executive")
        _touch(app, a, MON + H, "webinar_attended")
        _touch(app, b, MON + H, "webinar_attended")
        _touch(app, b, MON + 2 * H, "webinar_attended")
        assert OperatorRunner(app.store).run_once(MON + 3 * H).decisions["qualify"] == 2  # A and B, by the scorer
        _win(app, a, qualify=False)
        _win(app, c, qualify=True)
        _touch(app, d, MON + 10 * D, "page_view")
    finally:
        app.store.close()
    (backend_settings.home / "candidate.toml").write_text(CANDIDATE, encoding="utf-8")
    (backend_settings.home / "stricter.toml").write_text(STRICTER, encoding="utf-8")
    return backend_settings


def _head(s: Settings) -> tuple[int, int]:
    app = bootstrap(s)
    try:
        return app.store.head_position(), len(PolicyStream(app.store).versions())
    finally:
        app.store.close()


def test_the_candidate_against_the_published_model(ledger: Settings) -> None:
    home = ledger.home
    body = answer(ledger, str(home / "candidate.toml"))
    assert (body["from"], body["to"], body["at_age_s"]) == (None, None, 604800.0)
    assert body["horizon"] == "2026-03-12T09:00:00.000000Z"
    assert (body["leads"], body["won"], body["scored_at_age"], body["too_young"]) == (4, 2, 4, 0)
    candidate, published = body["models"]
    assert (candidate["name"], candidate["source"]) == ("candidate", str(home / "candidate.toml"))
    assert (published["name"], published["source"]) == ("published", "policy:v1")
    assert candidate["threshold"] == published["threshold"] == 50
    # the candidate: A at its capture
    assert (candidate["would_be_mql"], candidate["reached"]) == (1, {"sal": 1, "sql": 1, "won": 1})
    assert (candidate["precision"], candidate["recalled"], candidate["recall"]) == (1.0, 1, 0.5)
    assert candidate["median_to_mql_s"] == 0.0
    # the published model: A at +1h, B at +2h, though the scorer's own MQLs put them in mql at those instants
    assert (published["would_be_mql"], published["reached"]) == (2, {"sal": 1, "sql": 1, "won": 1})
    assert (published["precision"], published["recalled"], published["recall"]) == (0.5, 1, 0.5)
    assert published["median_to_mql_s"] == 3600.0  # ⌈2/2⌉ = the 1st of 1 h, 2 h
    # at +7d: candidate won A 65, C 30 above B 20, D 25; published C 30 below B 50: 3 of 4
    assert (candidate["auc"], published["auc"]) == (1.0, 0.75)
    # four leads in ten deciles: ranks 0..3 in deciles 3, 5, 8, 10
    assert [(d["decile"], d["min_score"], d["won"]) for d in candidate["deciles"] if d["leads"]] == [
        (3, 20, 0), (5, 25, 0), (8, 30, 1), (10, 65, 1)]
    assert [d["won_rate"] for d in published["deciles"] if d["leads"]] == [0.0, 1.0, 0.0, 1.0]  # D C B A
    assert set(candidate["deciles"][0]) == {"decile", "leads", "won", "won_rate", "min_score", "max_score"}


def test_against_another_file_a_window_and_an_age(ledger: Settings) -> None:
    home = ledger.home
    body = answer(ledger, str(home / "candidate.toml"), "--against", str(home / "stricter.toml"),
                  "--from", "2026-03-02", "--to", "2026-03-03", "--at-age", "12d")
    assert (body["from"], body["to"]) == ("2026-03-02T00:00:00.000000Z", "2026-03-03T00:00:00.000000Z")
    assert (body["at_age_s"], body["leads"], body["too_young"]) == (12 * 86400.0, 4, 4)
    against = body["models"][1]
    assert (against["name"], against["source"], against["threshold"]) == ("against", str(home / "stricter.toml"),
                                                                          60)
    assert (against["would_be_mql"], against["recall"]) == (0, 0.0)
    assert against["auc"] is None and all(d["leads"] == 0 for d in against["deciles"])
    later = answer(ledger, str(home / "candidate.toml"), "--from", "2026-03-03")
    assert (later["leads"], later["won"], later["models"][0]["recall"]) == (0, 0, None)


def test_the_tables(ledger: Settings) -> None:
    home = ledger.home
    result = run_cli(ledger, "scoring", "backtest", str(home / "candidate.toml"))
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"scoring backtest of {home / 'candidate.toml'} against policy:v1" in out
    for text in ("would-be MQLs", "precision", "recall (of 2 won", "AUC of the score at 7d", "0.750",
                 "won rate per decile", "nothing was written"):
        assert text in out, text
    assert "4 leads captured in the window, 2 won; 0 too young" in out
    helped = run_cli(ledger, "scoring", "backtest", "--help")
    assert helped.exit_code == 0
    assert "Would-be MQL" in helped.output and "leak-free" in helped.output
    assert "SPEC" not in helped.output and "§" not in helped.output


def _stored(s: Settings) -> Any:
    """Everything stored: every file under the home (SQLite: the store and the read models), and on
    PostgreSQL every value of every row of the schema."""
    files = dict(raw_bytes_of_files(s.home))
    return (files, sorted(map(repr, postgres_rows(s)))) if s.postgres_dsn else files


def test_it_writes_nothing(ledger: Settings) -> None:
    home = ledger.home
    replayed = run_cli(ledger, "replay")  # read models to compare too
    assert replayed.exit_code == 0, replayed.output
    before = _head(ledger), _stored(ledger), run_cli(ledger, "funnel", "--json").stdout
    if not ledger.postgres_dsn:
        assert {p.name for p in before[1]} >= {"events.sqlite", "readmodels.sqlite"}
    answer(ledger, str(home / "candidate.toml"))
    assert run_cli(ledger, "scoring", "backtest", str(home / "candidate.toml")).exit_code == 0
    assert (_head(ledger), _stored(ledger), run_cli(ledger, "funnel", "--json").stdout) == before


def test_refusals_of_the_files(ledger: Settings) -> None:
    home = ledger.home
    (home / "routing-only.toml").write_text('[calendars.office]\ntimezone = "UTC"\nhours = { mon = "09:00-17:00" }\n',
                                          encoding="utf-8")
    no_model = run_cli(ledger, "scoring", "backtest", str(home / "routing-only.toml"))
    assert no_model.exit_code == 2 and f"{home / 'routing-only.toml'} has no [scoring] section" in no_model.output
    no_other = run_cli(ledger, "scoring", "backtest", str(home / "candidate.toml"), "--against",
                       str(home / "routing-only.toml"))
    assert no_other.exit_code == 2 and "routing-only.toml has no [scoring] section" in no_other.output

    (home / "bad.toml").write_text('[scoring]\nthreshold = "high"\n', encoding="utf-8")
    bad = run_cli(ledger, "scoring", "backtest", str(home / "bad.toml"), "--json")
    assert bad.exit_code == 2 and "is not a valid policy (1 problem(s))" in bad.output
    assert "is not a valid policy" in orjson.loads(bad.stdout)["error"]

    backwards = run_cli(ledger, "scoring", "backtest", str(home / "candidate.toml"), "--from", "2026-03-03",
                        "--to", "2026-03-02")
    assert backwards.exit_code == 2 and "must be after --from" in backwards.output
    age = run_cli(ledger, "scoring", "backtest", str(home / "candidate.toml"), "--at-age", "a week")
    assert age.exit_code == 2 and "bad duration" in age.output


def test_no_store_and_no_published_model(tmp_path: Path) -> None:
    (tmp_path / "candidate.toml").write_text(CANDIDATE, encoding="utf-8")
    (tmp_path / "stricter.toml").write_text(STRICTER, encoding="utf-8")
    empty = sqlite_settings(tmp_path / "empty")
    missing = run_cli(empty, "scoring", "backtest", str(tmp_path / "candidate.toml"))
    assert missing.exit_code == 2 and "no store at" in missing.output
    assert not (empty.home / "events.sqlite").exists()

    bare = sqlite_settings(tmp_path / "bare")
    app = bootstrap(bare)
    try:
        app.execute(cmd.Capture(occurred_at=MON, actor="web-forms", message_key=None, email="x@example.com",
                                channel="web"))
    finally:
        app.store.close()
    unpublished = run_cli(bare, "scoring", "backtest", str(tmp_path / "candidate.toml"), "--json")
    assert unpublished.exit_code == 2
    assert "no published policy has a [scoring] section" in unpublished.output and "--against" in unpublished.output
    assert "no published policy" in orjson.loads(unpublished.stdout)["error"]
    # --against needs no published model
    against = answer(bare, str(tmp_path / "candidate.toml"), "--against", str(tmp_path / "stricter.toml"))
    assert (against["leads"], against["models"][1]["source"]) == (1, str(tmp_path / "stricter.toml"))
