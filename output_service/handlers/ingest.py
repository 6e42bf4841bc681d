"""POST /results: read, decode and validate the batch, hand it to storage, ack after commit."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import replace

from aiohttp import web

from output_service.handlers import refusals
from output_service.handlers.common import SERVICES
from output_service.handlers.inflate import (
    ENCODINGS,
    BadEncodingError,
    BodyTooLargeError,
    Inflater,
)
from output_service.handlers.inflight import IN_FLIGHT
from output_service.handlers.middleware import COUNT
from output_service.handlers.refusals import Refused
from output_service.models import (
    Batch,
    BatchLimitError,
    BatchValidationError,
    InvalidUtf8Error,
    decode_batch,
)
from output_service.storage.seam import IdempotencyConflict, StoreError, Submission

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


def _limit_broken(exc: BatchValidationError) -> str | None:
    """Which length limit an invalid batch broke, if any (msgspec names it "length <=")."""
    for error in exc.errors:
        if "of length <=" in error.reason:
            return "too_many_hops" if error.field.endswith("hops") else "string_too_long"
    return None


def _accepts_content_type(request: web.Request) -> bool:
    """JSON, or no Content-Type at all (aiohttp reports that as octet-stream)."""
    if request.headers.get("Content-Type") == "application/json":  # what nodes send
        return True
    ctype = request.content_type
    if ctype == "application/octet-stream" and "Content-Type" in request.headers:
        return False
    return ctype in JSON_TYPES or ctype.endswith("+json")


async def post_results(request: web.Request) -> web.Response:
    """Read, decode and store one batch, and answer once it has committed.

    Every way to say no raises `Refused`, answered here. One coroutine for the
    whole happy path (no awaited helpers but the body read when it has not all
    arrived, and storage): each awaited coroutine is a frame and a suspension
    more per request (BENCHMARKS.md, round four).
    """
    app = request.app
    services = app[SERVICES]
    try:
        started = asyncio.get_running_loop().time()
        if not _accepts_content_type(request):
            raise Refused(
                refusals.unsupported(
                    f"Content-Type must be application/json, got {request.content_type}"
                )
            )
        headers = request.headers
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in CONTENT_ENCODINGS:
            raise Refused(
                refusals.unsupported(
                    "Content-Encoding must be gzip, deflate or identity",
                    limit="unsupported_encoding",
                )
            )
        storage = services.storage
        if storage.queue_full:  # refuse before paying to read and decode the body
            raise Refused(refusals.QUEUE_FULL)
        # The declared length is held from before the read (bodies being read count
        # too), and corrected to the real size once it is known (chunked, gzip).
        in_flight = app[IN_FLIGHT]
        held = request.content_length or 0
        if not in_flight.take(held):
            raise Refused(refusals.QUEUE_BYTES_FULL)
        try:
            config = services.config
            limit = int(config.max_body_mb * 1024 * 1024)
            stream = request.content
            if encoding == "identity" and stream.is_eof():  # all here: one read, no await
                body = stream.read_nowait(-1)
                if len(body) > limit:
                    raise Refused(_too_large(limit))
            else:
                body = await _read_within_limits(request, limit, encoding, config.read_timeout_s)
            if len(body) != held:
                in_flight.release(held)
                held = 0
                if not in_flight.take(len(body)):
                    raise Refused(refusals.QUEUE_BYTES_FULL)
                held = len(body)
            key = _idempotency_key(headers)
            batch = _decode(body, config.max_batch_results)
            body_hash = hashlib.sha256(body).hexdigest() if key is not None else None
            # The decoded batch is all that is needed from here: without this, every
            # request waiting for its commit kept its body too (64 x 630 KB at 64
            # clients sending 1,000 results with traceroutes; BENCHMARKS.md, peak RSS).
            del body
            submission = Submission(
                batch,
                remote=request.remote,
                node_id=headers.get("X-Node-ID", "")[:128] or None,
                idempotency_key=key,
                body_hash=body_hash,
            )
            try:
                result = await storage.submit(submission)
            except StoreError as exc:
                raise Refused(refusals.store_refused(exc)) from None
            except IdempotencyConflict as exc:
                raise Refused(refusals.idempotency_conflict(str(exc))) from None
        finally:
            in_flight.release(held)
    except Refused as refused:
        return refused.refusal.answer(services.metrics)
    count = result.count
    request[COUNT] = count
    if result.duplicate:
        services.metrics.batch_replayed()
        return web.Response(
            body=b'{"status":"ok","received":%d}' % count,
            headers={"Idempotent-Replayed": "true"},
            content_type="application/json",
            charset="utf-8",
        )
    services.metrics.batch_stored(count, asyncio.get_running_loop().time() - started)
    # the one reply every stored batch gets, as json_reply would write it, without
    # encoding a dict per request
    return web.Response(
        body=b'{"status":"ok","received":%d}' % count,
        content_type="application/json",
        charset="utf-8",
    )


def _idempotency_key(headers: Mapping[str, str]) -> str | None:
    key = headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        raise Refused(
            refusals.invalid(
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
            )
        )
    return key


async def _read_within_limits(
    request: web.Request, limit: int, encoding: str, timeout_s: float
) -> bytes:
    try:
        if request.content.is_eof():  # all of it has arrived: nothing to wait for
            return await read_body(request, limit, encoding)
        async with asyncio.timeout(timeout_s):
            return await read_body(request, limit, encoding)
    except BodyTooLargeError as exc:
        raise Refused(_too_large(limit, exc.reason)) from None
    except BadEncodingError as exc:
        refusal = refusals.invalid(str(exc), limit="bad_encoding", encoding=exc.encoding)
        raise Refused(refusal) from None
    except TimeoutError:
        message = f"body not received within {timeout_s} s"
        refusal = replace(refusals.over_limit(408, "read_timeout", message), close=True)
        raise Refused(refusal) from None
    except web.RequestPayloadError:  # e.g. broken chunked framing
        raise Refused(refusals.invalid("body could not be read")) from None


def _too_large(limit: int, reason: str = "body_too_large") -> refusals.Refusal:
    return refusals.over_limit(413, reason, f"body larger than {limit} bytes (max_body_mb)")


def _decode(body: bytes, max_results: int) -> Batch:
    try:
        return decode_batch(body, max_results)
    except BatchLimitError as exc:
        status = 413 if exc.reason == "too_many_results" else 400
        raise Refused(refusals.over_limit(status, exc.reason, exc.errors[0].reason)) from None
    except InvalidUtf8Error as exc:  # the offset is in the body as inflated
        refusal = refusals.invalid(exc.message, limit="invalid_utf8", offset=exc.offset)
        raise Refused(refusal) from None
    except BatchValidationError as exc:
        errors = [e.to_json() for e in exc.errors]
        refusal = refusals.invalid("invalid batch", limit=_limit_broken(exc), errors=errors)
        raise Refused(refusal) from None
