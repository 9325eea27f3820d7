"""The HTTP API on a real simulated SQLite store: same bodies as the CLI's --json, auth,
400s that name the parameter, 404s, an OpenAPI 3 document, fresh data per request."""

from __future__ import annotations

import hmac
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from leadledger.cli import cli
from leadledger.http.app import create_app
from leadledger.http.routes import seal_personal
from lifecycle.settings import Settings
from projections.service import Analytics

with warnings.catch_warnings():  # starlette prefers httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

SECRET = "http-api-test-secret"
ENV = {"LEADLEDGER_SECRET": SECRET, "LEADLEDGER_POSTGRES_DSN": "", "LEADLEDGER_API_TOKEN": ""}
TOKEN = "s3cret-T0ken"


def run_cli(home: Path, *args: str, env: dict[str, str] = ENV) -> bytes:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


def cli_json(home: Path, *args: str) -> Any:
    return orjson.loads(run_cli(home, *args, "--json"))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("http-api")
    run_cli(home, "simulate", "--leads", "300", "--seed", "11")
    return home


@pytest.fixture(scope="module")
def settings(home: Path) -> Settings:
    return Settings(home=home, secret=SECRET.encode())


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, None)) as client:
        yield client


@pytest.fixture(scope="module")
def secured(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, TOKEN)) as client:
        yield client


@pytest.fixture(scope="module")
def some_lead(client: TestClient) -> str:
    leads = client.get("/leads", params={"stage": "won", "limit": 1}).json()["leads"]
    return str(leads[0]["lead_id"])


# ---------------------------------------------------------------- same bodies as the CLI

CASES = [
    ("/funnel", {}, ["funnel"]),
    ("/funnel", {"by": "channel", "mode": "period", "from": "2026-02-01", "to": "2026-04-01"},
     ["funnel", "--by", "channel", "--mode", "period", "--from", "2026-02-01", "--to", "2026-04-01"]),
    ("/funnel", {"by": "campaign", "as_of": "2026-03-15T12:00:00Z"},
     ["funnel", "--by", "campaign", "--as-of", "2026-03-15T12:00:00Z"]),
    ("/velocity", {}, ["velocity"]),
    ("/velocity", {"by": "channel", "as_of": "2026-04-01"}, ["velocity", "--by", "channel", "--as-of", "2026-04-01"]),
    ("/velocity", {"mode": "period", "from": "2026-03-01"}, ["velocity", "--mode", "period", "--from", "2026-03-01"]),
    ("/attribution", {}, ["attribution"]),
    ("/attribution", {"by": "channel", "model": "u_shaped", "conversion": "sql"},
     ["attribution", "--by", "channel", "--model", "u_shaped", "--conversion", "sql"]),
    ("/attribution", {"by": "campaign", "model": "time_decay", "from": "2026-01-15", "to": "2026-03-01"},
     ["attribution", "--by", "campaign", "--model", "time_decay", "--from", "2026-01-15", "--to", "2026-03-01"]),
    ("/speed", {}, ["speed"]),
    ("/speed", {"by": "owner", "known_at": "2099-01-01"}, ["speed", "--by", "owner", "--known-at", "2099-01-01"]),
    ("/speed", {"by": "channel", "mode": "period", "to": "2026-03-01"},
     ["speed", "--by", "channel", "--mode", "period", "--to", "2026-03-01"]),
    ("/qualification", {}, ["qualification"]),
    ("/qualification", {"from": "2026-02-01", "to": "2026-04-01T00:00:00+02:00", "as_of": "2026-06-01"},
     ["qualification", "--from", "2026-02-01", "--to", "2026-04-01T00:00:00+02:00", "--as-of", "2026-06-01"]),
    ("/reasons", {"stage": "lost"}, ["reasons", "--stage", "lost"]),
    ("/reasons", {"stage": "recycled", "by": "owner", "from": "2026-02-01", "to": "2026-04-01", "as_of": "2026-03-20"},
     ["reasons", "--stage", "recycled", "--by", "owner", "--from", "2026-02-01", "--to", "2026-04-01",
      "--as-of", "2026-03-20"]),
    ("/reasons", {"stage": "disqualified", "by": "campaign", "known_at": "2099-01-01"},
     ["reasons", "--stage", "disqualified", "--by", "campaign", "--known-at", "2099-01-01"]),
    ("/funnel", {"interval": "week", "from": "2026-02-01", "to": "2026-03-01", "mode": "period"},
     ["funnel", "--interval", "week", "--from", "2026-02-01", "--to", "2026-03-01", "--mode", "period"]),
    ("/funnel", {"by": "channel", "from": "2026-03-01", "to": "2026-04-01", "compare_to": "previous"},
     ["funnel", "--by", "channel", "--from", "2026-03-01", "--to", "2026-04-01", "--compare-to", "previous"]),
    ("/velocity", {"from": "2026-03-01", "to": "2026-04-01", "compare_to": "2026-01-01..2026-02-01T00:00:00Z"},
     ["velocity", "--from", "2026-03-01", "--to", "2026-04-01", "--compare-to", "2026-01-01..2026-02-01T00:00:00Z"]),
    ("/attribution", {"by": "channel", "from": "2026-02-01", "to": "2026-03-01", "compare_to": "previous"},
     ["attribution", "--by", "channel", "--from", "2026-02-01", "--to", "2026-03-01", "--compare-to", "previous"]),
    ("/speed", {"by": "owner", "from": "2026-02-01", "to": "2026-03-01", "compare_to": "previous"},
     ["speed", "--by", "owner", "--from", "2026-02-01", "--to", "2026-03-01", "--compare-to", "previous"]),
    ("/plan", {"revenue": 250000, "period": "2026-07-01..2026-10-01", "by": "channel", "as_of": "2026-06-01"},
     ["plan", "--revenue", "250000", "--period", "2026-07-01..2026-10-01", "--by", "channel", "--as-of", "2026-06-01"]),
    ("/plan", {"revenue": 1e6, "period": "2026-07-01..2027-01-01", "lookback": "26w", "as_of": "2026-07-01",
               "by": "channel", "mix": "webinar=0.5,referral=0.5"},
     ["plan", "--revenue", "1e6", "--period", "2026-07-01..2027-01-01", "--lookback", "26w", "--as-of", "2026-07-01",
      "--by", "channel", "--mix", "webinar=0.5,referral=0.5"]),
    ("/funnel", {"by": "owner", "mode": "period", "from": "2026-02-01"},
     ["funnel", "--by", "owner", "--mode", "period", "--from", "2026-02-01"]),
    ("/leads", {}, ["leads"]),
    ("/leads", {"stage": "sql", "limit": 5}, ["leads", "--stage", "sql", "--limit", "5"]),
    ("/leads", {"channel": "webinar", "as_of": "2026-03-01"}, ["leads", "--channel", "webinar", "--as-of", "2026-03-01"]),
    ("/leads", {"reached": "sal", "limit": 3}, ["leads", "--reached", "sal", "--limit", "3"]),
    ("/leads", {"reached": "mql", "mode": "period", "from": "2026-01-15", "to": "2026-02-15", "by": "channel",
                "key": "webinar", "limit": 4},
     ["leads", "--reached", "mql", "--mode", "period", "--from", "2026-01-15", "--to", "2026-02-15", "--by",
      "channel", "--key", "webinar", "--limit", "4"]),
    ("/leads", {"reached": "captured", "by": "campaign", "key": "(none)", "as_of": "2026-02-01", "known_at": "2099-01-01",
                "limit": 2},
     ["leads", "--reached", "captured", "--by", "campaign", "--key", "(none)", "--as-of", "2026-02-01", "--known-at",
      "2099-01-01", "--limit", "2"]),
    ("/pipeline", {}, ["pipeline"]),
    ("/pipeline", {"by": "channel", "as_of": "2026-03-01"}, ["pipeline", "--by", "channel", "--as-of", "2026-03-01"]),
    ("/pipeline", {"by": "campaign", "as_of": "2026-04-01", "known_at": "2099-01-01"},
     ["pipeline", "--by", "campaign", "--as-of", "2026-04-01", "--known-at", "2099-01-01"]),
]


def test_paging_a_drill_down_gives_the_funnel_cells_count(client: TestClient) -> None:
    cells = client.get("/funnel", params={"by": "campaign", "mode": "period", "from": "2026-01-10",
                                          "to": "2026-02-10"}).json()["groups"]
    checked = 0
    for group in cells[:4]:
        for stage in ("captured", "mql", "recycled"):
            seen: list[str] = []
            params: dict[str, Any] = {"reached": stage, "by": "campaign", "key": group["key"], "mode": "period",
                                      "from": "2026-01-10", "to": "2026-02-10", "limit": 3}
            while True:
                page = client.get("/leads", params=params)
                assert page.status_code == 200, page.text
                body = page.json()
                seen += [lead["lead_id"] for lead in body["leads"]]
                if body["next"] is None:
                    break
                params["after"] = body["next"]
            assert len(seen) == len(set(seen)) == group["stages"][stage], (group["key"], stage)
            checked += len(seen)
    assert checked > 20


@pytest.mark.parametrize(("path", "params", "args"), CASES, ids=[f"{c[0]}{sorted(c[1])}" for c in CASES])
def test_every_query_answers_what_the_cli_prints(client: TestClient, home: Path, path: str,
                                                 params: dict[str, Any], args: list[str]) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == cli_json(home, *args)


@pytest.mark.parametrize(("path", "params", "args"), CASES, ids=[f"{c[0]}{sorted(c[1])}" for c in CASES])
def test_accept_text_csv_answers_what_the_cli_prints_as_csv(client: TestClient, home: Path, path: str,
                                                           params: dict[str, Any], args: list[str]) -> None:
    response = client.get(path, params=params, headers={"Accept": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["vary"] == "Accept"
    assert response.content == run_cli(home, *args, "--format", "csv")


@pytest.mark.parametrize(("accept", "csv"), [
    (None, False), ("*/*", False), ("application/json", False), ("text/csv", True),
    ("text/csv;q=0.9, application/json;q=0.5", True), ("application/json, text/csv", False),
    ("text/*", True), ("text/csv;q=0.2, */*", False), ("text/html", False), ("text/csv; q=0", False),
])
def test_csv_only_when_the_accept_header_prefers_it(client: TestClient, accept: str | None, csv: bool) -> None:
    response = client.get("/funnel", headers={"Accept": accept} if accept else {})
    assert response.status_code == 200
    assert response.headers["content-type"] == ("text/csv; charset=utf-8" if csv else "application/json")


def test_a_leads_history_is_the_clis_history_with_personal_data_sealed(client: TestClient, home: Path,
                                                                      some_lead: str) -> None:
    body = client.get(f"/leads/{some_lead}/history").json()
    assert body == seal_personal(cli_json(home, "history", some_lead))
    assert body != cli_json(home, "history", some_lead)  # the CLI (the operator) sees the e-mail
    assert body["events"][0]["data"]["email"] == "[sealed]"
    assert body["stage"] == "won" and body["events"]
    early = client.get(f"/leads/{some_lead}/history", params={"as_of": "2026-01-01"})
    assert early.status_code == 200
    assert early.json() == seal_personal(cli_json(home, "history", some_lead, "--as-of", "2026-01-01"))


def test_a_plus_that_became_a_space_in_the_query_string_still_means_plus(client: TestClient, home: Path) -> None:
    raw = client.get("/funnel?as_of=2026-03-01T10:00:00+01:00")  # '+' decodes to ' '
    encoded = client.get("/funnel", params={"as_of": "2026-03-01T10:00:00+01:00"})  # sent as %2B
    assert raw.status_code == encoded.status_code == 200
    assert raw.json() == encoded.json() == cli_json(home, "funnel", "--as-of", "2026-03-01T10:00:00+01:00")


def test_each_request_sees_events_stored_since_the_last(client: TestClient, home: Path) -> None:
    before = client.get("/funnel").json()["groups"][0]["stages"]["captured"]
    out = orjson.loads(run_cli(home, "capture", "--email", "fresh@example.com", "--channel", "webinar",
                               "--at", "2026-11-01T09:00:00Z", "--json"))
    after = client.get("/funnel").json()["groups"][0]["stages"]["captured"]
    assert after == before + 1
    history = client.get(f"/leads/{out['lead_id']}/history")
    assert history.status_code == 200 and history.json()["stage"] == "captured"


def test_concurrent_requests_all_get_the_right_answer(client: TestClient) -> None:
    paths = ["/funnel", "/velocity", "/attribution", "/speed", "/leads"] * 4
    expected = {p: client.get(p).json() for p in set(paths)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(client.get, paths))
    assert [r.status_code for r in responses] == [200] * len(paths)
    assert all(r.json() == expected[p] for p, r in zip(paths, responses, strict=True))


def test_a_failure_is_a_json_500_and_the_next_request_reopens(settings: Settings,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real_refresh = Analytics.refresh
    failures = iter([RuntimeError("disk on fire")])

    def refresh_failing_once(self: Analytics) -> int:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_refresh(self)

    with TestClient(create_app(settings, None), raise_server_exceptions=False) as fresh:
        assert fresh.get("/funnel").status_code == 200
        monkeypatch.setattr(Analytics, "refresh", refresh_failing_once)
        broken = fresh.get("/funnel")
        assert broken.status_code == 500 and set(broken.json()) == {"error"}
        assert "fire" not in broken.text  # internals stay in the server log
        assert fresh.get("/funnel").status_code == 200


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


# ---------------------------------------------------------------- errors


BAD = [
    ("/funnel", {"from": "yesterday"}, "from"),
    ("/funnel", {"to": "2026-02-30"}, "to"),
    ("/funnel", {"as_of": "2026-02-01T10:00:00"}, "as_of"),  # no zone
    ("/velocity", {"known_at": "soon"}, "known_at"),
    ("/funnel", {"from": "2026-03-01", "to": "2026-02-01"}, "from"),
    ("/funnel", {"by": "rep"}, "by"),
    ("/velocity", {"by": "owner"}, "by"),
    ("/speed", {"by": "planet"}, "by"),
    ("/funnel", {"mode": "weekly"}, "mode"),
    ("/attribution", {"model": "w_shaped"}, "model"),
    ("/speed", {"mode": "rolling"}, "mode"),
    ("/attribution", {"conversion": "sal"}, "conversion"),
    ("/leads", {"limit": "-1"}, "limit"),
    ("/leads", {"limit": "0"}, "limit"),
    ("/leads", {"limit": "ten"}, "limit"),
    ("/leads", {"stage": "zombie"}, "stage"),
    ("/leads/not-a-uuid/history", {}, "lead_id"),
    ("/leads/{00000000-0000-4000-8000-000000000000}/history", {}, "lead_id"),  # a UUID, not as written
    ("/qualification", {"from": "2026-04-01", "to": "2026-02-01"}, "from"),
    ("/qualification", {"mode": "period"}, "mode"),  # not taken
    ("/reasons", {}, "stage"),  # required
    ("/reasons", {"stage": "won"}, "stage"),
    ("/reasons", {"stage": "lost", "by": "stage"}, "by"),
    ("/reasons", {"stage": "lost", "mode": "period"}, "mode"),  # not taken
    ("/reasons", {"stage": "lost", "from": "2026-04-01", "to": "2026-02-01"}, "from"),
    ("/funnel", {"from": ""}, "from"),
    ("/funnel", {"as_of": " 2026-02-01"}, "as_of"),
    ("/report", {"model": "nope"}, "model"),
    ("/leads", {"from": "2026-01-01"}, "reached"),
    ("/leads", {"reached": "sold"}, "reached"),
    ("/leads", {"reached": "sal", "by": "channel"}, "key"),
    ("/leads", {"reached": "sal", "stage": "sal"}, "stage"),
    ("/leads", {"reached": "sal", "after": "bm9wZQ"}, "after"),
]


@pytest.mark.parametrize(("path", "params", "name"), BAD, ids=[f"{b[0]}-{b[2]}={next(iter(b[1].values()), '')}"
                                                               for b in BAD])
def test_bad_parameters_are_400s_naming_the_parameter(client: TestClient, path: str, params: dict[str, str],
                                                     name: str) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert name in body["error"], body
    assert "--" not in body["error"]  # HTTP parameter names, not CLI flags


def test_an_unknown_lead_is_a_404(client: TestClient) -> None:
    response = client.get("/leads/00000000-0000-4000-8000-000000000000/history")
    assert response.status_code == 404
    assert "unknown lead" in response.json()["error"]


def test_there_are_no_write_endpoints(client: TestClient) -> None:
    for path in ("/funnel", "/leads", "/leads/00000000-0000-4000-8000-000000000000/history", "/report"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = client.request(method, path)
            assert response.status_code == 405, (method, path)
            assert "error" in response.json()
    missing = client.get("/nothing-here")
    assert missing.status_code == 404 and "error" in missing.json()


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer"}])
def test_without_the_right_token_it_is_a_401(secured: TestClient, headers: dict[str, str]) -> None:
    for path in ("/funnel", "/leads", "/report", "/leads/00000000-0000-4000-8000-000000000000/history"):
        response = secured.get(path, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "token" in response.json()["error"]


def test_with_the_right_token_it_answers(secured: TestClient, client: TestClient) -> None:
    response = secured.get("/funnel", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.json() == client.get("/funnel").json()


def test_health_and_the_openapi_document_stay_public(secured: TestClient) -> None:
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/openapi.json").status_code == 200


def test_the_token_is_compared_in_constant_time(secured: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert secured.get("/speed", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert secured.get("/speed", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert len(calls) == 2
    assert all(len(a) == len(b) == 32 for a, b in calls)  # digests: not even the length leaks


def test_a_bad_parameter_is_checked_only_after_the_token(secured: TestClient) -> None:
    assert secured.get("/funnel", params={"mode": "weekly"}).status_code == 401


# ---------------------------------------------------------------- OpenAPI

EXPECTED_PARAMETERS = {
    "/funnel": {"by", "from", "to", "mode", "as_of", "known_at", "interval", "compare_to"},
    "/velocity": {"by", "from", "to", "mode", "as_of", "known_at", "compare_to"},
    "/attribution": {"by", "from", "to", "mode", "model", "conversion", "as_of", "known_at", "compare_to"},
    "/speed": {"by", "from", "to", "mode", "as_of", "known_at", "compare_to"},
    "/leads": {"stage", "channel", "owner", "limit", "as_of", "known_at", "reached", "mode", "from", "to", "by", "key",
               "after"},
    "/leads/{lead_id}/history": {"lead_id", "as_of", "known_at"},
    "/report": {"from", "to", "mode", "model", "conversion", "as_of", "known_at", "plan_revenue", "plan_period"},
    "/sla": {"by", "from", "to", "as_of", "known_at"},
    "/qualification": {"from", "to", "as_of", "known_at"},
    "/plan": {"revenue", "period", "by", "lookback", "as_of", "mix"},
    "/reasons": {"stage", "by", "from", "to", "as_of", "known_at"},
    "/pipeline": {"by", "as_of", "known_at"},
    "/healthz": set(),
}


def test_the_openapi_document_is_valid_and_lists_every_endpoint(client: TestClient, secured: TestClient) -> None:
    from openapi_spec_validator import validate

    doc = client.get("/openapi.json").json()
    validate(doc)
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == set(EXPECTED_PARAMETERS)
    for path, names in EXPECTED_PARAMETERS.items():
        assert set(doc["paths"][path]) == {"get"}, path  # read-only
        operation = doc["paths"][path]["get"]
        assert {p["name"] for p in operation.get("parameters", [])} == names, path
        assert "422" not in operation["responses"]
        if path != "/healthz":
            assert "400" in operation["responses"]
    params = {p["name"]: p for p in doc["paths"]["/funnel"]["get"]["parameters"]}
    assert params["mode"]["schema"] == {**params["mode"]["schema"], "type": "string", "enum": ["cohort", "period"],
                                        "default": "cohort"}
    assert params["by"]["schema"]["type"] == "string" and params["by"]["schema"]["enum"] == ["channel", "campaign", "owner"]
    assert "security" not in doc["paths"]["/funnel"]["get"]

    secured_doc = secured.get("/openapi.json").json()
    validate(secured_doc)
    assert secured_doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert secured_doc["paths"]["/funnel"]["get"]["security"] == [{"bearer": []}]
    assert "401" in secured_doc["paths"]["/funnel"]["get"]["responses"]
    assert "security" not in secured_doc["paths"]["/healthz"]["get"]


def test_the_interactive_docs_that_need_a_cdn_are_off(client: TestClient) -> None:
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_home(postgres_schema: str, tmp_path: Path) -> tuple[Path, Settings, dict[str, str]]:
    dsn = os.environ["LEADLEDGER_POSTGRES_DSN"]  # postgres_schema skips without it
    env = {**ENV, "LEADLEDGER_POSTGRES_DSN": dsn, "LEADLEDGER_POSTGRES_SCHEMA": postgres_schema}
    run_cli(tmp_path, "simulate", "--leads", "120", "--seed", "2", env=env)
    settings = Settings(home=tmp_path, postgres_dsn=dsn, postgres_schema=postgres_schema, secret=SECRET.encode())
    return tmp_path, settings, env


@pytest.mark.postgres
def test_the_api_on_postgresql(pg_home: tuple[Path, Settings, dict[str, str]]) -> None:
    home, settings, env = pg_home
    with TestClient(create_app(settings, TOKEN)) as pg:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for path, params, args in [
            ("/funnel", {"by": "channel"}, ["funnel", "--by", "channel"]),
            ("/attribution", {"by": "campaign", "model": "first"}, ["attribution", "--by", "campaign", "--model", "first"]),
            ("/speed", {"by": "owner", "known_at": "2099-01-01"}, ["speed", "--by", "owner", "--known-at", "2099-01-01"]),
            ("/leads", {"limit": 3}, ["leads", "--limit", "3"]),
            ("/pipeline", {"as_of": "2026-03-01"}, ["pipeline", "--as-of", "2026-03-01"]),
        ]:
            response = pg.get(path, params=params, headers=auth)
            assert response.status_code == 200, response.text
            assert response.json() == orjson.loads(run_cli(home, *args, "--json", env=env))
        lead = pg.get("/leads", params={"limit": 1}, headers=auth).json()["leads"][0]["lead_id"]
        history = pg.get(f"/leads/{lead}/history", headers=auth)
        assert history.status_code == 200 and history.json()["lead_id"] == lead


@pytest.mark.postgres
def test_ungrouped_queries_and_the_report_on_postgresql(pg_home: tuple[Path, Settings, dict[str, str]]) -> None:
    home, settings, env = pg_home
    with TestClient(create_app(settings, None)) as pg:
        for name in ("funnel", "velocity", "attribution", "speed"):
            response = pg.get(f"/{name}")
            assert response.status_code == 200, response.text
            assert response.json() == orjson.loads(run_cli(home, name, "--json", env=env))
        assert pg.get("/report").status_code == 200
