"""Settings, read once from the environment (CLI flags override them)."""

from __future__ import annotations

import os
import secrets as _secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_MQL_THRESHOLD = 70


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    home: Path
    postgres_dsn: str | None = None
    postgres_schema: str = "public"
    kafka_bootstrap: str | None = None
    mql_threshold: int = DEFAULT_MQL_THRESHOLD
    secret: bytes | None = None  # None: use (or create) HOME/secret.key
    actor: str = "cli"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        threshold_txt = env.get("LEADLEDGER_MQL_THRESHOLD", "").strip()
        try:
            threshold = int(threshold_txt) if threshold_txt else DEFAULT_MQL_THRESHOLD
        except ValueError:
            raise SettingsError(
                f"LEADLEDGER_MQL_THRESHOLD must be an integer 0-100, got {threshold_txt!r}"
            ) from None
        if not 0 <= threshold <= 100:
            raise SettingsError(f"LEADLEDGER_MQL_THRESHOLD must be 0-100, got {threshold}")
        secret = env.get("LEADLEDGER_SECRET")
        return cls(
            home=Path(env.get("LEADLEDGER_HOME") or ".leadledger"),
            postgres_dsn=env.get("LEADLEDGER_POSTGRES_DSN") or None,
            postgres_schema=env.get("LEADLEDGER_POSTGRES_SCHEMA") or "public",
            kafka_bootstrap=env.get("LEADLEDGER_KAFKA_BOOTSTRAP") or None,
            mql_threshold=threshold,
            secret=secret.encode() if secret else None,
            actor=env.get("LEADLEDGER_ACTOR") or f"cli:{env.get('USER', 'unknown')}",
        )

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    def resolve_secret(self) -> bytes:
        """The configured secret, else HOME/secret.key (created once, mode 0600)."""
        if self.secret:
            return self.secret
        path = self.home / "secret.key"
        if path.exists():
            return path.read_bytes().strip()
        if self.postgres_dsn:
            raise SettingsError(
                "LEADLEDGER_SECRET is not set: with a shared PostgreSQL store every process "
                "must use the same secret (set LEADLEDGER_SECRET to a long random string)"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        value = _secrets.token_urlsafe(48).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(value)
        print(
            f"leadledger: LEADLEDGER_SECRET is not set; created {path} (keep it safe: "
            "without it lead ids and personal data cannot be recovered)",
            file=sys.stderr,
        )
        return value
