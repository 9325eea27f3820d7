"""The one inbound handler: `ingest FILE` and the Kafka consumer are thin adapters over it."""

from __future__ import annotations

import base64
import pickle
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from lifecycle.application import LeadLedger
from lifecycle.domain.commands import Capture, LeadCommand
from lifecycle.forked import Child, can_fork, recv_in_child, send_from_child
from schemas.inbound import BadMessage, decode_message, normalize_email, remember_normalized

P = TypeVar("P")  # where a message came from: a line number, a (partition, offset) ...


@dataclass(frozen=True)
class Result(Generic[P]):
    position: P
    #: skipped: a blank line (no message at all)
    status: Literal["applied", "duplicate", "dead", "skipped"]
    reason: str | None = None
    raw: bytes = b""
    lead_id: UUID | None = None
    event: str | None = None
    #: a duplicate of a message refused on its first delivery: why (it stays refused)
    refused_before: str | None = None

    @property
    def dead_letter_reason(self) -> str | None:
        """Why the message belongs in the dead letters, or None: a dead one, and (at least once)
        a repeat of one refused before, whose first dead letter may have been lost with a crash."""
        if self.status == "dead":
            return self.reason or "refused"
        if self.refused_before is not None:
            return f"{self.refused_before} (a repeat of a message refused before; nothing changed)"
        return None


def raw_fields(raw: bytes) -> dict[str, str]:
    """A message's bytes for a JSON dead letter: the text, or (not UTF-8) base64, said so."""
    try:
        return {"raw": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw": base64.b64encode(raw).decode("ascii"), "raw_encoding": "base64"}


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the line break) of every line of a file, blank ones too (the
    handler counts those as skipped, so applied + duplicates + dead-lettered + skipped = lines)."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            yield number, line.rstrip(b"\r\n")


@dataclass
class Tally:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    skipped: int = 0

    def add(self, result: Result[Any]) -> None:
        if result.status == "applied":
            self.applied += 1
        elif result.status == "duplicate":
            self.duplicates += 1
        elif result.status == "skipped":
            self.skipped += 1
        else:
            self.dead_lettered += 1

    def as_json(self) -> dict[str, int]:
        return {"applied": self.applied, "duplicates": self.duplicates, "dead_lettered": self.dead_lettered,
                "skipped": self.skipped}


class InboundHandler:
    """Decode, validate, de-duplicate and apply inbound messages in batches."""

    def __init__(self, app: LeadLedger, batch_size: int = 500, decode_ahead: bool = False) -> None:
        self.app = app
        self.batch_size = batch_size
        #: a forked helper decodes the next batch while one is applied (`Pipeline`); off by default,
        #: as a process with threads (a Kafka client's, a server's) must not fork
        self.decode_ahead = decode_ahead

    def handle(self, messages: Sequence[tuple[P, bytes]]) -> list[Result[P]]:
        """Apply one batch; every message gets exactly one result, in order. Each valid message's
        outcome is recorded with its key in the batch's transaction (see LeadLedger.execute_batch)."""
        return self._apply(messages, decode_batch([raw for _, raw in messages]))

    def _apply(self, messages: Sequence[tuple[P, bytes]], decoded: list[Prepared]) -> list[Result[P]]:
        """Apply the batch whose messages `decode_batch` made `decoded` of."""
        results: list[Result[P] | None] = [None] * len(messages)
        commands: list[LeadCommand] = []
        digests: list[str | None] = []
        where: list[int] = []
        for i, ((position, raw), prepared) in enumerate(zip(messages, decoded, strict=True)):
            if prepared[0] == "skipped":
                results[i] = Result(position, "skipped", None, raw)
            elif prepared[0] == "dead":
                results[i] = Result(position, "dead", prepared[1], raw)
            else:
                commands.append(prepared[1])
                digests.append(prepared[2])
                where.append(i)
        outcomes = self.app.execute_batch(commands, digests) if commands else []
        for i, outcome in zip(where, outcomes, strict=True):
            position, raw = messages[i]
            if outcome.status == "refused":
                results[i] = Result(position, "dead", outcome.error, raw, outcome.lead_id)
            else:
                results[i] = Result(position, outcome.status, outcome.refused_before, raw, outcome.lead_id,
                                    outcome.event, outcome.refused_before)
        return [r for r in results if r is not None]

    def handle_stream(self, messages: Iterable[tuple[P, bytes]]) -> Iterator[Result[P]]:
        """Every message's result, in order, applied `batch_size` at a time. With `decode_ahead`
        (and fork available), from the first full batch on a forked helper decodes and validates
        each batch while this process applies the one before it."""
        batch: list[tuple[P, bytes]] = []
        with self.pipeline() as pipe:
            for message in messages:
                batch.append(message)
                if len(batch) >= self.batch_size:
                    for done in pipe.submit(batch):
                        yield from done
                    batch = []
            for done in pipe.submit(batch):
                yield from done
            for done in pipe.drain():
                yield from done

    @contextmanager
    def pipeline(self) -> Iterator[Pipeline[Any]]:
        """Batches in, their results out in the same order (`Pipeline.submit`, `Pipeline.drain`);
        the helper, if one was started, stopped on leaving."""
        pipe: Pipeline[Any] = Pipeline(self)
        try:
            yield pipe
        finally:
            pipe.close()


#: a message decoded: ("ok", command, digest), ("dead", reason) or ("skipped",) for a blank one
Prepared = tuple[Any, ...]


def decode_batch(raws: Sequence[bytes], now: datetime | None = None) -> list[Prepared]:
    """Each message decoded and validated (`decode_message`) with one receiving clock (`now`,
    default the time now) for those that carry no time of their own."""
    now = now or datetime.now(UTC)
    out: list[Prepared] = []
    for raw in raws:
        if not raw.strip():
            out.append(("skipped",))
            continue
        try:
            decoded = decode_message(raw, now)
        except BadMessage as exc:
            out.append(("dead", exc.reason))
            continue
        except (ValueError, TypeError, KeyError) as exc:  # defensive: never lose a message
            out.append(("dead", f"undecodable message: {exc!r}"))
            continue
        out.append(("ok", decoded.command, decoded.digest))
    return out


class Pipeline(Generic[P]):
    """The batches of one stream through a handler, in order. Without decoding ahead a batch is
    decoded and applied when submitted. Decoding ahead, a forked helper (started with the first
    full batch, so a small input never forks) decodes a submitted batch while the one before it is
    applied here: decoding is a fifth of a message's CPU, and it is the same function either way.
    A batch handed to `submit` must not be changed afterwards."""

    def __init__(self, handler: InboundHandler) -> None:
        self._handler = handler
        self._pending: deque[Sequence[tuple[P, bytes]]] = deque()
        self._helper: _DecodeHelper | None = None

    def submit(self, batch: Sequence[tuple[P, bytes]]) -> Iterator[list[Result[P]]]:
        """Take `batch`; yields the results of every batch finished meanwhile (the one before it,
        when decoding ahead; this one otherwise)."""
        if not batch:
            return
        if self._helper is None and self._handler.decode_ahead and len(batch) >= self._handler.batch_size \
                and can_fork():
            self._helper = _DecodeHelper()
        if self._helper is None:
            yield self._handler.handle(batch)
            return
        # the answer before the next request, so neither end ever blocks writing while the other
        # writes too; the helper decodes this batch while the one before it is applied
        finished = (self._pending.popleft(), self._helper.answer()) if self._pending else None
        self._helper.ask([raw for _, raw in batch])
        self._pending.append(batch)
        if finished is not None:
            yield self._handler._apply(*finished)

    def drain(self) -> Iterator[list[Result[P]]]:
        """The results of every batch still being decoded, in order."""
        while self._pending:
            done = self._pending.popleft()
            assert self._helper is not None
            yield self._handler._apply(done, self._helper.answer())

    def close(self) -> None:
        """Stop the helper (batches not drained are not applied)."""
        self._pending.clear()
        if self._helper is not None:
            self._helper.close()
            self._helper = None


class _DecodeHelper:
    """A forked process (`Child`) running `decode_batch` on the raw batches sent to it; what it
    decoded comes back pickled (commands), with the e-mail identities it worked out."""

    def __init__(self) -> None:
        self._child = Child(_decode_main, name="leadledger decoding helper")

    def ask(self, raws: list[bytes]) -> None:
        try:
            self._child.send(raws)
        except OSError:
            while True:  # it stopped: what it sent before (nothing is owed here), then why (raises)
                self._child.recv()

    def answer(self) -> list[Prepared]:
        decoded, normalized = pickle.loads(self._child.recv())  # our own child's output
        for email, identity in normalized:  # what the helper worked out need not be again here
            remember_normalized(email, identity)
        return decoded  # type: ignore[no-any-return]

    def close(self) -> None:
        self._child.close()


def _decode_main(conn: Connection) -> None:
    """The helper: decode each batch asked for until None."""
    while (raws := recv_in_child(conn)) is not None:
        decoded = decode_batch(raws)
        send_from_child(conn, pickle.dumps((decoded, _emails_normalized(decoded)), protocol=pickle.HIGHEST_PROTOCOL))


def _emails_normalized(decoded: list[Prepared]) -> list[tuple[str, str]]:
    """(address, identity) of each e-mail the valid commands name (each was normalized when its
    message was checked, so this is a look-up)."""
    pairs = []
    for prepared in decoded:
        if prepared[0] == "ok":
            command = prepared[1]
            email = command.email if isinstance(command, Capture) else command.lead.email
            if email:
                pairs.append((email, normalize_email(email)))
    return pairs
