"""Faults a person can cause, tried on purpose through the real `leadledger` command: each ends
as one or two lines on stderr naming what is wrong and what to do, and a non-zero exit; the
traceback only with --debug. Also: read-only commands refuse a folder without a store, upstream
text is shown literally, and the small promises of the CLI's output and flags.

Root ignores file modes, so the mode tests run the CLI without CAP_DAC_OVERRIDE (setpriv) when
the tests run as root; where that is impossible they skip and say why."""

from __future__ import annotations

import base64
import errno
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import eventsourcing.persistence as es
import orjson
import pytest
from click.testing import CliRunner

from leadledger.cli import cli
from lifecycle.store.repository import LeadStore
from projections.report.charts import fmt_duration
from tests.support.cli import SECRET_TEXT, cli_env

LEADLEDGER = shutil.which("leadledger") or str(Path(sys.executable).with_name("leadledger"))
NO_DAC = ["--bounding-set=-dac_override,-dac_read_search", "--"]


def run(home: Path, *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None,
        stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*(prefix or []), LEADLEDGER, *args], env=env or cli_env(home, COLUMNS="250"),
                          capture_output=True, timeout=120, input=stdin, cwd=cwd)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                       done.stderr.decode(errors="replace"))


def ok(home: Path, *args: str, **kw: Any) -> Any:
    done = run(home, *args, "--json", **kw)
    assert done.returncode == 0, f"leadledger {' '.join(args)}: {done.stderr}"
    return orjson.loads(done.stdout)


def assert_short_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Non-zero exit, no traceback, one or two lines on stderr starting with 'error:' holding `words`."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, done.stderr
    assert lines[-1].startswith("error: "), done.stderr
    for word in words:
        assert word.lower() in done.stderr.lower(), f"{word!r} not in {done.stderr!r}"
    return done.stderr


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("errors") / "home"
    done = run(home, "simulate", "--leads", "40", "--seed", "4", "--days", "20")
    assert done.returncode == 0, done.stderr
    assert run(home, "funnel").returncode == 0  # read models built
    return home


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(template, copy)
    return copy


@pytest.fixture(scope="module")
def unprivileged() -> list[str]:
    """A command prefix under which file modes apply (empty when not root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("runs as root, which ignores file modes, and setpriv (util-linux) is not installed to "
                    "drop CAP_DAC_OVERRIDE for the CLI")
    probe = Path(f"/tmp/leadledger-mode-probe-{uuid.uuid4().hex}")
    probe.write_text("x")
    probe.chmod(0)
    try:
        done = subprocess.run([setpriv, *NO_DAC, "cat", str(probe)], capture_output=True, timeout=30)
    finally:
        probe.unlink()
    if done.returncode == 0:
        pytest.skip("runs as root and setpriv could not drop CAP_DAC_OVERRIDE here: a mode-000 file stays readable")
    return [setpriv, *NO_DAC]


def restore_modes(path: Path) -> None:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        p.chmod(0o700 if p.is_dir() else 0o600)


# ---------------------------------------------------------------- the home folder


@pytest.mark.parametrize("args", [["funnel"], ["verify"], ["leads"], ["capture", "--email", "ro@x.io",
                                                                     "--channel", "web"]])
def test_a_read_only_home_is_one_line(home: Path, unprivileged: list[str], args: list[str]) -> None:
    for p in [*home.rglob("*"), home]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        assert_short_error(run(home, *args, prefix=unprivileged), str(home), "read-only")
    finally:
        restore_modes(home)


def test_a_home_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    assert_short_error(run(home, "capture", "--email", "f@x.io", "--channel", "web"), str(home), "is a file")
    inside = home / "sub"
    assert_short_error(run(inside, "capture", "--email", "f@x.io", "--channel", "web"), str(home), "is a file")


def test_a_home_inside_a_folder_nobody_may_enter_is_one_line(tmp_path: Path, unprivileged: list[str]) -> None:
    locked = tmp_path / "locked"
    (locked / "home").mkdir(parents=True)
    locked.chmod(0)
    try:
        for args in (["capture", "--email", "l@x.io", "--channel", "web"], ["leads"]):
            assert_short_error(run(locked / "home", *args, prefix=unprivileged), str(locked), "permission denied")
    finally:
        locked.chmod(0o700)


def test_an_unreadable_secret_file_is_one_line(tmp_path: Path, unprivileged: list[str]) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in cli_env(home).items() if k != "LEADLEDGER_SECRET"}
    created = run(home, "capture", "--email", "s@x.io", "--channel", "web", env=env)
    assert created.returncode == 0, created.stderr
    secret = home / "secret.key"
    secret.chmod(0)
    try:
        assert_short_error(run(home, "leads", env=env, prefix=unprivileged), str(secret))
    finally:
        secret.chmod(0o600)


def test_an_event_store_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "events.sqlite").mkdir(parents=True)
    assert_short_error(run(home, "leads"), "events.sqlite", "folder")
    assert_short_error(run(home, "capture", "--email", "d@x.io", "--channel", "web"), "events.sqlite", "folder")


@pytest.mark.parametrize("damage", ["truncated", "garbage header"])
@pytest.mark.parametrize("args", [["verify"], ["leads"], ["capture", "--email", "t@x.io", "--channel", "web"]])
def test_a_damaged_event_store_is_one_line(home: Path, damage: str, args: list[str]) -> None:
    store = home / "events.sqlite"
    for leftover in home.glob("events.sqlite-*"):
        leftover.unlink()
    if damage == "truncated":
        with store.open("r+b") as fh:
            fh.truncate(max(4096, store.stat().st_size // 3))
    else:
        data = bytearray(store.read_bytes())
        data[:100] = os.urandom(100)
        store.write_bytes(bytes(data))
    assert_short_error(run(home, *args), str(store), "backup")


def test_damaged_read_models_are_one_line_that_says_replay(home: Path) -> None:
    models = home / "readmodels.sqlite"
    for leftover in home.glob("readmodels.sqlite-*"):
        leftover.unlink()
    models.write_bytes(os.urandom(8192))
    assert_short_error(run(home, "funnel"), str(models), "replay")


def test_with_debug_the_traceback_is_shown(home: Path) -> None:
    (home / "readmodels.sqlite").write_bytes(os.urandom(8192))
    for leftover in home.glob("readmodels.sqlite-*"):
        leftover.unlink()
    done = run(home, "--debug", "funnel")
    assert done.returncode != 0 and "Traceback" in done.stderr


# ---------------------------------------------------------------- read-only commands and a missing store


@pytest.mark.parametrize("args", [["funnel"], ["velocity"], ["attribution"], ["speed"], ["leads"],
                                  ["history", "00000000-0000-4000-8000-000000000001"], ["verify"],
                                  ["export"], ["status"], ["report", "--html", "r.html"], ["serve", "--port", "0"],
                                  ["replay"]])
def test_read_only_commands_refuse_a_folder_without_a_store(tmp_path: Path, args: list[str]) -> None:
    home = tmp_path / "nothing-here"
    done = run(home, *args, cwd=tmp_path)
    assert_short_error(done, f"no store at {home}", "LEADLEDGER_HOME")
    assert not home.exists(), "a read-only command created a store"


def test_the_default_home_is_not_created_by_a_query(tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env(tmp_path).items() if k not in ("LEADLEDGER_HOME", "LEADLEDGER_SECRET")}
    done = subprocess.run([LEADLEDGER, "leads"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert_short_error(done, "no store at", ".leadledger")
    assert not (tmp_path / ".leadledger").exists()
    helped = subprocess.run([LEADLEDGER, "leads", "--help"], env=env, capture_output=True, text=True, cwd=tmp_path,
                            timeout=60)
    assert helped.returncode == 0 and "--stage" in helped.stdout  # help needs no store


# ---------------------------------------------------------------- paths the user gives


def test_export_into_a_missing_folder_is_one_line(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "dir" / "x.jsonl"
    assert_short_error(run(home, "export", "-o", str(target)), str(target.parent.parent), "does not exist")


def test_a_dead_letter_path_that_is_a_folder_is_refused_before_anything_is_applied(
        home: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(capture_line("dl-1", "dl@x.io") + "\nnot json\n")
    folder = tmp_path / "rejects"
    folder.mkdir()
    assert_short_error(run(home, "ingest", str(source), "--dead-letters", str(folder)), str(folder), "folder")
    assert ok(home, "leads", "--channel", "dl-test")["leads"] == []


# ---------------------------------------------------------------- databases


def test_an_unreachable_postgresql_is_one_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path, LEADLEDGER_POSTGRES_DSN="postgresql://postgres@127.0.0.1:1/test")
    assert_short_error(run(tmp_path, "funnel", env=env), "PostgreSQL", "127.0.0.1:1", "LEADLEDGER_POSTGRES_DSN")


def test_a_bad_schema_name_is_one_line(tmp_path: Path) -> None:
    dsn = os.environ.get("LEADLEDGER_POSTGRES_DSN") or "postgresql://postgres@127.0.0.1:5432/test"
    env = cli_env(tmp_path, LEADLEDGER_POSTGRES_DSN=dsn, LEADLEDGER_POSTGRES_SCHEMA="bad name;")
    done = run(tmp_path, "capture", "--email", "pg@x.io", "--channel", "web", env=env)
    assert_short_error(done, "LEADLEDGER_POSTGRES_SCHEMA", "bad name;")
    assert done.returncode == 2


def test_a_tampered_ciphertext_is_one_line(home: Path) -> None:
    conn = sqlite3.connect(home / "events.sqlite")
    try:
        originator, state = conn.execute(
            "SELECT originator_id, state FROM stored_events WHERE originator_version = 1 LIMIT 1").fetchone()
        envelope = orjson.loads(state)
        sealed = bytearray(base64.b64decode(envelope["data"]["personal"]))
        sealed[-1] ^= 0x01
        envelope["data"]["personal"] = base64.b64encode(bytes(sealed)).decode()
        conn.execute("UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = 1",
                     (orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS), originator))
        conn.commit()
    finally:
        conn.close()
    lead = str(uuid.UUID(originator if isinstance(originator, str) else bytes(originator).hex()))
    assert_short_error(run(home, "history", lead), "verify")


# ---------------------------------------------------------------- injected faults (in-process)


def _invoke(home: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env={
        "LEADLEDGER_SECRET": SECRET_TEXT, "LEADLEDGER_POSTGRES_DSN": "", "LEADLEDGER_DEBUG": ""})


@pytest.mark.parametrize(("fault", "words"), [
    (lambda: es.OperationalError("database or disk is full"), ("disk is full", "again")),
    (lambda: OSError(errno.ENOSPC, "No space left on device"), ("no space left", "again")),
    (lambda: es.OperationalError("database is locked"), ("locked", "again")),
])
def test_a_full_disk_or_a_locked_store_during_ingest_is_one_line(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: Any, words: tuple[str, ...]) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(capture_line("full-1", "full@x.io") + "\n")

    def failing_commit(self: LeadStore, *args: Any, **kwargs: Any) -> None:
        raise fault()

    monkeypatch.setattr(LeadStore, "commit", failing_commit)
    result = _invoke(home, "ingest", str(source))
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in result.stderr.lower()


def test_a_real_full_disk_during_ingest_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount a tiny tmpfs; the injected faults above cover the message")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(tiny)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the injected faults cover it")
    try:
        traffic = tmp_path / "traffic.jsonl"
        done = run(tmp_path / "gen", "simulate", "--leads", "400", "--seed", "9", "--out", str(traffic))
        assert done.returncode == 0, done.stderr
        assert_short_error(run(tiny / "home", "ingest", str(traffic)), "space", "again")
    finally:
        subprocess.run(["umount", "-l", str(tiny)], capture_output=True)


# ---------------------------------------------------------------- times and leads named by the user


def test_a_time_out_of_the_calendar_is_a_usage_error(home: Path) -> None:
    for value in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"):
        done = run(home, "funnel", "--as-of", value)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "--as-of" in done.stderr and "out of range" in done.stderr


def test_history_json_of_an_unknown_lead_is_a_json_error(home: Path) -> None:
    lead = "00000000-0000-4000-8000-00000000abcd"
    done = run(home, "history", lead, "--json")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    body = orjson.loads(done.stdout)
    assert "unknown lead" in body["error"] and body["lead_id"] == lead


def test_refused_json_names_the_lead(home: Path) -> None:
    lead = ok(home, "capture", "--email", "refused@x.io", "--channel", "web")["lead_id"]
    done = run(home, "transition", lead, "accept", "--json")
    assert done.returncode == 1
    body = orjson.loads(done.stdout)
    assert body["status"] == "refused" and body["lead_id"] == lead and lead in body["error"]


# ---------------------------------------------------------------- upstream text is literal


MARKUP = {"channel": "[/bold]", "campaign": "[emea] q2", "name": "[red]Ann[/red] :smile:"}


def test_upstream_text_is_shown_literally_in_every_table(home: Path) -> None:
    captured = ok(home, "capture", "--email", "markup@x.io", "--channel", MARKUP["channel"], "--campaign",
                  MARKUP["campaign"], "--name", MARKUP["name"])
    lead = captured["lead_id"]
    assert ok(home, "assign", lead, "--owner", "[i]olga")["status"] == "applied"
    expected = {
        ("history", lead): (MARKUP["channel"], MARKUP["campaign"], MARKUP["name"], "[i]olga"),
        ("leads",): (MARKUP["channel"], MARKUP["campaign"]),
        ("funnel", "--by", "channel"): (MARKUP["channel"],),
        ("funnel", "--by", "campaign"): (MARKUP["campaign"],),
        ("speed", "--by", "owner"): ("[i]olga",),
    }
    for args, texts in expected.items():
        done = run(home, *args)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
        for text in texts:
            assert text in done.stdout, (args, text)


# ---------------------------------------------------------------- what the output says


def test_json_answers_say_their_window_and_titles_their_known_at(home: Path) -> None:
    window = ["--mode", "period", "--from", "2026-01-05", "--to", "2026-02-01", "--as-of", "2026-03-01",
              "--known-at", "2099-01-01"]
    for name in ("funnel", "velocity", "attribution", "speed"):
        body = ok(home, name, *window)
        assert list(body)[:5] == ["mode", "from", "to", "as_of", "known_at"], name
        assert (body["mode"], body["from"], body["to"], body["known_at"]) == (
            "period", "2026-01-05T00:00:00.000000Z", "2026-02-01T00:00:00.000000Z",
            "2099-01-01T00:00:00.000000Z"), name
        table = run(home, name, *window).stdout
        assert "known at 2099-01-01" in table and "mode period" in table, name
    leads = ok(home, "leads", "--known-at", "2099-01-01")
    assert leads["known_at"] == "2099-01-01T00:00:00.000000Z"
    assert "known at 2099-01-01" in run(home, "leads", "--known-at", "2099-01-01").stdout


def _floats(value: Any, key: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(value, float):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _floats(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _floats(v, key)


def test_json_has_no_float_noise_and_durations_read_as_in_the_report(home: Path) -> None:
    velocity = ok(home, "velocity")
    seconds = [v for k, v in _floats(velocity) if k.endswith("_s")]
    assert seconds and all(round(v, 6) == v for v in seconds)
    table = run(home, "velocity").stdout
    stays = velocity["groups"][0]["time_in_stage"]
    shown = [fmt_duration(st["p50_s"]) for st in stays.values() if st["p50_s"] is not None]
    assert shown and all(text in table for text in shown)  # "3.2 h": the report's format


def test_leads_takes_a_stage_in_any_case_lists_the_stages_and_says_when_nothing_matches(home: Path) -> None:
    upper = ok(home, "leads", "--stage", "CAPTURED", "--limit", "500")
    assert upper == ok(home, "leads", "--stage", "captured", "--limit", "500")
    assert upper["leads"] and all(item["stage"] == "captured" for item in upper["leads"])
    assert run(home, "leads", "--stage", "SAL").returncode == 0
    helped = run(home, "leads", "--help").stdout
    assert all(stage in helped for stage in ("captured", "nurtured", "mql", "sal", "sql", "won", "recycled",
                                             "lost", "disqualified"))
    nothing = run(home, "leads", "--owner", "nobody-owns-this")
    assert nothing.returncode == 0 and "no leads" in nothing.stdout and "nobody-owns-this" in nothing.stdout


# ---------------------------------------------------------------- ingest


def capture_line(id_: str, email: str, channel: str = "dl-test") -> str:
    return orjson.dumps({"specversion": "1.0", "id": id_, "source": "t", "type": "leadledger.inbound.capture.v1",
                         "time": "2026-03-02T09:00:00Z", "data": {"email": email, "channel": channel}}).decode()


def test_ingest_reads_stdin_and_accepts_a_byte_order_mark(home: Path, tmp_path: Path) -> None:
    payload = ("\ufeff" + capture_line("bom-1", "bom@x.io", "bom") + "\n" + capture_line("bom-2", "bom2@x.io", "bom")
               + "\n").encode()
    done = run(home, "ingest", "-", "--json", "--dead-letters", str(tmp_path / "dead.jsonl"), stdin=payload)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout).items() >= {"applied": 2, "duplicates": 0, "dead_lettered": 0}.items()
    assert len(ok(home, "leads", "--channel", "bom")["leads"]) == 2


def test_dead_letters_are_appended_not_overwritten(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("not json\n")
    assert run(home, "ingest", str(source)).returncode == 0
    source.write_text("[1]\n{also not json\n")
    assert run(home, "ingest", str(source)).returncode == 0
    letters = [orjson.loads(line) for line in (tmp_path / "in.jsonl.dead.jsonl").read_bytes().splitlines()]
    assert [letter["raw"] for letter in letters] == ["not json", "[1]", "{also not json"]
    assert all(letter["source"] == str(source) for letter in letters)


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_dead_letters_into_the_input_itself_are_refused(home: Path, tmp_path: Path, how: str) -> None:
    source = tmp_path / "in.jsonl"
    text = capture_line("same-1", "same@x.io") + "\nnot json\n" + capture_line("same-2", "same2@x.io") + "\n"
    source.write_text(text)
    target = source
    if how == "symlink":
        target = tmp_path / "link.jsonl"
        target.symlink_to(source)
    elif how == "hard link":
        target = tmp_path / "hard.jsonl"
        os.link(source, target)
    assert_short_error(run(home, "ingest", str(source), "--dead-letters", str(target)), "input")
    assert source.read_text() == text
    assert ok(home, "leads", "--channel", "dl-test")["leads"] == []


def test_an_oversized_line_is_measured_not_read_whole(home: Path, tmp_path: Path) -> None:
    size = 5 * 1024 * 1024
    source = tmp_path / "big.jsonl"
    with source.open("wb") as fh:
        fh.write(b'{"data": "' + b"x" * size + b'"}\n')
        fh.write(capture_line("after-big", "after@x.io", "after-big").encode() + b"\n")
    done = run(home, "ingest", str(source), "--json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout).items() >= {"applied": 1, "duplicates": 0, "dead_lettered": 1}.items()
    (letter,) = [orjson.loads(line) for line in (tmp_path / "big.jsonl.dead.jsonl").read_bytes().splitlines()]
    assert letter["line"] == 1 and "oversized" in letter["reason"]
    assert letter["bytes"] == size + 12
    assert len(letter["raw"]) <= 1024 * 1024

    class Counting(io.BytesIO):
        largest = 0

        def readline(self, size: int | None = -1) -> bytes:
            assert size is not None and 0 < size <= 1024 * 1024 + 1, "an unbounded read"
            line = super().readline(size)
            Counting.largest = max(Counting.largest, len(line))
            return line

    from leadledger.cli.bulk import read_lines  # the bounded reader itself

    lines = list(read_lines(Counting(source.read_bytes())))
    assert [(line.number, line.oversized) for line in lines] == [(1, size + 12), (2, None)]
    assert Counting.largest <= 1024 * 1024 + 1


# ---------------------------------------------------------------- flags


def test_erase_needs_a_reason(home: Path) -> None:
    lead = ok(home, "capture", "--email", "erase-me@x.io", "--channel", "web")["lead_id"]
    done = run(home, "erase", lead)
    assert done.returncode == 2 and "--reason" in done.stderr
    assert ok(home, "history", lead)["events"][-1]["type"].split(".")[2] == "LeadCaptured"


def test_transition_refuses_flags_its_trigger_does_not_take(home: Path) -> None:
    lead = ok(home, "capture", "--email", "flags@x.io", "--channel", "web")["lead_id"]
    for args in (["nurture", "--amount", "5"], ["nurture", "--reason", "because"], ["qualify_mql", "--budget", "1k"],
                 ["reject", "--currency", "EUR"]):
        done = run(home, "transition", lead, *args)
        assert done.returncode == 2, (args, done.stdout)
        assert args[1] in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(ok(home, "history", lead)["events"]) == 1
    assert ok(home, "transition", lead, "nurture")["event"] == "LeadNurtured"


def test_every_transition_option_has_help_text(home: Path) -> None:
    helped = run(home, "transition", "--help").stdout
    options = [line.split()[0].rstrip(",") for line in helped.splitlines() if line.strip().startswith("--")]
    assert {"--reason", "--amount", "--currency", "--override", "--budget", "--authority", "--need",
            "--timeline", "--at", "--json"} <= set(options)
    for line in helped.splitlines():
        stripped = line.strip()
        if stripped.startswith("--"):
            assert len(stripped.split(None, 2)) >= 2 and "  " in stripped, f"no help text: {line!r}"


def test_simulate_with_a_new_start_applies_its_messages(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = ok(home, "simulate", "--leads", "15", "--seed", "2", "--days", "5")
    assert first["applied"] > 0
    again = ok(home, "simulate", "--leads", "15", "--seed", "2", "--days", "5")
    assert again["applied"] == 0  # the same run twice changes nothing
    later = ok(home, "simulate", "--leads", "15", "--seed", "2", "--days", "5", "--start", "2026-06-01")
    assert later["applied"] > 0 and later["duplicates"] < later["applied"]
