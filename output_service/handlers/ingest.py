"""POST /results: read, decode and validate the batch, hand it to storage, ack after commit."""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import web

from output_service.handlers.common import SERVICES, json_error
from output_service.handlers.middleware import COUNT
from output_service.models import BatchValidationError, decode_batch
from output_service.storage import (
    IdempotencyConflictError,
    QueueFullError,
    StorageError,
    WriterClosedError,
)

JSON_TYPES = frozenset(("application/json", "text/json", "application/octet-stream"))
MAX_IDEMPOTENCY_KEY = 255


class BodyTooLargeError(Exception):
    pass


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, decompressed (aiohttp inflates gzip/deflate as it reads),
    refused as soon as it grows past `limit` so a large or inflating body is never
    held whole."""
    declared = request.content_length
    if declared is not None and declared > limit and "Content-Encoding" not in request.headers:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _accepts_content_type(request: web.Request) -> bool:
    """JSON, or no Content-Type at all (aiohttp reports that as octet-stream)."""
    ctype = request.content_type
    if ctype == "application/octet-stream" and "Content-Type" in request.headers:
        return False
    return ctype in JSON_TYPES or ctype.endswith("+json")


async def post_results(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    metrics = services.metrics
    loop = asyncio.get_running_loop()
    started = loop.time()
    if not _accepts_content_type(request):
        metrics.batches.labels(outcome="unsupported_media_type").inc()
        return json_error(415, f"Content-Type must be application/json, got {request.content_type}")
    limit = int(services.config.max_body_mb * 1024 * 1024)
    try:
        body = await read_body(request, limit)
    except BodyTooLargeError:
        metrics.batches.labels(outcome="too_large").inc()
        return json_error(413, f"body larger than {limit} bytes (max_body_mb)")
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        metrics.batches.labels(outcome="invalid").inc()
        return json_error(
            400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
        )
    try:
        batch = decode_batch(body, services.config.max_batch_results)
    except BatchValidationError as exc:
        metrics.batches.labels(outcome="invalid").inc()
        return json_error(400, "invalid batch", errors=[e.to_json() for e in exc.errors])
    try:
        result = await services.storage.submit(
            batch,
            remote=request.remote,
            node_id=request.headers.get("X-Node-ID", "")[:128] or None,
            idempotency_key=key,
            body_hash=hashlib.sha256(body).hexdigest() if key is not None else None,
        )
    except QueueFullError:
        metrics.batches.labels(outcome="queue_full").inc()
        return json_error(503, "write queue is full, retry later", headers={"Retry-After": "1"})
    except WriterClosedError:
        metrics.batches.labels(outcome="shutting_down").inc()
        return json_error(503, "shutting down, retry later", headers={"Retry-After": "5"})
    except StorageError as exc:
        metrics.batches.labels(outcome="storage_error").inc()
        return json_error(
            503, f"storage error, nothing stored: {exc}", headers={"Retry-After": "5"}
        )
    except IdempotencyConflictError as exc:
        metrics.batches.labels(outcome="idempotency_conflict").inc()
        return json_error(422, str(exc))
    request[COUNT] = result.count
    headers = {"Idempotent-Replayed": "true"} if result.duplicate else None
    if result.duplicate:
        metrics.batches.labels(outcome="duplicate").inc()
    else:
        metrics.batches.labels(outcome="ok").inc()
        metrics.batch_size.observe(result.count)
        metrics.ingest_latency.observe(loop.time() - started)
    return web.json_response({"status": "ok", "received": result.count}, headers=headers)
