"""Firmographic attributes through the real write path: a capture (command, inbound message or
`leadledger capture`) stores them in clear on LeadCaptured with the derived `email_domain_kind`
and, for a business domain, `account_key`; a bad value is refused naming the field; a re-capture
changes none of them. The actors of leadledger's own decisions (router, sla, scorer) are refused
to every command and message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
from click.testing import CliRunner, Result

from leadledger.bootstrap import bootstrap
from leadledger.cli import cli
from lifecycle.application import LeadLedger
from lifecycle.audit import history, verify
from lifecycle.domain import commands as cmd
from lifecycle.domain.events import OPERATOR_ACTORS
from lifecycle.inbound import InboundHandler
from tests.support.cli import runner_env
from tests.support.env import sqlite_settings

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def capture(app: LeadLedger, email: str, actor: str = "web-forms", minute: int = 0, **fields: Any) -> UUID:
    outcome = app.execute(cmd.Capture(occurred_at=T0 + timedelta(minutes=minute), actor=actor, message_key=None,
                                      email=email, channel="webinar", **fields))
    assert outcome.status == "applied", outcome.error
    assert outcome.lead_id is not None
    return outcome.lead_id


def stored_attributes(app: LeadLedger, lead_id: UUID) -> dict[str, Any]:
    """The attributes of the lead's stored LeadCaptured, as `history` reads them (and the lead's own)."""
    shown = history(app.store, lead_id)
    assert shown is not None
    first = shown["events"][0]
    assert first["type"] == "leadledger.lead.LeadCaptured.v3"
    lead = app.load(lead_id)
    assert lead is not None
    assert lead.attributes == first["data"]["attributes"]
    attributes: dict[str, Any] = first["data"]["attributes"]
    return attributes


def msg(kind: str, id_: str, data: dict[str, Any], source: str = "web-forms") -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": id_, "source": source,
                         "type": f"leadledger.inbound.{kind}.v1", "time": "2026-03-02T09:15:00Z", "data": data})


# ---- the stored attributes ----------------------------------------------------------------

def test_a_capture_stores_its_attributes_normalized_with_the_domain_kind_and_account_key(app: LeadLedger) -> None:
    lead = capture(app, "Ada@Acme.io", country="de", industry=" Software ", employees=1200, role="executive ",
                   language="EN")
    attributes = stored_attributes(app, lead)
    assert attributes == {"country": "DE", "industry": "Software", "employees": 1200, "role": "executive",
                          "language": "en", "email_domain_kind": "business",
                          "account_key": app.store.secrets.account_key("acme.io")}
    assert len(attributes["account_key"]) == 32
    assert verify(app.store).ok


def test_a_capture_without_attributes_still_gets_what_its_domain_says(app: LeadLedger) -> None:
    assert stored_attributes(app, capture(app, "bob@globex.com")) == {
        "email_domain_kind": "business", "account_key": app.store.secrets.account_key("globex.com")}


def test_a_free_mail_address_has_no_account_key(app: LeadLedger) -> None:
    for email in ("carol@gmail.com", "dave@GoogleMail.com", "erin@web.de", "frank@hotmail.co.uk"):
        assert stored_attributes(app, capture(app, email, country="us")) == {
            "country": "US", "email_domain_kind": "free"}, email


def test_two_people_of_one_company_share_its_account_key_another_company_does_not(app: LeadLedger) -> None:
    ada = stored_attributes(app, capture(app, "ada@acme.io"))
    bob = stored_attributes(app, capture(app, "Bob@ACME.IO"))
    carol = stored_attributes(app, capture(app, "carol@acme.com"))
    assert ada["account_key"] == bob["account_key"]
    assert carol["account_key"] != ada["account_key"]
    assert {ada["email_domain_kind"], bob["email_domain_kind"], carol["email_domain_kind"]} == {"business"}


def test_the_clear_email_and_domain_are_not_in_the_attributes(app: LeadLedger) -> None:
    lead = capture(app, "ada@acme.io", industry="software")
    assert "acme" not in orjson.dumps(stored_attributes(app, lead)).decode()


def test_a_recapture_is_a_touch_that_changes_no_attribute(app: LeadLedger) -> None:
    lead = capture(app, "ada@acme.io", country="DE", employees=1200)
    before = stored_attributes(app, lead)
    again = app.execute(cmd.Capture(occurred_at=T0 + timedelta(hours=1), actor="web-forms", message_key=None,
                                    email="ADA@acme.io", channel="events", country="FR", employees=5,
                                    role="manager"))
    assert (again.status, again.lead_id, again.event) == ("applied", lead, "LeadTouched")
    assert stored_attributes(app, lead) == before
    loaded = app.load(lead)
    assert loaded is not None and loaded.attributes == before


@pytest.mark.parametrize(("fields", "words"), [
    ({"country": "Germany"}, ("country", "ISO 3166-1 alpha-2")),
    ({"language": "english"}, ("language", "ISO 639-1")),
    ({"employees": -1}, ("employees", "whole number")),
    ({"employees": True}, ("employees", "whole number")),
    ({"industry": "  "}, ("industry", "blank")),
    ({"role": "x" * 101}, ("role", "at most 100")),
])
def test_a_capture_with_a_bad_attribute_is_refused_and_records_nothing(
        app: LeadLedger, fields: dict[str, Any], words: tuple[str, ...]) -> None:
    outcome = app.execute(cmd.Capture(occurred_at=T0, actor="web-forms", message_key=None,
                                      email="ada@acme.io", channel="webinar", **fields))
    assert outcome.status == "refused"
    assert outcome.error is not None
    for word in words:
        assert word in outcome.error, f"{outcome.error!r} lacks {word!r}"
    assert list(app.store.lead_ids()) == []


def test_a_recapture_with_a_bad_attribute_is_refused_too(app: LeadLedger) -> None:
    lead = capture(app, "ada@acme.io")
    outcome = app.execute(cmd.Capture(occurred_at=T0 + timedelta(hours=1), actor="web-forms", message_key=None,
                                      email="ada@acme.io", channel="events", country="XYZ"))
    assert outcome.status == "refused" and "country" in (outcome.error or "")
    assert [r.name for r in app.store.records(lead)] == ["LeadCaptured"]


# ---- inbound messages ---------------------------------------------------------------------

def test_inbound_captures_store_their_attributes_and_bad_ones_are_dead(app: LeadLedger) -> None:
    results = InboundHandler(app).handle(list(enumerate([
        msg("capture", "f-1", {"email": "ada@acme.io", "channel": "webinar", "country": "de", "employees": 1200,
                               "industry": "Software", "role": "executive", "language": "de"}),
        msg("capture", "f-2", {"email": "bob@acme.io", "channel": "webinar", "country": "Deutschland"}),
        msg("capture", "f-3", {"email": "carol@gmail.com", "channel": "webinar", "employees": -3}),
        msg("capture", "f-4", {"email": "dave@acme.io", "channel": "webinar", "role": "   "}),
        msg("capture", "f-5", {"email": "erin@gmail.com", "channel": "webinar", "language": "EN"}),
    ], start=1)))
    assert [r.status for r in results] == ["applied", "dead", "dead", "dead", "applied"]
    reasons = [r.reason or "" for r in results]
    assert "data.country" in reasons[1] and "ISO 3166-1 alpha-2" in reasons[1]
    assert "data.employees" in reasons[2] and "whole number" in reasons[2]
    assert "data.role" in reasons[3] and "blank" in reasons[3]
    ada, erin = results[0].lead_id, results[4].lead_id
    assert ada is not None and erin is not None
    assert stored_attributes(app, ada) == {
        "country": "DE", "employees": 1200, "industry": "Software", "role": "executive", "language": "de",
        "email_domain_kind": "business", "account_key": app.store.secrets.account_key("acme.io")}
    assert stored_attributes(app, erin) == {"language": "en", "email_domain_kind": "free"}


# ---- reserved actors ----------------------------------------------------------------------

@pytest.mark.parametrize("actor", [*sorted(OPERATOR_ACTORS), "Router", " sla "])
def test_a_command_in_the_name_of_leadledgers_own_decisions_is_refused(app: LeadLedger, actor: str) -> None:
    refused = app.execute(cmd.Capture(occurred_at=T0, actor=actor, message_key=None, email="ada@acme.io",
                                      channel="webinar"))
    assert refused.status == "refused"
    assert f"actor {actor!r} is reserved for leadledger's" in (refused.error or "")
    assert list(app.store.lead_ids()) == []

    lead = capture(app, "ada@acme.io")
    assign = app.execute(cmd.Assign(occurred_at=T0 + timedelta(minutes=1), actor=actor, message_key=None,
                                    lead=cmd.LeadRef(lead_id=lead), owner="olivia"))
    assert assign.status == "refused" and "reserved" in (assign.error or "")
    assert [r.name for r in app.store.records(lead)] == ["LeadCaptured"]


def test_the_refusal_says_whose_name_it_is_and_what_to_do(app: LeadLedger) -> None:
    outcome = app.execute(cmd.Capture(occurred_at=T0, actor="router", message_key=None, email="ada@acme.io",
                                      channel="webinar"))
    assert outcome.error is not None
    assert "leadledger's router" in outcome.error and "LEADLEDGER_ACTOR" in outcome.error
    assert "another source" in outcome.error


def test_names_that_merely_contain_a_reserved_one_are_fine(app: LeadLedger) -> None:
    for i, actor in enumerate(("crm-router", "scoring-engine", "sla-monitor", "cli:router")):
        capture(app, f"p{i}@acme.io", actor=actor)


def test_an_inbound_message_from_a_reserved_source_is_dead_and_stays_refused(app: LeadLedger) -> None:
    handler = InboundHandler(app)
    assert handler.handle([(1, msg("capture", "c-1", {"email": "ada@acme.io", "channel": "webinar"}))])[0].status \
        == "applied"
    assign = msg("assign", "a-1", {"email": "ada@acme.io", "owner": "olivia"}, source="router")
    score = msg("score", "s-1", {"email": "ada@acme.io", "total": 90}, source="scorer")
    first = handler.handle([(2, assign), (3, score)])
    assert [r.status for r in first] == ["dead", "dead"]
    assert "actor 'router' is reserved for leadledger's router" in (first[0].reason or "")
    assert "actor 'scorer' is reserved for leadledger's scorer" in (first[1].reason or "")
    again = handler.handle([(4, assign)])[0]  # its refusal was remembered with its key
    assert again.status == "duplicate" and "reserved" in (again.refused_before or "")
    lead = first[0].lead_id or app.lead_id_for(cmd.LeadRef(email="ada@acme.io"))
    assert [r.name for r in app.store.records(lead)] == ["LeadCaptured"]


# ---- the CLI ------------------------------------------------------------------------------

def run(home: Path, *args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env={**runner_env(home), **env})


def cli_attributes(home: Path, email: str) -> dict[str, Any]:
    shown = run(home, "history", email, "--json")
    assert shown.exit_code == 0, shown.output
    attributes: dict[str, Any] = orjson.loads(shown.stdout)["events"][0]["data"]["attributes"]
    return attributes


def test_cli_capture_takes_the_attributes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = run(home, "capture", "--email", "ada@acme.io", "--channel", "webinar", "--country", "de",
               "--employees", "1200", "--industry", "Software", "--role", "executive", "--language", "EN",
               "--json")
    assert done.exit_code == 0, done.output
    assert orjson.loads(done.stdout)["event"] == "LeadCaptured"
    attributes = cli_attributes(home, "ada@acme.io")
    app = bootstrap(sqlite_settings(home))
    try:
        key = app.store.secrets.account_key("acme.io")
    finally:
        app.store.close()
    assert attributes == {"country": "DE", "employees": 1200, "industry": "Software", "role": "executive",
                          "language": "en", "email_domain_kind": "business", "account_key": key}

    assert run(home, "capture", "--email", "bob@gmail.com", "--channel", "webinar").exit_code == 0
    assert cli_attributes(home, "bob@gmail.com") == {"email_domain_kind": "free"}


@pytest.mark.parametrize(("args", "words"), [
    (("--country", "Germany"), ("--country", "'Germany'", "ISO 3166-1 alpha-2", "two letters")),
    (("--language", "deu"), ("--language", "ISO 639-1")),
    (("--employees", "-5"), ("--employees", "whole number from 0 to 1000000000")),
    (("--employees", "many"), ("--employees", "not a valid integer")),
    (("--industry", "  "), ("--industry", "blank")),
    (("--role", "r" * 101), ("--role", "at most 100")),
])
def test_cli_capture_refuses_a_bad_attribute_as_a_bad_flag(tmp_path: Path, args: tuple[str, ...],
                                                           words: tuple[str, ...]) -> None:
    home = tmp_path / "home"
    refused = run(home, "capture", "--email", "ada@acme.io", "--channel", "webinar", *args)
    assert refused.exit_code == 2, refused.output
    for word in words:
        assert word in refused.output, f"{refused.output!r} lacks {word!r}"
    assert "Traceback" not in refused.output


def test_cli_capture_as_a_reserved_actor_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    refused = run(home, "capture", "--email", "ada@acme.io", "--channel", "webinar", "--json",
                  LEADLEDGER_ACTOR="router")
    assert refused.exit_code == 1
    assert orjson.loads(refused.stdout)["status"] == "refused"
    assert "actor 'router' is reserved for leadledger's router" in refused.output
    assert "LEADLEDGER_ACTOR" in refused.output


def test_ingest_dead_letters_bad_attributes_with_the_reason(tmp_path: Path) -> None:
    home = tmp_path / "home"
    source = tmp_path / "inbound.jsonl"
    lines = [
        msg("capture", "f-1", {"email": "ada@acme.io", "channel": "webinar", "country": "DE", "employees": 1200}),
        msg("capture", "f-2", {"email": "bob@acme.io", "channel": "webinar", "country": "DEU"}),
        msg("capture", "f-3", {"email": "carol@acme.io", "channel": "webinar", "employees": True}),
        msg("capture", "f-4", {"email": "dave@acme.io", "channel": "webinar", "language": "e"}),
        msg("assign", "a-1", {"email": "ada@acme.io", "owner": "olivia"}, source="sla"),
    ]
    source.write_bytes(b"\n".join(lines) + b"\n")
    done = run(home, "ingest", str(source), "--json")
    assert done.exit_code == 0, done.output
    assert orjson.loads(done.stdout) == {"applied": 1, "duplicates": 0, "dead_lettered": 4, "skipped": 0}
    letters = [orjson.loads(line) for line in (tmp_path / "inbound.jsonl.dead.jsonl").read_bytes().splitlines()]
    assert [letter["line"] for letter in letters] == [2, 3, 4, 5]
    assert "data.country" in letters[0]["reason"] and "'DEU'" in letters[0]["reason"]
    assert "data.employees" in letters[1]["reason"] and "whole number" in letters[1]["reason"]
    assert "data.language" in letters[2]["reason"] and "ISO 639-1" in letters[2]["reason"]
    assert "actor 'sla' is reserved for leadledger's SLA clocks" in letters[3]["reason"]
    assert [letter["raw"] for letter in letters] == [line.decode() for line in lines[1:]]
    assert cli_attributes(home, "ada@acme.io")["employees"] == 1200
