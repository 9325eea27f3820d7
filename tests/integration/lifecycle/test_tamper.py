"""Tamper evidence: hand edits of the SQLite store are caught by `verify`, naming the lead and version."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from click.testing import CliRunner
from conftest import sqlite_settings

from leadledger.bootstrap import bootstrap
from leadledger.cli import cli
from lifecycle.audit import verify
from lifecycle.domain import commands as cmd
from tests.support.cli import T0, runner_env
from tests.support.store_file import sql

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
#: lead e-mail -> its (random) lead id, filled by the `template` fixture
LEAD_IDS: dict[str, UUID] = {}


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
            captured = app.execute(cmd.Capture(occurred_at=T0, actor="t", message_key=None, email=email,
                                               channel="webinar", name="Some One"))
            assert captured.status == "applied" and captured.lead_id is not None
            LEAD_IDS[email] = captured.lead_id
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
            outcome = app.execute(command)
            assert outcome.status == "applied"
            if i == 0:
                assert outcome.lead_id is not None
                lead = outcome.lead_id
        other = app.execute(cmd.Capture(occurred_at=T0, actor="t", message_key=("crm", "other"),
                                        email="other@tamper.test", channel="ads")).lead_id
    finally:
        app.store.close()
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


# ---------------------------------------------------------------- verify against an outside anchor


def _root(home: Path) -> str:
    result = run_cli(home, "verify", "--json")
    assert result.exit_code == 0, result.output
    import orjson

    return str(orjson.loads(result.stdout)["root"])


def _rewrite_chain(home: Path, lead: UUID, change: dict[str, Any]) -> None:
    """A consistent forgery: one event changed and every hash after it, and the head, recomputed."""
    import orjson

    from schemas.codec import canonical, content_hash

    rows = sql(home, "SELECT originator_version, state FROM stored_events WHERE originator_id = ? "
                     "ORDER BY originator_version", (lead.hex,))
    prev = "0" * 64
    for version, state in rows:
        envelope = orjson.loads(state)
        if version == 2:
            envelope["data"].update(change)
        envelope["prevhash"] = prev
        del envelope["hash"]
        envelope["hash"] = prev = content_hash(envelope)
        set_state(home, lead, version, canonical(envelope))
    sql(home, "UPDATE leadledger_heads SET hash = ? WHERE lead_id = ?", (prev, lead.hex))


def test_verify_expect_root_fails_when_the_root_differs(template: Path, tmp_path: Path) -> None:
    home = fresh_copy(template, tmp_path)
    published = _root(home)
    same = run_cli(home, "verify", "--expect-root", published.upper())
    assert same.exit_code == 0, same.output
    lead = LEAD_IDS["lead3@tamper.test"]
    _rewrite_chain(home, lead, {"total": 99})
    assert run_cli(home, "verify").exit_code == 0  # each chain, and its head, is consistent: only the root tells
    differs = run_cli(home, "verify", "--expect-root", published)
    assert differs.exit_code != 0
    assert published in differs.output and "not the expected" in differs.output, differs.output
    as_json = run_cli(home, "verify", "--json", "--expect-root", published)
    assert as_json.exit_code != 0
    bad = run_cli(home, "verify", "--expect-root", "not-a-digest")
    assert bad.exit_code == 2 and "64 hex digits" in bad.output


def test_verify_of_an_unknown_lead_fails(template: Path, tmp_path: Path) -> None:
    home = fresh_copy(template, tmp_path)
    for lead in ("nobody@tamper.test", str(UUID(int=12345))):
        result = run_cli(home, "verify", lead)
        assert result.exit_code != 0, result.output
        assert "unknown lead" in result.output and lead in result.output
    known = run_cli(home, "verify", "lead0@tamper.test")
    assert known.exit_code == 0, known.output


def _export(home: Path, path: Path, *extra: str) -> list[bytes]:
    result = run_cli(home, "export", "--output", str(path), *extra)
    assert result.exit_code == 0, result.output
    return path.read_bytes().splitlines()


def test_verify_file_checks_an_export_without_the_store(template: Path, tmp_path: Path) -> None:
    home = fresh_copy(template, tmp_path)
    root = _root(home)
    exported = tmp_path / "export.jsonl"
    lines = _export(home, exported)
    assert len(lines) == sum(LEADS.values())
    elsewhere = tmp_path / "elsewhere"  # no store there: the file is all it reads
    elsewhere.mkdir()
    ok = run_cli(elsewhere, "verify", "--file", str(exported), "--expect-root", root)
    assert ok.exit_code == 0, ok.output
    assert f"{len(lines)} events of {len(LEADS)} leads" in ok.output
    assert not (elsewhere / "events.sqlite").exists()

    import orjson

    lead = LEAD_IDS["lead1@tamper.test"]
    by_lead = [i for i, line in enumerate(lines) if orjson.loads(line)["subject"] == str(lead)]
    edited = list(lines)
    edited[by_lead[2]] = edited[by_lead[2]].replace(b'"channel":"email"', b'"channel":"phone"')
    assert edited != lines
    cases = {
        "edited": (edited, 3),
        "dropped": ([line for i, line in enumerate(lines) if i != by_lead[1]], 2),
        "reordered": ([*lines[:by_lead[1]], lines[by_lead[2]], lines[by_lead[1]], *lines[by_lead[2] + 1:]], 2),
    }
    for name, (content, version) in cases.items():
        bad = tmp_path / f"{name}.jsonl"
        bad.write_bytes(b"\n".join(content) + b"\n")
        result = run_cli(elsewhere, "verify", "--file", str(bad))
        assert result.exit_code != 0, (name, result.output)
        assert str(lead) in result.output and f"version {version}" in result.output, (name, result.output)

    # the latest event of a lead dropped: every chain in the file is whole, the root is not
    last = tmp_path / "last.jsonl"
    last.write_bytes(b"\n".join(line for i, line in enumerate(lines) if i != by_lead[-1]) + b"\n")
    assert run_cli(elsewhere, "verify", "--file", str(last)).exit_code == 0
    assert run_cli(elsewhere, "verify", "--file", str(last), "--expect-root", root).exit_code != 0

    opened = _export(home, tmp_path / "opened.jsonl", "--decrypt")
    assert opened
    result = run_cli(elsewhere, "verify", "--file", str(tmp_path / "opened.jsonl"))
    assert result.exit_code != 0 and "--decrypt" in result.output, result.output
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(lines[0] + b"\nnot json\n")
    result = run_cli(elsewhere, "verify", "--file", str(junk))
    assert result.exit_code != 0 and "line 2" in result.output and "Traceback" not in result.output
