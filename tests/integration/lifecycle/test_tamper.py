"""Tamper evidence: hand edits of the SQLite store are caught by `verify`, naming the lead and version."""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from click.testing import CliRunner
from conftest import TEST_SECRET, sqlite_settings

from leadledger.bootstrap import bootstrap
from leadledger.cli import cli
from lifecycle.audit import verify
from lifecycle.domain import commands as cmd
from lifecycle.privacy import Secrets
from tests.support.cli import T0, runner_env

SECRETS = Secrets.from_secret(TEST_SECRET)
BANT = {"budget": "50k", "authority": "VP", "need": "yes", "timeline": "Q2"}


def _walk(email: str, steps: int) -> list[dict[str, Any]]:
    """Commands (as kwargs) taking one lead through `steps` events after its capture."""
    plan: list[dict[str, Any]] = [
        {"kind": "score", "total": 88},
        {"kind": "touch", "channel": "email"},
        {"kind": "transition", "trigger": "qualify_mql"},
        {"kind": "assign", "owner": "olivia"},
        {"kind": "transition", "trigger": "accept"},
        {"kind": "transition", "trigger": "qualify_sql", "bant": BANT},
        {"kind": "transition", "trigger": "win", "amount": 900.0, "currency": "EUR"},
        {"kind": "transition", "trigger": "recycle", "reason": "upsell"},
    ]
    return [{"email": email, **step} for step in plan[:steps]]


#: lead e-mail -> number of events it ends with (capture + steps)
LEADS = {f"lead{i}@tamper.test": 1 + steps for i, steps in enumerate([8, 5, 3, 8, 2, 6])}
LEAD_IDS = {email: SECRETS.lead_id_for_email(email) for email in LEADS}


def _command(step: dict[str, Any], minute: int) -> cmd.LeadCommand:
    common: dict[str, Any] = {"occurred_at": T0 + timedelta(minutes=minute), "actor": "t", "message_key": None}
    ref = cmd.LeadRef(email=step["email"])
    kind = step["kind"]
    if kind == "score":
        return cmd.Score(**common, lead=ref, total=step["total"])
    if kind == "touch":
        return cmd.Touch(**common, lead=ref, channel=step["channel"])
    if kind == "assign":
        return cmd.Assign(**common, lead=ref, owner=step["owner"])
    extra = {k: v for k, v in step.items() if k not in ("email", "kind")}
    return cmd.Transition(**common, lead=ref, **extra)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with several leads, their events interleaved; closed so the files are at rest."""
    home = tmp_path_factory.mktemp("tamper-template")
    app = bootstrap(sqlite_settings(home))
    try:
        minute = 0
        for email in LEADS:
            assert app.execute(cmd.Capture(occurred_at=T0, actor="t", message_key=None, email=email,
                                           channel="webinar", name="Some One")).status == "applied"
        walks = [_walk(email, n - 1) for email, n in LEADS.items()]
        for round_ in range(max(len(w) for w in walks)):
            for walk in walks:
                if round_ < len(walk):
                    minute += 1
                    outcome = app.execute(_command(walk[round_], minute))
                    assert outcome.status == "applied", outcome.error
        report = verify(app.store)
        assert report.ok and report.events == sum(LEADS.values())
    finally:
        app.store.close()
    return home


def fresh_copy(template: Path, dest: Path) -> Path:
    home = dest / "home"
    shutil.copytree(template, home)
    return home


def sql(home: Path, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(home / "events.sqlite")
    try:
        rows = conn.execute(statement, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def state(home: Path, lead: UUID, version: int) -> bytes:
    (row,) = sql(home, "SELECT state FROM stored_events WHERE originator_id = ? AND originator_version = ?",
                 (lead.hex, version))
    return bytes(row[0])


def set_state(home: Path, lead: UUID, version: int, value: bytes) -> None:
    sql(home, "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
        (value, lead.hex, version))


def _cases() -> list[Any]:
    rng = random.Random(20260302)
    emails = list(LEADS)
    cases = []
    for i in range(12):
        email = rng.choice(emails)
        cases.append(pytest.param("edit", email, rng.randint(1, LEADS[email]), rng.random(), id=f"edit-{i}"))
    for i in range(7):
        email = rng.choice(emails)
        cases.append(pytest.param("delete", email, rng.randint(1, LEADS[email] - 1), 0.0, id=f"delete-{i}"))
    for i in range(7):
        email = rng.choice(emails)
        a, b = sorted(rng.sample(range(1, LEADS[email] + 1), 2))
        cases.append(pytest.param("swap", email, a, b / 100, id=f"swap-{i}"))
    return cases


@pytest.mark.parametrize(("kind", "email", "version", "detail"), _cases())
def test_verify_names_the_tampered_lead_and_version_and_passes_the_others(
    template: Path, tmp_path: Path, kind: str, email: str, version: int, detail: float
) -> None:
    home = fresh_copy(template, tmp_path)
    lead = LEAD_IDS[email]
    if kind == "edit":
        original = state(home, lead, version)
        pos = int(detail * len(original))
        edited = bytearray(original)
        edited[pos] = (edited[pos] + 1 + int(detail * 1000) % 254) % 256
        assert bytes(edited) != original
        set_state(home, lead, version, bytes(edited))
        expected_version = version
    elif kind == "delete":
        sql(home, "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?",
            (lead.hex, version))
        expected_version = version
    else:
        other = round(detail * 100)
        first, second = state(home, lead, version), state(home, lead, other)
        set_state(home, lead, version, second)
        set_state(home, lead, other, first)
        expected_version = version

    app = bootstrap(sqlite_settings(home))
    try:
        report = verify(app.store)
        assert not report.ok
        assert [(p.lead_id, p.version) for p in report.problems or []] == [(lead, expected_version)]
        assert str(lead) in str(report.problems[0]) and f"version {expected_version}" in str(report.problems[0])
        single = verify(app.store, lead)
        assert not single.ok and single.problems and single.problems[0].version == expected_version
        for other_email, other_id in LEAD_IDS.items():
            if other_email != email:
                assert verify(app.store, other_id).ok, f"untouched {other_email} failed"
    finally:
        app.store.close()


def test_the_template_itself_verifies(template: Path, tmp_path: Path) -> None:
    home = fresh_copy(template, tmp_path)
    app = bootstrap(sqlite_settings(home))
    try:
        report = verify(app.store)
        assert report.ok and report.leads == len(LEADS) and report.events == sum(LEADS.values())
    finally:
        app.store.close()


def test_a_consistent_forgery_of_one_event_still_breaks_the_chain(template: Path, tmp_path: Path) -> None:
    """Re-hashing an edited event is not enough: the next event links to the original hash."""
    import orjson

    from schemas.codec import canonical, content_hash

    home = fresh_copy(template, tmp_path)
    email = "lead0@tamper.test"
    lead = LEAD_IDS[email]
    envelope = orjson.loads(state(home, lead, 8))  # LeadWon
    assert envelope["data"]["to_stage"] == "won"
    envelope["data"]["amount"] = 9_000_000.0
    del envelope["hash"]
    envelope["hash"] = content_hash(envelope)
    set_state(home, lead, 8, canonical(envelope))

    app = bootstrap(sqlite_settings(home))
    try:
        report = verify(app.store)
        assert [(p.lead_id, p.version) for p in report.problems or []] == [(lead, 9)]
    finally:
        app.store.close()


@pytest.mark.parametrize("email", ["lead0@tamper.test", "lead4@tamper.test"])
def test_dropping_the_last_event_of_a_lead_is_detected(template: Path, tmp_path: Path, email: str) -> None:
    home = fresh_copy(template, tmp_path)
    lead = LEAD_IDS[email]
    sql(home, "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?",
        (lead.hex, LEADS[email]))
    app = bootstrap(sqlite_settings(home))
    try:
        assert app.store.records(lead)[-1].version == LEADS[email] - 1  # the event is really gone
        assert not verify(app.store).ok
    finally:
        app.store.close()


def test_dropping_the_last_event_changes_the_published_root(template: Path, tmp_path: Path) -> None:
    home = fresh_copy(template, tmp_path)
    app = bootstrap(sqlite_settings(home))
    try:
        published = verify(app.store).root
    finally:
        app.store.close()
    assert published
    lead = LEAD_IDS["lead2@tamper.test"]
    sql(home, "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?",
        (lead.hex, LEADS["lead2@tamper.test"]))
    app = bootstrap(sqlite_settings(home))
    try:
        assert verify(app.store).root != published
    finally:
        app.store.close()


def test_dropping_the_last_events_written_by_inbound_messages_is_detected(tmp_path: Path) -> None:
    app = bootstrap(sqlite_settings(tmp_path))
    email = "keyed@tamper.test"
    try:
        for i, step in enumerate([{"kind": "capture"}, *_walk(email, 4)]):
            key = ("crm", f"msg-{i}")
            if step["kind"] == "capture":
                command: cmd.LeadCommand = cmd.Capture(occurred_at=T0, actor="crm", message_key=key,
                                                       email=email, channel="events")
            else:
                command = replace(_command(step, i), message_key=key)
            assert app.execute(command).status == "applied"
        other = app.execute(cmd.Capture(occurred_at=T0, actor="t", message_key=("crm", "other"),
                                        email="other@tamper.test", channel="ads")).lead_id
    finally:
        app.store.close()
    lead = SECRETS.lead_id_for_email(email)
    sql(tmp_path, "DELETE FROM stored_events WHERE originator_id = ? "
        "AND originator_version >= 4", (lead.hex,))

    app = bootstrap(sqlite_settings(tmp_path))
    try:
        report = verify(app.store)
        assert [(p.lead_id, p.version) for p in report.problems or []] == [(lead, 4)]
        assert not verify(app.store, lead).ok
        assert other is not None and verify(app.store, other).ok
    finally:
        app.store.close()


# ---------------------------------------------------------------- through the CLI


def run_cli(home: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=runner_env(home))


def test_cli_verify_exits_non_zero_naming_the_edited_lead(template: Path, tmp_path: Path) -> None:
    home = fresh_copy(template, tmp_path)
    email = "lead1@tamper.test"
    lead = LEAD_IDS[email]
    edited = state(home, lead, 3).replace(b'"channel":"email"', b'"channel":"phone"')
    assert edited != state(home, lead, 3)
    set_state(home, lead, 3, edited)

    everything = run_cli(home, "verify")
    assert everything.exit_code != 0
    assert str(lead) in everything.output and "version 3" in everything.output

    tampered = run_cli(home, "verify", email)
    assert tampered.exit_code != 0 and str(lead) in tampered.output

    for other_email, other_id in LEAD_IDS.items():
        if other_email == email:
            continue
        untouched = run_cli(home, "verify", str(other_id))
        assert untouched.exit_code == 0, untouched.output
        assert f"{LEADS[other_email]} events of 1 leads" in untouched.output


def test_cli_verify_passes_an_untampered_store(template: Path, tmp_path: Path) -> None:
    home = fresh_copy(template, tmp_path)
    result = run_cli(home, "verify", "--json")
    assert result.exit_code == 0, result.output
    import orjson

    report = orjson.loads(result.stdout)
    assert (report["ok"], report["leads"], report["events"], report["problems"]) == (
        True, len(LEADS), sum(LEADS.values()), [])


@pytest.fixture(autouse=True)
def _no_leftover_wal(template: Path) -> Iterator[None]:
    # the template must be at rest (no -wal content) so each copy holds the whole store
    wal = template / "events.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    yield
