"""SLA breach alerts to a real local webhook, from a real SQLite store: at least once through
failures, a crash and restarts, de-duplicated by id; permanent refusals dead-lettered."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
from click.testing import CliRunner

from consumers.alerts import (
    ALERT_TYPE,
    DEAD_LETTER_FILE,
    AlertDispatcher,
    AlertSettings,
    WebhookSink,
    retry_after_seconds,
)
from leadledger.bootstrap import bootstrap
from leadledger.cli import cli
from lifecycle.application import LeadLedger
from lifecycle.domain import commands as cmd
from lifecycle.policies import PolicyStream
from lifecycle.settings import SettingsError
from lifecycle.store.repository import Changes
from tests.support.cli import T0, runner_env
from tests.support.env import sqlite_settings

POLICY = """
[calendars.x]
timezone = "Europe/Berlin"
hours = { mon = "08:00-18:00", tue = "08:00-18:00", wed = "08:00-18:00", thu = "08:00-18:00", fri = "08:00-18:00" }
[reps.a]
calendar = "x"

[[sla]]
id = "first-contact"
start = "assigned"
stop = ["contacted"]
target = "5m"
clock = "calendar"
on_breach = ["alert"]

[[sla]]
id = "quiet"
start = "assigned"
stop = ["contacted"]
target = "1h"
clock = "calendar"
on_breach = ["reassign"]
"""
# version 2: first-contact no longer alerts (breaches naming version 1 still do)
POLICY_V2 = POLICY.replace('on_breach = ["alert"]', 'on_breach = ["reassign"]')
ALERT_DATA_KEYS = {"lead_id", "sla", "started_at", "deadline", "owner", "policy_version", "breached_at"}


# ---------------------------------------------------------------- a receiver


@dataclass
class Receiver:
    """A webhook on 127.0.0.1: answers the scripted (status, headers, body) in turn, then `default`."""

    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    default: int = 200
    #: every request as (headers, lower-case names; body; the status it was answered with)
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            status, extra, text = self.script.pop(0) if self.script else (self.default, {}, b"")
            self.requests.append((headers, body, status))
            return status, extra, text

    def accepted(self) -> list[dict[str, Any]]:
        """The bodies answered with a 2xx, in order (duplicates included)."""
        return [orjson.loads(body) for _, body, status in self.requests if 200 <= status < 300]

    def unique_ids(self) -> set[str]:
        """What a receiver de-duplicating by id keeps."""
        return {event["id"] for event in self.accepted()}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, headers, text = state.answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/alerts?token=s3cret"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fails(count: int, status: int = 500, **headers: str) -> list[tuple[int, dict[str, str], bytes]]:
    return [(status, dict(headers), b"try later")] * count


# ---------------------------------------------------------------- a store with breaches


@pytest.fixture
def app(tmp_path: Path) -> Iterator[LeadLedger]:
    ledger = bootstrap(sqlite_settings(tmp_path))
    yield ledger
    ledger.store.close()


def capture(app: LeadLedger, n: int) -> UUID:
    outcome = app.execute(cmd.Capture(T0, "test", None, email=f"person{n}@alerts.test", channel="webinar",
                                      name=f"Person Number{n}"))
    assert outcome.lead_id is not None
    lead_id = UUID(str(outcome.lead_id))
    app.execute(cmd.Assign(T0 + timedelta(minutes=1), "test", None, lead=cmd.LeadRef(lead_id=lead_id), owner="a"))
    return lead_id


def breach(app: LeadLedger, lead_id: UUID, sla: str = "first-contact", policy_version: int = 1) -> str:
    """Record a LeadSLABreached on the lead; its event id."""
    loaded = app.store.load(lead_id)
    assert loaded is not None
    started = T0 + timedelta(minutes=1)
    deadline = started + timedelta(minutes=5)
    loaded.lead.sla_timer(breached=True, sla=sla, started_at=started, deadline=deadline, owner="a",
                          policy_version=policy_version, occurred_at=deadline)
    app.store.commit(Changes(leads=[loaded]))
    return app.store.records(lead_id)[-1].event_id


def breaches(app: LeadLedger, leads: int, quiet: int = 0) -> list[str]:
    """`leads` alerting breaches (and `quiet` breaches of the rule without `alert`), version 1 published."""
    PolicyStream(app.store).publish(POLICY, actor="test", now=T0)
    ids = [breach(app, capture(app, i)) for i in range(leads)]
    for i in range(quiet):
        breach(app, capture(app, 100 + i), sla="quiet")
    return ids


def sink(receiver: Receiver, home: Path, **options: Any) -> WebhookSink:
    settings: dict[str, Any] = {"attempts": 5, "backoff_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0}
    settings.update(options)
    return WebhookSink(receiver.url, dead_letters=home / DEAD_LETTER_FILE, **settings)


# ---------------------------------------------------------------- tests


def test_every_alert_arrives_through_failures_and_retries(app: LeadLedger, receiver: Receiver,
                                                          tmp_path: Path) -> None:
    ids = breaches(app, leads=4, quiet=2)
    receiver.script = [*fails(2), (429, {"Retry-After": "0"}, b""), *fails(1, 503)]
    dispatcher = AlertDispatcher(app.store, [sink(receiver, tmp_path)])

    counts = dispatcher.run_once()["webhook"]
    assert (counts.sent, counts.failed, counts.pending, counts.dead_lettered) == (4, 0, 0, 0)
    assert counts.position == app.store.head_position()
    assert app.store.relay_position("alerts:webhook") == app.store.head_position()
    assert len(receiver.requests) == 4 + 4  # 4 refusals on the first, then one each
    assert receiver.unique_ids() == set(ids)
    assert [e["id"] for e in receiver.accepted()] == ids  # in log order

    for headers, body, _ in receiver.requests:
        event = orjson.loads(body)
        assert headers["idempotency-key"] == event["id"]
        assert headers["content-type"] == "application/cloudevents+json"
        assert headers["user-agent"].startswith("leadledger/")
        assert b"@alerts.test" not in body and b"Person" not in body  # no personal data
    event = receiver.accepted()[0]
    lead_id = event["subject"]
    record = next(r for r in app.store.records(UUID(lead_id)) if r.name == "LeadSLABreached")
    assert {k: v for k, v in event.items() if k != "data"} == {
        "specversion": "1.0", "id": record.event_id, "source": "leadledger", "type": ALERT_TYPE,
        "subject": lead_id, "time": "2026-03-02T09:06:00.000000Z", "datacontenttype": "application/json",
    }
    assert event["data"] == {
        "lead_id": lead_id, "sla": "first-contact", "started_at": "2026-03-02T09:01:00.000000Z",
        "deadline": "2026-03-02T09:06:00.000000Z", "owner": "a", "policy_version": 1,
        "breached_at": "2026-03-02T09:06:00.000000Z",
    }
    assert set(event["data"]) == ALERT_DATA_KEYS

    # Caught up: nothing again. A new breach: only it.
    assert dispatcher.run_once()["webhook"].sent == 0
    new = breach(app, capture(app, 50))
    assert dispatcher.run_once()["webhook"].sent == 1
    assert [e["id"] for e in receiver.accepted()] == [*ids, new]


def test_a_failing_receiver_keeps_the_position_and_attempts_are_bounded_per_run(
    app: LeadLedger, receiver: Receiver, tmp_path: Path
) -> None:
    ids = breaches(app, leads=3)
    receiver.default = 500
    dispatcher = AlertDispatcher(app.store, [sink(receiver, tmp_path, attempts=3)])
    counts = dispatcher.run_once()["webhook"]
    assert (counts.sent, counts.failed, counts.pending) == (0, 1, 3)
    assert "HTTP 500" in (counts.error or "") and "s3cret" not in (counts.error or "")
    assert len(receiver.requests) == 3  # three attempts at the first alert, then the run ends
    assert app.store.relay_position("alerts:webhook") < app.store.head_position()

    receiver.default = 200
    counts = dispatcher.run_once()["webhook"]
    assert (counts.sent, counts.failed, counts.pending) == (3, 0, 0)
    assert receiver.unique_ids() == set(ids)
    assert len(receiver.accepted()) == 3


def test_a_retry_after_longer_than_a_run_waits_is_respected_by_the_next_run(
    app: LeadLedger, receiver: Receiver, tmp_path: Path
) -> None:
    breaches(app, leads=2)
    receiver.script = fails(1, 503, **{"Retry-After": "3600"})
    webhook = sink(receiver, tmp_path)
    dispatcher = AlertDispatcher(app.store, [webhook])
    counts = dispatcher.run_once()["webhook"]
    assert (counts.sent, counts.failed, counts.pending) == (0, 1, 2)
    assert len(receiver.requests) == 1  # asked to come back in an hour: not tried again now
    assert not webhook.ready()
    counts = dispatcher.run_once()["webhook"]
    assert len(receiver.requests) == 1 and counts.pending == 2 and "Retry-After" in (counts.error or "")
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds("soon") is None


def test_a_crash_before_the_position_is_stored_resends_only_what_was_not_recorded(
    app: LeadLedger, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = breaches(app, leads=4)
    store = app.store
    original = store.set_relay_position
    calls = {"n": 0}

    def crash_on_second(name: str, position: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("crash: the process dies after the POST, before the position")
        original(name, position)

    monkeypatch.setattr(store, "set_relay_position", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        AlertDispatcher(store, [sink(receiver, tmp_path)]).run_once()
    assert [e["id"] for e in receiver.accepted()] == ids[:2]
    monkeypatch.setattr(store, "set_relay_position", original)

    # The restarted dispatcher re-sends the one alert whose delivery was not recorded, then the rest.
    restarted = AlertDispatcher(store, [sink(receiver, tmp_path)])
    assert restarted.run_once()["webhook"].sent == 3
    seen = Counter(e["id"] for e in receiver.accepted())
    assert {i for i, n in seen.items() if n > 1} == {ids[1]}
    assert receiver.unique_ids() == set(ids)
    # Twice in a row, nothing reset: nothing is sent again.
    assert restarted.run_once()["webhook"].sent == 0
    assert len(receiver.accepted()) == 5


def test_a_permanent_refusal_is_dead_lettered_with_its_reason_and_the_rest_go_on(
    app: LeadLedger, receiver: Receiver, tmp_path: Path
) -> None:
    ids = breaches(app, leads=3)
    receiver.script = [(400, {}, b'{"error": "bad payload"}'), *fails(1, 408)]
    counts = AlertDispatcher(app.store, [sink(receiver, tmp_path)]).run_once()["webhook"]
    assert (counts.sent, counts.dead_lettered, counts.failed, counts.pending) == (2, 1, 0, 0)
    assert counts.position == app.store.head_position()
    assert len(receiver.requests) == 4  # the 400 once (not retried), the 408 retried
    lines = (tmp_path / DEAD_LETTER_FILE).read_bytes().splitlines()
    assert len(lines) == 1
    dead = orjson.loads(lines[0])
    assert dead["alert"]["id"] == ids[0] and dead["status"] == 400 and dead["sink"] == "webhook"
    assert dead["reason"].startswith("HTTP 400") and "bad payload" in dead["reason"]
    assert dead["alert"]["type"] == ALERT_TYPE and "dead_lettered_at" in dead
    assert {e["id"] for e in receiver.accepted()} == set(ids[1:])


def test_rules_without_alert_produce_nothing_and_the_version_named_decides(
    app: LeadLedger, receiver: Receiver, tmp_path: Path
) -> None:
    breaches(app, leads=0, quiet=3)
    dispatcher = AlertDispatcher(app.store, [sink(receiver, tmp_path)])
    counts = dispatcher.run_once()["webhook"]
    assert (counts.sent, counts.pending) == (0, 0) and receiver.requests == []
    assert app.store.relay_position("alerts:webhook") == app.store.head_position()

    # Version 2 drops `alert` from first-contact: a breach under v1 alerts, one under v2 does not.
    PolicyStream(app.store).publish(POLICY_V2, actor="test", now=T0 + timedelta(hours=1))
    under_v1 = breach(app, capture(app, 1), policy_version=1)
    breach(app, capture(app, 2), policy_version=2)
    assert dispatcher.run_once()["webhook"].sent == 1
    assert receiver.unique_ids() == {under_v1}


def test_one_failing_sink_does_not_hold_back_the_other(app: LeadLedger, receiver: Receiver,
                                                       tmp_path: Path) -> None:
    ids = breaches(app, leads=3)
    down = WebhookSink("http://127.0.0.1:9/nothing-listens", dead_letters=tmp_path / DEAD_LETTER_FILE,
                       name="backup", attempts=2, backoff_s=0.01, timeout_s=1.0)
    dispatcher = AlertDispatcher(app.store, [down, sink(receiver, tmp_path)])
    counts = dispatcher.run_once()
    assert (counts["backup"].sent, counts["backup"].failed, counts["backup"].pending) == (0, 1, 3)
    assert "request failed" in (counts["backup"].error or "")
    assert (counts["webhook"].sent, counts["webhook"].pending) == (3, 0)
    assert receiver.unique_ids() == set(ids)
    assert app.store.relay_position("alerts:backup") < app.store.head_position()
    assert not (tmp_path / DEAD_LETTER_FILE).exists()  # a down receiver is not a refusal


def test_run_forever_delivers_new_breaches_until_stopped(app: LeadLedger, receiver: Receiver,
                                                         tmp_path: Path) -> None:
    ids = breaches(app, leads=2)
    dispatcher = AlertDispatcher(app.store, [sink(receiver, tmp_path)])
    stop = threading.Event()
    # The SQLite store is used from this thread only: the loop runs here, a timer stops it.
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    try:
        totals = dispatcher.run_forever(stop, interval=0.05)
    finally:
        timer.cancel()
    assert totals["webhook"].sent == 2 and receiver.unique_ids() == set(ids)


def test_settings_from_the_environment() -> None:
    settings = AlertSettings.from_env({"LEADLEDGER_ALERT_WEBHOOK": "https://hooks.example/x?token=t",
                                       "LEADLEDGER_ALERT_RETRIES": "7"})
    assert settings.webhook == "https://hooks.example/x?token=t" and settings.retries == 7
    assert "token" not in repr(settings)
    assert AlertSettings.from_env({}).webhook is None
    with pytest.raises(SettingsError, match="LEADLEDGER_ALERT_RETRIES"):
        AlertSettings.from_env({"LEADLEDGER_ALERT_RETRIES": "0"})
    with pytest.raises(SettingsError, match="LEADLEDGER_ALERT_WEBHOOK"):
        AlertSettings.from_env({"LEADLEDGER_ALERT_WEBHOOK": "ftp://x"})


def test_the_cli_delivers_once_and_says_what_is_left(app: LeadLedger, receiver: Receiver, tmp_path: Path) -> None:
    ids = breaches(app, leads=2)
    env = {**runner_env(tmp_path), "LEADLEDGER_ALERT_WEBHOOK": receiver.url, "LEADLEDGER_ALERT_BACKOFF": "0.01",
           "LEADLEDGER_ALERT_RETRIES": "2"}
    runner = CliRunner()

    receiver.default = 503
    failed = runner.invoke(cli, ["alerts", "--once", "--json"], env=env)
    assert failed.exit_code == 1, failed.output
    report = orjson.loads(failed.stdout)["sinks"]["webhook"]
    assert (report["sent"], report["failed"], report["pending"]) == (0, 1, 2)

    receiver.default = 200
    done = runner.invoke(cli, ["alerts", "--once", "--json"], env=env)
    assert done.exit_code == 0, done.output
    report = orjson.loads(done.stdout)["sinks"]["webhook"]
    assert (report["sent"], report["failed"], report["pending"]) == (2, 0, 0)
    assert receiver.unique_ids() == set(ids)

    nowhere = runner.invoke(cli, ["alerts", "--once"], env=runner_env(tmp_path))
    assert nowhere.exit_code == 2 and "LEADLEDGER_ALERT_WEBHOOK" in nowhere.output
