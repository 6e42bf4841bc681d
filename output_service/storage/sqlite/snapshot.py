"""Files at rest: sealing a rotated file, and consistent copies for `/dump`.

Both run on worker threads with their own plain sqlite3 connections, never on
the writer's thread: a snapshot of a large file takes a while and ingest keeps
committing meanwhile (WAL lets a reader and the writer run side by side).

Both also build the hop-IP index that the live file goes without (see
`schema`), so that every sealed file and every backup has the full seed schema.

Dumps are bounded (`DumpSlots`): at most `max_concurrent_dumps` at once, each
snapshot on a thread of the dumps' own pool, so that however many admins ask,
a seal or a rotation never waits behind a snapshot, and `db_dir/tmp` holds at
most that many copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from output_service.storage.seam import ReadBusy
from output_service.storage.sqlite import connect, file_info
from output_service.storage.sqlite.schema import add_sealed_indexes

T = TypeVar("T")

# Index builds keep SQLite's default page cache (2 MB): measured on a 110 MB
# file, CREATE INDEX took 1.0 s with it and 1.4/1.9/2.1 s with 8/32/64 MB.


class SealError(Exception):
    """The file could not be made to stand alone; it is left unsealed."""


def seal(path: Path, wait_s: float) -> bool:
    """Finish a rotated, closed results file; True if its hop-IP index was built.

    The index is built first, while the file is still in WAL mode, so readers
    of the file (`/recent`, `/files`, a `/dump` snapshot) go on reading during
    the build. Then the WAL is folded into the main file, the one checkpoint of
    a seal; a reader that holds on longer than `wait_s` (`seal_wait_s`) makes
    this fail, and the file is not
    sealed: `/dump?file=` serves snapshots of it and start-up finishes it.
    Last, the file is put in rollback-journal mode, since with a WAL header
    every read-only reader would leave an empty `-wal` and `-shm` beside it.
    That part is best effort: while someone still has the file open the switch
    is refused, and the file stays a valid WAL database that holds everything
    in its main file.
    """
    conn = connect.read_write(path, busy_timeout_ms=round(wait_s * 1000))
    try:
        built = add_sealed_indexes(conn)
        file_info.set_state(conn, "sealed")
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise SealError(f"readers kept {path.name}'s WAL from being folded in")
        conn.execute("PRAGMA busy_timeout=500")
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    return built


def new_temp_path(tmp_dir: Path) -> Path:
    return tmp_dir / f"dump-{uuid.uuid4().hex}.db"


class DumpSlots:
    """At most `limit` dumps at once (each from its start to the end of its
    download), and the threads their snapshots run on.

    A dump past the limit is refused at once (ReadBusy: 503 with Retry-After)
    rather than queued: a queued dump would hold its client, and the admin's
    retry costs nothing meanwhile.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._executor = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="snapshot")
        self._copying: dict[Path, sqlite3.Connection] = {}

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.running >= self.limit:
            raise ReadBusy(f"{self.limit} dumps are already running, retry later", 5)
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1

    def run(self, fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """`fn(*args)` on a snapshot thread (never the writer's or the default pool)."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def snapshot(self, source: Path, dest: Path) -> asyncio.Future[int]:
        """backup_to on a snapshot thread, interruptible with `interrupt(dest)`."""

        def opened(conn: sqlite3.Connection | None) -> None:
            if conn is None:
                self._copying.pop(dest, None)
            else:
                self._copying[dest] = conn

        return self.run(backup_to, source, dest, opened)

    def interrupt(self, dest: Path) -> None:
        """Stop the copy into `dest` (its client went away, or shutdown cut it):
        the index build, most of a snapshot's time, stops at once (thread-safe)."""
        conn = self._copying.get(dest)
        if conn is not None:
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed meanwhile
                conn.interrupt()

    def close(self) -> None:
        """At shutdown: interrupt the copies still running, drop those not started."""
        for dest in list(self._copying):
            self.interrupt(dest)
        self._executor.shutdown(wait=False, cancel_futures=True)


def link_or_copy(source: Path, dest: Path) -> int:
    """A second name for a sealed file, so that a download can go on after
    retention deletes the file (a hard link costs no space); returns its size."""
    os.link(source, dest)
    return dest.stat().st_size


def backup_to(
    source: Path, dest: Path, on_open: Callable[[sqlite3.Connection | None], None] | None = None
) -> int:
    """Copy `source` into a new file `dest` in one read transaction; returns its size.

    The online backup API copies every page in a single step, so the copy is
    the database as of one commit: everything acknowledged before the call is
    in it, and a transaction committing meanwhile is either wholly in or out.
    A copy of the live file then gets the hop-IP index built, so that a backup
    is a full seed-schema file like every sealed one. `on_open` is told the copy's
    connection (and None when it is closed), so that the copy can be interrupted.
    """
    src = connect.read_only(source)
    try:
        dst = connect.backup_target(dest)
        if on_open is not None:
            on_open(dst)
        try:
            src.backup(dst)
            # A single self-contained file for whoever downloads it.
            dst.execute("PRAGMA journal_mode=DELETE")
            # A temp file: if the machine dies meanwhile, start-up removes it.
            dst.execute("PRAGMA synchronous=OFF")
            add_sealed_indexes(dst)
        finally:
            if on_open is not None:
                on_open(None)
            dst.close()
    finally:
        src.close()
    return dest.stat().st_size


def result_span(path: Path) -> tuple[str | None, str | None]:
    """First and last result timestamp in a file (both use the timestamp index)."""
    conn = connect.read_only(path)
    try:
        row = conn.execute("SELECT min(timestamp), max(timestamp) FROM ping_results").fetchone()
    finally:
        conn.close()
    return row[0], row[1]
