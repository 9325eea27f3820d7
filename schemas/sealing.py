"""Sealed personal fields: AES-256-GCM with the lead's data key and the lead id as associated data.

The codec seals names, e-mails, phones and company names (a one-person company names a person)
with these before an event reaches the store or Kafka; `lifecycle.privacy` holds the keys (derivation, wrapping, crypto-shredding).
"""

from __future__ import annotations

import base64
import os
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: the fields of an event's data that are personal data, sealed in `data.personal` (an event
#: seals those of them it has: a capture all four, a re-capture touch all but the e-mail). Events
#: written before v2 of LeadCaptured kept `company` in clear (the codec still reads it).
PERSONAL_FIELDS = ("company", "email", "name", "phone")
#: what a sealed field reads as once its lead's data key is destroyed
ERASED = "[erased]"
NONCE_LEN = 12


class DecryptionFailed(Exception):
    """A ciphertext or wrapped key did not authenticate (wrong secret or tampering)."""


def seal(lead_id: UUID, data_key: bytes, plaintext: bytes) -> str:
    """AES-256-GCM with the lead id as associated data; base64 text for JSON."""
    nonce = os.urandom(NONCE_LEN)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, lead_id.bytes)
    return base64.b64encode(nonce + ciphertext).decode()


def unseal(lead_id: UUID, data_key: bytes, sealed: str) -> bytes:
    raw = base64.b64decode(sealed)
    try:
        return AESGCM(data_key).decrypt(raw[:NONCE_LEN], raw[NONCE_LEN:], lead_id.bytes)
    except InvalidTag as exc:
        raise DecryptionFailed(f"lead {lead_id}: personal data does not decrypt") from exc
