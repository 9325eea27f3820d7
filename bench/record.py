"""Appending a benchmark's lines to bench/results.md, under a header with the command line."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).with_name("results.md")


class Lines(list[str]):
    """A benchmark's result lines: each printed as it is said, all appended at the end."""

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.append(line)


def append_results(title: str, module: str, argv: Sequence[str] | None, lines: Sequence[str],
                   detail: str = "") -> None:
    """`## title — when, machine[, detail]`, then the command that produced `lines`, then them."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)
    extra = f", {detail}" if detail else ""
    header = (f"\n## {title} — {stamp}, {platform.machine()} {os.cpu_count()} cores, "
              f"Python {platform.python_version()}{extra}\n\n`{command.strip()}`\n\n")
    with RESULTS.open("a") as fh:
        fh.write(header + "\n".join(lines) + "\n")
