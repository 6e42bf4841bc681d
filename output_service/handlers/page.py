"""The status page on the health port: GET /, its static files, and GET /api/status.

The page is three files shipped in the package (output_service/static), served
from a whitelist so no path can reach anything else, with a Content-Security-
Policy that lets the page talk only to this service: it works offline and makes
no request to any other host. Everything it shows comes from JSON endpoints on
the same port (/api/status here; /api/targets, /api/nodes, /api/routes from the
query API), fetched with relative URLs so the page works behind a path prefix.

Access is not decided here: the auth middleware guards these paths with
read_token when it is set (Basic auth is accepted, so a browser can log in).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from output_service.handlers.common import SERVICES, json_error

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
STATIC = {
    "style.css": "text/css",
    "app.js": "text/javascript",
}
RATE_WINDOW_S = 60.0
LATENCY = "output_service_ingest_latency_seconds"


def _headers(content_type: str) -> dict[str, str]:
    return {
        "Content-Type": f"{content_type}; charset=utf-8",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _read(name: str) -> bytes:
    return resources.files("output_service").joinpath("static", name).read_bytes()


async def index(request: web.Request) -> web.Response:
    return web.Response(body=_read("index.html"), headers=_headers("text/html"))


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = STATIC.get(name)
    if content_type is None:
        return json_error(404, f"no static file {name!r}")
    return web.Response(body=_read(name), headers=_headers(content_type))


# -- /api/status ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # monotonic
    results: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)


class IngestWindow:
    """Ingest rate and latency percentiles over the last minute, from the registry.

    Each /api/status call takes a sample of the results counter and the latency
    histogram; figures are the difference to the oldest sample of the window
    (the process start for the first call), like Prometheus's rate() and
    histogram_quantile() over a range.
    """

    def __init__(self, registry: CollectorRegistry, started: float) -> None:
        self._registry = registry
        self._samples: deque[Sample] = deque([Sample(started, 0.0, ())])

    def sample(self, now: float) -> dict[str, Any]:
        current = Sample(now, self._value("output_service_results_received_total"), self._buckets())
        while len(self._samples) > 1 and now - self._samples[1].at >= RATE_WINDOW_S:
            self._samples.popleft()
        oldest = self._samples[0]
        self._samples.append(current)
        window = max(now - oldest.at, 1e-9)
        delta = _bucket_delta(current.buckets, dict(oldest.buckets))
        return {
            "window_s": round(window, 3),
            "results_per_s": round((current.results - oldest.results) / window, 3),
            "latency_seconds": {f"p{q}": quantile(q / 100, delta) for q in (50, 90, 99)},
        }

    def _value(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self._registry.get_sample_value(name, labels or {}) or 0.0

    def _buckets(self) -> tuple[tuple[float, float], ...]:
        found: list[tuple[float, float]] = []
        for family in self._registry.collect():
            if family.name == LATENCY:
                for s in family.samples:
                    if s.name == f"{LATENCY}_bucket":
                        found.append((float(s.labels["le"]), s.value))
        return tuple(sorted(found))


def _bucket_delta(
    now: tuple[tuple[float, float], ...], before: dict[float, float]
) -> list[tuple[float, float]]:
    return [(bound, count - before.get(bound, 0.0)) for bound, count in now]


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """histogram_quantile over cumulative (upper bound, count) pairs: linear inside the
    bucket; the +Inf bucket answers its lower bound. None when nothing was observed."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    counts = [count for _, count in buckets]
    i = bisect_left(counts, rank)
    bound, count = buckets[i]
    lower_bound, lower_count = buckets[i - 1] if i > 0 else (0.0, 0.0)
    if bound == float("inf"):
        return lower_bound
    if count == lower_count:
        return bound
    return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)


WINDOW = web.AppKey("ingest_window", IngestWindow)


async def status(request: web.Request) -> web.Response:
    """What the service panel shows, in one call."""
    services = request.app[SERVICES]
    registry = services.metrics.registry
    window = request.app[WINDOW]
    storage = services.storage
    ready = (await storage.readiness()).ready
    stats = services.stats() if ready else None
    archive = storage.archive
    files = await archive.files() if ready and archive is not None else None
    hops = services.hops
    body: dict[str, Any] = {
        "ready": ready,
        "uptime_seconds": round(max(0.0, services.clock() - services.started_at), 3),
        "ingest": {
            **window.sample(time.monotonic()),
            "results_total": stats["total_results"] if stats else None,
            "last_result_time": stats["last_result_time"] if stats else None,
            "queue_results": registry.get_sample_value("output_service_write_queue_results"),
            "queue_max_results": services.config.queue_max_results,
        },
        "current_db_file": stats["current_db_file"] if stats else None,
        "last_rotation": stats["last_rotation"] if stats else None,
        "files": files,
        "hops": None
        if hops is None
        else {
            "discovered": hops.counts.discovered,
            "sent": hops.counts.sent,
            "outbox": hops.counts.depth,
            "dead_letters": hops.counts.dead_lettered,
            "dropped": hops.counts.dropped,
        },
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    """The page's routes on the health app (one line in app.create_health_app)."""
    services = app[SERVICES]
    since_start = services.clock() - services.started_at
    app[WINDOW] = IngestWindow(services.metrics.registry, time.monotonic() - since_start)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/status", status)
