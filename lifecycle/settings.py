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

from pydantic import Field, SecretBytes, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_MQL_THRESHOLD = 70
DEFAULT_REPORTING_CURRENCY = "EUR"
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
    reporting_currency: str = Field(default=DEFAULT_REPORTING_CURRENCY,
                                    description="Currency revenue is reported in (ISO 4217).")
    fx_file: Path | None = Field(default=None, description="TOML file whose [fx] table converts won amounts.")

    @field_validator("reporting_currency")
    @classmethod
    def _iso_4217(cls, value: str) -> str:
        code = value.strip().upper()
        if not (len(code) == 3 and code.isascii() and code.isalpha()):
            raise ValueError("must be a 3-letter ISO 4217 currency code like EUR")
        return code

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        given = (os.environ if env is None else env).get(ENV_PREFIX + "SECRET")
        if given is not None and not given.strip():
            # empty means unset for every other variable; an empty secret is a mistake to name
            raise SettingsError("LEADLEDGER_SECRET is set but empty: set it to the store's secret "
                                "(at least 16 bytes), or unset it to use HOME/secret.key")
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
        """The configured secret, else HOME/secret.key (created once, atomically, mode 0600).

        A secret shorter than MIN_SECRET_BYTES (an empty one too) is a SettingsError: it would
        key the e-mail index and wrap every data key, so a guessable one exposes them all."""
        if self.secret is not None:
            return _checked(self.secret.get_secret_value(), "LEADLEDGER_SECRET")
        path = self.home / SECRET_FILE
        try:
            return _checked(path.read_bytes().strip(), str(path))
        except FileNotFoundError:
            pass
        if self.postgres_dsn:
            raise SettingsError(
                "LEADLEDGER_SECRET is not set: with a shared PostgreSQL store every process "
                "must use the same secret (set LEADLEDGER_SECRET to a long random string)"
            )
        return _create_secret_file(self.home, path)


#: the shortest secret accepted (bytes of LEADLEDGER_SECRET or of HOME/secret.key)
MIN_SECRET_BYTES = 16
SECRET_FILE = "secret.key"


def _checked(value: bytes, where: str) -> bytes:
    if len(value.strip()) < MIN_SECRET_BYTES:
        what = "empty" if not value.strip() else f"too short ({len(value)} bytes)"
        fix = ("set LEADLEDGER_SECRET to at least 16 bytes of random text, e.g. the output of "
               "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
               if where == "LEADLEDGER_SECRET" else
               "it was truncated or not written by leadledger: restore it from your backup (lead data "
               "cannot be read without the secret the store was created with)")
        raise SettingsError(f"{where} is {what}: a secret needs at least {MIN_SECRET_BYTES} bytes; {fix}")
    return value


def private_home(home: Path) -> None:
    """Create the data folder, mode 0700 (readable by its owner only), if it does not exist."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)


def _create_secret_file(home: Path, path: Path) -> bytes:
    """A new random secret in `path`, atomically: written in full to a temporary file first and
    then linked into place, so a process never reads a half-written key; when two processes
    create it at once, the loser reads the winner's."""
    private_home(home)
    value = _secrets.token_urlsafe(48).encode()
    tmp = home / f".{SECRET_FILE}.{os.getpid()}.{_secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(value)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _checked(path.read_bytes().strip(), str(path))
    finally:
        tmp.unlink(missing_ok=True)
    print(
        f"leadledger: LEADLEDGER_SECRET is not set; created {path} (keep it safe: "
        "without it lead ids and personal data cannot be recovered)",
        file=sys.stderr,
    )
    return value
