"""What a results file says about itself: when it was started and its state.

Names are for people: an operator may copy, rename or restore a file, and a
clock step leaves names in the future. So each file keeps a one-row
`file_info` table (`started_at` RFC 3339 UTC, `state` live|sealing|sealed),
and rotation, listing and ordering decisions read that, never the name.

Files from before this table (Go files, schema versions 1 and 2) get it at
start-up, with the start time taken from the name when it is a real date,
else from the earliest row's arrival, else from the file's mtime. The table
needs no schema version: it is created with `IF NOT EXISTS` wherever missing,
and the Go tables and tools that read them are unaffected.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from output_service.storage.seam import utc_text
from output_service.storage.sqlite.file_names import name_time

State = Literal["live", "sealing", "sealed"]
STATES: tuple[State, ...] = ("live", "sealing", "sealed")

FILE_INFO_DDL = """
CREATE TABLE IF NOT EXISTS file_info (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    started_at TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('live', 'sealing', 'sealed'))
)
"""


@dataclass(frozen=True, slots=True)
class FileInfo:
    started: float  # seconds since the epoch, UTC
    state: State


def write_new(conn: sqlite3.Connection, started: float) -> None:
    """Record a new file as live, started at `started` (call inside its creation)."""
    conn.execute(FILE_INFO_DDL)
    conn.execute(
        "INSERT OR REPLACE INTO file_info (id, started_at, state) VALUES (1, ?, 'live')",
        (utc_text(started),),
    )


def read(conn: sqlite3.Connection) -> FileInfo | None:
    """The recorded start and state, or None if the file has no (valid) row."""
    try:
        row = conn.execute("SELECT started_at, state FROM file_info WHERE id = 1").fetchone()
    except sqlite3.OperationalError:  # no such table: a file from before it
        return None
    if row is None or row[1] not in STATES:
        return None
    started = _parse(row[0])
    return None if started is None else FileInfo(started, row[1])


def ensure(conn: sqlite3.Connection, path: Path, now: float, mtime: float) -> tuple[FileInfo, bool]:
    """The file's info, recorded first if it had none (the migration), with a
    start in the future brought back to `now`. Returns (info, in_future): the
    second tells the caller the file claimed a start after `now` (a clock
    step), so it must not be continued as the live file. `mtime` is the
    file's before start-up touched it (the last resort of the migration)."""
    info = read(conn)
    if info is None:
        info = FileInfo(_inferred_start(conn, path, mtime), "sealed")
        conn.execute(FILE_INFO_DDL)
        conn.execute(
            "INSERT OR REPLACE INTO file_info (id, started_at, state) VALUES (1, ?, ?)",
            (utc_text(info.started), info.state),
        )
    if info.started <= now:
        return info, False
    conn.execute("UPDATE file_info SET started_at = ? WHERE id = 1", (utc_text(now),))
    return FileInfo(now, info.state), True


def set_state(conn: sqlite3.Connection, state: State) -> None:
    """Record the file's new state (a file without the table is left as it
    is: start-up gives it one)."""
    try:
        conn.execute("UPDATE file_info SET state = ? WHERE id = 1", (state,))
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise


def _inferred_start(conn: sqlite3.Connection, path: Path, mtime: float) -> float:
    from_name = name_time(path.name)
    if from_name is not None:
        return from_name
    for query in (
        "SELECT min(received_at) FROM batches",
        "SELECT min(created_at) FROM ping_results",
    ):
        try:
            earliest = _parse(conn.execute(query).fetchone()[0])
        except sqlite3.OperationalError:  # a Go file without that table or column
            continue
        if earliest is not None:
            return earliest
    return mtime


def _parse(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
