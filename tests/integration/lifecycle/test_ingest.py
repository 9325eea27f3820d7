"""`leadledger ingest FILE`: applied, duplicates, dead letters (with line, reason and raw text), skipped blank lines."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from conftest import sqlite_settings

from leadledger.bootstrap import bootstrap
from leadledger.cli import cli
from lifecycle.audit import history, verify
from lifecycle.domain.commands import LeadRef
from tests.support.cli import runner_env

ADA = "ada@example.com"
BOB = "bob@example.com"
NEVER = uuid.UUID("00000000-0000-4000-8000-00000000abcd")


def msg(kind: str, id_: str, data: dict[str, Any], source: str = "web-forms", **extra: Any) -> str:
    return orjson.dumps({"specversion": "1.0", "id": id_, "source": source,
                         "type": f"leadledger.inbound.{kind}.v1", "time": "2026-03-02T09:15:00Z",
                         "data": data, **extra}).decode()


OVERSIZED = msg("capture", "big-1", {"email": "big@example.com", "channel": "web", "name": "x" * 70_000})

#: (line text, expected status, words the dead letter's reason must contain); "refused": dead-lettered
#: by the lifecycle (its key and outcome are remembered), "reused": its key was recorded before with
#: other content (dead-lettered, never a duplicate), "dead": not even a valid message
LINES: list[tuple[str, str, tuple[str, ...]]] = [
    (msg("capture", "form-1", {"email": "Ada@Example.com", "name": "Ada L.", "channel": "webinar",
                               "campaign": "q1-cloud", "consent": True}), "applied", ()),
    (msg("capture", "form-1", {"email": "Ada@Example.com", "name": "Ada L.", "channel": "webinar",
                               "campaign": "q1-cloud", "consent": True}), "duplicate", ()),
    (msg("capture", "form-1", {"email": "Ada@Example.com", "channel": "webinar"}), "reused",
     ("idempotency key reused with different content", "form-1")),
    (msg("capture", "form-2", {"email": "bob@example.com", "channel": "paid_search"}), "applied", ()),
    ("", "blank", ()),
    (msg("capture", "form-3", {"email": "ADA@EXAMPLE.COM", "channel": "events", "campaign": "expo"}),
     "applied", ()),
    (msg("score", "s-1", {"email": "ada@example.com", "total": 82, "fit": 40}, source="scoring"), "applied", ()),
    ("{this is not json", "dead", ("not JSON",)),
    ("[1, 2, 3]", "dead", ("not a JSON object",)),
    (msg("capture", "form-4", {"email": "carol@example.com"}), "dead", ("channel",)),
    (msg("teleport", "t-1", {"email": "ada@example.com"}), "dead", ("unknown kind", "teleport")),
    (msg("score", "s-2", {"email": "ada@example.com", "total": "high"}, source="scoring"), "dead",
     ("total",)),
    (OVERSIZED, "dead", ("oversized",)),
    (msg("touch", "t-0", {"channel": "email", "email": "ada@example.com"}, time="2026-03-02T09:15:00"),
     "dead", ("time",)),
    (msg("capture", "form-5", {"email": "not-an-email", "channel": "web"}), "dead", ("email",)),
    (msg("touch", "t-2", {"channel": "email"}, subject=str(NEVER)), "refused", ("unknown lead", str(NEVER))),
    (msg("touch", "t-3", {"channel": "email", "email": "nobody@example.com"}), "refused", ("unknown lead",)),
    (msg("transition", "tr-1", {"trigger": "accept", "email": BOB}, source="crm"), "refused",
     ("captured", "accept")),
    (msg("transition", "tr-2", {"trigger": "qualify_mql", "email": ADA}, source="crm"), "applied", ()),
    (msg("score", "s-1", {"email": "ada@example.com", "total": 10}, source="scoring"), "reused",
     ("idempotency key reused with different content",)),
    (msg("score", "s-1", {"email": "ada@example.com", "total": 82, "fit": 40}, source="scoring"), "duplicate", ()),
    ("   ", "blank", ()),
    (msg("assign", "a-1", {"owner": "olivia", "rule": "round-robin", "email": ADA}, source="crm"),
     "applied", ()),
]


def write_file(path: Path) -> Path:
    path.write_text("\n".join(line for line, _, _ in LINES) + "\n")
    return path


def ingest(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), "ingest", *args], env=runner_env(home))


def expected_counts() -> dict[str, int]:
    statuses = [status for _, status, _ in LINES]
    return {"applied": statuses.count("applied"), "duplicates": statuses.count("duplicate"),
            "dead_lettered": statuses.count("dead") + statuses.count("refused") + statuses.count("reused"),
            "skipped": statuses.count("blank")}


def dead_letters(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def event_names(home: Path) -> dict[str, list[str]]:
    """Each lead's event names, by its e-mail (lead ids are random)."""
    app = bootstrap(sqlite_settings(home))
    try:
        assert verify(app.store).ok
        by_email = {}
        for lead in app.store.lead_ids():
            shown = history(app.store, lead)
            assert shown is not None
            by_email[shown["events"][0]["data"]["email"]] = [r.name for r in app.store.records(lead)]
        return by_email
    finally:
        app.store.close()


def test_ingest_counts_applied_duplicates_and_dead_letters(tmp_path: Path) -> None:
    source = write_file(tmp_path / "inbound.jsonl")
    home = tmp_path / "home"

    result = ingest(home, str(source), "--json")

    assert result.exit_code == 0, result.output
    counts = orjson.loads(result.stdout)
    assert counts == expected_counts()
    lines = len(source.read_text().splitlines())
    assert counts["applied"] + counts["duplicates"] + counts["dead_lettered"] + counts["skipped"] == lines

    assert event_names(home) == {
        ADA: ["LeadCaptured", "LeadTouched", "LeadScored", "LeadQualifiedAsMQL", "LeadAssigned"],
        BOB: ["LeadCaptured"],
    }


def test_every_dead_letter_has_its_line_number_reason_and_raw_text(tmp_path: Path) -> None:
    source = write_file(tmp_path / "inbound.jsonl")
    result = ingest(tmp_path / "home", str(source))
    assert result.exit_code == 0, result.output

    letters = dead_letters(tmp_path / "inbound.jsonl.dead.jsonl")
    expected = [(number, line, words) for number, (line, status, words) in enumerate(LINES, start=1)
                if status in ("dead", "refused", "reused")]
    assert [letter["line"] for letter in letters] == [number for number, _, _ in expected]
    for letter, (number, line, words) in zip(letters, expected, strict=True):
        assert letter["raw"] == line, f"line {number}: raw text differs"
        for word in words:
            assert word.lower() in letter["reason"].lower(), f"line {number}: {letter['reason']!r} lacks {word!r}"
    counts = expected_counts()
    assert (f"applied {counts['applied']}, duplicates ignored {counts['duplicates']}, "
            f"dead-lettered {counts['dead_lettered']}") in result.output


def test_the_recapture_is_applied_as_a_touch_with_the_new_channel(tmp_path: Path) -> None:
    source = write_file(tmp_path / "inbound.jsonl")
    assert ingest(tmp_path / "home", str(source)).exit_code == 0
    app = bootstrap(sqlite_settings(tmp_path / "home"))
    try:
        result = history(app.store, app.lead_id_for(LeadRef(email=ADA)))
    finally:
        app.store.close()
    assert result is not None
    touched = result["events"][1]
    assert touched["type"].startswith("leadledger.lead.LeadTouched.")
    assert (touched["data"]["kind"], touched["data"]["channel"], touched["data"]["campaign"]) == (
        "recapture", "events", "expo")
    assert touched["causation"] == "web-forms/form-3"
    assert result["events"][0]["data"]["email"] == "ada@example.com"


def test_dead_letters_go_where_dead_letters_says(tmp_path: Path) -> None:
    source = write_file(tmp_path / "inbound.jsonl")
    elsewhere = tmp_path / "rejects" / "dead.jsonl"
    elsewhere.parent.mkdir()
    result = ingest(tmp_path / "home", str(source), "--dead-letters", str(elsewhere), "--json")
    assert result.exit_code == 0, result.output
    assert len(dead_letters(elsewhere)) == expected_counts()["dead_lettered"]
    assert not (tmp_path / "inbound.jsonl.dead.jsonl").exists()


def test_ingesting_the_same_file_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    source = write_file(tmp_path / "inbound.jsonl")
    home = tmp_path / "home"
    first = orjson.loads(ingest(home, str(source), "--json").stdout)
    after_first = event_names(home)

    second = ingest(home, str(source), "--json")
    assert second.exit_code == 0, second.output
    counts = orjson.loads(second.stdout)
    # the lifecycle's refusals were remembered too: repeats of them are duplicates now; only what
    # never was a valid message (no key to remember) is dead-lettered again
    refused = [status for _, status, _ in LINES].count("refused")
    assert counts == {"applied": 0, "duplicates": first["applied"] + first["duplicates"] + refused,
                      "dead_lettered": first["dead_lettered"] - refused, "skipped": first["skipped"]}
    assert event_names(home) == after_first


@pytest.mark.parametrize("batch_size", ["1", "3"])
def test_small_batches_give_the_same_result(tmp_path: Path, batch_size: str) -> None:
    source = write_file(tmp_path / "inbound.jsonl")
    home = tmp_path / "home"
    result = ingest(home, str(source), "--json", "--batch-size", batch_size)
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == expected_counts()
    assert event_names(home)[ADA] == ["LeadCaptured", "LeadTouched", "LeadScored", "LeadQualifiedAsMQL",
                                      "LeadAssigned"]
