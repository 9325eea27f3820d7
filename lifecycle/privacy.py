"""Personal data: keyed lead ids and per-lead encryption (crypto-shredding).

Two keys are derived from `LEADLEDGER_SECRET` with HKDF: one keys the HMAC that
turns an e-mail into a lead id, the other wraps each lead's random data key
(AES-256-GCM; the field sealing itself is `schemas.sealing`). Destroying a lead's wrapped data
key makes every copy of its personal data unreadable, wherever the ciphertext went.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas.sealing import NONCE_LEN, DecryptionFailed


def normalize_email(email: str) -> str:
    """Lower-cased and trimmed, as SPEC §2 defines identity."""
    return email.strip().lower()


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


@dataclass(frozen=True)
class Secrets:
    """Keys derived once from the configured secret."""

    lead_id_key: bytes
    key_encryption_key: bytes

    @classmethod
    def from_secret(cls, secret: bytes) -> Secrets:
        return cls(
            lead_id_key=_derive(secret, b"leadledger lead-id v1"),
            key_encryption_key=_derive(secret, b"leadledger key-encryption v1"),
        )

    def lead_id_for_email(self, email: str) -> UUID:
        """HMAC-SHA256 of the normalized e-mail, as a UUID (never a plain hash)."""
        digest = hmac.digest(self.lead_id_key, normalize_email(email).encode(), "sha256")
        raw = bytearray(digest[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80  # UUID version 8 (custom)
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        return UUID(bytes=bytes(raw))

    def new_data_key(self, lead_id: UUID) -> tuple[bytes, bytes]:
        """A fresh data key for a lead and its wrapped (encrypted) form for storage."""
        data_key = AESGCM.generate_key(bit_length=256)
        return data_key, self.wrap(lead_id, data_key)

    def wrap(self, lead_id: UUID, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return nonce + AESGCM(self.key_encryption_key).encrypt(nonce, data_key, lead_id.bytes)

    def unwrap(self, lead_id: UUID, wrapped: bytes) -> bytes:
        try:
            return AESGCM(self.key_encryption_key).decrypt(
                wrapped[:NONCE_LEN], wrapped[NONCE_LEN:], lead_id.bytes
            )
        except InvalidTag as exc:
            raise DecryptionFailed(
                f"lead {lead_id}: its data key does not decrypt with this LEADLEDGER_SECRET"
            ) from exc
