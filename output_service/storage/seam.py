"""The storage seam: what handlers may know about storage, whatever the backend.

Three capabilities, as protocols, so a backend is anything that has them:

- `Store`: every backend. Submit a batch (acknowledged only after commit),
  readiness, the `stats` totals, and the reads (`/recent` and the query API).
- `Archive`: only a file backend (SQLite). Rotate, list files, dump a
  consistent copy. Its routes exist only when `store.archive` is not None.
- `HopOutbox`: the durable queue of discovered hops as the sender and
  `/api/hops` see it. How rows get into it is the backend's business: SQLite
  commits state.db before the results file, PostgreSQL writes outbox rows in
  the same transaction as the results.

Everything crossing the seam is plain data (dataclasses, dicts of JSON
values, RFC 3339 UTC text for times), so handlers never import a database
driver and backends never import aiohttp.

Errors a store raises are the `StoreError` family below; handlers map each to
one HTTP refusal (`handlers/refusals.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from output_service.models import Batch

# -- times ---------------------------------------------------------------------


def utc_text(moment: float) -> str:
    """A moment as RFC 3339 UTC text with microseconds: how every time crosses the seam."""
    return (
        datetime.fromtimestamp(moment, UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


# -- errors --------------------------------------------------------------------


class StoreError(Exception):
    """Nothing of the batch was stored; the client may retry.

    `kind` is the metric label and picks the HTTP status: "disk_full" (507),
    "io", "unavailable" (database gone, 503), "closed" (shutting down, 503),
    "queue_full" (503, refused before any work).
    """

    kind: str = "io"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class QueueFull(StoreError):
    kind = "queue_full"


class StoreClosed(StoreError):
    kind = "closed"


class ArchiveError(StoreError):
    """The archive could not do what was asked (a rotation that cannot start a
    new file); ingest goes on in the current one (503)."""

    kind = "archive"


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before for a different body (422)."""


class NotFound(LookupError):
    """A named thing (file, target) is not there (404)."""


class BadQuery(ValueError):
    """A read's parameters are wrong in a way only the backend can tell (400)."""


class ReadBusy(Exception):
    """The read bound is saturated or the read ran past its time limit (503)."""

    def __init__(self, message: str, retry_after_s: int = 2) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# -- ingest --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Submission:
    """A validated batch and who sent it."""

    batch: Batch
    remote: str | None = None
    node_id: str | None = None
    idempotency_key: str | None = None
    body_hash: str | None = None


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """`duplicate`: an earlier batch with the same key is stored; `count` is its count."""

    count: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Readiness:
    """`ready` False means /ready answers 503 with `reason`. `degraded` lists
    problems that do not stop ingest (a rotation that keeps failing, a hop
    outbox that cannot deliver) and shows in /health and /ready."""

    ready: bool
    reason: str | None = None
    degraded: tuple[str, ...] = ()


# -- reads ---------------------------------------------------------------------

NodeFilter = str | None  # "" is never a node id; None in a filter means "any node"


@dataclass(frozen=True, slots=True)
class ResultFilter:
    """Filters of /api/results, /api/targets, export. Times are RFC 3339 UTC text
    compared with the stored measurement `timestamp` (since inclusive, until
    exclusive). `node_is_null` selects batches sent without X-Node-ID."""

    ip: str | None = None
    node: str | None = None
    node_is_null: bool = False
    since: str | None = None
    until: str | None = None
    failed: bool | None = None


@dataclass(frozen=True, slots=True)
class ResultPage:
    """One page of results (items shaped like /recent's), newest first.
    `next_cursor` is opaque to handlers; None on the last page."""

    items: list[dict[str, Any]]
    next_cursor: str | None


TargetSort = Literal["loss", "rtt", "results", "last_seen"]


@dataclass(frozen=True, slots=True)
class TargetQuery:
    filter: ResultFilter = field(default_factory=ResultFilter)
    sort: TargetSort = "loss"
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    ip: str
    step_s: int
    filter: ResultFilter = field(default_factory=ResultFilter)


class Reads(Protocol):
    """Every read a handler can ask for. Implementations bound their concurrency
    and time (raising ReadBusy) and never hold a snapshot long enough to starve
    the writer's checkpoints."""

    async def recent(self, limit: int, ip: str | None) -> list[dict[str, Any]]:
        """The newest `limit` results by arrival, /recent's item shape."""
        ...

    async def results_page(
        self, flt: ResultFilter, limit: int, cursor: str | None
    ) -> ResultPage: ...

    def iter_results(self, flt: ResultFilter) -> AsyncIterator[list[str]]:
        """Every matching result, newest first, streamed with flat memory: chunks
        of items already encoded as JSON text (an export writes them as they are).
        An element may hold several items, one a line (pre-rendered runs go out
        as stored); JSON text never holds a raw newline."""
        ...

    async def targets(self, query: TargetQuery) -> list[dict[str, Any]]: ...

    async def target(self, query: SeriesQuery) -> dict[str, Any] | None:
        """Summary plus `series`; None when the target has no results in range."""
        ...

    async def routes(self, ip: str, flt: ResultFilter) -> dict[str, Any]: ...

    async def nodes(self, silent_after_s: float, now: float) -> list[dict[str, Any]]: ...


# -- the archive (file backends only) --------------------------------------------


@dataclass(frozen=True, slots=True)
class Dump:
    """A consistent file ready to stream; its source is already released."""

    path: Path
    name: str
    size: int


class Archive(Protocol):
    async def rotate(self) -> str:
        """Start a new file now, between transactions; returns the new file's name."""
        ...

    async def files(self) -> list[dict[str, Any]]: ...

    def dump(self, name: str | None = None) -> contextlib.AbstractAsyncContextManager[Dump]:
        """Raises NotFound for an unknown file, ReadBusy when too many dumps run."""
        ...


# -- the hop outbox ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WaitingHop:
    ip: str
    queued_at: float
    attempts: int = 0


class HopOutbox(Protocol):
    """The sender's side of the outbox. `claim` hands hops to one sender (on a
    shared database: to one instance, `FOR UPDATE SKIP LOCKED`); a hop is removed
    only by `delivered` or `dead_letter`, so an instance that dies mid-delivery
    loses nothing (its claim lapses)."""

    async def claim(self, limit: int) -> list[WaitingHop]: ...

    async def delivered(self, hops: Sequence[WaitingHop]) -> int: ...

    async def dead_letter(self, hops: Sequence[WaitingHop], status: int, response: str) -> int: ...

    async def release(self, hops: Sequence[WaitingHop]) -> None:
        """Give back claimed hops that were not delivered (to retry later)."""
        ...

    async def depth(self) -> int: ...

    async def listing(self, limit: int, offset: int) -> dict[str, Any]:
        """/api/hops: discovered hops, outbox depth, dead letters."""
        ...


# -- the store ------------------------------------------------------------------------


@runtime_checkable
class Store(Protocol):
    """What every backend provides. `open` before the first request, `close`
    after the last (commits everything queued)."""

    @property
    def archive(self) -> Archive | None:
        """Rotate, list and dump files: None on a backend without files."""
        ...

    @property
    def reads(self) -> Reads: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def queue_full(self) -> bool:
        """True when a new batch would be refused: checked before reading a body."""
        ...

    async def submit(self, submission: Submission) -> SubmitResult:
        """Returns only after the batch has committed; raises StoreError or
        IdempotencyConflict otherwise."""
        ...

    async def readiness(self) -> Readiness: ...

    def stats(self) -> dict[str, Any]:
        """The `stats` object of /health and /stats (the Go service's names)."""
        ...
