"""Running leadledger as real processes for the HTTP tests: a free loopback port, a CLI call that must
succeed, and waiting for `serve` to answer."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import orjson


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def leadledger(env: dict[str, str], *args: str) -> Any:
    """Run the CLI; it must exit 0. Its JSON answer with --json, else its stdout."""
    done = subprocess.run([sys.executable, "-m", "lifecycle", *args], env=env, capture_output=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return orjson.loads(done.stdout) if "--json" in args else done.stdout


def wait_until_up(proc: subprocess.Popen[bytes], url: str, seconds: float = 60) -> None:
    """Until `url` answers 200; fails if the process exits first or the time runs out."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {seconds} s"
        time.sleep(0.1)
    raise AssertionError(f"serve exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
