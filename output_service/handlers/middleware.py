"""Request middlewares: context-bound logging, one summary line, JSON errors."""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from output_service.handlers.common import SERVICES, json_error

log = structlog.get_logger("output_service.http")

COUNT = web.RequestKey("count", int)
# Polled every few seconds by orchestrators and Prometheus: ~8,600 lines a day at
# info under a 30 s health check and a 15 s scrape. Logged at debug when they succeed.
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})
MAX_LOGGED_FIELD_ERRORS = 5

# Request ids: a random prefix per process and a counter, 16 hex digits like a
# truncated uuid4 but without a getrandom() call per request (~3 us of the ~300 a
# one-result request costs the event loop; BENCHMARKS.md). Unique within a process
# and, by the prefix, across restarts with overwhelming likelihood.
_ID_PREFIX = os.urandom(4).hex()
_id_counter = itertools.count(1)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFF:08x}"


@web.middleware
async def request_summary(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind request id, remote and node for every log line, then log one summary line.

    aiohttp's own HTTP errors (404, 405, ...) become JSON bodies here, and an
    unexpected exception is logged with its traceback and answered with a JSON
    500 rather than a bare page.
    """
    started = time.perf_counter()
    request_id = request.headers.get("X-Request-ID", "")[:64] or _new_request_id()
    node = request.headers.get("X-Node-ID", "")[:128] or None
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, remote=request.remote, node=node)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = json_error(exc.status, exc.reason, headers=_passthrough(exc))
    except Exception:
        log.exception("unhandled error", method=request.method, path=request.path)
        response = json_error(500, "internal error")
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    route = request.match_info.route.resource
    request.app[SERVICES].metrics.count_request(
        route.canonical if route is not None else "unmatched", response.status
    )
    fields = {
        "method": request.method,
        "path": request.path,
        "query": request.query_string or None,
        "status": response.status,
        "duration_ms": duration_ms,
        "count": request.get(COUNT),
        **_refusal_reason(response),
    }
    if request.path in QUIET_PATHS and response.status < 400:
        log.debug("request", **fields)
    else:
        log.info("request", **fields)
    response.headers["X-Request-ID"] = request_id
    return response


def _refusal_reason(response: web.StreamResponse) -> dict[str, Any]:
    """What a 4xx told its client (`error`, and the first field errors), for the log
    line: otherwise the reason of a refusal reaches only the client."""
    if not 400 <= response.status < 500 or not isinstance(response, web.Response):
        return {}
    body = response.body
    if not isinstance(body, bytes) or response.content_type != "application/json":
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {"reason": data.get("error")}
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        out["field_errors"] = [
            f"[{e.get('index')}].{e.get('field')}: {e.get('reason')}"
            for e in errors[:MAX_LOGGED_FIELD_ERRORS]
            if isinstance(e, dict)
        ]
        out["field_error_count"] = len(errors)
    return out


def _passthrough(exc: web.HTTPException) -> dict[str, str]:
    keep = ("Allow", "Retry-After", "WWW-Authenticate")
    return {k: v for k, v in exc.headers.items() if k in keep}
