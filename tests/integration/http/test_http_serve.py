"""`leadledger serve` as a real process on a free 127.0.0.1 port: up, authenticated, answers
like the CLI under concurrent requests, sees new events, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.serve import free_port, leadledger, wait_until_up

SECRET = "http-serve-test-secret"
TOKEN = "serve-test-token"


def test_serve_as_a_real_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env.update(LEADLEDGER_HOME=str(tmp_path / "home"), LEADLEDGER_SECRET=SECRET)
    leadledger(env, "simulate", "--leads", "200", "--seed", "3")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        env={**env, "LEADLEDGER_API_TOKEN": TOKEN}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        wait_until_up(proc, f"{base}/healthz")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{base}/funnel", timeout=30).status_code == 401

        funnel = httpx.get(f"{base}/funnel", params={"by": "channel"}, headers=auth, timeout=30)
        assert funnel.status_code == 200
        assert funnel.json() == leadledger(env, "funnel", "--by", "channel", "--json")

        paths = ["/funnel", "/velocity", "/attribution?by=channel", "/speed?by=owner", "/leads"] * 4
        with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
            expected = {p: client.get(p).json() for p in set(paths)}
            with ThreadPoolExecutor(max_workers=8) as pool:
                responses = list(pool.map(client.get, paths))
            assert [r.status_code for r in responses] == [200] * len(paths)
            assert all(r.json() == expected[p] for p, r in zip(paths, responses, strict=True))

            before = client.get("/funnel").json()["groups"][0]["stages"]["captured"]
            leadledger(env, "capture", "--email", "late@example.com", "--channel", "referral")
            assert client.get("/funnel").json()["groups"][0]["stages"]["captured"] == before + 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: 0 or -SIGTERM
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr
    assert f"http://127.0.0.1:{port}/" in stderr  # bound where told
