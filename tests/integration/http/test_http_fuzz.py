"""The OpenAPI document is the contract: schemathesis, reading only the document a real `serve`
publishes, fuzzes every operation (examples, coverage, fuzzing, and the stateful link from the
lead list to a lead's history) with every check, with and without a token, and finds nothing.

The one rule a JSON Schema cannot state, `from` before `to`, is taught to the generator by
fuzz_hooks.py (the document states it in words)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.serve import free_port, leadledger, wait_until_up

ROOT = Path(__file__).resolve().parents[3]
HOOKS = Path(__file__).with_name("fuzz_hooks.py")
TOKEN = "fuzz-test-token"
SECRET = "http-fuzz-test-secret"
#: test cases per operation and phase: ~25 s with the token and ~10 s without on an idle 2-core machine
EXAMPLES = int(os.environ.get("LEADLEDGER_FUZZ_EXAMPLES", "40"))
SEED = os.environ.get("LEADLEDGER_FUZZ_SEED", "20260201")


POLICY = Path(__file__).resolve().parents[3] / "lifecycle" / "simulate" / "default_policy.toml"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env.update(LEADLEDGER_HOME=str(tmp_path_factory.mktemp("fuzz") / "home"), LEADLEDGER_SECRET=SECRET)
    # with the demo policy and its routing and SLA clocks in the loop, so /sla judges real clocks (also at
    # far instants such as as_of=9999-12-31T23:59:59Z)
    leadledger(env, "policy", "publish", str(POLICY))
    leadledger(env, "simulate", "--leads", "200", "--seed", "3", "--operate")
    return env


def serve(env: dict[str, str], token: str | None) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "error"],
        env={**env, "LEADLEDGER_API_TOKEN": token or ""}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, f"{base}/healthz")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "Traceback" not in stderr, stderr


@pytest.fixture(scope="module")
def secured(env: dict[str, str]) -> Iterator[str]:
    yield from serve(env, TOKEN)


@pytest.fixture(scope="module")
def open_api(env: dict[str, str]) -> Iterator[str]:
    yield from serve(env, None)


def schemathesis(base: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    done = subprocess.run(
        [st, "run", f"{base}/openapi.json", "--checks", "all", "--max-examples", str(EXAMPLES), "--seed", SEED,
         "--generation-database", "none", "--no-color", "--workers", "2", "--request-timeout", "30",
         "--report", "junit", "--report-dir", str(tmp_path), *args],
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )
    return done.returncode, done.stdout + done.stderr


def summary(report: str) -> str:
    """'Operations: 11 selected / 11 total … 1814 generated, 1814 passed' for the test log."""
    operations = re.search(r"Operations:\s+(.+)", report)
    cases = re.search(r"Test cases:\s+(.+)", report)
    return f"operations {operations[1] if operations else '?'}; cases {cases[1] if cases else '?'}"


def test_the_fuzzer_finds_nothing_with_a_token(secured: str, tmp_path: Path) -> None:
    code, report = schemathesis(secured, tmp_path, "--header", f"Authorization: Bearer {TOKEN}")
    print(summary(report))
    assert code == 0, report
    operations = sum(len(ops) for ops in httpx.get(f"{secured}/openapi.json").json()["paths"].values())
    assert "No issues found" in report and f"{operations} selected / {operations} total" in report, report
    assert re.search(r"API Links:\s+1 covered", report), report  # /leads -> /leads/{lead_id}/history


def test_the_fuzzer_finds_nothing_without_a_token(open_api: str, tmp_path: Path) -> None:
    code, report = schemathesis(open_api, tmp_path, "--phases", "examples,coverage,fuzzing")
    print(summary(report))
    assert code == 0, report
    assert "No issues found" in report, report
