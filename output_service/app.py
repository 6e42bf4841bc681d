"""App factories for the two ports, sharing one Services object.

The results app owns the lifecycle (a cleanup context opens storage before the
first request and drains it after the last); the health app only reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from output_service.config import Config
from output_service.handlers import admin, api, health, ingest, openapi, page
from output_service.handlers.common import SERVICES
from output_service.handlers.inflight import IN_FLIGHT, InFlight
from output_service.handlers.middleware import front_middleware
from output_service.services import Services


def runner_options(config: Config, *, results: bool) -> dict[str, Any]:
    """Keyword arguments for a port's web.AppRunner, used by cli.py and by the tests'
    servers alike, so that both speak the same HTTP.

    keepalive_timeout also bounds a client that is slow to send its headers: aiohttp
    arms it when the connection opens (bodies: read_timeout_s in ingest).
    auto_decompress=False: aiohttp's parser would inflate gzip/deflate bodies itself,
    answering one that does not inflate with a plain-text 400 before any handler ran
    and waiting on a truncated one until the read timeout; ingest.read_body inflates
    instead, with a JSON 400 for either and the same bound on memory.
    handler_cancellation=True: a handler stops when its client goes away (a /dump
    stops snapshotting and streaming); aiohttp's test server always runs this way,
    so the tests exercise what production does. Ingest is safe under it: the
    batch's commit is shielded from the handler.
    """
    return {
        "handler_cancellation": True,
        "access_log": None,
        "shutdown_timeout": config.shutdown_grace_s if results else 1.0,
        "keepalive_timeout": config.keepalive_timeout_s,
        "auto_decompress": False,
    }


def _base_app(services: Services) -> web.Application:
    # Bodies are read as a stream with our own limit (ingest.read_body); aiohttp's
    # whole-body limit only has to be large enough not to get in the way.
    app = web.Application(
        middlewares=[front_middleware(services.config, services.metrics)],
        client_max_size=int(services.config.max_body_mb * 1024 * 1024) + 1,
    )
    app[SERVICES] = services
    app.router.add_get("/openapi.json", openapi.openapi)
    return app


def create_results_app(services: Services) -> web.Application:
    """The results port: POST /results and the admin endpoints."""
    app = _base_app(services)
    app.cleanup_ctx.append(_storage_lifecycle)
    app.cleanup_ctx.append(_hop_sender_lifecycle)
    app.cleanup_ctx.append(_read_upkeep_lifecycle)
    app.on_shutdown.append(_begin_hop_shutdown)
    app[IN_FLIGHT] = InFlight(int(services.config.queue_max_mb * 1024 * 1024))
    app.router.add_post("/results", ingest.post_results)
    if services.storage.archive is None:  # no files on this backend: the routes say why
        app.router.add_post("/rotate", admin.no_archive)
        app.router.add_get("/dump", admin.no_archive, allow_head=False)
        app.router.add_get("/files", admin.no_archive)
        return app
    app.router.add_post("/rotate", admin.rotate)
    # no HEAD: it would cost a whole snapshot just to learn its length
    app.router.add_get("/dump", admin.dump, allow_head=False)
    admin.track_downloads(app)
    app.router.add_get("/files", admin.files)
    return app


def create_health_app(services: Services) -> web.Application:
    """The health port: liveness, readiness, metrics and read-only views."""
    app = _base_app(services)
    app.router.add_get("/health", health.health)
    app.router.add_get("/ready", health.ready)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get("/stats", health.stats)
    app.router.add_get("/recent", health.recent)
    api.add_routes(app)
    page.add_routes(app)  # the status page: /, /static/{name}, /api/status
    return app


async def _storage_lifecycle(app: web.Application) -> AsyncIterator[None]:
    # state.db opens before and closes after storage: the writer's before-commit
    # hook writes the hop outbox until the writer has committed its last group.
    services = app[SERVICES]
    hops = services.hops
    if hops is not None:
        await hops.open()
    try:
        await services.storage.open()
        yield
        await services.storage.close()
    finally:
        if hops is not None:
            await hops.close()


async def _hop_sender_lifecycle(app: web.Application) -> AsyncIterator[None]:
    # Cleanup runs in reverse: the sender stops (after a short final flush)
    # before storage closes.
    hops = app[SERVICES].hops
    if hops is not None:
        await hops.start_sender()
    yield
    if hops is not None:
        await hops.stop_sender()


async def _read_upkeep_lifecycle(app: web.Application) -> AsyncIterator[None]:
    # after storage has opened (start-up has checked and migrated every file),
    # stopped before it closes
    upkeep = app[SERVICES].read_upkeep
    if upkeep is not None:
        upkeep.start()
    yield
    if upkeep is not None:
        await upkeep.stop()


async def _begin_hop_shutdown(app: web.Application) -> None:
    # on_shutdown runs when the drain begins: the final flush runs alongside it
    hops = app[SERVICES].hops
    if hops is not None:
        hops.begin_shutdown()
