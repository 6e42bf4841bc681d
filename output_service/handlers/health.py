"""The health port: /health, /ready, /metrics, /stats, /recent."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from output_service import __version__
from output_service.handlers.common import SERVICES, json_error, json_reply
from output_service.models import normalize_ip
from output_service.storage.seam import ReadBusy, Readiness

RECENT_DEFAULT = 100
RECENT_MAX = 1000


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String() (`1h2m3.5s`), as the Go service did."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    frac = f"{seconds - whole:.3f}"[1:].rstrip("0").rstrip(".")
    text = f"{secs}{frac}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


NOT_ANSWERING = "database is not answering"


def _not_ready(readiness: Readiness) -> web.Response:
    """503 while the store is not ready, with its reason when it gives one."""
    why = {} if readiness.reason is None else {"reason": readiness.reason}
    return json_error(503, NOT_ANSWERING, headers={"Retry-After": "5"}, **why)


async def health(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    uptime = max(0.0, services.clock() - services.started_at)
    readiness = await services.storage.readiness()
    ready, degraded = readiness.ready, list(readiness.degraded)
    body: dict[str, Any] = {
        "status": ("degraded" if degraded else "healthy") if ready else "unhealthy",
        "version": __version__,
        "uptime": go_duration(uptime),
        "uptime_seconds": round(uptime, 3),
        "stats": services.stats() if ready else None,
    }
    if degraded:
        body["degraded"] = degraded
    if not ready and readiness.reason is not None:
        body["reason"] = readiness.reason
    return json_reply(body, status=200 if ready else 503)


async def ready(request: web.Request) -> web.Response:
    readiness = await request.app[SERVICES].storage.readiness()
    if not readiness.ready:
        return _not_ready(readiness)
    if readiness.degraded:  # ingest works: still ready, but say what needs an operator
        return json_reply({"status": "degraded", "degraded": list(readiness.degraded)})
    return json_reply({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    services.metrics.ready.set(1 if (await services.storage.readiness()).ready else 0)
    body = services.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def stats(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    readiness = await services.storage.readiness()
    if not readiness.ready:
        return _not_ready(readiness)
    return json_reply(services.stats())


async def recent(request: web.Request) -> web.Response:
    query = request.query
    raw_limit = query.get("limit", str(RECENT_DEFAULT))
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= RECENT_MAX:
        return json_error(400, f"limit must be an integer from 1 to {RECENT_MAX}")
    ip = query.get("ip") or None
    if ip is not None:
        try:
            ip = normalize_ip(ip)
        except ValueError as exc:
            return json_error(400, str(exc))
    services = request.app[SERVICES]
    readiness = await services.storage.readiness()
    if not readiness.ready:
        return _not_ready(readiness)
    try:  # the store's reads take a slot of the read bound, like every /api/* read
        results = await services.storage.reads.recent(int(raw_limit), ip)
    except ReadBusy as exc:
        services.metrics.reads_refused.inc()
        return json_error(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
    # The bare array of the Go service (its README's `jq '.[]'` recipe reads it);
    # what paging needs goes in headers.
    headers = {"X-Result-Count": str(len(results)), "X-Result-Limit": str(int(raw_limit))}
    return json_reply(results, headers=headers)
