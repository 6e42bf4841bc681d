"""Request middlewares: context-bound logging, one summary line, JSON errors."""

from __future__ import annotations

import time
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from output_service.handlers.common import SERVICES, json_error

log = structlog.get_logger("output_service.http")

COUNT = web.RequestKey("count", int)


@web.middleware
async def request_summary(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind request id, remote and node for every log line, then log one summary line.

    aiohttp's own HTTP errors (404, 405, ...) become JSON bodies here, and an
    unexpected exception is logged with its traceback and answered with a JSON
    500 rather than a bare page.
    """
    started = time.perf_counter()
    request_id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex[:16]
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
    services = request.app[SERVICES]
    services.metrics.http_requests.labels(
        route=route.canonical if route is not None else "unmatched",
        status=str(response.status),
    ).inc()
    log.info(
        "request",
        method=request.method,
        path=request.path,
        status=response.status,
        duration_ms=duration_ms,
        count=request.get(COUNT),
    )
    response.headers["X-Request-ID"] = request_id
    return response


def _passthrough(exc: web.HTTPException) -> dict[str, str]:
    keep = ("Allow", "Retry-After", "WWW-Authenticate")
    return {k: v for k, v in exc.headers.items() if k in keep}
