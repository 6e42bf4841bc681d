"""The PostgreSQL store behind the interface today's handlers call.

The handlers still speak to the SQLite `Storage` class (submit with keyword
arguments, `ready()`, the writer's exception types). Until they speak the seam
(`Store`) directly, this thin adapter translates, so `storage = "postgres"`
runs end to end. It goes away when the handlers use the seam.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from output_service.models import Batch
from output_service.storage.postgres.store import PostgresStore
from output_service.storage.seam import (
    IdempotencyConflict,
    QueueFull,
    StoreClosed,
    StoreError,
    Submission,
    SubmitResult,
)
from output_service.storage.sqlite.catalog import Dump, UnknownFileError

NO_ARCHIVE = "not on the postgres backend: no results files (pg_dump is the backup)"


class PgStorage:
    """`Storage`'s interface over a PostgresStore."""

    archive = None

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    @property
    def queue_full(self) -> bool:
        return self.store.queue_full

    @property
    def current_file(self) -> Path:
        return Path("postgres")

    @property
    def total_results(self) -> int:
        return int(self.store.stats()["total_results"])

    async def submit(
        self,
        batch: Batch,
        *,
        remote: str | None = None,
        node_id: str | None = None,
        idempotency_key: str | None = None,
        body_hash: str | None = None,
    ) -> SubmitResult:
        from output_service.storage.sqlite.store import (
            IdempotencyConflictError,
            QueueFullError,
            StorageError,
            WriterClosedError,
        )

        submission = Submission(batch, remote, node_id, idempotency_key, body_hash)
        try:
            return await self.store.submit(submission)
        except QueueFull:
            raise QueueFullError() from None
        except StoreClosed:
            raise WriterClosedError() from None
        except StoreError as exc:
            raise StorageError(str(exc), kind=exc.kind) from None
        except IdempotencyConflict as exc:
            raise IdempotencyConflictError(str(exc)) from None

    def degraded(self) -> list[str]:
        """Nothing here degrades without stopping ingest: a lost database is /ready's 503."""
        return []

    async def ready(self) -> bool:
        return (await self.store.readiness()).ready

    def stats(self) -> dict[str, Any]:
        return self.store.stats()

    async def recent(self, limit: int, ip: str | None) -> list[dict[str, Any]]:
        return await self.store.reads.recent(limit, ip)

    async def rotate(self) -> str:
        raise UnknownFileError(NO_ARCHIVE)

    async def files(self) -> list[dict[str, Any]]:
        raise UnknownFileError(NO_ARCHIVE)

    @contextlib.asynccontextmanager
    async def dump(self, name: str | None = None) -> AsyncIterator[Dump]:
        raise UnknownFileError(NO_ARCHIVE)
        yield  # pragma: no cover
