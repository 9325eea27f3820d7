"""`leadledger routing fairness` and `routing backtest FILE` over a real SQLite store whose history the
real operator made: a published policy (maria = 2, jonas = 1, office hours 09:00-17:00 UTC), eight leads
qualified on Monday 2026-03-02 — six in office hours, two at 18:00 (queued, released Tuesday 09:00).
A backtest writes nothing, and backtesting the policy that decided changes no owner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from leadledger.bootstrap import bootstrap
from leadledger.cli import cli
from lifecycle.audit import verify
from lifecycle.domain.commands import Capture, LeadRef, Transition
from lifecycle.operate import OperatorRunner
from lifecycle.policies import PolicyStream
from tests.support.cli import runner_env
from tests.support.env import sqlite_settings

MON = datetime(2026, 3, 2, tzinfo=UTC)
POLICY = """
[calendars.office]
timezone = "UTC"
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }
[reps.maria]
calendar = "office"
[reps.jonas]
calendar = "office"
[routing]
on = ["mql"]
[[routing.rules]]
id = "everyone"
pool = { maria = 2, jonas = 1 }
"""
EVEN = POLICY.replace("pool = { maria = 2, jonas = 1 }", "pool = { maria = 1, jonas = 1 }")
QUALIFIED = [MON + timedelta(hours=9, minutes=10 * i) for i in range(6)] + [MON + timedelta(hours=18)] * 2


def run_cli(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=runner_env(home))


def answer(home: Path, *args: str) -> dict[str, Any]:
    result = run_cli(home, *args, "--json")
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = orjson.loads(result.stdout)
    return body


def head(home: Path) -> int:
    app = bootstrap(sqlite_settings(home))
    try:
        return app.store.head_position()
    finally:
        app.store.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    app = bootstrap(sqlite_settings(tmp_path))
    try:
        PolicyStream(app.store).publish(POLICY, actor="test", now=MON - timedelta(days=1))
        for n, at in enumerate(QUALIFIED):
            captured = app.execute(Capture(occurred_at=at, actor="web-forms", message_key=None,
                                           email=f"lead{n}@example.com", channel="webinar"))
            assert captured.status == "applied" and captured.lead_id is not None
            qualified = app.execute(Transition(occurred_at=at, actor="web-forms", message_key=None,
                                               lead=LeadRef(lead_id=captured.lead_id), trigger="qualify_mql",
                                               override=True, reason="x"))
            assert qualified.status == "applied", qualified.error
        report = OperatorRunner(app.store).run_once(MON + timedelta(days=2))
        assert report.decisions == {"assign": 8, "queue": 2}
    finally:
        app.store.close()
    (tmp_path / "same.toml").write_text(POLICY, encoding="utf-8")
    (tmp_path / "other.toml").write_text(EVEN, encoding="utf-8")
    return tmp_path


def by_rep(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["rep"]: r for r in body["reps"]}


def test_fairness_reports_what_the_operator_decided(home: Path) -> None:
    body = answer(home, "routing", "fairness")
    assert (body["from"], body["to"]) == (None, None)
    assert body["span"]["from"] == "2026-03-02T09:00:00.000000Z"
    assert body["decisions"] == {"assign": 8, "queue": 2, "warn": 0, "breach": 0}
    reps = by_rep(body)
    # 2:1 smooth round robin: maria, jonas, maria, maria, jonas, maria; Tuesday's releases maria, jonas
    assert (reps["maria"]["assignments"], reps["jonas"]["assignments"]) == (5, 3)
    assert (reps["maria"]["share"], reps["jonas"]["share"]) == (0.625, 0.375)
    assert reps["maria"]["weight_share"] == pytest.approx(2 / 3)
    assert reps["maria"]["candidate_hours"] == reps["jonas"]["candidate_hours"]
    assert reps["maria"]["share_per_candidate_hour"] == pytest.approx(0.625)
    assert reps["maria"]["peak_open"] == 5
    assert body["rules"] == [{"rule": "everyone", "assignments": 8, "queued": 2, "released": 2,
                              "median_wait_s": 15 * 3600.0, "still_queued": 0, "left": 0}]
    assert [v["version"] for v in body["policy_versions"]] == [1]


def test_backtesting_the_same_policy_changes_no_owner_and_writes_nothing(home: Path) -> None:
    before = head(home)
    body = answer(home, "routing", "backtest", str(home / "same.toml"))
    assert body["changed_owner"] == {"changed": 0, "of": 8, "other_owner": 0, "only_by_candidate": 0,
                                     "not_by_candidate": 0}
    fair = by_rep(answer(home, "routing", "fairness"))
    for name, rep in by_rep(body).items():
        assert rep["assignments"] == rep["actual_assignments"] == fair[name]["assignments"]
        assert rep["peak_open"] == fair[name]["peak_open"]
    assert body["rules"][0]["median_wait_s"] == 15 * 3600.0
    # a window that starts after the first decisions continues from them
    later = answer(home, "routing", "backtest", str(home / "same.toml"), "--from", "2026-03-02T09:25:00Z")
    assert later["changed_owner"]["changed"] == 0
    assert later["changed_owner"]["of"] == 5
    assert head(home) == before


def test_backtesting_another_policy_reports_the_owners_it_would_change(home: Path) -> None:
    before = head(home)
    body = answer(home, "routing", "backtest", str(home / "other.toml"))
    assert body["policy"]["file"] == str(home / "other.toml")
    reps = by_rep(body)
    # equal weights: jonas (the smaller id on a tie), maria, … alternately
    assert (reps["maria"]["assignments"], reps["jonas"]["assignments"]) == (4, 4)
    assert (reps["maria"]["actual_assignments"], reps["jonas"]["actual_assignments"]) == (5, 3)
    assert reps["maria"]["weight_share"] == 0.5
    # in fact m j m m j m | m j, by the candidate j m j m j m | j m: five differ
    assert body["changed_owner"] == {"changed": 5, "of": 8, "other_owner": 5, "only_by_candidate": 0,
                                     "not_by_candidate": 0}
    assert head(home) == before
    app = bootstrap(sqlite_settings(home))
    try:
        assert verify(app.store).ok
    finally:
        app.store.close()


def test_the_tables(home: Path) -> None:
    fair = run_cli(home, "routing", "fairness")
    assert fair.exit_code == 0, fair.output
    assert "routing fairness" in fair.output and "maria" in fair.output and "candidate h" in fair.output
    back = run_cli(home, "routing", "backtest", str(home / "other.toml"), "--from", "2026-03-02", "--to",
                   "2026-03-04")
    assert back.exit_code == 0, back.output
    assert "changed owner: 5 of 8 leads" in back.output and "nothing was written" in back.output


def test_refusals(home: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    empty = tmp_path_factory.mktemp("empty")
    missing = run_cli(empty, "routing", "fairness")
    assert missing.exit_code == 2 and "no store at" in missing.output
    assert not (empty / "events.sqlite").exists()
    backwards = run_cli(home, "routing", "fairness", "--from", "2026-03-03", "--to", "2026-03-02", "--json")
    assert backwards.exit_code == 2 and "must be after --from" in backwards.output
    assert orjson.loads(backwards.stdout)["error"]
    (home / "bad.toml").write_text("[routing]\nrules = 3\n", encoding="utf-8")
    bad = run_cli(home, "routing", "backtest", str(home / "bad.toml"))
    assert bad.exit_code == 2 and "is not a valid policy" in bad.output
