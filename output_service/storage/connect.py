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
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    except BaseException:
        conn.close()
        raise
    return conn


def writer(
    path: Path, *, synchronous: str, cache_size_mb: int, wal_autocheckpoint: int
) -> sqlite3.Connection:
    """The writer's connection to the live file: WAL, its durability and cache."""
    conn = read_write(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(f"PRAGMA cache_size=-{cache_size_mb * 1024}")
        conn.execute(f"PRAGMA wal_autocheckpoint={wal_autocheckpoint}")
    except BaseException:
        conn.close()
        raise
    return conn


def read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write, however it is used (and never creates
    a missing file: opening one that is gone raises)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except BaseException:
        conn.close()
        raise
    return conn


def read_only_async(path: Path) -> aiosqlite.Connection:
    """As `read_only`, for the event loop (`async with`); the caller sets no pragma."""
    return aiosqlite.connect(
        f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000
    )
