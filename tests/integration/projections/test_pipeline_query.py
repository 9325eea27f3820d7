"""The open pipeline on a hand-written scenario, ingested with `leadledger ingest` and asked through the
CLI (`--json`, the table, CSV), against numbers computed by hand. Runs on SQLite and on PostgreSQL.

Days are counted from D0 = Monday 2026-03-02 00:00Z. FX (reporting EUR): GBP 1.2 from 2026-03-01,
1.1 from 2026-03-10; no USD rate.

  lead  capture (campaign)   MQL          owner                      SAL       SQL (expected)            then
  ada   webinar (q1-cloud)   D0 11:00     ana D0 12:00, ben D5 09:00  D1 09:00  D2 09:00 EUR 10,000       -
                                          (the reassignment arrives in a second file: late)
  bob   social (-)           D1 10:00     cat D4 09:00               -         -                         -
  cy    webinar (q1-cloud)   D0 12:00     cat D0 13:00               D1 10:00  D3 09:00 GBP 5,000 (6,000)  won D7
  dee   event (-)            D0 14:00     ben D0 15:00               D1 11:00  D2 10:00 USD 3,000 (no rate)
                                                                                 recycled D5 10:00 (owner cleared), MQL D12
  eve   referral (-)         D1 12:00     ana D1 13:00               D2 11:00  D4 09:00 (no amount)      -
  fay   webinar (q1-cloud)   D8 09:00     dan D8 10:00               D9 09:00  D11 09:00 GBP 1,000 (1,100)
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

from leadledger.csvout import read
from lifecycle.settings import Settings
from tests.support.env import TEST_SECRET

D0 = datetime(2026, 3, 2, tzinfo=UTC)
BANT = {"budget": "approved", "authority": "CTO", "need": "audit trail", "timeline": "Q2"}
FX = """[fx]
GBP = [{ from = "2026-03-01", rate = 1.2 }, { from = "2026-03-10", rate = 1.1 }]
"""


def at(day: int, hour: int, minute: int = 0) -> str:
    return (D0 + timedelta(days=day, hours=hour, minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Script:
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.lines: list[bytes] = []

    def msg(self, kind_: str, when: str, **data: Any) -> None:
        self.lines.append(orjson.dumps({"specversion": "1.0", "id": f"{self.tag}-{len(self.lines) + 1:03d}",
                                        "source": "pipeline-scenario", "type": f"leadledger.inbound.{kind_}.v1",
                                        "time": when, "data": data}))

    def fire(self, email: str, trigger: str, when: str, **data: Any) -> None:
        self.msg("transition", when, email=email, trigger=trigger, **data)

    def to_sal(self, email: str, channel: str, campaign: str | None, day: int, mql: str, owner: str,
               assigned: str, accepted: str) -> None:
        """Capture at 08:00 of `day`, score 80, MQL, assign, accept."""
        self.msg("capture", at(day, 8), email=email, channel=channel, campaign=campaign)
        self.msg("score", at(day, 8, 30), email=email, total=80)
        self.fire(email, "qualify_mql", mql)
        self.msg("assign", assigned, email=email, owner=owner)
        self.fire(email, "accept", accepted)


def scenario() -> tuple[list[bytes], list[bytes]]:
    s = Script("first")
    ada, bob, cy, dee, eve, fay = (f"{n}@example.com" for n in ("ada", "bob", "cy", "dee", "eve", "fay"))
    s.to_sal(ada, "webinar", "q1-cloud", 0, at(0, 11), "ana", at(0, 12), at(1, 9))
    s.fire(ada, "qualify_sql", at(2, 9), bant=BANT, amount=10_000, currency="EUR")
    s.msg("capture", at(0, 9, 30), email=bob, channel="social")
    s.msg("score", at(0, 10), email=bob, total=85)
    s.fire(bob, "qualify_mql", at(1, 10))
    s.msg("assign", at(4, 9), email=bob, owner="cat")
    s.to_sal(cy, "webinar", "q1-cloud", 0, at(0, 12), "cat", at(0, 13), at(1, 10))
    s.fire(cy, "qualify_sql", at(3, 9), bant=BANT, amount=5_000, currency="gbp")
    s.fire(cy, "win", at(7, 9), amount=5_200, currency="GBP")
    s.to_sal(dee, "event", None, 0, at(0, 14), "ben", at(0, 15), at(1, 11))
    s.fire(dee, "qualify_sql", at(2, 10), bant=BANT, amount=3_000, currency="USD")
    s.fire(dee, "recycle", at(5, 10), reason="not now")
    s.fire(dee, "qualify_mql", at(12, 9))
    s.to_sal(eve, "referral", None, 1, at(1, 12), "ana", at(1, 13), at(2, 11))
    s.fire(eve, "qualify_sql", at(4, 9), bant=BANT)
    s.to_sal(fay, "webinar", "q1-cloud", 8, at(8, 9), "dan", at(8, 10), at(9, 9))
    s.fire(fay, "qualify_sql", at(11, 9), bant=BANT, amount=1_000, currency="GBP")
    late = Script("late")
    late.msg("assign", at(5, 9), email=ada, owner="ben")
    return s.lines, late.lines


def cli(s: Settings, fx: Path, *args: str) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env.update(LEADLEDGER_HOME=str(s.home), LEADLEDGER_SECRET=TEST_SECRET.decode(), LEADLEDGER_FX_FILE=str(fx))
    if s.postgres_dsn:
        env.update(LEADLEDGER_POSTGRES_DSN=s.postgres_dsn, LEADLEDGER_POSTGRES_SCHEMA=s.postgres_schema)
    done = subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


class Ledger:
    def __init__(self, settings: Settings, fx: Path, known: datetime) -> None:
        self.settings, self.fx, self.known = settings, fx, known

    def run(self, *args: str) -> bytes:
        return cli(self.settings, self.fx, *args)

    def ask(self, *args: str) -> Any:
        return orjson.loads(self.run("pipeline", *args, "--json"))


@pytest.fixture
def ledger(backend_settings: Settings, tmp_path: Path) -> Ledger:
    first, late = scenario()
    fx = tmp_path / "fx.toml"
    fx.write_text(FX)
    (tmp_path / "first.jsonl").write_bytes(b"\n".join(first) + b"\n")
    (tmp_path / "late.jsonl").write_bytes(b"\n".join(late) + b"\n")
    tally = orjson.loads(cli(backend_settings, fx, "ingest", str(tmp_path / "first.jsonl"), "--json"))
    assert {k: tally[k] for k in ("applied", "duplicates", "dead_lettered")} == {
        "applied": len(first), "duplicates": 0, "dead_lettered": 0}
    time.sleep(0.01)
    known = datetime.now(UTC)
    time.sleep(0.01)
    cli(backend_settings, fx, "ingest", str(tmp_path / "late.jsonl"))
    return Ledger(backend_settings, fx, known)


def figures(mql: int = 0, sal: int = 0, sql: int = 0, value: float = 0.0, with_amount: int = 0,
            without_amount: int = 0, unconverted: dict[str, float] | None = None) -> dict[str, Any]:
    return {"open": {"mql": mql, "sal": sal, "sql": sql}, "value": value, "with_amount": with_amount,
            "without_amount": without_amount, "unconverted": unconverted or {}}


def groups(answer: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    found = {g["key"]: {k: v for k, v in g.items() if k != "key"} for g in answer["groups"]}
    assert list(found) == [g["key"] for g in answer["groups"]]
    return found


def test_now_by_owner_excludes_the_won_deal_and_the_recycled_lead_is_unowned(ledger: Ledger) -> None:
    answer = ledger.ask()
    assert {k: answer[k] for k in ("as_of", "known_at", "by", "currency")} == {
        "as_of": None, "known_at": None, "by": "owner", "currency": "EUR"}
    # ada with ben (reassigned), bob with cat, cy won (closed), dee MQL again without an owner, eve's SQL
    # states no amount, fay's 1,000 GBP at the rate of D11 (1.1)
    assert groups(answer) == {
        "ana": figures(sql=1, without_amount=1),
        "ben": figures(sql=1, value=10_000.0, with_amount=1),
        "cat": figures(mql=1),
        "dan": figures(sql=1, value=1_100.0, with_amount=1),
        None: figures(mql=1),
    }
    assert [g["key"] for g in answer["groups"]] == ["ana", "ben", "cat", "dan", None]
    assert answer["total"] == figures(mql=2, sql=3, value=11_100.0, with_amount=2, without_amount=1)


def test_as_of_before_the_reassignment_win_and_recycle(ledger: Ledger) -> None:
    answer = ledger.ask("--as-of", at(3, 12))
    assert answer["as_of"] == "2026-03-05T12:00:00.000000Z"
    # ada still ana's; cy in sql (5,000 GBP at 1.2); dee ben's, in sql with USD (no rate); bob unowned
    assert groups(answer) == {
        "ana": figures(sal=1, sql=1, value=10_000.0, with_amount=1),
        "ben": figures(sql=1, with_amount=1, unconverted={"USD": 3_000.0}),
        "cat": figures(sql=1, value=6_000.0, with_amount=1),
        None: figures(mql=1),
    }
    assert answer["total"] == figures(mql=1, sal=1, sql=3, value=16_000.0, with_amount=3,
                                      unconverted={"USD": 3_000.0})


def test_as_of_the_instant_of_the_reassignment_counts_it(ledger: Ledger) -> None:
    answer = ledger.ask("--as-of", at(5, 9))
    # ada moves to ben at this very instant; dee is recycled only at 10:00
    assert groups(answer) == {
        "ana": figures(sql=1, without_amount=1),
        "ben": figures(sql=2, value=10_000.0, with_amount=2, unconverted={"USD": 3_000.0}),
        "cat": figures(mql=1, sql=1, value=6_000.0, with_amount=1),
    }


def test_as_of_after_the_recycle_and_before_the_win(ledger: Ledger) -> None:
    answer = ledger.ask("--as-of", at(6, 12))
    assert groups(answer) == {
        "ana": figures(sql=1, without_amount=1),
        "ben": figures(sql=1, value=10_000.0, with_amount=1),
        "cat": figures(mql=1, sql=1, value=6_000.0, with_amount=1),
    }
    assert answer["total"] == figures(mql=1, sql=3, value=16_000.0, with_amount=2, without_amount=1)


def test_known_at_before_the_late_reassignment_keeps_the_old_owner(ledger: Ledger) -> None:
    known = ledger.known.isoformat().replace("+00:00", "Z")
    answer = ledger.ask("--as-of", at(6, 12), "--known-at", known)
    assert answer["known_at"] is not None
    assert groups(answer) == {
        "ana": figures(sql=2, value=10_000.0, with_amount=1, without_amount=1),
        "cat": figures(mql=1, sql=1, value=6_000.0, with_amount=1),
    }
    everything = ledger.ask("--as-of", at(6, 12), "--known-at", "2099-01-01")
    assert groups(everything) == groups(ledger.ask("--as-of", at(6, 12)))


def test_by_channel_and_by_campaign(ledger: Ledger) -> None:
    assert groups(ledger.ask("--by", "channel", "--as-of", at(3, 12))) == {
        "event": figures(sql=1, with_amount=1, unconverted={"USD": 3_000.0}),
        "referral": figures(sal=1),
        "social": figures(mql=1),
        "webinar": figures(sql=2, value=16_000.0, with_amount=2),
    }
    assert groups(ledger.ask("--by", "campaign")) == {
        "(none)": figures(mql=2, sql=1, without_amount=1),
        "q1-cloud": figures(sql=2, value=11_100.0, with_amount=2),
    }


def test_before_anything_is_open_the_pipeline_is_empty(ledger: Ledger) -> None:
    answer = ledger.ask("--as-of", at(0, 10))
    assert answer["groups"] == []
    assert answer["total"] == figures()


def test_the_table_and_the_csv_say_the_same(ledger: Ledger) -> None:
    table = ledger.run("pipeline", "--as-of", at(3, 12)).decode()
    assert "open pipeline by owner" in table and "unowned" in table
    assert "16,000.00" in table and "USD 3,000.00" in table
    header, rows = read(ledger.run("pipeline", "--as-of", at(3, 12), "--format", "csv").decode())
    assert header == ["as_of", "known_at", "by", "currency", "section", "key", "figure", "value"]
    cat = {r["figure"]: r["value"] for r in rows if r["section"] == "groups" and r["key"] == "cat"}
    assert cat == {"open.mql": "0", "open.sal": "0", "open.sql": "1", "value": "6000.0", "with_amount": "1",
                   "without_amount": "0"}
    total = {r["figure"]: r["value"] for r in rows if r["section"] == "total"}
    assert total["value"] == "16000.0" and total["unconverted.USD"] == "3000.0"
