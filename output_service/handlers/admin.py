"""Admin endpoints on the results port: POST /rotate, GET /dump, GET /files.

Access control is not decided here: a middleware guards these paths.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import structlog
from aiohttp import web

from output_service.handlers.common import SERVICES, json_error, json_reply
from output_service.storage import (
    InvalidFileNameError,
    RotationError,
    StorageError,
    UnknownFileError,
    WriterClosedError,
)

SQLITE_TYPE = "application/vnd.sqlite3"
CHUNK_BYTES = 256 * 1024

log = structlog.get_logger("output_service.http")


async def no_archive(request: web.Request) -> web.Response:
    """/rotate, /dump, /files on a backend without files (PostgreSQL)."""
    return json_error(
        404,
        f"{request.path} is not on the {request.app[SERVICES].config.storage} backend: "
        "it keeps no results files (pg_dump is the backup)",
    )


async def rotate(request: web.Request) -> web.Response:
    """Start a new results file now; replies once the old one is sealed."""
    try:
        name = await request.app[SERVICES].storage.rotate()
    except RotationError as exc:
        return json_error(503, str(exc), headers={"Retry-After": "5"})
    except WriterClosedError:
        return json_error(503, "shutting down", headers={"Retry-After": "5"})
    except StorageError as exc:  # the writer has stopped: answered at once, never left hanging
        return json_error(503, f"storage error: {exc}", headers={"Retry-After": "5"})
    return json_reply({"status": "rotated", "file": name})


async def files(request: web.Request) -> web.Response:
    """The retained files, oldest first."""
    listing = await request.app[SERVICES].storage.files()
    return json_reply({"count": len(listing), "files": listing})


async def dump(request: web.Request) -> web.StreamResponse:
    """Stream a consistent copy of the current file, or `?file=NAME`, a retained one.

    The response is sent inside the handler, while storage still holds the file
    (and its temp snapshot, if one was made); leaving the block removes the
    snapshot whether the download completed or the client went away.
    """
    services = request.app[SERVICES]
    metrics = services.metrics
    name = request.query.get("file")
    try:
        async with services.storage.dump(name) as snapshot:
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
                await _send_file(response, snapshot.path, snapshot.size)
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
    except InvalidFileNameError as exc:
        return json_error(400, str(exc))
    except UnknownFileError as exc:
        return json_error(404, str(exc))
    except StorageError as exc:
        return json_error(503, str(exc), headers={"Retry-After": "5"})


def dump_name(source: str, moment: float) -> str:
    """The name a download is saved under: its file's name and its own time
    (`results_..._dump-2026-01-02T03-04-05.123456Z.db`), so a second
    `curl -OJ .../dump` in the same folder never collides with the first."""
    stamp = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
    return f"{source.removesuffix('.db')}_dump-{stamp}.db"


async def _send_file(response: web.StreamResponse, path: Path, size: int) -> None:
    """Stream `size` bytes of `path`; reads happen on a worker thread, and each
    write waits for the client (a slow download holds little memory)."""
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
            await response.write(chunk)
        await response.write_eof()
    finally:
        fh.close()
