"""The policy stream: every published policy version, hash-chained like a lead stream.

`PolicyPublished` {version, sha256, content, position} is stored as a CloudEvents envelope in the
store's `leadledger_policy` table; `position` is the notification id of the last lead event stored
before it, so "the latest policy published before a trigger in store order" is the last version
whose position is below the trigger's. Each envelope links to the previous version's hash (the first
to the genesis hash); `verify` checks the chain, the hashes and that each content still parses to
the recorded sha256.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any
from uuid import uuid4

import orjson

from lifecycle.operations.policy import Policy, PolicyError, content_sha256, parse_policy
from lifecycle.store.repository import LeadStore, StoreConflict
from schemas import codec
from schemas.codec import GENESIS, SOURCE

EVENT_NAME = "PolicyPublished"
EVENT_TYPE = codec.event_type(EVENT_NAME, 1).replace("leadledger.lead.", "leadledger.policy.")
SUBJECT = "policy"


class CorruptPolicy(Exception):
    """A stored policy version fails its checks (hash, link, sequence or content)."""


class AlreadyPublished(Exception):
    """The file's content is the latest published version already: nothing was written."""

    def __init__(self, version: int) -> None:
        super().__init__(f"this policy is already the published version {version}: nothing to publish")
        self.version = version


@dataclass(frozen=True)
class Published:
    """One `PolicyPublished` event of the policy stream."""

    version: int
    sha256: str
    content: str
    position: int  # the notification id of the last lead event stored before it
    recorded_at: datetime
    actor: str
    event_id: str
    hash: str
    envelope: dict[str, Any] = field(repr=False, compare=False)

    @cached_property
    def policy(self) -> Policy:
        return parse_policy(self.content)

    @property
    def label(self) -> str:
        """What decision events call the policy: `policy:vN`."""
        return f"policy:v{self.version}"


def _envelope(version: int, text: str, position: int, actor: str, now: datetime, prev: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid4()),
        "source": SOURCE,
        "type": EVENT_TYPE,
        "subject": SUBJECT,
        "time": codec.format_time(now),
        "recordedat": codec.format_time(now),
        "sequence": version,
        "datacontenttype": "application/json",
        "dataschema": "schemas/events/PolicyPublished.v1.json",
        "actor": actor,
        "prevhash": prev,
        "data": {"version": version, "sha256": content_sha256(text), "content": text, "position": position},
    }
    body["hash"] = codec.content_hash(body)
    return body


def _published(envelope: dict[str, Any]) -> Published:
    data = envelope["data"]
    return Published(
        version=int(data["version"]), sha256=str(data["sha256"]), content=str(data["content"]),
        position=int(data["position"]), recorded_at=codec.parse_time(envelope["recordedat"]),
        actor=str(envelope["actor"]), event_id=str(envelope["id"]), hash=str(envelope["hash"]), envelope=envelope,
    )


def check_chain(bodies: list[bytes]) -> tuple[list[Published], list[str]]:
    """The versions, and every problem of the stream: a bad hash, a broken link, a gap, a content
    that no longer matches its sha256 or no longer parses."""
    found: list[Published] = []
    problems: list[str] = []
    prev = GENESIS
    for number, raw in enumerate(bodies, start=1):
        try:
            envelope = orjson.loads(raw)
            claimed = envelope.pop("hash")
            digest = codec.content_hash(envelope)
            envelope["hash"] = claimed
            item = _published(envelope)
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            problems.append(f"policy version {number}: undecodable: {exc}")
            break
        where = f"policy version {item.version}"
        if digest != claimed:
            problems.append(f"{where}: its content does not match its hash (altered after publication)")
        if envelope.get("prevhash") != prev:
            problems.append(f"{where}: does not link to version {number - 1}'s hash (a version was removed or "
                            "altered)" if number > 1 else f"{where}: the first version must link to the genesis hash")
        if item.version != number or envelope.get("sequence") != number:
            problems.append(f"{where}: expected version {number} (versions run 1, 2, 3 … without gaps)")
        if content_sha256(item.content) != item.sha256:
            problems.append(f"{where}: the content does not match its sha256")
        found.append(item)
        prev = claimed
    return found, problems


class PolicyStream:
    """Publish and read policy versions; the store keeps them."""

    def __init__(self, store: LeadStore) -> None:
        self.store = store

    def versions(self) -> list[Published]:
        """Every version, checked; raises CorruptPolicy naming the first problem."""
        found, problems = check_chain(self.store.policy_bodies())
        if problems:
            raise CorruptPolicy(f"{problems[0]}; run 'leadledger verify' for the whole report")
        return found

    def problems(self) -> tuple[int, list[str]]:
        """(number of versions, every problem) for `verify`."""
        found, problems = check_chain(self.store.policy_bodies())
        for item in found:
            try:
                item.policy  # noqa: B018 - a stored version must still parse
            except PolicyError as exc:
                problems.append(f"policy version {item.version}: no longer valid: {exc}")
        return len(found), problems

    def publish(self, text: str, actor: str, now: datetime) -> Published:
        """Validate and record the next version. Raises PolicyError (nothing written),
        AlreadyPublished when the latest version has the same content, StoreConflict on a race."""
        parse_policy(text)
        versions = self.versions()
        if versions and versions[-1].sha256 == content_sha256(text):
            raise AlreadyPublished(versions[-1].version)
        version = len(versions) + 1
        prev = versions[-1].hash if versions else GENESIS
        made: dict[str, Any] = {}

        def body(position: int) -> bytes:
            made.update(_envelope(version, text, position, actor, now, prev))
            return codec.canonical(made)

        try:
            self.store.insert_policy(version, body)
        except StoreConflict as exc:
            raise StoreConflict(f"policy version {version} was published by someone else meanwhile; "
                                "look at 'leadledger policy show' and publish again") from exc
        return _published(made)


class PolicyTimeline:
    """The versions in force along the log: which applies to a trigger at a notification id."""

    def __init__(self, versions: list[Published]) -> None:
        self.versions = versions
        self._positions = [v.position for v in versions]

    def before(self, notification_id: int) -> Published | None:
        """The latest version published before the event at `notification_id` was stored."""
        index = bisect_left(self._positions, notification_id)
        return self.versions[index - 1] if index else None

    def at_time(self, when: datetime) -> Published | None:
        """The latest version recorded at or before `when` (for `policy show --as-of`)."""
        found = None
        for item in self.versions:
            if item.recorded_at <= when:
                found = item
        return found

    def version(self, number: int) -> Published | None:
        return self.versions[number - 1] if 1 <= number <= len(self.versions) else None

    @property
    def latest(self) -> Published | None:
        return self.versions[-1] if self.versions else None
