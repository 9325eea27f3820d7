"""The FastAPI application: `create_app(settings, token)` wires the query threads, the error
handling, the OpenAPI document and the routes together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from leadledger.http.models import OTHER_RESPONSES, ErrorBody, error
from leadledger.http.params import ParameterError, http_wording
from leadledger.http.routes import add_routes
from leadledger.http.worker import DEFAULT_QUERY_THREADS, AnalyticsWorker
from lifecycle.settings import Settings, SettingsError
from projections.engine.sources import StoreMismatch
from projections.query import QueryError
from projections.report.html import CSP, leadledger_version
from schemas.codec import CorruptEvent
from schemas.sealing import DecryptionFailed

API_TITLE = "leadledger analytics API"


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


_ERROR_CONTENT = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}}}


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's document, minus the 422 responses it never sends (they become 400s), with every
    error filed as the JSON it is (also where the endpoint answers HTML) and the answers of any path
    outside its operations (404, 405) under `components.responses`."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=app.routes)
            for path in doc.get("paths", {}).values():
                for operation in path.values():
                    responses = operation.get("responses", {})
                    responses.pop("422", None)
                    for status, response in responses.items():
                        if int(status) >= 400:
                            response["content"] = _ERROR_CONTENT
                    for parameter in operation.get("parameters", []):
                        parameter["schema"] = _not_null(parameter["schema"])
            components = doc.setdefault("components", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.get("schemas", {}).pop(name, None)
            components["responses"] = {name: {"description": f"{status}: {text}", "content": _ERROR_CONTENT}
                                       for name, (status, text) in OTHER_RESPONSES.items()}
            app.openapi_schema = doc
        return app.openapi_schema

    return build


def create_app(settings: Settings, token: str | None, *, query_threads: int = DEFAULT_QUERY_THREADS,
               personal_data: bool = False) -> FastAPI:
    """The API over the store `settings` point at; with a `token`, every data endpoint needs
    `Authorization: Bearer <token>`. Personal data (e-mail, name, phone) is in a lead's history only
    with `personal_data`, which needs a token (ValueError otherwise). Nothing is opened until the
    app starts (or first asked)."""
    if personal_data and not token:
        raise ValueError("personal data is served only behind a bearer token: set LEADLEDGER_API_TOKEN")
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
    personal = (
        "A lead's history includes personal data (e-mail, name, phone) in clear." if personal_data else
        "Personal data (e-mail, name, phone) reads `[sealed]`: the server hands it out only when started "
        "with `--personal-data` (and a token)."
    )
    app = FastAPI(
        title=API_TITLE,
        version=leadledger_version(),
        description=(
            "Read-only queries over leadledger's read models: the same queries, parameters and JSON "
            "bodies as the CLI's `--json` (docs/contract.md describes them). Every answer reflects the events "
            "stored when the request arrived. Every error, on every path and for every status (400, 401, 404, "
            "405, 500, 503), is `application/json` `{\"error\": \"...\"}` (the `ErrorBody` schema); a parameter "
            "an endpoint does not take, or one given twice, is a 400 like a bad value. Only GET is served "
            f"(405 with `Allow: GET` otherwise). {auth} {personal}"
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

    @app.exception_handler(CorruptEvent)
    @app.exception_handler(DecryptionFailed)
    async def on_unreadable(request: Request, exc: Exception) -> Response:
        return error(500, "the store holds an event that cannot be read (altered, or another secret); "
                          "the operator should run `leadledger verify`")

    @app.exception_handler(StoreMismatch)
    async def on_store_mismatch(request: Request, exc: StoreMismatch) -> Response:
        return error(503, str(exc))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return error(500, "internal error (see the server log)")

    @app.exception_handler(SettingsError)
    async def on_settings_error(request: Request, exc: SettingsError) -> Response:
        return error(503, f"not configured: {exc}")

    add_routes(app, worker, token, personal_data=personal_data)
    return app
