"""Settings: one typed model of every `LEADLEDGER_*` environment variable (CLI flags override them).

`Settings.from_env()` reads the environment once (pydantic-settings does the parsing and the
type checks); constructing `Settings(...)` directly reads nothing, so a test or a tool gets
exactly what it passes. Secrets (`secret`, the DSN, which may hold a password) never show in
`repr`.
"""

from __future__ import annotations

import os
import secrets as _secrets
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field, SecretBytes, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_MQL_THRESHOLD = 70
ENV_PREFIX = "LEADLEDGER_"

#: the environment `from_env` reads (None: direct construction, which reads no environment)
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("leadledger_environ", default=None)


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the variable."""


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (os.environ, or a test's dict)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {(k if self.case_sensitive else k.lower()): v for k, v in self._environ.items()
                if not (self.env_ignore_empty and v == "")}


def _default_actor() -> str:
    return f"cli:{os.environ.get('USER', 'unknown')}"


class EnvSettings(BaseSettings):
    """Base of leadledger's settings models: `LEADLEDGER_` variables, empty means unset, frozen."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON.get()
        if environ is None:
            return (init_settings,)
        return init_settings, _Environment(settings_cls, environ)

    @classmethod
    def read_env(cls, env: Mapping[str, str] | None = None, **given: Any) -> Any:
        """The model from `env` (default os.environ), `given` values first; a bad value is a
        `SettingsError` naming the variable."""
        token = _ENVIRON.set(os.environ if env is None else env)
        try:
            return cls(**given)
        except ValidationError as exc:
            raise SettingsError(_describe(exc, cls.model_config.get("env_prefix") or ENV_PREFIX)) from None
        finally:
            _ENVIRON.reset(token)


def _describe(exc: ValidationError, prefix: str) -> str:
    problems = []
    for error in exc.errors():
        name = "_".join(str(part) for part in error["loc"]).upper()
        name = name if name.startswith(ENV_PREFIX) else prefix + name
        got = error.get("input")
        problems.append(f"{name}: {error['msg']}, got {got!r}" if isinstance(got, str | int) else
                        f"{name}: {error['msg']}")
    return "; ".join(problems)


class Settings(EnvSettings):
    """Where the data lives, who is acting, and the rules that need a number."""

    home: Path = Field(default=Path(".leadledger"), description="Embedded data folder (SQLite files, secret.key).")
    postgres_dsn: str | None = Field(default=None, repr=False, description="Use PostgreSQL as the store.")
    postgres_schema: str = Field(default="public", description="PostgreSQL schema of the store and read models.")
    kafka_bootstrap: str | None = Field(default=None, description="Kafka bootstrap servers host:port[,...].")
    mql_threshold: int = Field(default=DEFAULT_MQL_THRESHOLD, ge=0, le=100, description="Score needed for MQL.")
    secret: SecretBytes | None = Field(default=None, description="Keys lead ids and wraps data keys; default HOME/secret.key.")
    actor: str = Field(default_factory=_default_actor, description="Who the CLI's commands are recorded as.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        settings: Settings = cls.read_env(env)
        return settings

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given values (None: keep this one), validated like the rest."""
        values = {**self.model_dump(), **{k: v for k, v in changes.items() if v is not None}}
        try:
            return Settings(**values)
        except ValidationError as exc:
            raise SettingsError(_describe(exc, ENV_PREFIX)) from None

    def resolve_secret(self) -> bytes:
        """The configured secret, else HOME/secret.key (created once, mode 0600)."""
        if self.secret is not None and self.secret.get_secret_value():
            return self.secret.get_secret_value()
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
