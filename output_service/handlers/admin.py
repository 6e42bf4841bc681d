"""Admin endpoints on the results port: POST /rotate, GET /dump, GET /files.

They speak the store's archive (`storage.seam.Archive`), which only a file
backend has; without it the app routes these paths to `no_archive`. Access
control is not decided here: a middleware guards these paths.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import structlog
from aiohttp import web

from output_service.handlers.common import SERVICES, json_error, json_reply
from output_service.storage.seam import (
    Archive,
    ArchiveError,
    BadQuery,
    NotFound,
    ReadBusy,
    StoreClosed,
    StoreError,
)

SQLITE_TYPE = "application/vnd.sqlite3"
CHUNK_BYTES = 256 * 1024

log = structlog.get_logger("output_service.http")

# The /dump handlers streaming now: cut when the shutdown grace ends.
DOWNLOADS = web.AppKey("downloads", set["asyncio.Task[object]"])


def track_downloads(app: web.Application) -> None:
    """Register the set of running downloads and the shutdown hook that cuts them."""
    app[DOWNLOADS] = set()
    app.on_shutdown.append(_cut_downloads_at_deadline)


async def _cut_downloads_at_deadline(app: web.Application) -> None:
    """aiohttp waits the grace for handlers, then cancels a handler only through
    its request body, which a download is not reading: it would wait the grace a
    second time. So downloads are cancelled here, when the grace ends."""
    downloads = app[DOWNLOADS]

    def cut() -> None:
        for task in list(downloads):
            task.cancel()

    asyncio.get_running_loop().call_later(app[SERVICES].config.shutdown_grace_s, cut)


async def no_archive(request: web.Request) -> web.Response:
    """/rotate, /dump, /files on a backend without files (PostgreSQL)."""
    return json_error(
        404,
        f"{request.path} is not on the {request.app[SERVICES].config.storage} backend: "
        "it keeps no results files (pg_dump is the backup)",
    )


def _archive(request: web.Request) -> Archive:
    archive = request.app[SERVICES].storage.archive
    if archive is None:  # the app routes these paths to no_archive then
        raise RuntimeError("this backend has no archive")
    return archive


async def rotate(request: web.Request) -> web.Response:
    """Start a new results file now; replies once the old one is sealed."""
    try:
        name = await _archive(request).rotate()
    except ArchiveError as exc:
        return json_error(503, str(exc), headers={"Retry-After": "5"})
    except StoreClosed:
        return json_error(503, "shutting down", headers={"Retry-After": "5"})
    except StoreError as exc:  # the writer has stopped: answered at once, never left hanging
        return json_error(503, f"storage error: {exc}", headers={"Retry-After": "5"})
    return json_reply({"status": "rotated", "file": name})


async def files(request: web.Request) -> web.Response:
    """The retained files, oldest first."""
    listing = await _archive(request).files()
    return json_reply({"count": len(listing), "files": listing})


async def dump(request: web.Request) -> web.StreamResponse:
    """Stream a consistent copy of the current file, or `?file=NAME`, a retained one.

    The archive has released the source file once the copy exists; leaving the block
    removes the copy, whether the download completed, the client went away, or
    it stopped taking data for `dump_send_timeout_s` (then the connection is cut).
    """
    task = asyncio.current_task()
    downloads = request.app[DOWNLOADS]
    if task is not None:
        downloads.add(task)
    try:
        return await _dump(request, request.query.get("file"))
    finally:
        if task is not None:
            downloads.discard(task)


async def _dump(request: web.Request, name: str | None) -> web.StreamResponse:
    services = request.app[SERVICES]
    metrics = services.metrics
    try:
        async with _archive(request).dump(name) as snapshot:
            response = web.StreamResponse(
                headers={
                    "Content-Type": SQLITE_TYPE,
                    "Content-Disposition": (
                        f'attachment; filename="{dump_name(snapshot.name, services.clock())}"'
                    ),
                }
            )
            response.content_length = snapshot.size
            try:
                await response.prepare(request)
                await _send_file(
                    response, snapshot.path, snapshot.size, services.config.dump_send_timeout_s
                )
            except TimeoutError:
                metrics.dumps.labels(outcome="stalled").inc()
                log.info("dump dropped: the client took no data", file=snapshot.name)
                if request.transport is not None:
                    request.transport.abort()
                return response
            except (ConnectionError, asyncio.CancelledError) as exc:
                # the client went away (aiohttp may cancel the handler for it)
                metrics.dumps.labels(outcome="aborted").inc()
                log.info("dump aborted by the client", file=snapshot.name, error=repr(exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return response
            metrics.dumps.labels(outcome="complete").inc()
            metrics.dump_bytes.inc(snapshot.size)
            return response
    except ReadBusy as exc:
        metrics.rejected_requests.labels(reason="too_many_dumps").inc()
        return json_error(
            503,
            str(exc),
            headers={"Retry-After": str(exc.retry_after_s)},
            limit="too_many_dumps",
        )
    except BadQuery as exc:
        return json_error(400, str(exc))
    except NotFound as exc:
        return json_error(404, str(exc))
    except StoreError as exc:
        return json_error(503, str(exc), headers={"Retry-After": "5"})


def dump_name(source: str, moment: float) -> str:
    """The name a download is saved under: its file's name and its own time
    (`results_..._dump-2026-01-02T03-04-05.123456Z.db`), so a second
    `curl -OJ .../dump` in the same folder never collides with the first."""
    stamp = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
    return f"{source.removesuffix('.db')}_dump-{stamp}.db"


async def _send_file(response: web.StreamResponse, path: Path, size: int, stall_s: float) -> None:
    """Stream `size` bytes of `path`; reads happen on a worker thread, and each
    write waits for the client (a slow download holds little memory), at most
    `stall_s` seconds: a client that stops reading is dropped, not waited for."""
    # Opened and closed on the loop: both are quick for a local file, and no
    # cancellation (a client going away) can then fall between open and `try`.
    fh = path.open("rb")
    try:
        left = size
        while left > 0:
            chunk = await asyncio.to_thread(fh.read, min(CHUNK_BYTES, left))
            if not chunk:
                raise ConnectionResetError("file ended early")
            left -= len(chunk)
            async with asyncio.timeout(stall_s):
                await response.write(chunk)
        async with asyncio.timeout(stall_s):
            await response.write_eof()
    finally:
        fh.close()
