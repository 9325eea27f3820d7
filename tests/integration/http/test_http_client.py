"""A typed client generated from the OpenAPI document (openapi-python-client, at test time) calls
every endpoint and reads every answer, errors included, into its typed models."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID

import orjson
import pytest
from click.testing import CliRunner

from leadledger.cli import cli
from leadledger.http.app import create_app
from lifecycle.settings import Settings

with warnings.catch_warnings():  # starlette prefers httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[3]
SECRET = "http-client-test-secret"
ENV = {"LEADLEDGER_SECRET": SECRET, "LEADLEDGER_POSTGRES_DSN": "", "LEADLEDGER_API_TOKEN": ""}
TOKEN = "client-test-token"
PACKAGE = "leadledger_api_client"


def run_cli(home: Path, *args: str) -> bytes:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], env=ENV, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


def cli_json(home: Path, *args: str) -> Any:
    return orjson.loads(run_cli(home, *args, "--json"))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("http-client")
    run_cli(home, "policy", "publish", str(ROOT / "lifecycle" / "simulate" / "default_policy.toml"))
    run_cli(home, "simulate", "--leads", "150", "--seed", "5")
    return home


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(home=home, secret=SECRET.encode()), TOKEN)) as server:
        yield server


@pytest.fixture(scope="module")
def api(server: TestClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated package, imported from a temporary directory."""
    out = tmp_path_factory.mktemp("generated")
    document = out / "openapi.json"
    document.write_bytes(orjson.dumps(server.get("/openapi.json").json()))
    config = out / "config.yaml"
    config.write_text(f"package_name_override: {PACKAGE}\npost_hooks: []\n")
    generator = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run([str(generator), "generate", "--path", str(document), "--meta", "none",
                           "--output-path", str(out / PACKAGE), "--config", str(config), "--fail-on-warning"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr  # no warning either: every schema is understood
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def endpoint(package: str, name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.{package}.{name}")


@pytest.fixture(scope="module")
def client(api: ModuleType, server: TestClient) -> Any:
    """The generated client with its own bearer-token auth, over the in-process app."""
    return api.AuthenticatedClient(base_url=str(server.base_url), token=TOKEN, raise_on_unexpected_status=True,
                                   httpx_args={"transport": server._transport})


def parsed(response: Any, model: str) -> Any:
    """The typed body, which writes back to exactly the JSON sent (nothing lost, nothing invented)."""
    assert response.status_code == 200, response.content
    body = response.parsed
    assert type(body).__name__ == model, body
    assert body.to_dict() == orjson.loads(response.content)
    return body


def test_every_endpoint_through_the_generated_client(api: ModuleType, client: Any, home: Path) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    health = endpoint("meta", "healthz").sync_detailed(client=client)
    assert parsed(health, "Health").status == "ok"

    funnel = parsed(endpoint("queries", "funnel").sync_detailed(
        client=client, by=models.FunnelBy.CHANNEL, mode=models.FunnelMode.PERIOD, from_="2026-01-01",
        to="2026-04-01T00:00:00Z"), "FunnelBody")
    assert funnel.to_dict() == cli_json(home, "funnel", "--by", "channel", "--mode", "period", "--from", "2026-01-01",
                                        "--to", "2026-04-01T00:00:00Z")
    assert funnel.groups and all(group.stages["captured"] >= 0 for group in funnel.groups)

    trend = parsed(endpoint("queries", "funnel").sync_detailed(
        client=client, interval=models.FunnelInterval.MONTH, compare_to="previous", from_="2026-02-01",
        to="2026-04-01"), "FunnelBody")
    assert [i.label for i in trend.intervals] == ["2026-02", "2026-03"]
    assert trend.compare.from_ == "2025-12-01T00:00:00.000000Z" and trend.compare.to == "2026-02-01T00:00:00.000000Z" and trend.difference.groups
    assert trend.to_dict() == cli_json(home, "funnel", "--interval", "month", "--compare-to", "previous",
                                       "--from", "2026-02-01", "--to", "2026-04-01")

    velocity = parsed(endpoint("queries", "velocity").sync_detailed(client=client, by=models.VelocityBy.CAMPAIGN),
                      "VelocityBody")
    assert velocity.groups[0].time_in_stage["captured"].count >= 0

    attribution = parsed(endpoint("queries", "attribution").sync_detailed(
        client=client, model=models.AttributionModel.U_SHAPED, conversion=models.AttributionConversion.SQL),
        "AttributionBody")
    assert attribution.model == "u_shaped" and attribution.conversion == "sql"

    speed = parsed(endpoint("queries", "speed").sync_detailed(client=client, by=models.SpeedBy.OWNER),
                   "SpeedSplitBody")
    assert speed.groups and speed.groups[0].system_delay.count >= 0

    sla = parsed(endpoint("queries", "sla").sync_detailed(client=client, by=models.SlaBy.OWNER), "SlaBody")
    assert sla.by.value == "owner" and sla.policy_version == 1 and sla.rules

    qualification = parsed(endpoint("queries", "qualification").sync_detailed(
        client=client, as_of="2026-12-31T23:59:59+01:00"), "QualificationBody")
    assert [row.source.value for row in qualification.sources] == ["scorer", "external", "override"]
    assert qualification.total.source.value == "all"
    assert qualification.to_dict() == cli_json(home, "qualification", "--as-of", "2026-12-31T23:59:59+01:00")

    plan = parsed(endpoint("queries", "plan").sync_detailed(
        client=client, revenue=250000.0, period="2026-07-01..2026-10-01", by=models.PlanBy.CHANNEL,
        as_of="2026-06-01"), "PlanBody")
    assert plan.groups and plan.capacity.policy_version == 1 and plan.reps
    assert plan.to_dict() == cli_json(home, "plan", "--revenue", "250000", "--period", "2026-07-01..2026-10-01",
                                      "--by", "channel", "--as-of", "2026-06-01")
    reasons = parsed(endpoint("queries", "reasons").sync_detailed(
        client=client, stage=models.ReasonsStage.RECYCLED, by=models.ReasonsBy.OWNER, from_="2026-01-15"),
        "ReasonsBody")
    assert reasons.stage.value == "recycled" and reasons.events == sum(g.events for g in reasons.groups) > 0
    assert all(r.count >= 1 and 0 < r.share <= 1 for g in reasons.groups for r in g.reasons)
    assert reasons.to_dict() == cli_json(home, "reasons", "--stage", "recycled", "--by", "owner", "--from", "2026-01-15")
    pipeline = parsed(endpoint("queries", "pipeline").sync_detailed(
        client=client, by=models.PipelineBy.CHANNEL, as_of="2026-03-01"), "PipelineBody")
    assert pipeline.by.value == "channel" and pipeline.groups
    assert pipeline.total.open_.sql == sum(group.open_.sql for group in pipeline.groups)
    assert pipeline.to_dict() == cli_json(home, "pipeline", "--by", "channel", "--as-of", "2026-03-01")

    leads = parsed(endpoint("queries", "leads").sync_detailed(client=client, stage=models.LeadsStage.WON, limit=2),
                   "LeadsBody")
    assert 1 <= len(leads.leads) <= 2 and all(lead.stage == "won" for lead in leads.leads)

    cell = {"reached": models.LeadsReached.MQL, "by": models.LeadsBy.CHANNEL, "key": "webinar", "limit": 2}
    first = parsed(endpoint("queries", "leads").sync_detailed(client=client, **cell), "LeadsBody")
    second = parsed(endpoint("queries", "leads").sync_detailed(client=client, after=first.next_, **cell), "LeadsBody")
    assert first.reached == "mql" and first.key == "webinar" and isinstance(first.next_, str)
    assert len(first.leads) == 2 and all(isinstance(lead.entered_at, str) for lead in first.leads)
    assert not {lead.lead_id for lead in first.leads} & {lead.lead_id for lead in second.leads}
    assert second.to_dict() == cli_json(home, "leads", "--reached", "mql", "--by", "channel", "--key", "webinar",
                                        "--limit", "2", "--after", first.next_)

    history = parsed(endpoint("audit", "lead_history").sync_detailed(UUID(leads.leads[0].lead_id), client=client),
                     "HistoryBody")
    assert history.lead_id == leads.leads[0].lead_id and history.stage == "won" and history.events

    report = endpoint("report", "report").sync_detailed(client=client, model=models.ReportModel.FIRST)
    assert report.status_code == 200 and isinstance(report.parsed, str) and "<html" in report.parsed


def test_errors_read_as_the_error_model(api: ModuleType, client: Any, server: TestClient) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    bad = endpoint("queries", "funnel").sync_detailed(client=client, from_="2026-02-30")
    assert bad.status_code == 400 and type(bad.parsed).__name__ == "ErrorBody"
    assert bad.parsed.error.startswith("from:")

    report = endpoint("report", "report").sync_detailed(client=client, as_of="soon")  # an HTML page's error: JSON
    assert report.status_code == 400 and type(report.parsed).__name__ == "ErrorBody"

    mix = endpoint("queries", "plan").sync_detailed(client=client, revenue=1.0, period="2026-07-01..2026-10-01",
                                                    by=models.PlanBy.CHANNEL, mix="webinar=0.5")
    assert mix.status_code == 400 and "sum to 1" in mix.parsed.error

    unknown = endpoint("audit", "lead_history").sync_detailed(UUID(int=7), client=client)
    assert unknown.status_code == 404 and "unknown lead" in unknown.parsed.error

    anonymous = api.Client(base_url=str(server.base_url), httpx_args={"transport": server._transport})
    refused = endpoint("queries", "qualification").sync_detailed(client=anonymous)
    assert refused.status_code == 401 and "token" in refused.parsed.error
