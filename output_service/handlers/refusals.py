"""Every way `POST /results` says no, as one value: status, JSON reason, metrics.

A refusal is raised (`Refused`) where the reason is found and answered in one
place (`Refusal.answer`), so the reply and its two counters (`batches{outcome}`,
and `rejected_requests{reason}` for a broken limit) can never drift apart.
Raising costs nothing on the path of a batch that is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from output_service.handlers.common import json_error
from output_service.metrics import Metrics
from output_service.storage.seam import QueueFull, StoreClosed, StoreError


@dataclass(frozen=True, slots=True)
class Refusal:
    """A batch not taken: the HTTP answer and how it is counted."""

    status: int
    message: str
    outcome: str  # the `batches{outcome}` label
    limit: str | None = None  # the `rejected_requests{reason}` label, when a limit broke
    body: dict[str, Any] = field(default_factory=dict)  # more JSON fields of the reply
    headers: dict[str, str] | None = None
    close: bool = False  # close the connection after the reply (a stalled body)

    def answer(self, metrics: Metrics) -> web.Response:
        """Count the refusal and build its reply."""
        if self.limit is not None:
            metrics.rejected_requests.labels(reason=self.limit).inc()
        metrics.batches.labels(outcome=self.outcome).inc()
        response = json_error(self.status, self.message, headers=self.headers, **self.body)
        if self.close:
            response.force_close()
        return response


class Refused(Exception):
    """Raised with the refusal that ends a request."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def over_limit(status: int, limit: str, message: str) -> Refusal:
    """A request over one of the limits: counted by limit, its JSON names it."""
    return Refusal(status, message, outcome=limit, limit=limit, body={"limit": limit})


def unsupported(message: str, *, limit: str | None = None) -> Refusal:
    return Refusal(415, message, outcome="unsupported_media_type", limit=limit)


def invalid(message: str, *, limit: str | None = None, **body: Any) -> Refusal:
    return Refusal(400, message, outcome="invalid", limit=limit, body=body)


QUEUE_FULL = Refusal(
    503, "write queue is full, retry later", outcome="queue_full", headers={"Retry-After": "1"}
)
# the same refusal when the batches held (decoding, queued, committing) reach
# queue_max_mb of bodies (handlers/inflight.py)
QUEUE_BYTES_FULL = Refusal(
    503,
    "batches waiting for the writer hold queue_max_mb of bodies, retry later",
    outcome="queue_full",
    body={"limit": "queue_max_mb"},
    headers={"Retry-After": "1"},
)
SHUTTING_DOWN = Refusal(
    503, "shutting down, retry later", outcome="shutting_down", headers={"Retry-After": "5"}
)


def store_refused(error: StoreError) -> Refusal:
    """What a store's error means to the client: whichever backend raised it."""
    if isinstance(error, QueueFull):
        return QUEUE_FULL
    if isinstance(error, StoreClosed):
        return SHUTTING_DOWN
    return storage_failed(str(error), error.kind == "disk_full")


def storage_failed(detail: str, disk_full: bool) -> Refusal:
    """Nothing was stored: 507 for a full disk, else 503; both say when to retry."""
    status = 507 if disk_full else 503
    return Refusal(
        status,
        f"storage error, nothing stored: {detail}",
        outcome="storage_error",
        headers={"Retry-After": "30" if disk_full else "5"},
    )


def idempotency_conflict(detail: str) -> Refusal:
    return Refusal(422, detail, outcome="idempotency_conflict")
