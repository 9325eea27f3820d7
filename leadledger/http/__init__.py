"""The read-only HTTP JSON API (`leadledger serve`): the CLI's queries over HTTP, with an
OpenAPI document and optional bearer-token auth. Build it with `app.create_app(settings, token)`.

Design:
- Every query runs on a dedicated worker thread that owns its `Analytics` object (SQLite
  connections belong to the thread that opened them): the handlers only hand work to the pool
  (`worker`) and await the result, so no connection is ever shared across threads. Before
  answering, the worker calls `analytics.refresh()`, so each request sees the events stored up
  to that moment (embedded mode).
- Bodies are the exact `--json` output of the CLI (same dicts, same orjson encoding; `models`).
- Errors are always `{"error": "..."}`: 400 names the bad parameter (FastAPI's 422 is turned
  into a 400; `params`), 401 for a missing or wrong token (`auth`), 404 for an unknown lead or path.
- `/healthz` and `/openapi.json` stay public even with a token: neither reveals data, load
  balancers probe the first, and clients need the second to learn how to authenticate.
"""
