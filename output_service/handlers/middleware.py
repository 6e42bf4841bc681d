"""The front middleware: context-bound logging, access, one summary line, JSON errors."""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from output_service.config import Config
from output_service.handlers.auth import Guard
from output_service.handlers.common import json_error
from output_service.logs import bind_request
from output_service.metrics import Metrics

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


def front_middleware(config: Config, metrics: Metrics) -> Middleware:
    """The one middleware of both apps: request context, access check, JSON errors,
    the request's metric and its summary line.

    One layer rather than one per concern: aiohttp wraps each middleware in a
    partial and a coroutine of its own per request, and adds one more
    (`_fix_request_current_app`) as soon as an app has any. The access check is
    auth.Guard, run here before the handler.

    Binds request id, remote and node for every log line while the request is
    served, then logs one summary line. aiohttp's own HTTP errors (404, 405, ...)
    become JSON bodies here, and an unexpected exception is logged with its
    traceback and answered with a JSON 500 rather than a bare page.
    """
    guard = Guard(config, metrics)
    count_request = metrics.count_request
    perf_counter = time.perf_counter

    @web.middleware
    async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = perf_counter()
        headers = request.headers
        request_id = headers.get("X-Request-ID", "")[:64] or _new_request_id()
        bind_request(request_id, request.remote, headers.get("X-Node-ID", "")[:128] or None)
        try:
            refused = guard.refusal(request)
            response = refused if refused is not None else await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = json_error(exc.status, exc.reason, headers=_passthrough(exc))
        except Exception:
            log.exception("unhandled error", method=request.method, path=request.path)
            response = json_error(500, "internal error")
        duration_ms = round((perf_counter() - started) * 1000, 3)
        status = response.status
        route = request.match_info.route.resource
        count_request(route.canonical if route is not None else "unmatched", status)
        path = request.path
        fields = {
            "method": request.method,
            "path": path,
            "query": request.query_string or None,
            "status": status,
            "duration_ms": duration_ms,
            "count": request.get(COUNT),
        }
        if 400 <= status < 500:
            fields.update(_refusal_reason(response))
        if status < 400 and path in QUIET_PATHS:
            log.debug("request", **fields)
        else:
            log.info("request", **fields)
        response.headers["X-Request-ID"] = request_id
        return response

    return front


def _refusal_reason(response: web.StreamResponse) -> dict[str, Any]:
    """What a 4xx told its client (`error`, and the first field errors), for the log
    line: otherwise the reason of a refusal reaches only the client."""
    if not isinstance(response, web.Response):
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
