"""The retained results files, who is reading them, and when they may go.

Retention must never pull a file from under a reader (a `/dump` download, a
`/recent` query): every read holds the file with `use()`, and a file that
retention retires while it is held is only hidden from new readers; it is
deleted when the last reader lets go. Everything here runs on the event loop
thread, so the counts need no lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from output_service.storage.sqlite.file_names import companions
from output_service.storage.sqlite.rotation_policy import beyond_retention

log = structlog.get_logger("output_service.storage")


@dataclass(eq=False, slots=True)
class FileEntry:
    """One results file and what the service knows about it without a query."""

    path: Path
    # when the file was started, as it records itself (`file_info`)
    started: float = 0.0
    # the file recorded a start after the clock at start-up (then set to now)
    started_in_future: bool = False
    results: int = 0
    failed: int = 0
    # Checkpointed and closed: no writer holds it, so it can be served as is.
    sealed: bool = False
    readers: int = 0
    retired: bool = False
    # (first, last) result timestamp; cached once the file is sealed.
    span: tuple[str | None, str | None] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name


class FileRegistry:
    """Retained files, oldest first; the newest one is the writer's current file."""

    def __init__(self, on_deleted: Callable[[FileEntry], None] | None = None) -> None:
        self._entries: list[FileEntry] = []
        self._on_deleted = on_deleted

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> list[FileEntry]:
        """A copy, oldest first: callers may iterate while files come and go."""
        return list(self._entries)

    @property
    def current(self) -> FileEntry:
        if not self._entries:
            raise RuntimeError("no results file yet")
        return self._entries[-1]

    def get(self, name: str) -> FileEntry | None:
        return next((e for e in self._entries if e.name == name), None)

    def add(self, entry: FileEntry) -> FileEntry:
        """Append `entry` as the newest file (the one the writer writes now)."""
        self._entries.append(entry)
        return entry

    def totals(self) -> tuple[int, int]:
        """(results, failed) over every retained file."""
        return sum(e.results for e in self._entries), sum(e.failed for e in self._entries)

    def acquire(self, entry: FileEntry) -> None:
        entry.readers += 1

    def release(self, entry: FileEntry) -> None:
        """Let go of a file; a retired file is deleted by its last reader."""
        entry.readers -= 1
        if entry.readers == 0 and entry.retired:
            self._delete(entry)

    @contextlib.contextmanager
    def use(self, entry: FileEntry) -> Iterator[FileEntry]:
        """Hold `entry` for the duration of a read, so retention cannot delete it."""
        self.acquire(entry)
        try:
            yield entry
        finally:
            self.release(entry)

    def retire(self, keep: int) -> list[FileEntry]:
        """Drop the oldest files beyond `keep` (never the current one).

        A file nobody reads is deleted now; a file in use disappears from the
        listing now and from the disk when its last reader is done.
        """
        if not self._entries:
            return []
        names = beyond_retention([e.name for e in self._entries], keep, self.current.name)
        retired = [e for e in self._entries if e.name in names]
        self._entries = [e for e in self._entries if e.name not in names]
        for entry in retired:
            entry.retired = True
            if entry.readers == 0:
                self._delete(entry)
            else:
                log.info("retention deferred", file=entry.name, readers=entry.readers)
        return retired

    def forget(self, entry: FileEntry) -> bool:
        """Drop a file that was deleted by hand (never the current one, which
        the writer restores). True if it was retained until now."""
        if entry not in self._entries or entry is self.current:
            return False
        self._entries.remove(entry)
        entry.retired = True
        log.warning("results file gone from the disk", file=entry.name, results=entry.results)
        return True

    def _delete(self, entry: FileEntry) -> None:
        for path in (entry.path, *companions(entry.path)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # a reader's release must not fail because of this
                log.warning("cannot delete results file", file=path.name, error=str(exc))
        log.info("results file deleted", file=entry.name, results=entry.results)
        if self._on_deleted is not None:
            self._on_deleted(entry)
