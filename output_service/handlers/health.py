"""The health port: /health, /ready, /metrics, /stats, /recent."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from output_service import __version__
from output_service.handlers.common import SERVICES, json_error, json_reply
from output_service.models import normalize_ip
from output_service.storage.seam import ReadBusy

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


async def health(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    storage = services.storage
    uptime = max(0.0, services.clock() - services.started_at)
    ready = await storage.ready()
    degraded = storage.degraded()
    body: dict[str, Any] = {
        "status": ("degraded" if degraded else "healthy") if ready else "unhealthy",
        "version": __version__,
        "uptime": go_duration(uptime),
        "uptime_seconds": round(uptime, 3),
        "stats": services.stats() if ready else None,
    }
    if degraded:
        body["degraded"] = degraded
    return json_reply(body, status=200 if ready else 503)


async def ready(request: web.Request) -> web.Response:
    storage = request.app[SERVICES].storage
    if await storage.ready():
        degraded = storage.degraded()
        if degraded:  # ingest works: still ready, but say what needs an operator
            return json_reply({"status": "degraded", "degraded": degraded})
        return json_reply({"status": "ready"})
    return json_error(503, "database is not answering", headers={"Retry-After": "5"})


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    services.metrics.ready.set(1 if await services.storage.ready() else 0)
    body = services.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def stats(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if not await services.storage.ready():
        return json_error(503, "database is not answering", headers={"Retry-After": "5"})
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
    storage = request.app[SERVICES].storage
    if not await storage.ready():
        return json_error(503, "database is not answering", headers={"Retry-After": "5"})
    services = request.app[SERVICES]
    limit = int(raw_limit)
    try:  # through the read bound, like every /api/* read
        if services.recent is None:
            results = await storage.recent(limit, ip)
        else:
            results = await services.recent(limit, ip)
    except ReadBusy as exc:
        services.metrics.reads_refused.inc()
        return json_error(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
    # The bare array of the Go service (its README's `jq '.[]'` recipe reads it);
    # what paging needs goes in headers.
    headers = {"X-Result-Count": str(len(results)), "X-Result-Limit": str(int(raw_limit))}
    return json_reply(results, headers=headers)
