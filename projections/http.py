"""The read-only HTTP JSON API (`leadledger serve`): the CLI's queries over HTTP, with an
OpenAPI document and optional bearer-token auth. Build it with `create_app(settings, token)`.

Design:
- Every query runs on ONE dedicated worker thread that owns the `Analytics` object (SQLite
  connections belong to the thread that opened them): the handlers only hand work to it and
  await the result, so concurrent requests are serialized and never share a connection across
  threads. Before answering, the worker calls `analytics.refresh()`, so each request sees
  the events stored up to that moment (embedded mode).
- Bodies are the exact `--json` output of the CLI (same dicts, same orjson encoding).
- Errors are always `{"error": "..."}`: 400 names the bad parameter (FastAPI's 422 is turned
  into a 400), 401 for a missing or wrong token, 404 for an unknown lead or path.
- `/healthz` and `/openapi.json` stay public even with a token: neither reveals data, load
  balancers probe the first, and clients need the second to learn how to authenticate.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import queue
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

import click
import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi import Query as Param
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from lifecycle.settings import Settings
from lifecycle.stages import FUNNEL_ORDER
from projections.query import CONVERSIONS, LEAD_BYS, MAX_LIMIT, MODELS, MODES, SPEED_BYS, Query, QueryError
from projections.service import Analytics, open_analytics

T = TypeVar("T")
log = logging.getLogger("leadledger.http")

API_TITLE = "leadledger analytics API"


class ParameterError(ValueError):
    """A request parameter is malformed; the message starts with the parameter's name."""


# ---------------------------------------------------------------- responses


class JSONBody(Response):
    """orjson, like the CLI's `--json` (same numbers, same key order)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONBody:
    return JSONBody({"error": message}, status_code=status, headers=headers)


# Documentation models for the OpenAPI document (SPEC §8). Bodies are not validated
# against them: the service's dicts are sent as they are.


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ErrorBody(_Doc):
    error: str = Field(description="What is wrong; for a bad parameter it starts with the parameter's name.")


class FunnelGroup(_Doc):
    key: str | None = Field(description="Channel or campaign of the lead's capture; null without `by`.")
    stages: dict[str, int] = Field(description="Distinct leads per stage (all nine stages).")
    conversion: dict[str, float | None] = Field(
        description="`captured->mql`, `mql->sal`, `sal->sql`, `sql->won`: reached(b) / reached(a), "
        "null when reached(a) = 0."
    )


class FunnelBody(_Doc):
    mode: Literal["cohort", "period"]
    from_: str | None = Field(alias="from")
    to: str | None
    as_of: str | None
    by: str | None
    groups: list[FunnelGroup]


class Stat(_Doc):
    count: int
    mean_s: float | None
    p50_s: float | None
    p90_s: float | None


class VelocityGroup(_Doc):
    key: str | None
    time_in_stage: dict[str, Stat] = Field(description="Completed stays per stage, in seconds.")
    time_to_stage: dict[str, Stat] = Field(description="First entry minus capture time (mql, sal, sql, won).")


class VelocityBody(_Doc):
    by: str | None
    as_of: str | None
    groups: list[VelocityGroup]


class AttributionGroup(_Doc):
    key: str | None
    conversions: float = Field(description="Attributed conversions (fractional credit).")
    revenue: float | None = Field(description="Attributed revenue (amount × credit); null unless conversion=won.")


class AttributionBody(_Doc):
    model: str
    conversion: str
    by: str | None
    as_of: str | None
    groups: list[AttributionGroup]


class SpeedGroup(_Doc):
    key: str | None = Field(description="The owner of the assignment; null without `by`.")
    assignments: int
    contacted: int
    within_5m: int
    p50_s: float | None
    p90_s: float | None


class SpeedBody(_Doc):
    by: str | None
    as_of: str | None
    groups: list[SpeedGroup]


class LeadRow(_Doc):
    lead_id: str
    stage: str
    owner: str | None
    score: int | None
    channel: str | None
    campaign: str | None
    captured_at: str | None
    last_change_at: str | None


class LeadsBody(_Doc):
    as_of: str | None
    leads: list[LeadRow] = Field(description="Newest first.")


class HistoryBody(_Doc):
    lead_id: str
    stage: str | None = Field(description="The lead's stage at `as_of` (null if not yet captured then).")
    as_of: str | None
    known_at: str | None
    events: list[dict[str, Any]] = Field(description="CloudEvents 1.0 envelopes in store order.")


class Health(_Doc):
    status: Literal["ok"]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A bad parameter; the message names it."},
}
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
}


# ---------------------------------------------------------------- parameters

_TIME_HELP = (
    "A date (2026-02-01 = 00:00 UTC that day) or an RFC 3339 time with a zone "
    "(2026-02-01T09:30:00Z; write + as %2B)."
)
_AS_OF_HELP = "Only events that occurred at or before this time: the answer a user would have seen then. " + _TIME_HELP
_KNOWN_AT_HELP = "...and were recorded (stored) at or before this time. " + _TIME_HELP

FromParam = Annotated[str | None, Param(alias="from", description="Start of the period (inclusive). " + _TIME_HELP)]
ToParam = Annotated[str | None, Param(description="End of the period (exclusive). " + _TIME_HELP)]
AsOfParam = Annotated[str | None, Param(description=_AS_OF_HELP)]
KnownAtParam = Annotated[str | None, Param(description=_KNOWN_AT_HELP)]
ModeParam = Annotated[str, Param(
    description="cohort (default): the leads captured in [from, to); period: the measured event "
                "(stage entry, end of a stay, conversion, assignment) occurred in [from, to).",
    json_schema_extra={"enum": list(MODES)},
)]
ModelParam = Annotated[str, Param(
    description="Attribution model: first, last, linear (equal), u_shaped (40/20/40), "
                "time_decay (7-day half-life).",
    json_schema_extra={"enum": list(MODELS)},
)]
ConversionParam = Annotated[str, Param(description="The stage whose entries are credited.",
                                       json_schema_extra={"enum": list(CONVERSIONS)})]
LeadsByParam = Annotated[str | None, Param(
    description="Group by the channel or campaign of the lead's capture (first touch).",
    json_schema_extra={"enum": list(LEAD_BYS)},
)]
SpeedByParam = Annotated[str | None, Param(
    description="Group by the owner of the assignment, or the lead's capture channel or campaign.",
    json_schema_extra={"enum": list(SPEED_BYS)},
)]
StageParam = Annotated[str | None, Param(description="Only leads now (at as_of) in this stage.",
                                         json_schema_extra={"enum": [s.value for s in FUNNEL_ORDER]})]
LimitParam = Annotated[int, Param(description=f"At most this many leads (1 to {MAX_LIMIT:,}), newest first.")]

# a '+' in a query string decodes to a space: "…T09:30:00 01:00" means "…T09:30:00+01:00"
_SPACE_FOR_PLUS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d:?\d\d)$")


def parse_time(value: str | None, name: str) -> datetime | None:
    """The CLI's parser (`lifecycle.cli.parse_user_time`), with HTTP's error wording."""
    if value is None:
        return None
    from lifecycle.cli import parse_user_time

    text = _SPACE_FOR_PLUS.sub(r"\1+\2", value.strip())
    try:
        return parse_user_time(text, name)
    except click.BadParameter as exc:
        raise ParameterError(f"{name}: {exc.message}") from None


_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z-]*)")


def http_wording(message: str) -> str:
    """The service words its errors for the CLI (`--as-of`); name the HTTP parameter (`as_of`)."""
    return _FLAG.sub(lambda m: m.group(1).replace("-", "_"), message)


def parse_lead_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ParameterError(f"lead_id: {value!r} is not a lead id (a UUID)") from None


def build_query(*, from_: str | None = None, to: str | None = None, as_of: str | None = None,
                known_at: str | None = None, **rest: Any) -> Query:
    """A Query from request parameters; times are parsed here, the rest is checked by the service."""
    return Query(from_=parse_time(from_, "from"), to=parse_time(to, "to"), as_of=parse_time(as_of, "as_of"),
                 known_at=parse_time(known_at, "known_at"), **rest)


# ---------------------------------------------------------------- the worker


#: Query threads of `serve` by default: one per core, at most 4. SQLite (WAL) and PostgreSQL
#: answer readers in parallel, but the rest of a request holds the GIL: more threads than cores
#: only add contention (bench/http_bench.py, 2 cores, 303k events: 2 threads 2.09x the
#: requests/s of one, 4 threads 1.73x; on 20k events, where Python dominates, 0.92x / 0.83x).
DEFAULT_QUERY_THREADS = max(1, min(4, os.cpu_count() or 1))


class AnalyticsWorker:
    """A few threads, each owning one `Analytics` (its own database connections): opened,
    refreshed, queried and closed on that thread. A request catches the read models up, then
    runs all its queries (the report runs six) in one read snapshot."""

    def __init__(self, settings: Settings, threads: int = DEFAULT_QUERY_THREADS) -> None:
        if threads < 1:
            raise ValueError(f"query threads must be at least 1, got {threads}")
        self.settings = settings
        self.threads = threads
        self._jobs: queue.SimpleQueue[tuple[Callable[[Analytics], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._pool: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _serve(self) -> None:  # one worker thread
        analytics: Analytics | None = None
        try:
            while (job := self._jobs.get()) is not None:
                work, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    if analytics is None:
                        analytics = open_analytics(self.settings, auto_refresh=False)
                    result = work(analytics)
                except QueryError as exc:
                    future.set_exception(exc)
                except BaseException as exc:
                    # a broken connection or transaction must not poison later requests: reopen
                    log.exception("analytics failed; reopening for the next request")
                    _close(analytics)
                    analytics = None
                    future.set_exception(exc)
                else:
                    future.set_result(result)
        finally:
            _close(analytics)

    def _submit(self, work: Callable[[Analytics], T]) -> Future[T]:
        with self._lock:
            while len(self._pool) < self.threads:
                thread = threading.Thread(target=self._serve, name=f"leadledger-query-{len(self._pool) + 1}",
                                          daemon=True)
                thread.start()
                self._pool.append(thread)
        future: Future[T] = Future()
        self._jobs.put((work, future))
        return future

    @staticmethod
    def _fresh(work: Callable[[Analytics], T]) -> Callable[[Analytics], T]:
        def run(analytics: Analytics) -> T:
            analytics.refresh()
            with analytics.db.snapshot():
                return work(analytics)

        return run

    async def run(self, work: Callable[[Analytics], T]) -> T:
        """Catch up the read models, then run `work` on a worker thread in one read snapshot."""
        return await asyncio.wrap_future(self._submit(self._fresh(work)))

    def start(self) -> None:
        """Open (and catch up) now, so a bad configuration fails at startup, not at the first request."""
        self._submit(lambda analytics: analytics.refresh()).result()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for _ in pool:
            self._jobs.put(None)
        for thread in pool:
            thread.join()


def _close(analytics: Analytics | None) -> None:
    if analytics is None:
        return
    try:
        analytics.close()
    except Exception:  # closing a broken connection may fail too; it is gone either way
        log.warning("closing the analytics failed", exc_info=True)


# ---------------------------------------------------------------- auth


# module level: with postponed annotations FastAPI resolves hints in the module's globals
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="Set LEADLEDGER_API_TOKEN on the server; send `Authorization: Bearer <token>`.")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def token_check(token: str) -> Callable[..., None]:
    """A dependency that accepts only `Authorization: Bearer <token>`, compared in constant time
    (both sides hashed first, so not even the token's length leaks)."""
    expected = hashlib.sha256(token.encode()).digest()

    def check(credentials: BearerCredentials) -> None:
        given = hashlib.sha256(credentials.credentials.encode() if credentials else b"").digest()
        matches = hmac.compare_digest(given, expected)
        if credentials is None or not matches:
            raise HTTPException(401, "missing or wrong bearer token (send Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": 'Bearer realm="leadledger"'})

    return check


# ---------------------------------------------------------------- the app


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "header", "body")]
        name = ".".join(loc) or "request"
        given = err.get("input")
        got = f" (got {given!r})" if isinstance(given, str | int | float) else ""
        parts.append(f"{name}: {err.get('msg', 'invalid')}{got}")
    return "; ".join(parts) or "bad request"


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [{type: string}, {type: null}]` -> `{type: string}`: an optional query
    parameter is absent, never null (keeps enums on the string where clients look)."""
    options = schema.get("anyOf")
    if not options:
        return schema
    kept = [o for o in options if o.get("type") != "null"]
    if len(kept) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**kept[0], **rest}


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's document, minus the 422 responses it never sends (they become 400s)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=app.routes)
            for path in doc.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
                    for parameter in operation.get("parameters", []):
                        parameter["schema"] = _not_null(parameter["schema"])
            schemas = doc.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    return build


def create_app(settings: Settings, token: str | None, *, query_threads: int = DEFAULT_QUERY_THREADS) -> FastAPI:
    """The API over the store `settings` point at; with a `token`, every data endpoint needs
    `Authorization: Bearer <token>`. Nothing is opened until the app starts (or first asked)."""
    from lifecycle.settings import SettingsError
    from projections.report import CSP, render_report

    worker = AnalyticsWorker(settings, query_threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(None, worker.start)
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, worker.close)

    auth = (
        "Every endpoint but `/healthz` and `/openapi.json` needs `Authorization: Bearer <token>` "
        "(the server's LEADLEDGER_API_TOKEN)." if token else
        "No authentication (LEADLEDGER_API_TOKEN is not set); `/healthz` and `/openapi.json` are always public."
    )
    app = FastAPI(
        title=API_TITLE,
        version=_version(),
        description=(
            "Read-only queries over leadledger's read models: the same queries, parameters and JSON "
            "bodies as the CLI's `--json` (SPEC §4, §8). Every answer reflects the events stored when the "
            f"request arrived. Errors are `{{\"error\": \"...\"}}`. {auth}"
        ),
        docs_url=None, redoc_url=None,  # the interactive docs load scripts from a CDN
        lifespan=lifespan,
    )
    app.state.worker = worker
    app.openapi = _openapi(app)  # type: ignore[method-assign]

    @app.middleware("http")
    async def safety_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")  # fresh data; never cache auth'd answers
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy", CSP)
        return response

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error(400, _validation_message(exc))

    @app.exception_handler(ParameterError)
    async def on_parameter_error(request: Request, exc: ParameterError) -> Response:
        return error(400, str(exc))

    @app.exception_handler(QueryError)
    async def on_query_error(request: Request, exc: QueryError) -> Response:
        return error(400, http_wording(str(exc)))

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, str(exc.detail), dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return error(500, "internal error (see the server log)")

    @app.exception_handler(SettingsError)
    async def on_settings_error(request: Request, exc: SettingsError) -> Response:
        return error(503, f"not configured: {exc}")

    @app.get("/healthz", response_model=None, summary="Liveness", tags=["meta"],
             responses={200: {"model": Health, "description": "The server is up."}})
    async def healthz() -> Response:
        return JSONBody({"status": "ok"})

    router = APIRouter(
        dependencies=[Depends(token_check(token))] if token else [],
        responses={**ERROR_RESPONSES, **(AUTH_RESPONSES if token else {})},
    )

    @router.get("/funnel", response_model=None, summary="Funnel: leads per stage", tags=["queries"],
                responses={200: {"model": FunnelBody, "description": "SPEC §8 funnel"}})
    async def funnel(by: LeadsByParam = None, from_: FromParam = None, to: ToParam = None,
                     mode: ModeParam = "cohort", as_of: AsOfParam = None, known_at: KnownAtParam = None
                     ) -> Response:
        """How many leads reach each stage, and the conversion between main-path stages."""
        q = build_query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at)
        return JSONBody(await worker.run(lambda a: a.funnel(q)))

    @router.get("/velocity", response_model=None, summary="Velocity: time in and to stages", tags=["queries"],
                responses={200: {"model": VelocityBody, "description": "SPEC §8 velocity"}})
    async def velocity(by: LeadsByParam = None, from_: FromParam = None, to: ToParam = None,
                       mode: ModeParam = "cohort", as_of: AsOfParam = None, known_at: KnownAtParam = None
                       ) -> Response:
        """Time in each stage (completed stays) and from capture to each stage: count, mean, p50, p90."""
        q = build_query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at)
        return JSONBody(await worker.run(lambda a: a.velocity(q)))

    @router.get("/attribution", response_model=None, summary="Attribution: credit per source",
                tags=["queries"], responses={200: {"model": AttributionBody, "description": "SPEC §8 attribution"}})
    async def attribution(by: LeadsByParam = None, from_: FromParam = None, to: ToParam = None,
                          mode: ModeParam = "cohort", model: ModelParam = "linear",
                          conversion: ConversionParam = "won", as_of: AsOfParam = None,
                          known_at: KnownAtParam = None) -> Response:
        """Conversions (and, for won, revenue) credited to channels or campaigns under a model."""
        q = build_query(by=by, from_=from_, to=to, mode=mode, model=model, conversion=conversion,
                        as_of=as_of, known_at=known_at)
        return JSONBody(await worker.run(lambda a: a.attribution(q)))

    @router.get("/speed", response_model=None, summary="Speed to lead", tags=["queries"],
                responses={200: {"model": SpeedBody, "description": "SPEC §8 speed"}})
    async def speed(by: SpeedByParam = None, from_: FromParam = None, to: ToParam = None,
                    mode: ModeParam = "cohort", as_of: AsOfParam = None, known_at: KnownAtParam = None
                    ) -> Response:
        """Per assignment, the time to the lead's first contact: assignments, contacted, within 5 minutes, p50, p90."""
        q = build_query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at)
        return JSONBody(await worker.run(lambda a: a.speed(q)))

    @router.get("/leads", response_model=None, summary="Lead list", tags=["queries"],
                responses={200: {"model": LeadsBody, "description": "SPEC §8 leads"}})
    async def leads(stage: StageParam = None,
                    channel: Annotated[str | None, Param(description="Only leads captured on this channel.")] = None,
                    owner: Annotated[str | None, Param(description="Only leads owned by this owner.")] = None,
                    limit: LimitParam = 50,
                    as_of: AsOfParam = None, known_at: KnownAtParam = None) -> Response:
        """Leads with stage, owner, score and source, newest first."""
        q = build_query(stage=stage, channel=channel, owner=owner, limit=limit, as_of=as_of, known_at=known_at)
        return JSONBody(await worker.run(lambda a: a.leads(q)))

    @router.get("/leads/{lead_id}/history", response_model=None, summary="One lead's history",
                tags=["audit"], responses={200: {"model": HistoryBody, "description": "SPEC §8 history"},
                                           404: {"model": ErrorBody, "description": "No such lead."}})
    async def history(lead_id: Annotated[str, PathParam(description="The lead id (UUID).")],
                      as_of: AsOfParam = None, known_at: KnownAtParam = None) -> Response:
        """Every event of the lead (CloudEvents envelopes) and its stage at `as_of`."""
        lead = parse_lead_id(lead_id)
        at, known = parse_time(as_of, "as_of"), parse_time(known_at, "known_at")
        body = await worker.run(lambda a: a.history(lead, at, known))
        if body is None:
            return error(404, f"unknown lead {lead}: no events stored for it")
        return JSONBody(body)

    @router.get("/report", response_class=HTMLResponse, summary="The HTML report", tags=["report"],
                responses={200: {"content": {"text/html": {}}, "description": "One self-contained page."}})
    async def report(from_: FromParam = None, to: ToParam = None, mode: ModeParam = "cohort",
                     model: ModelParam = "linear", conversion: ConversionParam = "won",
                     as_of: AsOfParam = None, known_at: KnownAtParam = None) -> HTMLResponse:
        """Funnel, time in stage, attribution by channel and speed to lead by owner, with charts
        (the page `leadledger report --html FILE` writes)."""
        q = build_query(from_=from_, to=to, mode=mode, model=model, conversion=conversion, as_of=as_of,
                        known_at=known_at)
        return HTMLResponse(await worker.run(lambda a: render_report(a, q)))

    app.include_router(router)
    return app


def _version() -> str:
    from projections.report import _leadledger_version

    return _leadledger_version()
