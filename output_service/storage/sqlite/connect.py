"""The one place results files and `state.db` are opened: connections, their
pragmas and how long they wait for a lock.

Every connection is in autocommit mode (`isolation_level=None`), so
transactions are explicit (`sqlite.immediate_transaction`). A connection that
finds the file locked waits `BUSY_TIMEOUT_MS` before giving up, except where a
caller has a reason for another wait (sealing waits `seal_wait_s`, configured).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

# How long a connection waits for a lock held by another (a checkpoint, a seal,
# the writer's commit) before it reports "database is locked".
BUSY_TIMEOUT_MS = 5000


def read_write(path: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """A plain read-write connection (start-up, sealing, the key index). It may
    be handed to a worker thread, so it is not bound to the opening thread."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
    )
    return _with_pragmas(conn, [f"busy_timeout={int(busy_timeout_ms)}"])


def writer(
    path: Path, *, synchronous: str, cache_size_mb: int, wal_autocheckpoint: int
) -> sqlite3.Connection:
    """The writer's connection to the live file: WAL, its durability and cache."""
    pragmas = [
        "journal_mode=WAL",
        f"synchronous={synchronous}",
        f"cache_size=-{cache_size_mb * 1024}",
        f"wal_autocheckpoint={wal_autocheckpoint}",
    ]
    return _with_pragmas(read_write(path), pragmas)


def backup_target(path: Path) -> sqlite3.Connection:
    """A connection to a new file that only receives a backup (a dump's copy, a
    deleted file written back); nobody else holds it, so no lock to wait for."""
    return sqlite3.connect(path, isolation_level=None)


def read_only(
    path: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, any_thread: bool = False
) -> sqlite3.Connection:
    """A connection that cannot write, however it is used (and never creates
    a missing file: opening one that is gone raises). Autocommit, so a read
    holds its snapshot only for its statement. `any_thread`: it may be handed
    to another thread (the query API's read threads)."""
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=not any_thread,
    )
    return _with_pragmas(conn, [f"busy_timeout={int(busy_timeout_ms)}"])


def read_only_async(path: Path) -> aiosqlite.Connection:
    """As `read_only`, for the event loop (`async with`); the caller sets no pragma."""
    return aiosqlite.connect(
        f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000
    )


def _with_pragmas(conn: sqlite3.Connection, pragmas: list[str]) -> sqlite3.Connection:
    """`conn` with `pragmas` applied, or closed if one fails."""
    try:
        for pragma in pragmas:
            conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return conn
