"""`operate`'s long catch-ups read and decode in a helper process (lifecycle/operate.py `_Decoder`): it
decides exactly what the in-process path decides, its rebuild folds the same, and it refuses a tampered
row with the same error."""

from __future__ import annotations

import gc
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from leadledger.bootstrap import bootstrap
from lifecycle import operate
from lifecycle.operate import OperateReport, OperatorRunner, maybe_decided
from schemas.codec import CorruptEvent
from tests.integration.lifecycle.test_operate import NOW, _decisions, _history, _published
from tests.support.env import sqlite_settings


def _store(tmp_path: Path) -> Path:
    home = tmp_path / "source"
    app = bootstrap(sqlite_settings(home))
    _published(app)
    _history(app, leads=30)
    app.store.close()
    return home


def _operated(home: Path, where: Path, *, batch: int = 7) -> tuple[list[tuple[Any, ...]], Any]:
    shutil.copytree(home, where)
    app = bootstrap(sqlite_settings(where))
    try:
        runner = OperatorRunner(app.store, batch=batch)
        report = runner.run_once(NOW)
        assert runner._decoder is None  # stopped when the catch-up ends
        assert gc.get_freeze_count() == 0  # what a long catch-up froze is thawed when it ends
        again = OperatorRunner(app.store, batch=batch).run_once(NOW)  # a restart, rebuilt by the same path
        assert sum(again.decisions.values()) == 0 and again.folded == app.store.head_position()
        return _decisions(app), report
    finally:
        app.store.close()


def test_the_decoder_decides_what_the_runner_decides_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            ) -> None:
    home = _store(tmp_path)
    monkeypatch.setattr(operate, "DECODER_BACKLOG", 10**9)
    inline, inline_report = _operated(home, tmp_path / "inline")
    started: list[object] = []
    real = operate._Decoder.__init__

    def counting(self: Any, *args: Any) -> None:
        started.append(self)
        real(self, *args)

    monkeypatch.setattr(operate, "DECODER_BACKLOG", 0)  # the restart's rebuild too
    monkeypatch.setattr(operate._Decoder, "__init__", counting)
    forked, forked_report = _operated(home, tmp_path / "forked")
    assert len(started) == 2, "the decoder was not used for both the catch-up and the restart"
    assert inline and forked == inline
    assert forked_report.decisions == inline_report.decisions and forked_report.handled == inline_report.handled


def test_the_decoder_refuses_a_tampered_row_as_decode_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _store(tmp_path)
    with sqlite3.connect(home / "events.sqlite") as db:
        rowid, state = db.execute("SELECT rowid, state FROM stored_events ORDER BY rowid LIMIT 1 OFFSET 20").fetchone()
        envelope = orjson.loads(state)
        envelope["time"] = "2026-03-05T10:00:00+00:00"  # the hash left as it was
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (orjson.dumps(envelope), rowid))
    errors = []
    for backlog, name in ((10**9, "inline"), (1, "forked")):
        monkeypatch.setattr(operate, "DECODER_BACKLOG", backlog)
        shutil.copytree(home, tmp_path / name)
        app = bootstrap(sqlite_settings(tmp_path / name))
        try:
            with pytest.raises(CorruptEvent) as caught:
                OperatorRunner(app.store, batch=1000).run_once(NOW)
            errors.append(str(caught.value))
        finally:
            app.store.close()
    assert errors[0] == errors[1] and "hash" in errors[0]


def test_maybe_decided_is_false_only_for_another_actor() -> None:
    def row(state: bytes) -> tuple[int, object, int, bytes]:
        return (1, None, 1, state)

    assert not maybe_decided(row(b'{"actor":"crm","data":{"actor":"router"}}'))
    assert maybe_decided(row(b'{"actor":"router"}'))
    assert maybe_decided(row(b'{"actor": "sla"}'))
    assert maybe_decided(row(b'{"actor":5}'))  # decoded in full: refused or read there
    assert maybe_decided(row(b"not json"))
    assert maybe_decided(row(b"[1, 2]"))
    # read off the first key as the store writes envelopes (no parse): a corrupt rest is refused when handled
    assert not maybe_decided(row(b'{"actor":"crm","data":{"to_stage":"mql"},"time":"'))
    assert maybe_decided(row(b'{"actor":"scorer","data":{}}'))
    assert maybe_decided(row(b'{"actor":"rout\\u0065r","data":{}}'))  # an escape: parsed
    assert not maybe_decided(row(b'{"actor":"crm","data":{},"actor":"crm"}'))
    assert maybe_decided(row(b'{"actor":"crm","data":{},"actor":"sla"}'))  # the parse reads the last


def test_a_runner_deciding_ahead_that_loses_to_another_operator_rebuilds_and_stores_nothing_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the loader a batch is committed after the next one is decided: the first commit of an operator
    that read the same position as another conflicts, and it rebuilds and handles both batches again."""
    home = _store(tmp_path)
    monkeypatch.setattr(operate, "DECODER_BACKLOG", 10**9)
    inline, _ = _operated(home, tmp_path / "inline")
    monkeypatch.setattr(operate, "DECODER_BACKLOG", 0)
    loaders: list[object] = []
    real = operate._Loader.__init__

    def counting(self: Any, *args: Any) -> None:
        loaders.append(self)
        real(self, *args)

    monkeypatch.setattr(operate._Loader, "__init__", counting)
    shutil.copytree(home, tmp_path / "raced")
    app = bootstrap(sqlite_settings(tmp_path / "raced"))
    try:
        one, two = OperatorRunner(app.store, batch=7), OperatorRunner(app.store, batch=7)
        one.rebuild(OperateReport())  # both read the same position before either stores decisions
        two.rebuild(OperateReport())
        assert sum(one.run_once(NOW).decisions.values()) > 0
        late = two.run_once(NOW)
        assert len(loaders) == 2, "the loader was not used by both operators"
        assert late.rebuilds == 1 and sum(late.decisions.values()) == 0
        assert _decisions(app) == inline
        assert gc.get_freeze_count() == 0
    finally:
        app.store.close()

def test_the_decoders_rebuild_folds_what_the_in_process_rebuild_folds_from_any_position(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # past the position the decoder reads the rows that cannot be decisions by their state alone: from
    # every position (nothing folded yet, in the middle, at the head) it hands over the same rows, decoded
    home = _store(tmp_path)
    monkeypatch.setattr(operate, "DECODER_BACKLOG", 10**9)
    decisions, _ = _operated(home, tmp_path / "operated")
    assert decisions
    monkeypatch.setattr(operate, "_FOLD_CHUNK", 7)  # chunks that end before, at and after a position
    app = bootstrap(sqlite_settings(tmp_path / "operated"))
    try:
        head = app.store.head_position()
        log_file = operate._Decoder.usable(app.store)
        assert log_file is not None
        decoder = operate._Decoder(log_file)
        try:
            for position in sorted({0, 1, 6, 7, 8, head // 3, head // 2, head - 1, head}):
                inline = [operate.decode(row) for row in app.store.iter_raw(0, batch=1000)
                          if row[0] <= position or maybe_decided(row)]
                assert list(decoder.fold(position)) == inline, position
                assert sum(seen.position > position for seen in inline) >= (position < head)
        finally:
            decoder.close()
    finally:
        app.store.close()
