"""Firmographic attributes at capture (docs/contract.md): what a capture may say of the person's
company and role, checked and normalized the same way for the CLI, inbound messages and the
application; and the free-mail domains of `schemas/free_email_domains.txt`.

They are not personal data: they are stored in clear on `LeadCaptured.attributes`, with what
leadledger derives from the e-mail's domain (`email_domain_kind`, and for a business domain an
`account_key`), so routing and scoring never need the clear e-mail.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Literal

#: the attributes a capture may state, in the order they are documented
FIELDS = ("country", "industry", "employees", "role", "language")
#: the longest industry or role (after trimming)
MAX_TEXT = 100
#: the most employees a company is believed to have (more is a typo or a unit mix-up)
MAX_EMPLOYEES = 10**9
FREE_EMAIL_DOMAINS_FILE = "free_email_domains.txt"

DomainKind = Literal["free", "business"]


class InvalidAttribute(ValueError):
    """An attribute's value is wrong; the message starts with the field's name and says what is
    expected (callers prefix it: `data.` for a message, `--` for a CLI option)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field} {problem}")


def parse_domains(text: str) -> frozenset[str]:
    """The domains of a domain list: one a line, `#` starts a comment, blank lines ignored."""
    found = set()
    for line in text.splitlines():
        domain = line.partition("#")[0].strip().lower().rstrip(".")
        if domain:
            found.add(domain)
    return frozenset(found)


@cache
def free_email_domains() -> frozenset[str]:
    """The free-mail domains shipped in `schemas/free_email_domains.txt`."""
    return parse_domains(resources.files("schemas").joinpath(FREE_EMAIL_DOMAINS_FILE).read_text("utf-8"))


def email_domain(email: str) -> str:
    """The domain of a normalized e-mail address (what follows its last `@`)."""
    return email.rpartition("@")[2]


def email_domain_kind(domain: str) -> DomainKind:
    """`free` for a listed free-mail domain, else `business`."""
    return "free" if domain.strip().lower().rstrip(".") in free_email_domains() else "business"


def clean_attributes(
    *,
    country: Any = None,
    industry: Any = None,
    employees: Any = None,
    role: Any = None,
    language: Any = None,
) -> dict[str, Any]:
    """The attributes given (None: not given), normalized: country upper-cased, language
    lower-cased, industry and role trimmed. Raises InvalidAttribute for the first bad one."""
    attributes: dict[str, Any] = {}
    if country is not None:
        attributes["country"] = _code("country", country, "an ISO 3166-1 alpha-2 country code", "DE or US").upper()
    if industry is not None:
        attributes["industry"] = _text("industry", industry, "software or manufacturing")
    if employees is not None:
        attributes["employees"] = _employees(employees)
    if role is not None:
        attributes["role"] = _text("role", role, "executive, manager or practitioner")
    if language is not None:
        attributes["language"] = _code("language", language, "an ISO 639-1 language code", "de or en").lower()
    return attributes


def _code(field: str, value: Any, what: str, example: str) -> str:
    if not isinstance(value, str):
        raise InvalidAttribute(field, f"must be {what} (two letters, e.g. {example}), not {type(value).__name__}")
    if not (len(value) == 2 and value.isascii() and value.isalpha()):
        raise InvalidAttribute(field, f"{value!r} is not {what}: give two letters, e.g. {example}")
    return value


def _text(field: str, value: Any, example: str) -> str:
    if not isinstance(value, str):
        raise InvalidAttribute(field, f"must be text (e.g. {example}), not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InvalidAttribute(field, f"must not be blank: give e.g. {example}, or leave it out")
    if len(text) > MAX_TEXT:
        raise InvalidAttribute(field, f"is {len(text)} characters long: give at most {MAX_TEXT}")
    return text


def _employees(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EMPLOYEES:
        raise InvalidAttribute(
            "employees", f"{value!r} is not a number of employees: give a whole number from 0 to {MAX_EMPLOYEES}"
        )
    return value
