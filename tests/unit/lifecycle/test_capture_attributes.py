"""Firmographic attributes at capture: what a capture may say of the person's company and role
(country, industry, employees, role, language) is checked and normalized the same way for every
caller; the e-mail's domain is free-mail or business by the list shipped in schemas/; a business
domain's account key is an HMAC of the domain, one per domain whatever its spelling."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import pytest

from lifecycle.domain import commands as cmd
from lifecycle.privacy import Secrets, normalize_domain
from schemas.firmographics import (
    FREE_EMAIL_DOMAINS_FILE,
    MAX_EMPLOYEES,
    InvalidAttribute,
    clean_attributes,
    email_domain_kind,
    free_email_domains,
    parse_domains,
)
from schemas.inbound import BadMessage, decode_message, load_schema

SECRETS = Secrets.from_secret(b"unit-test-secret-of-16-bytes")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def capture_message(**data: Any) -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": "form-1", "source": "web-forms",
                         "type": "leadledger.inbound.capture.v1", "time": "2026-03-02T09:15:00Z",
                         "data": {"email": "ada@acme.io", "channel": "webinar", **data}})


# ---- checking and normalizing -------------------------------------------------------------

def test_the_attributes_given_are_normalized_and_only_those() -> None:
    assert clean_attributes(country="de", industry="  Software ", employees=1200, role=" executive",
                            language="EN") == {
        "country": "DE", "industry": "Software", "employees": 1200, "role": "executive", "language": "en"}
    assert clean_attributes(employees=0) == {"employees": 0}
    assert clean_attributes() == {}


@pytest.mark.parametrize(("given", "words"), [
    ({"country": "DEU"}, ("country", "'DEU'", "ISO 3166-1 alpha-2", "two letters")),
    ({"country": "D1"}, ("country", "two letters")),
    ({"country": " de"}, ("country", "two letters")),
    ({"country": "ÄÖ"}, ("country", "two letters")),
    ({"country": 49}, ("country", "ISO 3166-1 alpha-2", "not int")),
    ({"language": "deu"}, ("language", "ISO 639-1", "two letters")),
    ({"employees": -1}, ("employees", "-1", "whole number from 0 to 1000000000")),
    ({"employees": MAX_EMPLOYEES + 1}, ("employees", "whole number")),
    ({"employees": True}, ("employees", "True", "whole number")),
    ({"employees": 12.5}, ("employees", "whole number")),
    ({"employees": "1200"}, ("employees", "whole number")),
    ({"industry": "   "}, ("industry", "must not be blank")),
    ({"industry": ""}, ("industry", "must not be blank")),
    ({"industry": "x" * 101}, ("industry", "101 characters", "at most 100")),
    ({"role": "\t"}, ("role", "must not be blank", "executive")),
    ({"role": ["manager"]}, ("role", "must be text")),
])
def test_a_bad_value_is_refused_naming_the_field_and_what_it_expects(given: dict[str, Any],
                                                                    words: tuple[str, ...]) -> None:
    with pytest.raises(InvalidAttribute) as refused:
        clean_attributes(**given)
    message = str(refused.value)
    assert refused.value.field == next(iter(given))
    assert message.startswith(refused.value.field + " ")
    for word in words:
        assert word in message, f"{message!r} lacks {word!r}"


def test_the_longest_industry_and_the_most_employees_are_accepted() -> None:
    assert clean_attributes(industry=" " + "x" * 100 + " ", employees=MAX_EMPLOYEES) == {
        "industry": "x" * 100, "employees": MAX_EMPLOYEES}


# ---- the free-mail list -------------------------------------------------------------------

def test_the_shipped_list_names_the_common_free_mail_domains() -> None:
    domains = free_email_domains()
    assert len(domains) >= 100
    assert {"gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "outlook.com", "hotmail.com",
            "hotmail.de", "live.com", "msn.com", "icloud.com", "me.com", "mac.com", "aol.com", "gmx.de",
            "gmx.net", "web.de", "t-online.de", "mail.ru", "yandex.ru", "proton.me", "protonmail.com",
            "zoho.com", "qq.com", "163.com", "126.com", "naver.com"} <= domains
    assert all(d == d.strip().lower() and "@" not in d and "." in d for d in domains)


def test_the_list_file_has_one_domain_a_line_without_repeats() -> None:
    text = resources.files("schemas").joinpath(FREE_EMAIL_DOMAINS_FILE).read_text("utf-8")
    entries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(entries) == len(set(entries)) == len(free_email_domains())
    assert all(re.fullmatch(r"[a-z0-9.-]+", e) for e in entries)


def test_comments_and_blank_lines_are_not_domains() -> None:
    assert parse_domains("# free mail\n\nGmail.com  # Google\n  web.de\n#x.com\n") == {"gmail.com", "web.de"}


@pytest.mark.parametrize(("domain", "kind"), [
    ("gmail.com", "free"), ("GMAIL.COM", "free"), ("gmail.com.", "free"), ("web.de", "free"),
    ("acme.io", "business"), ("mail.acme.io", "business"),
    ("gmail.co", "business"), ("eu.gmail.com", "business"),  # a listed domain does not cover its neighbours
])
def test_a_domain_is_free_when_listed_else_business(domain: str, kind: str) -> None:
    assert email_domain_kind(domain) == kind


# ---- the account key ----------------------------------------------------------------------

def test_the_account_key_is_128_bits_of_hex_one_per_domain_whatever_its_spelling() -> None:
    key = SECRETS.account_key("acme.io")
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    assert SECRETS.account_key("ACME.IO") == SECRETS.account_key(" Acme.io. ") == key
    assert SECRETS.account_key("ａｃｍｅ.io") == key  # full-width letters
    assert SECRETS.account_key("münchen.de") == SECRETS.account_key("xn--mnchen-3ya.de") \
        == SECRETS.account_key("MÜNCHEN.DE")
    assert normalize_domain("MÜNCHEN.DE.") == "xn--mnchen-3ya.de"


def test_the_account_key_tells_domains_and_stores_apart_and_reveals_nothing() -> None:
    key = SECRETS.account_key("acme.io")
    assert SECRETS.account_key("acme.com") != key
    assert SECRETS.account_key("globex.io") != key
    assert Secrets.from_secret(b"another-secret-of-16-bytes").account_key("acme.io") != key
    # keyed for its own purpose: not the e-mail index's HMAC, nor a plain hash of the domain
    assert key not in SECRETS.email_key("x@acme.io")
    assert "acme" not in key


# ---- inbound messages ---------------------------------------------------------------------

def test_an_inbound_capture_carries_its_attributes_normalized() -> None:
    decoded = decode_message(capture_message(country="de", industry=" Software ", employees=1200,
                                             role="manager ", language="EN"), NOW)
    command = decoded.command
    assert isinstance(command, cmd.Capture)
    assert (command.country, command.industry, command.employees, command.role, command.language) == (
        "DE", "Software", 1200, "manager", "en")


def test_an_inbound_capture_without_attributes_or_with_nulls_has_none() -> None:
    for raw in (capture_message(), capture_message(country=None, industry=None, employees=None, role=None,
                                                   language=None)):
        command = decode_message(raw, NOW).command
        assert isinstance(command, cmd.Capture)
        assert (command.country, command.industry, command.employees, command.role, command.language) == (
            None, None, None, None, None)


def test_an_integral_number_of_employees_is_an_integer() -> None:
    command = decode_message(capture_message(employees=1200.0), NOW).command
    assert isinstance(command, cmd.Capture)
    assert command.employees == 1200 and type(command.employees) is int


@pytest.mark.parametrize(("data", "words"), [
    ({"country": "Germany"}, ("data.country", "'Germany'", "ISO 3166-1 alpha-2")),
    ({"country": 276}, ("data.country", "ISO 3166-1 alpha-2")),
    ({"language": "german"}, ("data.language", "ISO 639-1")),
    ({"employees": -5}, ("data.employees", "whole number from 0")),
    ({"employees": "1200"}, ("data.employees", "whole number")),
    ({"employees": True}, ("data.employees", "whole number")),
    ({"employees": 10**10}, ("data.employees", "whole number")),
    ({"employees": 1.5}, ("data.employees", "whole number")),
    ({"industry": " "}, ("data.industry", "blank")),
    ({"role": "r" * 101}, ("data.role", "at most 100")),
])
def test_an_inbound_capture_with_a_bad_attribute_is_a_bad_message(data: dict[str, Any],
                                                                   words: tuple[str, ...]) -> None:
    with pytest.raises(BadMessage) as bad:
        decode_message(capture_message(**data), NOW)
    for word in words:
        assert word in bad.value.reason, f"{bad.value.reason!r} lacks {word!r}"


def test_the_published_inbound_schema_lists_the_attributes() -> None:
    properties = load_schema("inbound/capture.v1.json")["properties"]
    assert {"country", "industry", "employees", "role", "language"} <= properties.keys()
    assert properties["employees"]["maximum"] == MAX_EMPLOYEES
    # what leadledger derives is never taken from a message
    assert "email_domain_kind" not in properties and "account_key" not in properties
    with pytest.raises(BadMessage, match="account_key"):
        decode_message(capture_message(account_key="0" * 32), NOW)
