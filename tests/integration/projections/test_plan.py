"""`leadledger plan` against a hand-computed history, through the CLI, on SQLite and PostgreSQL.

Days count from D0 = Monday 2026-03-02 00:00Z; the plan is for 100,000 EUR in Q3 2026, from the leads
captured in the 30 days before the as-of time 2026-04-01 (so from D0).

paid (6 leads):
  P1 captured D0 09:00, mql D1, sal D2, sql D4, won D10 09:00 6,000 EUR  (sal stay 2 d, sql 6 d, to won 10 d)
  P2 captured D1 09:00, mql D2, sal D3, sql D7, won D21 09:00 4,000 EUR  (sal 4 d, sql 14 d, to won 20 d)
  P3 captured D2 09:00, mql D3, sal D4, sql D6, lost D10               (sal 2 d, sql 4 d)
  P4 captured D3 09:00, mql D4, sal D5, rejected D7                    (sal 2 d)
  P5 captured D4 09:00
  P6 captured D5 09:00, mql D6, sal D7, sql D9, won 2026-04-05 -- after the as-of time: not won
     (sal 2 d; its sql stay ends after the as-of time: not counted)
email (2 leads): E1 captured D0 10:00, mql D1; E2 captured D1 10:00 -- no wins
event (1 lead): V1 captured D2 11:00, mql D3, sal D4, sql D5, won D8 09:00 3,000 USD (sal 1 d, sql 3 d),
  and there is no USD rate
old: O1 captured 2026-02-20 (before the lookback window), won D8 9,999 EUR -- not in the history

paid: n = 6, won 2, reached mql 5, sal 5, sql 4; revenue per won (6000 + 4000) / 2 = 5,000 EUR; the only
converted revenue, so share 1 and target 100,000: deals ceil(100000 / 5000) = 20, leads ceil(20 * 6 / 2)
= 60; Wilson 80 % of 2/6 = [0.147702535, 0.590598693] -> leads ceil(20 / 0.5906) = 34 .. ceil(20 / 0.1477)
= 136; sql ceil(20 * 4 / 2) = 40, sal ceil(40 * 5 / 4) = 50, mql ceil(50 * 5 / 5) = 50; time to won p50
(rank 1 of 2) 10 d, p90 (rank 2) 20 d; capture by 2026-10-01 - 10 d = 2026-09-21.
Open time (all groups) = mean sal stay (2 + 4 + 2 + 2 + 2 + 1) / 6 = 13/6 d + mean sql stay (6 + 14 + 4 + 3) / 4
= 27/4 d = 8.916667 d.
Capacity (Q3 2026, Mon-Fri, 2026-08-31 a holiday: 65 working days; ana absent 2026-08-03..17, 10 of them):
each rep takes capacity * 92 d / open time * present share: ana 10 * 92 / 8.916667 * 55 / 65 = 87.304098,
ben 10 * 92 / 8.916667 = 103.177570; 190.481668 in all, 2.930487 a working day; 50 SALs need 0.769231 a day.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from lifecycle.settings import Settings
from tests.integration.projections.test_queries_scenario import BANT, Script, at, cli

DAY = 86_400.0

POLICY = """
[calendars.office]
timezone = "UTC"
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }
holidays = ["2026-08-31"]

[reps.ana]
calendar = "office"
capacity = CAP
absences = [{ from = "2026-08-03", to = "2026-08-17" }]

[reps.ben]
calendar = "office"
capacity = CAP
"""


def history() -> list[bytes]:
    s = Script()

    def cycle(email: str, day: int, *, sql: int | None = None, end: tuple[str, str, dict[str, Any]] | None = None,
              sal: int | None = None) -> None:
        s.msg("score", at(day + 1, 8), email=email, total=80)
        s.fire(email, "qualify_mql", at(day + 1, 9))
        if sal is None:
            return
        s.msg("assign", at(sal, 8), email=email, owner="ana")
        s.fire(email, "accept", at(sal, 9))
        if sql is not None:
            s.fire(email, "qualify_sql", at(sql, 9), bant=BANT)
        if end is not None:
            s.fire(email, end[0], end[1], **end[2])

    for i, day in enumerate(range(6)):
        s.msg("capture", at(day, 9), email=f"p{i + 1}@example.com", channel="paid")
    s.msg("capture", at(0, 10), email="e1@example.com", channel="email")
    s.msg("capture", at(1, 10), email="e2@example.com", channel="email")
    s.msg("capture", at(2, 11), email="v1@example.com", channel="event")
    s.msg("capture", "2026-02-20T09:00:00Z", email="o1@example.com", channel="paid")
    cycle("p1@example.com", 0, sal=2, sql=4, end=("win", at(10, 9), {"amount": 6000, "currency": "EUR"}))
    cycle("p2@example.com", 1, sal=3, sql=7, end=("win", at(21, 9), {"amount": 4000, "currency": "EUR"}))
    cycle("p3@example.com", 2, sal=4, sql=6, end=("lose", at(10, 9), {"reason": "budget"}))
    cycle("p4@example.com", 3, sal=5, end=("reject", at(7, 9), {"reason": "not ready"}))
    cycle("p6@example.com", 5, sal=7, sql=9, end=("win", "2026-04-05T09:00:00Z", {"amount": 1, "currency": "EUR"}))
    cycle("e1@example.com", 0)
    cycle("v1@example.com", 2, sal=4, sql=5, end=("win", at(8, 9), {"amount": 3000, "currency": "USD"}))
    cycle("o1@example.com", 0, sal=2, sql=3, end=("win", at(8, 10), {"amount": 9999, "currency": "EUR"}))
    return s.lines


@pytest.fixture
def ledger(backend_settings: Settings, tmp_path: Path) -> Settings:
    (tmp_path / "history.jsonl").write_bytes(b"\n".join(history()) + b"\n")
    tally = orjson.loads(cli(backend_settings, "ingest", str(tmp_path / "history.jsonl"), "--json"))
    assert tally["dead_lettered"] == 0, tally
    (tmp_path / "policy.toml").write_text(POLICY.replace("CAP", "10"))
    cli(backend_settings, "policy", "publish", str(tmp_path / "policy.toml"))
    return backend_settings


PLAN = ("plan", "--revenue", "100000", "--period", "2026-07-01..2026-10-01", "--lookback", "30d",
        "--as-of", "2026-04-01")


def ask(s: Settings, *args: str) -> Any:
    return orjson.loads(cli(s, *args, "--json"))


def test_plan_by_hand(ledger: Settings, tmp_path: Path) -> None:
    answer = ask(ledger, *PLAN, "--by", "channel")
    assert {k: answer[k] for k in ("revenue", "currency", "period_from", "period_to", "lookback", "history_from",
                                   "as_of", "by", "mix_given")} == {
        "revenue": 100000.0, "currency": "EUR", "period_from": "2026-07-01T00:00:00.000000Z",
        "period_to": "2026-10-01T00:00:00.000000Z", "lookback": "30d", "history_from": "2026-03-02T00:00:00.000000Z",
        "as_of": "2026-04-01T00:00:00.000000Z", "by": "channel", "mix_given": False}
    groups = {g["key"]: g for g in answer["groups"]}
    assert list(groups) == ["email", "event", "paid"]

    paid = groups["paid"]
    assert {k: paid[k] for k in ("captured", "won", "reached", "won_revenue", "revenue_per_won", "share", "target",
                                 "deals_needed", "leads_needed", "leads_needed_low", "leads_needed_high",
                                 "sql_needed", "sal_needed", "mql_needed", "time_to_won_p50_s", "time_to_won_p90_s",
                                 "capture_by", "why")} == {
        "captured": 6, "won": 2, "reached": {"mql": 5, "sal": 5, "sql": 4, "won": 2}, "won_revenue": 10000.0,
        "revenue_per_won": 5000.0, "share": 1.0, "target": 100000.0, "deals_needed": 20, "leads_needed": 60,
        "leads_needed_low": 34, "leads_needed_high": 136, "sql_needed": 40, "sal_needed": 50, "mql_needed": 50,
        "time_to_won_p50_s": 10 * DAY, "time_to_won_p90_s": 20 * DAY, "capture_by": "2026-09-21T00:00:00.000000Z",
        "why": None}
    assert paid["win_rate"] == pytest.approx(1 / 3)
    assert (paid["win_rate_low"], paid["win_rate_high"]) == pytest.approx((0.147702535, 0.590598693), abs=1e-9)
    assert paid["rates"] == {"mql->sal": 1.0, "sal->sql": 0.8, "sql->won": 0.5}

    email = groups["email"]  # no wins: nothing to plan from, and it says so
    assert (email["captured"], email["won"], email["win_rate"], email["win_rate_low"]) == (2, 0, 0.0, 0.0)
    assert email["leads_needed"] is None and email["deals_needed"] is None and email["capture_by"] is None
    assert "none of the 2 leads" in email["why"] and "won" in email["why"]

    event = groups["event"]  # won, but only in a currency without a rate
    assert (event["won"], event["revenue_per_won"], event["share"], event["leads_needed"]) == (1, None, 0.0, None)
    assert "FX rate" in event["why"]
    assert answer["unconverted"] == {"USD": 3000.0}

    assert answer["total"] == {"deals_needed": 20, "leads_needed": 60, "leads_needed_low": 34,
                               "leads_needed_high": 136, "mql_needed": 50, "sal_needed": 50, "sql_needed": 40,
                               "target_planned": 100000.0, "target_unplanned": 0.0, "groups_unplanned": 2}

    c = answer["capacity"]
    assert (c["policy_version"], c["sal_needed"], c["working_days"]) == (1, 50, 65)
    assert c["open_days"] == pytest.approx(13 / 6 + 27 / 4)
    assert [(r["rep"], r["capacity"], r["working_days"], r["present_days"]) for r in answer["reps"]] == [
        ("ana", 10, 65, 55), ("ben", 10, 65, 65)]
    assert [r["takes"] for r in answer["reps"]] == pytest.approx([87.304097771, 103.177570093])
    assert c["sal_capacity"] == pytest.approx(190.481667865)
    assert c["sal_per_working_day"] == pytest.approx(50 / 65)
    assert c["sal_capacity_per_working_day"] == pytest.approx(190.481667865 / 65)
    assert (c["fits"], c["why"]) == (True, None)

    table = cli(ledger, *PLAN, "--by", "channel").decode()  # the human table says the same
    assert "60 (34–136)" in table and "2026-09-21" in table and "fits (26.2 % used)" in table
    assert "email: not planned, none of the 2 leads" in table and "no USD rate" in table

    (tmp_path / "small.toml").write_text(POLICY.replace("CAP", "2"))  # a draft policy: a fifth of the capacity
    small = ask(ledger, *PLAN, "--by", "channel", "--policy", str(tmp_path / "small.toml"))["capacity"]
    assert small["policy_version"] is None and small["fits"] is False
    assert small["sal_capacity"] == pytest.approx(190.481667865 / 5)
    assert small["utilization"] == pytest.approx(50 / (190.481667865 / 5))


def test_plan_one_group_and_a_mix(ledger: Settings) -> None:
    whole = ask(ledger, *PLAN)["groups"]
    assert len(whole) == 1 and whole[0]["key"] is None
    # all 9 leads of the window, 3 won (P1, P2, V1): 6,000 + 4,000 EUR converted over the 2 converted won leads
    assert (whole[0]["captured"], whole[0]["won"], whole[0]["revenue_per_won"]) == (9, 3, 5000.0)
    assert (whole[0]["deals_needed"], whole[0]["leads_needed"]) == (20, 60)  # ceil(20 * 9 / 3)

    mixed = ask(ledger, *PLAN, "--by", "channel", "--mix", "paid=0.5,email=0.5")
    assert mixed["mix_given"] is True
    groups = {g["key"]: g for g in mixed["groups"]}
    assert (groups["paid"]["share"], groups["paid"]["target"], groups["paid"]["deals_needed"],
            groups["paid"]["leads_needed"]) == (0.5, 50000.0, 10, 30)
    assert groups["email"]["target"] == 50000.0 and groups["email"]["leads_needed"] is None
    assert groups["event"]["share"] == 0.0
    assert mixed["total"]["target_unplanned"] == 50000.0 and mixed["total"]["deals_needed"] == 10


def test_refused_plans_say_what_is_wrong(ledger: Settings) -> None:
    bad = cli(ledger, *PLAN, "--by", "channel", "--mix", "paid=0.6,email=0.5", code=2).decode()
    assert "--mix shares must sum to 1, they sum to 1.1" in bad
    assert "--by" in cli(ledger, *PLAN, "--mix", "paid=1", code=2).decode()
    assert "positive" in cli(ledger, "plan", "--revenue", "-5", "--period", "2026-07-01..2026-10-01",
                             code=2).decode()
    assert "--lookback" in cli(ledger, *PLAN[:-4], "--lookback", "six months", code=2).decode()
    assert "FROM..TO" in cli(ledger, "plan", "--revenue", "5", "--period", "2026-07-01", code=2).decode()
    assert "before" in cli(ledger, "plan", "--revenue", "5", "--period", "2026-10-01..2026-07-01",
                           code=2).decode()
