"""The one inbound handler: `ingest FILE` and the Kafka consumer are thin adapters over it."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from lifecycle.application import LeadLedger
from lifecycle.domain.commands import LeadCommand
from schemas.inbound import BadMessage, decode_message

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

    def __init__(self, app: LeadLedger, batch_size: int = 500) -> None:
        self.app = app
        self.batch_size = batch_size

    def handle(self, messages: Sequence[tuple[P, bytes]]) -> list[Result[P]]:
        """Apply one batch; every message gets exactly one result, in order. Each valid message's
        outcome is recorded with its key in the batch's transaction (see LeadLedger.execute_batch)."""
        now = datetime.now(UTC)
        results: list[Result[P] | None] = [None] * len(messages)
        commands: list[LeadCommand] = []
        digests: list[str | None] = []
        where: list[int] = []
        for i, (position, raw) in enumerate(messages):
            if not raw.strip():
                results[i] = Result(position, "skipped", None, raw)
                continue
            try:
                decoded = decode_message(raw, now)
            except BadMessage as exc:
                results[i] = Result(position, "dead", exc.reason, raw)
                continue
            except (ValueError, TypeError, KeyError) as exc:  # defensive: never lose a message
                results[i] = Result(position, "dead", f"undecodable message: {exc!r}", raw)
                continue
            commands.append(decoded.command)
            digests.append(decoded.digest)
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
        batch: list[tuple[P, bytes]] = []
        for message in messages:
            batch.append(message)
            if len(batch) >= self.batch_size:
                yield from self.handle(batch)
                batch = []
        if batch:
            yield from self.handle(batch)
