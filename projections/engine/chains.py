"""Each lead's hash chain as the read models hold it (the `chain` column of `rm_timeline`), so the
runner checks every new event's link to the lead's previous one, also when that one was folded
in an earlier batch, by an earlier process.

A chain is the runs of consecutive versions folded so far, each with the previous-hash link of
its first event and the hash of its last: `(first, prev, last, hash)`. An embedded source
delivers each lead's events in version order, so there is one run from version 1; a Kafka topic
whose partitions were added may deliver a lead's later events before earlier ones, so a run may
start higher and be joined (its link checked) when the events before it arrive.

Stored as text: `first:prev:last:hash` per run, `;` between runs, `prev` empty for a run from
version 1 (whose link is GENESIS, checked when its first event arrived).
"""

from __future__ import annotations

from schemas.codec import GENESIS, check_link, corrupt_event

#: (first version, the prevhash its event states, last version, the hash of that event)
Run = tuple[int, str, int, str]
Chain = tuple[Run, ...]


def whole(last: int, digest: str) -> str:
    """The stored text of a chain of versions 1..`last`, the last with hash `digest`."""
    return f"1::{last}:{digest}"


def encode(chain: Chain) -> str:
    return ";".join(f"{first}:{'' if first == 1 else prev}:{last}:{digest}" for first, prev, last, digest in chain)


def decode(text: str | None) -> Chain:
    if not text:
        return ()
    runs = []
    for part in text.split(";"):
        first, prev, last, digest = part.split(":")
        runs.append((int(first), prev or GENESIS, int(last), digest))
    return tuple(runs)


def known_hash(chain: Chain, version: int) -> str | None:
    """The hash of `version` if the chain holds it (the last version of a run)."""
    for _, _, last, digest in chain:
        if last == version:
            return digest
    return None


def link(chain: Chain, lead: str, version: int, prev: str, digest: str, gapless: bool, where: str = "") -> Chain:
    """`chain` with a new event (not folded before) added, its links checked: to the event before
    it, and from the event after it, whichever the chain holds. `gapless`: the source delivers each
    lead's events in version order, so an event must follow the chain's last one.
    Raises CorruptEvent naming the lead and version."""
    if len(chain) == 1:  # the common case: versions 1..n so far, the next one arrives
        first, first_prev, last, last_hash = chain[0]
        if version == last + 1 and first == 1:
            check_link(lead, version, prev, last, last_hash, where)
            return ((1, first_prev, version, digest),)
    elif not chain and version == 1:
        check_link(lead, version, prev, 0, GENESIS, where)
        return ((1, GENESIS, 1, digest),)
    if gapless:
        top = max((last for _, _, last, _ in chain), default=0)
        check_link(lead, version, prev, top, known_hash(chain, top) or GENESIS, where)
    if version == 1:
        check_link(lead, version, prev, 0, GENESIS, where)
    before = next((run for run in chain if run[2] == version - 1), None)
    after = next((run for run in chain if run[0] == version + 1), None)
    if before is not None:
        check_link(lead, version, prev, before[2], before[3], where)
    if after is not None and after[1] != digest:
        raise corrupt_event(lead, version + 1, f"its previous-hash link does not match version {version} (an "
                                               "event before it was edited and re-hashed, dropped or inserted)",
                            where)
    joined = (before[0] if before else version, before[1] if before else prev,
              after[2] if after else version, after[3] if after else digest)
    rest = [run for run in chain if run is not before and run is not after]
    return tuple(sorted([*rest, joined]))
