"""The retained files as readers see them: the start-up scan, /recent, /files
and /dump.

Every read holds its file through the registry (`use`), so retention can retire
a file at any moment without pulling it from under a reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from output_service.config import Config
from output_service.metrics import Metrics
from output_service.storage.seam import BadQuery, Dump, NotFound, StoreError, utc_text
from output_service.storage.sqlite import inventory, reader
from output_service.storage.sqlite.file_names import (
    RESULTS_FILE,
    results_files,
    size_on_disk,
)
from output_service.storage.sqlite.idempotency import IdempotencyCache
from output_service.storage.sqlite.registry import FileEntry, FileRegistry
from output_service.storage.sqlite.snapshot import (
    DumpSlots,
    link_or_copy,
    new_temp_path,
    result_span,
)

log = structlog.get_logger("output_service.storage")


class InvalidFileNameError(BadQuery):
    """Not a results file name at all (a path, `..`, another kind of file)."""


class UnknownFileError(NotFound):
    """A well-formed results file name that is not a retained file."""


class Catalog:
    """Reads over every retained file of one Storage."""

    def __init__(self, config: Config, metrics: Metrics, registry: FileRegistry) -> None:
        self._config = config
        self._metrics = metrics
        self._registry = registry
        # when the newest batch in the retained files arrived (set by `load`)
        self.last_received: float | None = None
        self.dump_slots = DumpSlots(config.max_concurrent_dumps)

    async def load(
        self, idempotency: IdempotencyCache, keys_since: float, now: float
    ) -> list[tuple[str, int, str | None, str]]:
        """Register every usable results file in `db_dir`, oldest first, and
        remember its idempotency keys; move the unusable ones to quarantine.
        Each file's start is what it records (`file_info`, given to files from
        before it), a start after `now` brought back to `now`.
        Returns every key of the window found in the files (oldest first)."""
        db_dir = self._config.db_dir
        since = utc_text(keys_since)
        reports: list[inventory.FileReport] = []
        corrupt: list[tuple[Path, str]] = []
        for path in await asyncio.to_thread(results_files, db_dir):
            try:
                reports.append(await asyncio.to_thread(inventory.inspect, path, since, now))
            except inventory.UnusableFileError as exc:
                corrupt.append((path, str(exc)))
            except (OSError, sqlite3.Error) as exc:  # the disk or a lock, not the file
                raise inventory.startup_fault(db_dir, exc, path.name) from None
        # only once every file was read without a fault: a full disk moves nothing
        for path, reason in corrupt:
            moved = await asyncio.to_thread(inventory.quarantine, path)
            self._metrics.quarantined_files.inc()
            log.warning(
                "results file quarantined",
                file=path.name,
                reason=reason,
                moved_to=str(moved.relative_to(db_dir)),
            )
        for report in reports:
            entry = FileEntry(
                report.path,
                started=report.started,
                started_in_future=report.started_in_future,
                results=report.results,
                failed=report.failed,
                sealed=True,
            )
            self._registry.add(entry)
            for key, count, body_hash, received_at in report.keys:
                moment = datetime.fromisoformat(received_at).timestamp()
                idempotency.remember(key, count, body_hash, moment)
        arrivals = [r.last_received for r in reports if r.last_received]
        self.last_received = datetime.fromisoformat(max(arrivals)).timestamp() if arrivals else None
        return [row for report in reports for row in report.keys]

    async def recent(self, limit: int, ip: str | None) -> list[dict[str, Any]]:
        """The newest results across retained files: the current file first, then
        older files in turn until `limit` is reached. Ids are per file, so each
        result also names its file."""
        found: list[dict[str, Any]] = []
        for entry in reversed(self._registry.entries):
            if entry.retired or not self._on_disk(entry):
                continue
            with self._registry.use(entry):
                try:
                    rows = await reader.recent_results(entry.path, limit - len(found), ip)
                except sqlite3.OperationalError:
                    if self._on_disk(entry):
                        raise
                    continue  # deleted by hand while we read
            for row in rows:
                row["file"] = entry.name
            found.extend(rows)
            if len(found) >= limit:
                break
        return found

    async def files(self) -> list[dict[str, Any]]:
        """The retained files, oldest first, with size, row count and time span."""
        listing: list[dict[str, Any]] = []
        current = self._registry.current
        for entry in self._registry.entries:
            if entry.retired or not self._on_disk(entry):
                continue
            with self._registry.use(entry):
                span = entry.span
                if span is None:
                    try:
                        span = await asyncio.to_thread(result_span, entry.path)
                    except sqlite3.OperationalError:
                        if self._on_disk(entry):
                            raise
                        continue  # deleted by hand while we read
                    if entry.sealed:  # a sealed file never changes: ask once
                        entry.span = span
                size = size_on_disk(entry.path)
            listing.append(
                {
                    "name": entry.name,
                    "size": size,
                    "results": entry.results,
                    "first_result": span[0],
                    "last_result": span[1],
                    "created": utc_text(entry.started),
                    "current": entry is current,
                }
            )
        return listing

    @contextlib.asynccontextmanager
    async def dump(self, name: str | None = None) -> AsyncIterator[Dump]:
        """A file to stream for `name` (default: the current file), made so that
        its source is released before the caller streams it.

        A file that is still written (or still being sealed) is copied with the
        online backup API into a temp file; a sealed one gets a hard link there
        (falling back to being served in place, held, where links are refused).
        Either way retention may delete the source during the download. The temp
        file is removed when the caller leaves the block, however it does.
        Raises ReadBusy past `max_concurrent_dumps`.
        """
        entry = self._registry.current if name is None else self._retained(name)
        with self.dump_slots.slot():
            temp = new_temp_path(inventory.temp_dir(self._config.db_dir))
            try:
                with self._registry.use(entry):
                    if entry.sealed:
                        try:
                            size = link_or_copy(entry.path, temp)
                        except FileNotFoundError:  # deleted by hand just now
                            self._on_disk(entry)
                            raise UnknownFileError(f"no retained file named {name}") from None
                        except OSError:  # no hard links here: serve it as it is, held
                            yield Dump(entry.path, entry.name, entry.path.stat().st_size)
                            return
                    else:
                        size = await self._snapshot(entry.path, temp)
                yield Dump(temp, entry.name, size)
            finally:
                temp.unlink(missing_ok=True)

    async def _snapshot(self, source: Path, temp: Path) -> int:
        copy = self.dump_slots.snapshot(source, temp)
        try:
            return await asyncio.shield(copy)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"snapshot failed: {exc}") from exc
        finally:
            if not copy.done():  # cancelled while copying: stop the thread, let it finish
                self.dump_slots.interrupt(temp)
                await asyncio.wait([copy])
                if not copy.cancelled():
                    copy.exception()  # retrieved, so asyncio does not log it

    def _retained(self, name: str) -> FileEntry:
        if not RESULTS_FILE.fullmatch(name):
            raise InvalidFileNameError(f"not a results file name: {name!r}")
        entry = self._registry.get(name)
        if entry is None or entry.retired or not self._on_disk(entry):
            raise UnknownFileError(f"no retained file named {name}")
        return entry

    def _on_disk(self, entry: FileEntry) -> bool:
        """False for a file deleted by hand, which is then forgotten (the
        current file is the writer's to restore, so it always counts)."""
        if entry is self._registry.current or entry.path.exists():
            return True
        self._registry.forget(entry)
        return False
