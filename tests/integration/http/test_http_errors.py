"""The API's edges: every endpoint answers 400 for a parameter it does not take (not only for a bad
value) and for times out of the calendar; bodies say the window they cover; personal data leaves
only when the operator turns it on, behind a token; the report's period headline says what its
ratios are; the OpenAPI text stands alone."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from leadledger.cli import cli
from leadledger.http.app import create_app
from lifecycle.settings import Settings

with warnings.catch_warnings():  # starlette prefers httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SECRET = "http-errors-test-secret"
ENV = {"LEADLEDGER_SECRET": SECRET, "LEADLEDGER_POSTGRES_DSN": "", "LEADLEDGER_API_TOKEN": "",
       "LEADLEDGER_API_PERSONAL_DATA": ""}
TOKEN = "errors-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LEAD = "00000000-0000-4000-8000-000000000000"
ENDPOINTS = ["/funnel", "/velocity", "/attribution", "/speed", "/sla", "/qualification", "/reasons", "/pipeline", "/leads",
             f"/leads/{LEAD}/history", "/report", "/healthz"]


def run_cli(home: Path, *args: str, env: dict[str, str] = ENV, code: int = 0) -> Any:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], env=env)
    assert result.exit_code == code, (result.output, result.stderr)
    return result


def cli_json(home: Path, *args: str) -> Any:
    return orjson.loads(run_cli(home, *args, "--json").stdout_bytes)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("http-errors")
    run_cli(home, "simulate", "--leads", "120", "--seed", "8", "--days", "60")
    run_cli(home, "capture", "--email", "ann@example.com", "--channel", "webinar", "--name", "Ann Person",
            "--phone", "+44 20 7946 0000")
    gone = cli_json(home, "capture", "--email", "gone@example.com", "--channel", "webinar", "--name", "Gone Person")
    run_cli(home, "erase", gone["lead_id"], "--reason", "request 7")
    (home / "gone.lead").write_text(gone["lead_id"])
    return home


@pytest.fixture(scope="module")
def settings(home: Path) -> Settings:
    return Settings(home=home, secret=SECRET.encode())


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, None)) as client:
        yield client


@pytest.fixture(scope="module")
def personal(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, TOKEN, personal_data=True)) as client:
        yield client


# ---------------------------------------------------------------- unknown parameters


@pytest.mark.parametrize("path", ENDPOINTS)
def test_an_unknown_parameter_is_a_400_naming_it(client: TestClient, path: str) -> None:
    response = client.get(path, params={"as-of": "2026-01-01"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error.startswith("as-of:") and "unknown parameter" in error


def test_the_400_says_which_parameters_the_endpoint_takes(client: TestClient) -> None:
    error = client.get("/leads", params={"stages": "sal"}).json()["error"]
    assert "stages" in error and "stage" in error.split("takes", 1)[1]
    assert client.get("/funnel", params={"model": "linear"}).status_code == 400  # attribution's, not funnel's
    # the parameters an endpoint does take still answer
    assert client.get("/funnel", params={"by": "channel", "mode": "period", "from": "2026-01-01"}).status_code == 200
    assert client.get("/attribution", params={"model": "linear"}).status_code == 200


def test_a_parameter_given_twice_is_a_400(client: TestClient) -> None:
    response = client.get("/funnel?by=channel&by=campaign")
    assert response.status_code == 400 and response.json()["error"].startswith("by:")


def test_an_unknown_parameter_is_checked_after_the_token(settings: Settings) -> None:
    with TestClient(create_app(settings, TOKEN)) as secured:
        assert secured.get("/funnel", params={"as-of": "x"}).status_code == 401
        assert secured.get("/funnel", params={"as-of": "x"}, headers=AUTH).status_code == 400


# ---------------------------------------------------------------- times out of the calendar


@pytest.mark.parametrize("value", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"])
@pytest.mark.parametrize(("path", "name"), [("/funnel", "as_of"), ("/velocity", "from"), ("/attribution", "to"),
                                            ("/speed", "known_at"), ("/leads", "as_of"), ("/report", "as_of"),
                                            ("/sla", "from"), ("/qualification", "to"),
                                            (f"/leads/{LEAD}/history", "as_of")])
def test_a_time_out_of_the_calendar_is_a_400_naming_the_parameter(client: TestClient, path: str, name: str,
                                                                  value: str) -> None:
    response = client.get(path, params={name: value})
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"{name}:") and "out of range" in response.json()["error"]


# ---------------------------------------------------------------- what the bodies say


def test_every_aggregate_body_starts_with_its_window(client: TestClient, home: Path) -> None:
    params = {"mode": "period", "from": "2026-01-15", "to": "2026-02-15", "known_at": "2099-01-01"}
    for path in ("/funnel", "/velocity", "/attribution", "/speed"):
        body = client.get(path, params=params).json()
        assert list(body)[:5] == ["mode", "from", "to", "as_of", "known_at"], path
        assert (body["mode"], body["from"], body["to"], body["known_at"]) == (
            "period", "2026-01-15T00:00:00.000000Z", "2026-02-15T00:00:00.000000Z", "2099-01-01T00:00:00.000000Z")
        name = path.strip("/")
        assert body == cli_json(home, name, "--mode", "period", "--from", "2026-01-15", "--to", "2026-02-15",
                                "--known-at", "2099-01-01")
    leads = client.get("/leads", params={"known_at": "2099-01-01"}).json()
    assert list(leads)[:2] == ["as_of", "known_at"] and leads["known_at"] == "2099-01-01T00:00:00.000000Z"


def test_durations_have_no_float_noise(client: TestClient) -> None:
    body = client.get("/velocity").json()
    values = [st[k] for kind in ("time_in_stage", "time_to_stage") for st in body["groups"][0][kind].values()
              for k in ("mean_s", "p50_s", "p90_s") if st[k] is not None]
    assert values and all(round(v, 6) == v for v in values)
    assert all(len(repr(v).split(".")[-1]) <= 6 for v in values)


def test_a_stage_is_one_of_the_documented_names(client: TestClient) -> None:
    """The document lists the stages in lower case, and a value it does not list is a 400 (the CLI
    forgives the case; the API is exactly its document)."""
    assert client.get("/leads", params={"stage": "captured"}).status_code == 200
    upper = client.get("/leads", params={"stage": "CAPTURED"})
    assert upper.status_code == 400 and upper.json()["error"].startswith("stage:")


# ---------------------------------------------------------------- personal data


def _captured(body: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = body["events"][0]["data"]
    return first


def test_personal_data_is_sealed_by_default(client: TestClient, home: Path) -> None:
    lead = cli_json(home, "history", "ann@example.com")["lead_id"]
    response = client.get(f"/leads/{lead}/history")
    assert response.status_code == 200
    data = _captured(response.json())
    assert (data["email"], data["name"], data["phone"]) == ("[sealed]", "[sealed]", "[sealed]")
    assert data["channel"] == "webinar"
    assert "ann@example.com" not in response.text and "Ann Person" not in response.text


def test_personal_data_only_with_the_operators_consent_and_a_token(personal: TestClient, home: Path,
                                                                    settings: Settings) -> None:
    lead = cli_json(home, "history", "ann@example.com")["lead_id"]
    assert personal.get(f"/leads/{lead}/history").status_code == 401
    body = personal.get(f"/leads/{lead}/history", headers=AUTH).json()
    assert body == cli_json(home, "history", lead)
    assert _captured(body)["email"] == "ann@example.com"
    with pytest.raises(ValueError, match="token"):
        create_app(settings, None, personal_data=True)


def test_erased_data_reads_erased_either_way(client: TestClient, personal: TestClient, home: Path) -> None:
    lead = (home / "gone.lead").read_text()
    for body in (client.get(f"/leads/{lead}/history").json(),
                 personal.get(f"/leads/{lead}/history", headers=AUTH).json()):
        assert _captured(body)["name"] == "[erased]"


def test_serve_refuses_personal_data_without_a_token(home: Path) -> None:
    for args, env in ((["serve", "--personal-data", "--port", "0"], ENV),
                      (["serve", "--port", "0"], {**ENV, "LEADLEDGER_API_PERSONAL_DATA": "1"})):
        result = run_cli(home, *args, env=env, code=2)
        assert "LEADLEDGER_API_TOKEN" in result.stderr and "Traceback" not in result.output


# ---------------------------------------------------------------- the report in period mode


def test_the_period_headline_says_what_its_ratios_are(client: TestClient) -> None:
    page = client.get("/report", params={"mode": "period", "from": "2026-02-01", "to": "2026-03-01"}).text
    funnel = page[page.index('<section id="funnel">'):page.index("</section>", page.index('<section id="funnel">'))]
    assert "continue" not in funnel
    assert "different groups of leads" in funnel and "ratio" in funnel
    cohort = client.get("/report").text
    assert "continue" in cohort


def test_figures_on_few_leads_carry_a_caution(client: TestClient) -> None:
    week = client.get("/report", params={"from": "2026-02-01", "to": "2026-02-08"}).text
    assert re.search(r'end to end\)\. <span class="caution">\(only \d+ leads: read with care\)', week), \
        "no caution on a one-week cohort"
    everything = client.get("/report").text
    assert re.search(r"\d{3} leads captured", everything)
    assert "end to end). <span" not in everything  # more than 20 leads: the headline needs none


# ---------------------------------------------------------------- the docs stand alone


def test_the_openapi_text_and_the_help_cite_no_spec(client: TestClient) -> None:
    from leadledger.cli import COMMANDS

    doc = client.get("/openapi.json").text
    assert "SPEC" not in doc and "§" not in doc
    assert "docs/contract.md" in doc
    texts = [CliRunner().invoke(cli, ["--help"]).output]
    texts += [CliRunner().invoke(cli, [name, "--help"], env=ENV).output for name in COMMANDS]
    assert all(t.strip() for t in texts)
    assert not [t for t in texts if "SPEC" in t or "§" in t]
