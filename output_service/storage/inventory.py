"""Start-up: what is in `db_dir`, which files are usable, and moving the rest aside.

Runs once, on a worker thread, before the writer starts. Every results file is
opened with a plain read-write connection (so a WAL left by a crash is folded
back into it when the connection closes), checked with `PRAGMA quick_check`,
brought to the current schema (reads across files then use one query), and
counted. A file that fails any of that goes to `db_dir/quarantine/` with its
reason in the log: the service starts without it rather than not at all.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from output_service.storage.files import companions
from output_service.storage.results_file import file_counts, idempotency_keys_since
from output_service.storage.schema import SCHEMA_VERSION, drop_live_only_indexes, migrate

QUARANTINE_DIR = "quarantine"
TEMP_DIR = "tmp"
IdempotencyRow = tuple[str, int, str | None, str]


class UnusableFileError(Exception):
    """The file is not a results database this service can read."""


@dataclass(slots=True)
class FileReport:
    path: Path
    results: int
    failed: int
    keys: list[IdempotencyRow] = field(default_factory=list)


def temp_dir(db_dir: Path) -> Path:
    """`db_dir/tmp`, created when missing: an operator may have removed it, and
    rotation and dumps must heal rather than fail from then on."""
    tmp = db_dir / TEMP_DIR
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def prepare_dir(db_dir: Path) -> None:
    """Create `db_dir` and an empty temp dir (a crash may have left dumps behind)."""
    db_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(db_dir / TEMP_DIR, ignore_errors=True)
    temp_dir(db_dir)


def inspect(path: Path, keys_since: str) -> FileReport:
    """Check, migrate and count one file, and leave it sealed (rollback-journal
    mode, so read-only readers create no `-wal`/`-shm` beside it; the file that
    is continued is switched back to WAL when the writer opens it). Indexes
    are left as they are: once the rotator knows which file is continued, it
    makes that one live and seals the others (`make_live`, `snapshot.seal`)."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise UnusableFileError(str(exc)) from None
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise UnusableFileError("quick_check: " + "; ".join(problems))
        if not _has_table(conn, "ping_results"):
            raise UnusableFileError("no ping_results table")
        if int(conn.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
            migrate(conn)
        counts = file_counts(conn)
        keys = idempotency_keys_since(conn, keys_since)
        conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        raise UnusableFileError(f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    return FileReport(path, counts.results, counts.failed, keys)


def make_live(path: Path) -> bool:
    """Drop the hop-IP index of the file that is continued as the live one (a
    Go file, or one from a version that kept the index live); True if dropped.

    Dropping it once at start-up is cheaper than maintaining it for every insert
    until the next rotation, and seal builds it again in one go.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:
        return drop_live_only_indexes(conn)
    finally:
        conn.close()


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return row.fetchone() is not None


def quarantine(path: Path) -> Path:
    """Move a file (and its WAL and shm) to `quarantine/`, never overwriting one there."""
    target_dir = path.parent / QUARANTINE_DIR
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    n = 1
    while target.exists():
        target = target_dir / f"{path.name}.{n}"
        n += 1
    for source, dest in zip((path, *companions(path)), (target, *companions(target)), strict=True):
        if source.exists():
            source.replace(dest)
    return target
