"""E-mail identity: the validator's normalized address, lower-cased; what is no address is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lifecycle.privacy import InvalidEmail, Secrets, normalize_email
from schemas.inbound import BadMessage, decode_message

SECRETS = Secrets.from_secret(b"unit-test-secret-of-16-bytes")


@pytest.mark.parametrize(("variant", "canonical"), [
    ("Ada@Example.com", "ada@example.com"),
    ("  ada@example.com \n", "ada@example.com"),
    ("ａｄａ@ｅｘａｍｐｌｅ.ｃｏｍ", "ada@example.com"),  # full-width letters
    ("\u212aelvin@example.com", "kelvin@example.com"),  # KELVIN SIGN
    ("ada@münchen.de", "ada@münchen.de"),
    ("ada@xn--mnchen-3ya.de", "ada@münchen.de"),  # the same domain in punycode
    ("ADA@MÜNCHEN.DE", "ada@münchen.de"),
    ("ada@example.com.", "ada@example.com"),  # a trailing dot (the DNS root) on the domain
])
def test_variants_of_one_address_are_one_identity(variant: str, canonical: str) -> None:
    assert normalize_email(variant) == canonical
    assert SECRETS.email_key(variant) == SECRETS.email_key(canonical)


@pytest.mark.parametrize(("bad", "words"), [
    ("ada\u200b@example.com", "ZERO WIDTH SPACE"),
    ("ada@", "after the @-sign"),
    ("ada", "@-sign"),
    ("ada@example", "period"),
    ("a b@example.com", "SPACE"),
    ("ada@@example.com", "@"),
    ("ada@example..com", "period"),
])
def test_what_is_no_address_is_refused_with_the_reason(bad: str, words: str) -> None:
    with pytest.raises(InvalidEmail) as refused:
        normalize_email(bad)
    assert words.lower() in str(refused.value).lower() and repr(bad) in str(refused.value)


def test_an_inbound_message_with_an_invalid_address_is_a_bad_message() -> None:
    raw = (b'{"specversion":"1.0","id":"m1","source":"web","type":"leadledger.inbound.capture.v1",'
           b'"data":{"email":"ada\\u200b@example.com","channel":"web"}}')
    with pytest.raises(BadMessage) as bad:
        decode_message(raw, datetime(2026, 3, 2, tzinfo=UTC))
    assert "data.email" in bad.value.reason and "ZERO WIDTH SPACE" in bad.value.reason
    touch = raw.replace(b"capture", b"touch").replace(b'"channel":"web"', b'"channel":"email"')
    with pytest.raises(BadMessage, match="not a valid e-mail"):
        decode_message(touch, datetime(2026, 3, 2, tzinfo=UTC))


def test_the_digest_is_of_the_content_not_of_its_spelling() -> None:
    one = decode_message(b'{"specversion":"1.0","id":"m1","source":"web","type":"leadledger.inbound.touch.v1",'
                         b'"data":{"email":"a@example.com","channel":"email"}}')
    same = decode_message(b'{"type":"leadledger.inbound.touch.v1","source":"web","id":"m1", "specversion":"1.0",'
                          b'"data":{"channel":"email","email":"a@example.com"}}')
    other = decode_message(b'{"specversion":"1.0","id":"m1","source":"web","type":"leadledger.inbound.touch.v1",'
                           b'"data":{"email":"a@example.com","channel":"chat"}}')
    assert one.digest == same.digest != other.digest


def test_the_fingerprint_is_no_secret_and_tells_secrets_apart() -> None:
    secret = b"unit-test-secret-of-16-bytes"
    fingerprint = Secrets.from_secret(secret).fingerprint
    assert len(fingerprint) == 64 and secret.hex() not in fingerprint and secret.decode() not in fingerprint
    assert fingerprint == Secrets.from_secret(secret).fingerprint
    assert fingerprint != Secrets.from_secret(secret + b"!").fingerprint
