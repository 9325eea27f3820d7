"""Upcasters: read old versions of an event's `data` as the current version.

Register one function per (event name, old schema version); `upcast` chains
them until the data reaches the version the domain expects. Stored bytes are
never rewritten (the hash chain covers them), so old versions live forever.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lifecycle.domain.events import EVENT_CLASSES

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

#: (event name, from version) -> function returning data of version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Decorator registering an upcaster from `from_version` to `from_version + 1`."""

    def register(func: Upcaster) -> Upcaster:
        UPCASTERS[(name, from_version)] = func
        return func

    return register


def upcast(name: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    cls = EVENT_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"unknown event type {name!r}")
    current = cls.SCHEMA_VERSION
    if version > current:
        raise ValueError(f"{name} v{version} is newer than this leadledger understands (v{current})")
    while version < current:
        step = UPCASTERS.get((name, version))
        if step is None:
            raise ValueError(f"no upcaster for {name} v{version} -> v{version + 1}")
        data = step(data)
        version += 1
    return data


@upcaster("LeadCaptured", 1)
def _captured_v1(data: dict[str, Any]) -> dict[str, Any]:
    """v1 kept `company` in clear beside the sealed e-mail, name and phone; v2 seals it too.
    The clear value stays where it was (the stored bytes are never rewritten) and the codec
    reads it as the company (`codec.open_personal`)."""
    return data


@upcaster("LeadTouched", 1)
def _touched_v1(data: dict[str, Any]) -> dict[str, Any]:
    """v2 adds what a re-capture said about the person: consent and the sealed statement."""
    return {**data, "consent": None, "personal": None}


@upcaster("LeadCaptured", 2)
def _captured_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v3 adds the firmographic attributes; a lead captured before knows none."""
    return {**data, "attributes": {}}


@upcaster("LeadAssigned", 1)
def _assigned_v1(data: dict[str, Any]) -> dict[str, Any]:
    """v2 adds the router's reasons; every v1 assignment was manual or upstream."""
    return {**data, "method": None, "policy_version": None, "candidates": None, "excluded": None}


@upcaster("LeadScored", 1)
def _scored_v1(data: dict[str, Any]) -> dict[str, Any]:
    """v2 says whose score it is; every v1 score came from upstream or by hand."""
    return {**data, "model": "external", "contributions": None, "policy_version": None}


@upcaster("LeadQualifiedAsSQL", 1)
def _qualified_sql_v1(data: dict[str, Any]) -> dict[str, Any]:
    """v2 adds the deal's expected amount and currency; no v1 SQL stated one."""
    return {**data, "amount": None, "currency": None}
