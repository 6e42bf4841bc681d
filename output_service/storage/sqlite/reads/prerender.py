"""Pre-rendered export items for sealed results files, in side files.

Building a result's item JSON (its traceroute's hops above all) in SQLite costs
~15-20 us a result, which caps an export near 50,000 results/s. A sealed file
never changes, so each of its items is rendered once, into a side file
`<db_dir>/read-cache/<name>.items` (one row per result: id, item text without
the closing brace, so the `file` key is added when it is read and a renamed
file still says its own name), and its partial target summary over all its
rows (so /api/targets after a restart reads only the live file). An export
then streams stored text: ~300,000 results/s from SQLite. The live file (and
any file whose side file is not ready) takes the slow path, so an export is
always complete.

Side files belong to the read side alone: they are built by a background task
on its own low-priority thread, from a read-only connection to the sealed
file, never by the writer. Each is written under a temporary name and renamed
when complete, and it records the identity of the file it was built from
(inode, device, size, mtime): a file restored or replaced under the same name
does not match, and its side file is rebuilt. Side files of files no longer
retained are deleted. The cost is disk: a side file is about 1.3x the size of
the results file it renders, so none is built while free space is short
(ROOM_FACTOR): the writer's disk comes first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from output_service.insight.summaries import TargetAccumulator
from output_service.storage.seam import ResultFilter
from output_service.storage.sqlite import connect, file_info
from output_service.storage.sqlite.reads import queries
from output_service.storage.sqlite.reads.partials import summarize

log = structlog.get_logger(__name__)

CACHE_DIR = "read-cache"
SUFFIX = ".items"
BUILD_CHUNK = 10_000  # results per INSERT statement of a build
# Disk the writer needs comes first: a side file (~1.3x its source) is built
# only while this much stays free: 4x the source's size, and at least 64 MB.
ROOM_FACTOR = 4
ROOM_MIN_BYTES = 64 << 20
_ITEM_OPEN = queries.ITEM_JSON.removesuffix(", 'file', :file)") + ")"
_SCHEMA = """
CREATE TABLE items (id INTEGER PRIMARY KEY, item TEXT NOT NULL);
CREATE TABLE targets (
    ip TEXT PRIMARY KEY, results INTEGER, failed INTEGER, loss_sum REAL,
    first_seen TEXT, last_seen TEXT, rtts BLOB, nodes TEXT
);
CREATE TABLE source (
    ino INTEGER, dev INTEGER, size INTEGER, mtime_ns INTEGER, rows INTEGER, upto INTEGER
);
"""


@dataclass(frozen=True, slots=True)
class Identity:
    ino: int
    dev: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Identity:
        st = os.stat(path)
        return cls(st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


class SideFiles:
    """Where each results file's side file lives, and whether it is usable."""

    def __init__(self, db_dir: Path) -> None:
        self.dir = db_dir / CACHE_DIR
        self._known: dict[str, Identity] = {}  # side file name -> identity it was built from
        self._short: set[str] = set()  # files skipped for want of disk (logged once)

    def side_of(self, path: Path) -> Path:
        return self.dir / (path.name + SUFFIX)

    def ready(self, path: Path) -> Path | None:
        """The side file of `path` if it is complete and was built from this very file."""
        side = self.side_of(path)
        try:
            current = Identity.of(path)
        except FileNotFoundError:
            return None
        built = self._known.get(side.name)
        if built is not None and not side.exists():  # removed by hand
            self._known.pop(side.name, None)
            return None
        if built is None:
            built = _recorded(side)
            if built is None:
                return None
            self._known[side.name] = built
        return side if built == current else None

    def summary(self, path: Path) -> tuple[int, TargetAccumulator] | None:
        """The kept partial target summary of `path` over everything (ids up to
        the first value), when its side file is ready: what a restart would
        otherwise read the whole file again for."""
        side = self.ready(path)
        if side is None:
            return None
        try:
            conn = _open_ro(side)
        except sqlite3.OperationalError:
            return None  # pruned since
        try:
            upto = int(conn.execute("SELECT upto FROM source").fetchone()[0])
            return upto, TargetAccumulator.load(conn.execute("SELECT * FROM targets"))
        finally:
            conn.close()

    def build(self, path: Path, stopping: Callable[[], bool]) -> bool:
        """Render every item of `path` into its side file, if `path` is sealed and
        has no usable one. True if one was built. Blocking: run on a thread."""
        if self.ready(path) is not None:
            return False
        try:
            identity = Identity.of(path)
            source = _open_ro(path)
        except (FileNotFoundError, sqlite3.OperationalError):
            return False  # gone (retention) since it was listed
        try:
            info = file_info.read(source)
            if info is None or info.state != "sealed":
                return False
        finally:
            source.close()
        self.dir.mkdir(exist_ok=True)
        free = shutil.disk_usage(self.dir).free
        if free < max(ROOM_FACTOR * identity.size, ROOM_MIN_BYTES):
            if path.name not in self._short:
                self._short.add(path.name)
                log.warning("prerender skipped: low disk", file=path.name, free_bytes=free)
            return False
        side = self.side_of(path)
        tmp = side.with_name(side.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            built = _render(path, tmp, identity, stopping)
        except sqlite3.Error as exc:  # a full disk, an I/O error: try again later
            log.warning("prerender failed", file=path.name, error=str(exc))
            built = False
        if not built:
            tmp.unlink(missing_ok=True)
            return False
        tmp.replace(side)
        self._known[side.name] = identity
        return True

    def prune(self, retained: Iterable[Path]) -> None:
        """Delete side files (and leftovers of interrupted builds) of files no
        longer retained."""
        keep = {p.name + SUFFIX for p in retained}
        if not self.dir.is_dir():
            return
        for entry in self.dir.iterdir():
            if entry.name not in keep:
                self._known.pop(entry.name, None)
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()


def _open_ro(path: Path) -> sqlite3.Connection:
    return connect.read_only(path, busy_timeout_ms=2000)


def _recorded(side: Path) -> Identity | None:
    """The identity a complete side file was built from (None: no such file)."""
    try:
        conn = _open_ro(side)
    except sqlite3.OperationalError:
        return None
    try:
        row = conn.execute("SELECT ino, dev, size, mtime_ns FROM source").fetchone()
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()
    return None if row is None else Identity(*row)


def _render(path: Path, tmp: Path, identity: Identity, stopping: Callable[[], bool]) -> bool:
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        # a side file is rebuilt from its source whenever it is missing: it needs
        # no journal, and is renamed into place only once complete
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(_SCHEMA)
        conn.execute("ATTACH ? AS src", (f"{path.resolve().as_uri()}?mode=ro",))
        top = int(conn.execute("SELECT coalesce(max(id), 0) FROM src.ping_results").fetchone()[0])
        for low in range(0, top, BUILD_CHUNK):
            if stopping():
                return False
            conn.execute(
                "INSERT INTO items SELECT id, substr(j, 1, length(j) - 1) FROM"
                f" (SELECT p.id AS id, {_ITEM_OPEN} AS j FROM src.ping_results p"
                " LEFT JOIN src.batches b ON b.id = p.batch_id"
                " WHERE p.id > :low AND p.id <= :high)",
                {"low": low, "high": low + BUILD_CHUNK},
            )
        if stopping():
            return False

        def run(sql: str, params: dict[str, Any]) -> list[Any]:
            return conn.execute(sql, params).fetchall()

        summary = summarize(run, ResultFilter(), (0, top))
        conn.executemany("INSERT INTO targets VALUES (?, ?, ?, ?, ?, ?, ?, ?)", summary.dump())
        rows = int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
        if Identity.of(path) != identity:
            return False  # the file changed under the build: not the one rendered
        conn.execute(
            "INSERT INTO source VALUES (?, ?, ?, ?, ?, ?)",
            (identity.ino, identity.dev, identity.size, identity.mtime_ns, rows, top),
        )
        conn.execute("DETACH src")
        return True
    finally:
        conn.close()
