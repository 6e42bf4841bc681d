"""Files at rest: sealing a rotated file, and consistent copies for `/dump`.

Both run on worker threads with their own plain sqlite3 connections, never on
the writer's thread: a snapshot of a large file takes a while and ingest keeps
committing meanwhile (WAL lets a reader and the writer run side by side).
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path


def seal(path: Path) -> None:
    """Put a closed results file in rollback-journal mode.

    After the writer's TRUNCATE checkpoint the file holds everything, but its
    header still says WAL, and every read-only reader would then leave an empty
    `-wal` and a `-shm` beside it. Best effort: while someone still reads the
    file the switch is refused, and the file stays a valid WAL database.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=0.5)
    try:
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


def new_temp_path(tmp_dir: Path) -> Path:
    return tmp_dir / f"dump-{uuid.uuid4().hex}.db"


def backup_to(source: Path, dest: Path) -> int:
    """Copy `source` into a new file `dest` in one read transaction; returns its size.

    The online backup API copies every page in a single step, so the copy is
    the database as of one commit: everything acknowledged before the call is
    in it, and a transaction committing meanwhile is either wholly in or out.
    """
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(dest, isolation_level=None)
        try:
            src.backup(dst)
            # A single self-contained file for whoever downloads it.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    return dest.stat().st_size


def result_span(path: Path) -> tuple[str | None, str | None]:
    """First and last result timestamp in a file (both use the timestamp index)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT min(timestamp), max(timestamp) FROM ping_results").fetchone()
    finally:
        conn.close()
    return row[0], row[1]
