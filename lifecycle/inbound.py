"""The one inbound handler: `ingest FILE` and the Kafka consumer are thin adapters over it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from lifecycle.application import LeadLedger
from lifecycle.domain.commands import LeadCommand
from schemas.inbound import BadMessage, decode

P = TypeVar("P")  # where a message came from: a line number, a (partition, offset) ...


@dataclass(frozen=True)
class Result(Generic[P]):
    position: P
    status: Literal["applied", "duplicate", "dead"]
    reason: str | None = None
    raw: bytes = b""
    lead_id: UUID | None = None
    event: str | None = None


@dataclass
class Tally:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0

    def add(self, result: Result[Any]) -> None:
        if result.status == "applied":
            self.applied += 1
        elif result.status == "duplicate":
            self.duplicates += 1
        else:
            self.dead_lettered += 1

    def as_json(self) -> dict[str, int]:
        return {"applied": self.applied, "duplicates": self.duplicates, "dead_lettered": self.dead_lettered}


class InboundHandler:
    """Decode, validate, de-duplicate and apply inbound messages in batches."""

    def __init__(self, app: LeadLedger, batch_size: int = 500) -> None:
        self.app = app
        self.batch_size = batch_size

    def handle(self, messages: Sequence[tuple[P, bytes]]) -> list[Result[P]]:
        """Apply one batch; every message gets exactly one result, in order."""
        now = datetime.now(UTC)
        results: list[Result[P] | None] = [None] * len(messages)
        commands: list[LeadCommand] = []
        where: list[int] = []
        for i, (position, raw) in enumerate(messages):
            try:
                commands.append(decode(raw, now))
                where.append(i)
            except BadMessage as exc:
                results[i] = Result(position, "dead", exc.reason, raw)
            except (ValueError, TypeError, KeyError) as exc:  # defensive: never lose a message
                results[i] = Result(position, "dead", f"undecodable message: {exc!r}", raw)
        for i, outcome in zip(where, self.app.execute_batch(commands), strict=True):
            position, raw = messages[i]
            if outcome.status == "refused":
                results[i] = Result(position, "dead", outcome.error, raw)
            else:
                results[i] = Result(position, outcome.status, None, raw, outcome.lead_id, outcome.event)
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
