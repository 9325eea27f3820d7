"""A hand-written scenario, ingested with `leadledger ingest` and queried through the CLI
(`--json`), against numbers computed by hand. Runs on SQLite and on PostgreSQL.

Days are counted from D0 = Monday 2026-03-02 00:00Z.

Ada (webinar/q1-cloud): captured D0 09:00, touch email D1, score 80, MQL D2 09:00,
  assigned ana D2 09:10, contacted D2 09:15 (300 s, still "within 5 minutes"), accepted D2 12:00,
  re-captured via referral D3 (a touch), SQL D4, touch event D5, WON 1000 EUR D9, recycled
  (upsell) D10, touch paid_search D11, score 90, MQL again D12, assigned ana D12 09:05 (never
  contacted), accepted D12 10:00, SQL D13, WON 500 EUR D14 -- and a webinar touch that
  happened D8 09:00 arrives last, in a second file (late and out of order).
Bob (social, no campaign): captured D0 10:00, score 75, MQL D1 11:00, assigned ben D1 12:00,
  reassigned to cat D1 12:10 (ben's assignment stays uncontacted), contacted D1 12:15:01
  (301 s), rejected D1 13:00 (recycled), MQL again D3 09:00 with no touch since (credited to
  his capture), disqualified D3 10:00.
Cy (webinar/q1-cloud): captured D1 09:00, nurtured D1 10:00.
Dee (event, no campaign): captured D2 09:00, disqualified D2 09:30.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from lifecycle.settings import Settings
from tests.support.env import TEST_SECRET

D0 = datetime(2026, 3, 2, tzinfo=UTC)
H = 3600.0
DAY = 86400.0
BANT = {"budget": "approved", "authority": "CTO", "need": "audit trail", "timeline": "Q2"}


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> str:
    return (D0 + timedelta(days=day, hours=hour, minutes=minute, seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Script:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def msg(self, kind_: str, when: str, **data: Any) -> None:
        self.lines.append(orjson.dumps({"specversion": "1.0", "id": f"m{len(self.lines) + 1:03d}-{id(self)}",
                                        "source": "scenario", "type": f"leadledger.inbound.{kind_}.v1",
                                        "time": when, "data": data}))

    def fire(self, email: str, trigger: str, when: str, **data: Any) -> None:
        self.msg("transition", when, email=email, trigger=trigger, **data)


def scenario() -> tuple[list[bytes], list[bytes]]:
    s = Script()
    a, b, c, d = "ada@example.com", "bob@example.com", "cy@example.com", "dee@example.com"
    s.msg("capture", at(0, 9), email=a, channel="webinar", campaign="q1-cloud", name="Ada")
    s.msg("capture", at(0, 10), email=b, channel="social", name="Bob")
    s.msg("score", at(0, 11), email=b, total=75)
    s.msg("touch", at(1, 9), email=a, channel="email", campaign="nurture-tour", kind="email_open")
    s.msg("capture", at(1, 9), email=c, channel="webinar", campaign="q1-cloud")
    s.msg("score", at(1, 10), email=a, total=80)
    s.fire(c, "nurture", at(1, 10))
    s.fire(b, "qualify_mql", at(1, 11))
    s.msg("assign", at(1, 12), email=b, owner="ben")
    s.msg("assign", at(1, 12, 10), email=b, owner="cat")
    s.msg("contact", at(1, 12, 15, 1), email=b)
    s.fire(b, "reject", at(1, 13), reason="not ready")
    s.fire(a, "qualify_mql", at(2, 9))
    s.msg("capture", at(2, 9), email=d, channel="event")
    s.msg("assign", at(2, 9, 10), email=a, owner="ana")
    s.msg("contact", at(2, 9, 15), email=a)
    s.fire(d, "disqualify", at(2, 9, 30), reason="spam")
    s.fire(a, "accept", at(2, 12))
    s.msg("capture", at(3, 9), email=a, channel="referral", campaign="partner-program")  # a touch
    s.fire(b, "qualify_mql", at(3, 9))
    s.fire(b, "disqualify", at(3, 10), reason="not a fit")
    s.fire(a, "qualify_sql", at(4, 9), bant=BANT)
    s.msg("touch", at(5, 9), email=a, channel="event", campaign="customer-summit")
    s.fire(a, "win", at(9, 9), amount=1000, currency="EUR")
    s.fire(a, "recycle", at(10, 9), reason="upsell")
    s.msg("touch", at(11, 9), email=a, channel="paid_search", campaign="brand-search")
    s.msg("score", at(11, 10), email=a, total=90)
    s.fire(a, "qualify_mql", at(12, 9))
    s.msg("assign", at(12, 9, 5), email=a, owner="ana")
    s.fire(a, "accept", at(12, 10))
    s.fire(a, "qualify_sql", at(13, 9), bant=BANT)
    s.fire(a, "win", at(14, 9), amount=500, currency="EUR")
    first = s.lines
    late = Script()
    late.msg("touch", at(8, 9), email=a, channel="webinar", campaign="roi-deep-dive")
    return first, late.lines


@pytest.fixture
def ledger(backend_settings: Settings, tmp_path: Path) -> tuple[Settings, datetime]:
    first, late = scenario()
    (tmp_path / "first.jsonl").write_bytes(b"\n".join(first) + b"\n")
    (tmp_path / "late.jsonl").write_bytes(b"\n".join(late) + b"\n")
    s = backend_settings
    tally = orjson.loads(cli(s, "ingest", str(tmp_path / "first.jsonl"), "--json"))
    assert {k: tally[k] for k in ("applied", "duplicates", "dead_lettered")} == {
        "applied": len(first), "duplicates": 0, "dead_lettered": 0}
    time.sleep(0.01)
    known = datetime.now(UTC)
    time.sleep(0.01)
    cli(s, "ingest", str(tmp_path / "late.jsonl"))
    return s, known


def cli(s: Settings, *args: str, code: int = 0) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env.update(LEADLEDGER_HOME=str(s.home), LEADLEDGER_SECRET=TEST_SECRET.decode())
    if s.postgres_dsn:
        env.update(LEADLEDGER_POSTGRES_DSN=s.postgres_dsn, LEADLEDGER_POSTGRES_SCHEMA=s.postgres_schema)
    done = subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env, capture_output=True, timeout=120)
    assert done.returncode == code, done.stderr.decode()
    return done.stdout if code == 0 else done.stderr


def ask(s: Settings, *args: str) -> Any:
    return orjson.loads(cli(s, *args, "--json"))


def stages(**counts: int) -> dict[str, int]:
    names = ("captured", "nurtured", "mql", "sal", "sql", "won", "recycled", "lost", "disqualified")
    return {n: counts.get(n, 0) for n in names}


def stat(count: int, mean: float | None = None, p50: float | None = None, p90: float | None = None) -> dict[str, Any]:
    return {"count": count, "mean_s": mean, "p50_s": p50, "p90_s": p90}


def credits(result: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    return {g["key"]: (round(g["conversions"], 9), None if g["revenue"] is None else round(g["revenue"], 6))
            for g in result["groups"]}


def test_scenario(ledger: tuple[Settings, datetime]) -> None:
    s, known = ledger

    # ---- funnel
    f = ask(s, "funnel")
    assert f["groups"] == [{"key": None, "stages": stages(captured=4, nurtured=1, mql=2, sal=1, sql=1, won=1,
                                                            recycled=2, disqualified=2),
                            "conversion": {"captured->mql": 0.5, "mql->sal": 0.5, "sal->sql": 1.0,
                                           "sql->won": 1.0}}]
    assert (f["mode"], f["by"], f["from"], f["to"], f["as_of"]) == ("cohort", None, None, None, None)
    by = {g["key"]: g["stages"] for g in ask(s, "funnel", "--by", "channel")["groups"]}
    assert by == {"event": stages(captured=1, disqualified=1),
                  "social": stages(captured=1, mql=1, recycled=1, disqualified=1),
                  "webinar": stages(captured=2, nurtured=1, mql=1, sal=1, sql=1, won=1, recycled=1)}
    assert [g["key"] for g in ask(s, "funnel", "--by", "campaign")["groups"]] == ["(none)", "q1-cloud"]
    cohort = ask(s, "funnel", "--from", "2026-03-03", "--to", "2026-03-04T00:00:00Z")["groups"][0]
    assert cohort["stages"] == stages(captured=1, nurtured=1)  # Cy only
    period = ask(s, "funnel", "--mode", "period", "--from", "2026-03-03", "--to", "2026-03-05")["groups"][0]
    assert period["stages"] == stages(captured=2, nurtured=1, mql=2, sal=1, recycled=1, disqualified=1)
    late = ask(s, "funnel", "--mode", "period", "--from", "2026-03-14", "--to", "2026-03-17")["groups"][0]
    assert late["stages"] == stages(mql=1, sal=1, sql=1, won=1)  # Ada's second cycle: distinct leads
    assert late["conversion"] == {"captured->mql": None, "mql->sal": 1.0, "sal->sql": 1.0, "sql->won": 1.0}
    before_win = ask(s, "funnel", "--as-of", at(9, 8))
    assert before_win["as_of"] == "2026-03-11T08:00:00.000000Z"
    assert before_win["groups"][0]["stages"] == stages(captured=4, nurtured=1, mql=2, sal=1, sql=1, recycled=1,
                                                       disqualified=2)

    # ---- velocity
    v = ask(s, "velocity")["groups"][0]
    assert v["time_in_stage"] == {
        "captured": stat(4, 67050.0, 3600.0, 172800.0),
        "nurtured": stat(0),
        "mql": stat(4, 6300.0, 3600.0, 10800.0),
        "sal": stat(2, 122400.0, 82800.0, 162000.0),
        "sql": stat(2, 259200.0, 86400.0, 432000.0),
        "won": stat(1, 86400.0, 86400.0, 86400.0),
        "recycled": stat(2, 165600.0, 158400.0, 172800.0),
        "lost": stat(0),
        "disqualified": stat(0),
    }
    assert v["time_to_stage"] == {"mql": stat(2, 131400.0, 90000.0, 172800.0),
                                  "sal": stat(1, 183600.0, 183600.0, 183600.0),
                                  "sql": stat(1, 345600.0, 345600.0, 345600.0),
                                  "won": stat(1, 777600.0, 777600.0, 777600.0)}

    # ---- attribution of won deals (the late D8 webinar touch is in the first deal's window)
    won = {m: credits(ask(s, "attribution", "--by", "channel", "--model", m))
           for m in ("first", "last", "linear", "u_shaped", "time_decay")}
    assert won["linear"] == {"webinar": (0.4, 400.0), "email": (0.2, 200.0), "referral": (0.2, 200.0),
                             "event": (0.2, 200.0), "paid_search": (1.0, 500.0)}
    assert won["first"] == {"webinar": (1.0, 1000.0), "email": (0.0, 0.0), "referral": (0.0, 0.0),
                            "event": (0.0, 0.0), "paid_search": (1.0, 500.0)}
    assert won["last"] == won["first"]  # the late webinar touch is the first deal's last touch
    assert won["u_shaped"] == {"webinar": (0.8, 800.0), "email": (round(0.2 / 3, 9), round(200 / 3, 6)),
                               "referral": (round(0.2 / 3, 9), round(200 / 3, 6)),
                               "event": (round(0.2 / 3, 9), round(200 / 3, 6)), "paid_search": (1.0, 500.0)}
    raw = {d: 2 ** (-d / 7) for d in (9, 8, 6, 4, 1)}  # days between touch and the D9 win
    total = sum(raw.values())
    webinar = (raw[9] + raw[1]) / total
    assert won["time_decay"] == {
        "webinar": (round(webinar, 9), round(1000 * webinar, 6)),
        "email": (round(raw[8] / total, 9), round(1000 * raw[8] / total, 6)),
        "referral": (round(raw[6] / total, 9), round(1000 * raw[6] / total, 6)),
        "event": (round(raw[4] / total, 9), round(1000 * raw[4] / total, 6)),
        "paid_search": (1.0, 500.0)}
    mql = credits(ask(s, "attribution", "--by", "channel", "--conversion", "mql"))
    assert mql == {"webinar": (0.75, None), "email": (0.5, None), "referral": (0.25, None), "event": (0.25, None),
                   "paid_search": (0.25, None), "social": (2.0, None)}
    by_campaign = credits(ask(s, "attribution", "--by", "campaign", "--conversion", "mql"))
    assert by_campaign["(none)"] == (2.0, None)  # Bob's two MQLs, the second with no touch in its window
    sql = credits(ask(s, "attribution", "--conversion", "sql", "--model", "linear"))
    assert sql == {None: (2.0, None)}
    # known at the time between the two files: the late touch is not known yet
    before = credits(ask(s, "attribution", "--by", "channel", "--known-at", known.isoformat()))
    assert before == {"webinar": (0.25, 250.0), "email": (0.25, 250.0), "referral": (0.25, 250.0),
                      "event": (0.25, 250.0), "paid_search": (1.0, 500.0)}
    first_deal_only = credits(ask(s, "attribution", "--by", "channel", "--as-of", at(9, 9)))
    assert first_deal_only == {"webinar": (0.4, 400.0), "email": (0.2, 200.0), "referral": (0.2, 200.0),
                               "event": (0.2, 200.0)}

    # ---- speed to lead
    sp = {g["key"]: g for g in ask(s, "speed", "--by", "owner")["groups"]}

    def delay(n: int, p50: float | None = None, p90: float | None = None) -> dict[str, object]:
        return {"count": n, "p50_s": p50, "p90_s": p90}

    # system delay (no policy published): capture -> the lead's first assignment, Ada 2 d 10 min,
    # Bob 26 h; Bob's reassignment to cat and Ada's assignment after her recycle are no wait
    assert sp == {
        "ana": {"key": "ana", "assignments": 2, "contacted": 1, "within_5m": 1, "p50_s": 300.0, "p90_s": 300.0,
                "system_delay": delay(1, 173400.0, 173400.0), "human_delay": delay(1, 300.0, 300.0)},
        "ben": {"key": "ben", "assignments": 1, "contacted": 0, "within_5m": 0, "p50_s": None, "p90_s": None,
                "system_delay": delay(1, 93600.0, 93600.0), "human_delay": delay(0)},
        "cat": {"key": "cat", "assignments": 1, "contacted": 1, "within_5m": 0, "p50_s": 301.0, "p90_s": 301.0,
                "system_delay": delay(0), "human_delay": delay(1, 301.0, 301.0)},
    }
    assert ask(s, "speed")["groups"] == [{"key": None, "assignments": 4, "contacted": 2, "within_5m": 1,
                                          "p50_s": 300.0, "p90_s": 301.0,
                                          "system_delay": delay(2, 93600.0, 173400.0),
                                          "human_delay": delay(2, 300.0, 301.0)}]

    # ---- lead list
    ls = ask(s, "leads")["leads"]
    assert [(x["stage"], x["owner"], x["score"], x["channel"], x["campaign"]) for x in ls] == [
        ("disqualified", None, None, "event", None), ("nurtured", None, None, "webinar", "q1-cloud"),
        ("disqualified", None, 75, "social", None), ("won", "ana", 90, "webinar", "q1-cloud")]
    assert ls[3]["captured_at"] == "2026-03-02T09:00:00.000000Z"
    assert ls[3]["last_change_at"] == "2026-03-16T09:00:00.000000Z"
    assert [x["channel"] for x in ask(s, "leads", "--channel", "webinar")["leads"]] == ["webinar", "webinar"]
    assert [x["stage"] for x in ask(s, "leads", "--owner", "ana")["leads"]] == ["won"]
    assert [x["stage"] for x in ask(s, "leads", "--limit", "2")["leads"]] == ["disqualified", "nurtured"]
    then = ask(s, "leads", "--as-of", at(9, 8), "--stage", "sql")
    assert [(x["owner"], x["score"], x["last_change_at"]) for x in then["leads"]] == [
        ("ana", 80, "2026-03-06T09:00:00.000000Z")]

    # ---- history comes from the store, through the same service
    lead_id = ls[3]["lead_id"]
    from leadledger.bootstrap import open_analytics

    analytics = open_analytics(s)
    try:
        from uuid import UUID

        h = analytics.history(UUID(lead_id), datetime(2026, 3, 11, 8, tzinfo=UTC), None)
        assert h is not None and h["stage"] == "sql"
    finally:
        analytics.close()


def test_trends_and_comparisons_by_hand(ledger: tuple[Settings, datetime]) -> None:
    """ISO weeks of the scenario: W10 = Mar 2-8 (D0-D6), W11 = Mar 9-15, W12 = Mar 16-22."""
    s, _ = ledger
    trend = ask(s, "funnel", "--mode", "period", "--interval", "week", "--from", "2026-03-02", "--to", "2026-03-23")
    assert trend["interval"] == "week"
    got = {iv["label"]: (iv["from"][:10], iv["to"][:10], iv["groups"][0]["stages"]) for iv in trend["intervals"]}
    assert got == {
        # Bob entered mql twice (D1, D3): one distinct lead; Ada's first cycle to sql
        "2026-W10": ("2026-03-02", "2026-03-09", stages(captured=4, nurtured=1, mql=2, sal=1, sql=1, recycled=1,
                                                        disqualified=2)),
        # Ada won (D9), was recycled (D10) and went mql -> sal -> sql again (D12, D13)
        "2026-W11": ("2026-03-09", "2026-03-16", stages(mql=1, sal=1, sql=1, won=1, recycled=1)),
        # her second win (D14): counted again, her previous win is before this week
        "2026-W12": ("2026-03-16", "2026-03-23", stages(won=1)),
    }
    assert trend["groups"][0]["stages"] == ask(s, "funnel", "--mode", "period", "--from", "2026-03-02",
                                               "--to", "2026-03-23")["groups"][0]["stages"]
    # cohort, no window: from the first capture's week to the last's; everyone was captured in W10
    cohort = ask(s, "funnel", "--interval", "month")
    assert [(iv["label"], iv["from"], iv["to"]) for iv in cohort["intervals"]] == [
        ("2026-03", "2026-03-01T00:00:00.000000Z", "2026-04-01T00:00:00.000000Z")]
    assert cohort["intervals"][0]["groups"] == cohort["groups"]

    # W11 compared with the week before it: both windows and W11 minus W10
    c = ask(s, "funnel", "--mode", "period", "--from", "2026-03-09", "--to", "2026-03-16", "--compare-to", "previous")
    assert (c["compare"]["from"], c["compare"]["to"]) == ("2026-03-02T00:00:00.000000Z", "2026-03-09T00:00:00.000000Z")
    assert c["compare"]["groups"][0]["stages"] == got["2026-W10"][2]
    assert c["groups"][0]["stages"] == got["2026-W11"][2]
    assert c["difference"]["groups"] == [{
        "key": None, "stages": stages(captured=-4, nurtured=-1, mql=-1, won=1, disqualified=-2),
        # W11: mql->sal 1/1, sal->sql 1/1, sql->won 1/1; W10: 1/2, 1/1, 0/1 (captured->mql: none captured in W11)
        "conversion": {"captured->mql": None, "mql->sal": 0.5, "sal->sql": 0.0, "sql->won": 1.0}}]
    explicit = ask(s, "funnel", "--mode", "period", "--from", "2026-03-09", "--to", "2026-03-16", "--compare-to",
                   "2026-03-02..2026-03-09")
    assert explicit == c
    # speed: Ada's and Bob's assignments were all in W10 (D1, D2), Ada's second in W11 (D12)
    sp = ask(s, "speed", "--mode", "period", "--from", "2026-03-09", "--to", "2026-03-16", "--compare-to", "previous")
    assert [g["assignments"] for g in sp["groups"]] == [1]
    assert [g["assignments"] for g in sp["compare"]["groups"]] == [3]
    assert sp["difference"]["groups"][0]["assignments"] == -2
    # W11's assignment was never contacted; in W10 Bob's to cat and Ada's were (ben's was not)
    assert (sp["groups"][0]["contacted"], sp["compare"]["groups"][0]["contacted"]) == (0, 2)
    assert sp["difference"]["groups"][0]["contacted"] == -2


def test_bad_parameters_exit_2_with_a_message(ledger: tuple[Settings, datetime]) -> None:
    s, _ = ledger
    err = cli(s, "funnel", "--from", "2026-03-05", "--to", "2026-03-01", code=2)
    assert b"--from" in err and b"before --to" in err
    assert b"--stage" in cli(s, "leads", "--stage", "hot", code=2)
    assert b"--limit" in cli(s, "leads", "--limit", "0", code=2)
    cli(s, "attribution", "--model", "w_shaped", code=2)
    # human tables by default
    out = cli(s, "funnel", "--by", "channel").decode()
    assert "webinar" in out and "captured" in out
    assert "ana" in cli(s, "speed", "--by", "owner").decode()
    assert "replayed" in cli(s, "replay").decode()
    assert "replayed" in cli(s, "replay", "--projection", "funnel").decode()
    assert ask(s, "funnel")["groups"][0]["stages"]["captured"] == 4
