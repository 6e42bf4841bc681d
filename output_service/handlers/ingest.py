"""POST /results: read, decode and validate the batch, hand it to storage, ack after commit."""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import web

from output_service.handlers.common import SERVICES, json_error, json_reply
from output_service.handlers.inflate import (
    ENCODINGS,
    BadEncodingError,
    BodyTooLargeError,
    Inflater,
)
from output_service.handlers.middleware import COUNT
from output_service.metrics import Metrics
from output_service.models import BatchLimitError, BatchValidationError, decode_batch
from output_service.storage import (
    IdempotencyConflictError,
    QueueFullError,
    StorageError,
    WriterClosedError,
)

JSON_TYPES = frozenset(("application/json", "text/json", "application/octet-stream"))
# aiohttp's own inflating is off (app.runner_options): read_body inflates these.
CONTENT_ENCODINGS = frozenset((*ENCODINGS, "identity"))
MAX_IDEMPOTENCY_KEY = 255


async def read_body(request: web.Request, limit: int, encoding: str) -> bytes:
    """The request body, inflated, refused as soon as it grows past `limit`.

    The limit applies to the bytes as sent (Content-Length, or the running count
    on a chunked body) and, for gzip/deflate, to the inflated bytes too: each
    compressed chunk is inflated as it arrives, at most one byte past the limit
    (inflate.Inflater), so a gzip bomb is never inflated whole.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLargeError("body_too_large")
    inflater = None if encoding == "identity" else Inflater(encoding, limit)
    stream = request.content
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.readany():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError("body_too_large")
        if inflater is None:
            chunks.append(chunk)
        else:
            inflater.feed(chunk)
    return b"".join(chunks) if inflater is None else inflater.finish()


def _reject(request: web.Request, status: int, reason: str, message: str) -> web.Response:
    """A request over a limit: counted by limit, answered with a JSON error."""
    metrics = request.app[SERVICES].metrics
    metrics.rejected_requests.labels(reason=reason).inc()
    metrics.batches.labels(outcome=reason).inc()
    return json_error(status, message, limit=reason)


def _limit_broken(exc: BatchValidationError) -> str | None:
    """Which length limit an invalid batch broke, if any (msgspec names it "length <=")."""
    for error in exc.errors:
        if "of length <=" in error.reason:
            return "too_many_hops" if error.field.endswith("hops") else "string_too_long"
    return None


def _queue_full(metrics: Metrics) -> web.Response:
    metrics.batches.labels(outcome="queue_full").inc()
    return json_error(503, "write queue is full, retry later", headers={"Retry-After": "1"})


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
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in CONTENT_ENCODINGS:
        metrics.rejected_requests.labels(reason="unsupported_encoding").inc()
        metrics.batches.labels(outcome="unsupported_media_type").inc()
        return json_error(415, "Content-Encoding must be gzip, deflate or identity")
    if services.storage.queue_full:  # refuse before paying to read and decode the body
        return _queue_full(metrics)
    config = services.config
    limit = int(config.max_body_mb * 1024 * 1024)
    try:
        async with asyncio.timeout(config.read_timeout_s):
            body = await read_body(request, limit, encoding)
    except BodyTooLargeError as exc:
        return _reject(request, 413, exc.reason, f"body larger than {limit} bytes (max_body_mb)")
    except BadEncodingError as exc:
        metrics.rejected_requests.labels(reason="bad_encoding").inc()
        metrics.batches.labels(outcome="invalid").inc()
        return json_error(400, str(exc), encoding=exc.encoding)
    except TimeoutError:
        response = _reject(
            request, 408, "read_timeout", f"body not received within {config.read_timeout_s} s"
        )
        response.force_close()
        return response
    except web.RequestPayloadError:  # e.g. broken chunked framing
        metrics.batches.labels(outcome="invalid").inc()
        return json_error(400, "body could not be read")
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        metrics.batches.labels(outcome="invalid").inc()
        return json_error(
            400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
        )
    try:
        batch = decode_batch(body, config.max_batch_results)
    except BatchLimitError as exc:
        status = 413 if exc.reason == "too_many_results" else 400
        return _reject(request, status, exc.reason, exc.errors[0].reason)
    except BatchValidationError as exc:
        errors = [e.to_json() for e in exc.errors]
        reason = _limit_broken(exc)
        if reason is not None:
            metrics.rejected_requests.labels(reason=reason).inc()
        metrics.batches.labels(outcome="invalid").inc()
        return json_error(400, "invalid batch", errors=errors)
    try:
        result = await services.storage.submit(
            batch,
            remote=request.remote,
            node_id=request.headers.get("X-Node-ID", "")[:128] or None,
            idempotency_key=key,
            body_hash=hashlib.sha256(body).hexdigest() if key is not None else None,
        )
    except QueueFullError:
        return _queue_full(metrics)
    except WriterClosedError:
        metrics.batches.labels(outcome="shutting_down").inc()
        return json_error(503, "shutting down, retry later", headers={"Retry-After": "5"})
    except StorageError as exc:
        metrics.batches.labels(outcome="storage_error").inc()
        status = 507 if exc.kind == "disk_full" else 503
        return json_error(
            status,
            f"storage error, nothing stored: {exc}",
            headers={"Retry-After": "30" if status == 507 else "5"},
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
    return json_reply({"status": "ok", "received": result.count}, headers=headers)
