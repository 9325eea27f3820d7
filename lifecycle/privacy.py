"""Personal data: the e-mail lookup key, per-lead encryption (crypto-shredding), the secret's fingerprint.

Keys are derived from `LEADLEDGER_SECRET` with HKDF: one keys the HMAC that turns a normalized
e-mail into its lookup key (the primary key of the e-mail index; never a plain hash), one wraps
each lead's random data key (AES-256-GCM; the field sealing itself is `schemas.sealing`), and
one keys the HMAC that stores of old derived their lead ids from (read as a fallback only),
and one keys the HMAC that turns a business e-mail domain into its `account_key` (the
firmographic attribute that groups one company's leads without naming the domain).
Destroying a lead's wrapped data key makes every copy of its personal data unreadable, wherever
the ciphertext went. The store records `fingerprint` (an HMAC of a fixed label, never the
secret) so a process started with another secret is refused before it writes anything.
"""

from __future__ import annotations

import hmac
import os
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from idna import IDNAError
from idna import encode as idna_encode

from schemas.inbound import InvalidEmail
from schemas.inbound import normalize_email as _normalize
from schemas.sealing import NONCE_LEN, DecryptionFailed

__all__ = ["InvalidEmail", "Secrets", "normalize_domain", "normalize_email"]

#: what the fingerprint is an HMAC of (under the secret itself)
FINGERPRINT_LABEL = b"leadledger store fingerprint v1"
#: hex digits of an account key kept (128 bits of HMAC-SHA256)
ACCOUNT_KEY_HEX = 32


def normalize_email(email: str) -> str:
    """The identity of an e-mail: the validator's normalized address, lower-cased (docs/contract.md).
    Raises InvalidEmail for what is no e-mail address."""
    return _normalize(email)


@lru_cache(maxsize=100_000)
def _email_key(index_key: bytes, email: str) -> str:
    return hmac.digest(index_key, normalize_email(email).encode(), "sha256").hex()


def normalize_domain(domain: str) -> str:
    """A domain's one spelling: compatibility forms folded, trimmed, without the DNS root's dot,
    lower-cased, in its IDNA (punycode) form, so `Bücher.DE` and `xn--bcher-kva.de` are one domain.
    A name IDNA refuses is kept as folded (it still has one spelling)."""
    text = unicodedata.normalize("NFKC", domain).strip().rstrip(".").lower()
    try:
        return idna_encode(text, uts46=True).decode("ascii")
    except (IDNAError, UnicodeError):
        return text


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


@dataclass(frozen=True)
class Secrets:
    """Keys derived once from the configured secret."""

    lead_id_key: bytes
    key_encryption_key: bytes
    email_index_key: bytes = b""
    fingerprint: str = ""
    account_key_key: bytes = b""

    @classmethod
    def from_secret(cls, secret: bytes) -> Secrets:
        return cls(
            lead_id_key=_derive(secret, b"leadledger lead-id v1"),
            key_encryption_key=_derive(secret, b"leadledger key-encryption v1"),
            email_index_key=_derive(secret, b"leadledger email-index v1"),
            fingerprint=hmac.digest(secret, FINGERPRINT_LABEL, "sha256").hex(),
            account_key_key=_derive(secret, b"leadledger account-key v1"),
        )

    def email_key(self, email: str) -> str:
        """The e-mail index's key of an address: HMAC-SHA256 of its normalized form, hex."""
        return _email_key(self.email_index_key, email)

    def account_key(self, domain: str) -> str:
        """The `account_key` of a (business) e-mail domain: HMAC-SHA256 of its normalized form
        (`normalize_domain`), the first 32 hex digits. One domain, one key in a store; without
        the secret the key does not reveal the domain."""
        if not self.account_key_key:
            raise ValueError("these Secrets have no account key: make them with Secrets.from_secret")
        digest = hmac.digest(self.account_key_key, normalize_domain(domain).encode(), "sha256")
        return digest.hex()[:ACCOUNT_KEY_HEX]

    def legacy_lead_id(self, email: str) -> UUID:
        """The id stores of old gave a lead: HMAC-SHA256 of the normalized e-mail (as it was
        normalized then: trimmed, lower-cased), as a UUID. Looked up only where the store
        has such leads (see LeadStore.legacy_ids)."""
        digest = hmac.digest(self.lead_id_key, email.strip().lower().encode(), "sha256")
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
