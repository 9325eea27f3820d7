"""What two stores holding the same history have in common (no tests here).

Lead ids are random, so leads are compared by their e-mail (the capture's, decrypted); each event
by its type, data (personal data opened: sealed bytes have random nonces), causation, actor, time
and version — not by ids, subjects, record times or hashes.
"""

from __future__ import annotations

from typing import Any

from lifecycle.audit import export_envelopes
from lifecycle.store.repository import LeadStore
from schemas.sealing import ERASED

#: envelope fields that differ between two stores holding the same history
VOLATILE = frozenset({"id", "subject", "recordedat", "hash", "prevhash"})


def by_capture(store: LeadStore) -> dict[str, list[dict[str, Any]]]:
    """Each lead's events, keyed by its e-mail (else, erased, by its capture's causation)."""
    leads: dict[str, list[dict[str, Any]]] = {}
    for envelope in export_envelopes(store, decrypt=True):
        leads.setdefault(envelope["subject"], []).append(envelope)
    found: dict[str, list[dict[str, Any]]] = {}
    for events in leads.values():
        assert [e["sequence"] for e in events] == list(range(1, len(events) + 1)), "versions must be 1..n"
        email = events[0]["data"].get("email")
        name = email if email not in (None, ERASED) else f"erased:{events[0].get('causation')}"
        assert name not in found, f"two leads for {name}"
        found[name] = [{k: v for k, v in e.items() if k not in VOLATILE} for e in events]
    return found


def outcomes(store: LeadStore, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str | None]]:
    """Each recorded message's (outcome, digest)."""
    return {key: (row[0], row[1]) for key, row in store.outcomes(keys).items()}
