"""Admin endpoints on the results port: POST /rotate, GET /dump, GET /files.

Access control is not decided here: a middleware guards these paths.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from output_service.handlers.common import SERVICES, json_error
from output_service.storage import (
    InvalidFileNameError,
    RotationError,
    StorageError,
    UnknownFileError,
    WriterClosedError,
)

SQLITE_TYPE = "application/vnd.sqlite3"

log = structlog.get_logger("output_service.http")


async def rotate(request: web.Request) -> web.Response:
    """Start a new results file now; replies once the old one is sealed."""
    try:
        name = await request.app[SERVICES].storage.rotate()
    except RotationError as exc:
        return json_error(503, str(exc), headers={"Retry-After": "5"})
    except WriterClosedError:
        return json_error(503, "shutting down", headers={"Retry-After": "5"})
    return web.json_response({"status": "rotated", "file": name})


async def files(request: web.Request) -> web.Response:
    """The retained files, oldest first."""
    listing = await request.app[SERVICES].storage.files()
    return web.json_response({"count": len(listing), "files": listing})


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
            response = web.FileResponse(
                snapshot.path,
                headers={
                    "Content-Type": SQLITE_TYPE,
                    "Content-Disposition": f'attachment; filename="{snapshot.name}"',
                },
            )
            try:
                await response.prepare(request)
            except ConnectionError as exc:
                metrics.dumps.labels(outcome="aborted").inc()
                log.info("dump aborted by the client", file=snapshot.name, error=str(exc))
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
