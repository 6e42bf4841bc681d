"""Start-up: what is in `db_dir`, which files are usable, and moving the rest aside.

Runs once, on a worker thread, before the writer starts. Every results file is
opened with a plain read-write connection (so a WAL left by a crash is folded
back into it when the connection closes), checked with `PRAGMA quick_check`,
brought to the current schema (reads across files then use one query), and
counted.

Only corruption sends a file to `db_dir/quarantine/` (not SQLite, a failed
check, no results table): the service then starts without it rather than not
at all. A full disk, an I/O error or a lock says nothing about the file, so it
stops the start-up instead (`StartupFault`, exit status 2 with one line),
before any file has been moved: once the cause is gone, every acknowledged
batch is there again.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from output_service.storage.sqlite import connect, file_info
from output_service.storage.sqlite.file_names import companions
from output_service.storage.sqlite.results_file import file_counts, idempotency_keys_since
from output_service.storage.sqlite.schema import SCHEMA_VERSION, drop_live_only_indexes, migrate

QUARANTINE_DIR = "quarantine"
TEMP_DIR = "tmp"
IdempotencyRow = tuple[str, int, str | None, str]


# Less free space than this, and an I/O error at start-up counts as a full disk.
NEARLY_FULL_BYTES = 1024 * 1024
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 5, 6, 11, 13, 26


class UnusableFileError(Exception):
    """The file is not a results database this service can read (corruption)."""


class StartupFault(Exception):
    """Start-up cannot go on and no file is to blame (disk full, I/O, a lock);
    nothing was moved. `kind` is "disk_full", "locked" or "io"."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class FileReport:
    path: Path
    results: int
    failed: int
    keys: list[IdempotencyRow] = field(default_factory=list)
    last_received: str | None = None  # arrival of the file's newest stored batch
    started: float = 0.0  # as the file records it (`file_info`)
    started_in_future: bool = False


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


def inspect(path: Path, keys_since: str, now: float) -> FileReport:
    """Check, migrate and count one file, and leave it sealed (rollback-journal
    mode, so read-only readers create no `-wal`/`-shm` beside it; the file that
    is continued is switched back to WAL when the writer opens it). Indexes
    are left as they are: once the rotator knows which file is continued, it
    makes that one live and seals the others (`make_live`, `snapshot.seal`)."""
    mtime = path.stat().st_mtime  # before anything here writes to it
    try:
        conn = connect.read_write(path)
    except sqlite3.Error as exc:
        if fault_kind(exc) == "corrupt":
            raise UnusableFileError(str(exc)) from None
        raise
    try:
        problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise UnusableFileError("quick_check: " + "; ".join(problems))
        if not _has_table(conn, "ping_results"):
            raise UnusableFileError("no ping_results table")
        if int(conn.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
            migrate(conn)
        info, in_future = file_info.ensure(conn, path, now, mtime)
        counts = file_counts(conn)
        keys = idempotency_keys_since(conn, keys_since)
        last = conn.execute(
            "SELECT max(received_at) FROM batches WHERE result_count > 0"
        ).fetchone()[0]
        conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        if fault_kind(exc) == "corrupt":
            raise UnusableFileError(f"{type(exc).__name__}: {exc}") from None
        raise
    finally:
        conn.close()
    return FileReport(path, counts.results, counts.failed, keys, last, info.started, in_future)


def fault_kind(exc: BaseException) -> str:
    """ "corrupt" only when SQLite says the file is damaged or not a database;
    else "disk_full", "locked" or "io", none of which is about the file."""
    if isinstance(exc, OSError):
        return "disk_full" if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else "io"
    if not isinstance(exc, sqlite3.Error):
        return "io"
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    text = str(exc)
    if primary == _SQLITE_FULL or "disk is full" in text:
        return "disk_full"
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "is locked" in text:
        return "locked"
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "malformed" in text:
        return "corrupt"
    if "not a database" in text:
        return "corrupt"
    return "io"


def disk_looks_full(db_dir: Path) -> bool:
    """No room left on db_dir's filesystem, or a file there has reached the
    process's file size limit (RLIMIT_FSIZE): SQLite reports either as an I/O
    error as often as as a full disk."""
    try:
        st = os.statvfs(db_dir)
        if st.f_bavail * st.f_frsize < NEARLY_FULL_BYTES:
            return True
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            largest = max((p.stat().st_size for p in db_dir.glob("*.db*")), default=0)
            return largest + NEARLY_FULL_BYTES >= limit
    except OSError:
        return False
    return False


def startup_fault(db_dir: Path, exc: BaseException, file: str | None = None) -> StartupFault:
    """One line for the operator: what stopped the start-up, and that nothing moved."""
    kind = fault_kind(exc)
    if kind in ("io", "corrupt") and disk_looks_full(db_dir):
        kind = "disk_full"
    where = f" ({file})" if file else ""
    detail = f"{type(exc).__name__}: {exc}"
    if kind == "disk_full":
        message = f"the disk of {db_dir} is full{where}: free some space and start again"
    elif kind == "locked":
        message = f"a file in {db_dir} is locked by another program{where}"
    else:
        message = f"cannot use the files in {db_dir}{where}"
    return StartupFault(f"{message} ({detail}); nothing was moved", kind)


def make_live(path: Path) -> bool:
    """Drop the hop-IP index of the file that is continued as the live one (a
    Go file, or one from a version that kept the index live); True if dropped.

    Dropping it once at start-up is cheaper than maintaining it for every insert
    until the next rotation, and seal builds it again in one go.
    """
    conn = connect.read_write(path)
    try:
        file_info.set_state(conn, "live")
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
