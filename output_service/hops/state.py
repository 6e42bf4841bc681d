"""The hop state database (`state.db` in db_dir): seen-set, outbox, dead letters.

Never rotated, so what was queued or sent survives rotation and restarts.
Synchronous on purpose: the hop recorder's thread uses one connection (while
the writer inserts a group, before the results commit) and the sender another,
from a worker thread; WAL lets the sender read and delete while the writer inserts, and every
transaction here is short so neither waits long on the other.

Times are RFC 3339 UTC text with microseconds (`2026-11-23T08:00:00.123456Z`),
the format of the results files and the JSON replies: fixed width, so text
order is time order. Version 1 stored Unix floats; `_migrate` rewrites such a
file in one transaction at start-up (a crash leaves version 1, and the next
start migrates again).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from output_service.storage.seam import utc_text
from output_service.storage.sqlite import connect
from output_service.storage.sqlite.schema import SchemaError
from output_service.storage.sqlite.transactions import immediate_transaction, run_script

STATE_FILE = "state.db"
SCHEMA_VERSION = 2

# AUTOINCREMENT: ids are never reused, so "smallest id" is "oldest" even after
# the outbox was emptied, and a row the sender read is never confused with a
# newer row that took its id.
_TABLES = """
CREATE TABLE seen{v} (ip TEXT PRIMARY KEY, queued_at TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE outbox{v} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ip TEXT NOT NULL UNIQUE,
    queued_at TEXT NOT NULL
);
CREATE TABLE dead_letters{v} (
    id INTEGER PRIMARY KEY,
    ip TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    failed_at TEXT NOT NULL,
    status INTEGER NOT NULL,
    response TEXT
)
"""
_CREATE = (
    _TABLES.format(v="")
    + """;
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('discovered', 0), ('sent', 0), ('dropped', 0),
    ('dead_lettered', 0)
"""
)
# Version 1 (Unix float seconds) to 2 (RFC 3339 text): new tables, rows copied
# through rfc3339(), old tables dropped, new ones renamed; the outbox keeps its
# AUTOINCREMENT high-water mark, so no id is ever handed out twice.
_V1_TO_V2 = (
    _TABLES.format(v="_v2")
    + """;
INSERT INTO seen_v2 (ip, queued_at) SELECT ip, rfc3339(queued_at) FROM seen;
INSERT INTO outbox_v2 (id, ip, queued_at) SELECT id, ip, rfc3339(queued_at) FROM outbox;
INSERT INTO dead_letters_v2 (id, ip, queued_at, failed_at, status, response)
    SELECT id, ip, rfc3339(queued_at), rfc3339(failed_at), status, response FROM dead_letters;
UPDATE sqlite_sequence SET seq = max(seq, coalesce(
    (SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)) WHERE name = 'outbox_v2';
INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_v2', seq FROM sqlite_sequence
    WHERE name = 'outbox' AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox_v2');
DROP TABLE seen;
DROP TABLE outbox;
DROP TABLE dead_letters;
ALTER TABLE seen_v2 RENAME TO seen;
ALTER TABLE outbox_v2 RENAME TO outbox;
ALTER TABLE dead_letters_v2 RENAME TO dead_letters
"""
)

# Addresses go in as one JSON array of strings (`json_each`): one statement per
# group whatever its size, where executemany stepped (and handed the GIL to the
# event loop and back) once per address. `WHERE true` is SQLite's way to tell an
# upsert's ON CONFLICT from a join's ON after a SELECT.
_UPSERT_SEEN = (
    "INSERT INTO seen (ip, queued_at) SELECT value, ?2 FROM json_each(?1) WHERE true"
    " ON CONFLICT (ip) DO UPDATE SET queued_at = excluded.queued_at"
)
_ADD_OUTBOX = "INSERT OR IGNORE INTO outbox (ip, queued_at) SELECT value, ?2 FROM json_each(?1)"
_SEEN_AT = "SELECT s.ip, s.queued_at FROM seen s WHERE s.ip IN (SELECT value FROM json_each(?1))"
# the sender's delete of what it delivered: one statement, as the writer's inserts
_REMOVE = "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?1))"
_encoder = msgspec.json.Encoder()
_ADD = "UPDATE counters SET value = value + ? WHERE name = ?"


class StateSchemaError(SchemaError):
    """state.db was written by a newer version of the service."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """One hop in the outbox."""

    id: int
    ip: str
    queued_at: float


class StateDB:
    """One connection to state.db; each instance is used by one thread at a time."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._write_lock = _write_lock(path)

    @classmethod
    def open(
        cls, path: Path, *, synchronous: str, wal_autocheckpoint: int | None = None
    ) -> StateDB:
        """Open (creating or migrating) state.db.

        `wal_autocheckpoint` (the service passes its setting, as for the results
        files): each group's new hops dirty pages all over the seen-set and the
        outbox's address index, ~2,400 for 1,200 new hops, so SQLite's default
        of 1,000 pages checkpointed after nearly every commit; at 10,000 the
        recorder's COMMIT took 11.0 instead of 17.7 us of CPU per result
        (BENCHMARKS.md)."""
        conn = connect.read_write(path)  # autocommit, the shared busy timeout
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            if wal_autocheckpoint is not None:
                conn.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
            conn.execute("PRAGMA cache_size=-32768")  # 32 MB: the seen-set's hot pages
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        return cls(path, conn)

    def close(self) -> None:
        self._conn.close()

    # -- the writer's side ------------------------------------------------

    def seen_at(self, ips: Iterable[str], after: float | None = None) -> dict[str, float]:
        """When each of `ips` that is in the seen-set was last queued; with `after`,
        only those queued after it (compared in SQL, as text: fixed-width UTC sorts
        by time), so the common answer for new hops is no rows at all.

        The addresses travel as one JSON array (`json_each`): one statement and one
        GIL hand-off for the whole group, instead of an IN list per 500."""
        wanted = list(ips)
        if not wanted:
            return {}
        sql = _SEEN_AT if after is None else _SEEN_AT + " AND s.queued_at > ?2"
        params: tuple[str, ...] = (_json_list(wanted),)
        if after is not None:
            params += (utc_text(after),)
        return {str(ip): moment(at) for ip, at in self._conn.execute(sql, params)}

    def queue(self, ips: Sequence[str], now: float, cap: int, depth: int) -> tuple[int, list[str]]:
        """Mark `ips` seen and add them to the outbox in one transaction; then, if the
        outbox (`depth` rows before this call) holds more than `cap`, drop the oldest
        and forget them from the seen-set (so a later traceroute queues them again).
        Returns (rows added, addresses dropped)."""
        conn = self._conn
        at = utc_text(now)
        listed = _json_list(ips)
        with self._write_lock, immediate_transaction(conn):
            conn.execute(_UPSERT_SEEN, (listed, at))
            added = conn.execute(_ADD_OUTBOX, (listed, at)).rowcount
            dropped: list[str] = []
            excess = depth + added - cap
            if excess > 0:
                dropped = [
                    r[0]
                    for r in conn.execute(
                        "DELETE FROM outbox WHERE id IN"
                        " (SELECT id FROM outbox ORDER BY id LIMIT ?) RETURNING ip",
                        (excess,),
                    )
                ]
                conn.executemany("DELETE FROM seen WHERE ip = ?", [(ip,) for ip in dropped])
                conn.execute(_ADD, (len(dropped), "dropped"))
            conn.execute(_ADD, (len(ips), "discovered"))
        return added, dropped

    # -- the sender's side ------------------------------------------------

    def oldest(self, limit: int) -> list[Waiting]:
        rows = self._conn.execute(
            "SELECT id, ip, queued_at FROM outbox ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [Waiting(int(i), str(ip), moment(at)) for i, ip, at in rows]

    def mark_sent(self, hops: Sequence[Waiting]) -> int:
        """Remove delivered hops from the outbox; returns how many were still there."""
        return self._remove(hops, "sent", None)

    def dead_letter(self, hops: Sequence[Waiting], status: int, response: str, now: float) -> int:
        """Move refused hops from the outbox to dead_letters, with the refusal."""
        failed_at = utc_text(now)
        rows: list[tuple[object, ...]] = [(status, response, failed_at, h.id) for h in hops]
        return self._remove(
            hops,
            "dead_lettered",
            (
                "INSERT INTO dead_letters (ip, queued_at, failed_at, status, response)"
                " SELECT ip, queued_at, ?3, ?1, ?2 FROM outbox WHERE id = ?4",
                rows,
            ),
        )

    def _remove(
        self,
        hops: Sequence[Waiting],
        counter: str,
        copy: tuple[str, list[tuple[object, ...]]] | None,
    ) -> int:
        conn = self._conn
        with self._write_lock, immediate_transaction(conn):
            if copy is not None:
                conn.executemany(*copy)
            removed = conn.execute(_REMOVE, (_json_list(h.id for h in hops),)).rowcount
            conn.execute(_ADD, (removed, counter))
        return removed

    # -- both ---------------------------------------------------------------

    def depth(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def counters(self) -> dict[str, int]:
        return {str(n): int(v) for n, v in self._conn.execute("SELECT name, value FROM counters")}


# One lock per state.db for this process's write transactions (the recorder's
# and the sender's). Without it a writer that finds the file locked by the other
# is left to SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25 ... ms
# between tries: under the hop loop a third of the transactions waited, p90 32 ms
# and up to 103 ms, while the results commit waited on them (BENCHMARKS.md). A
# thread waiting here wakes when the other commits. Other processes (the file
# tools) still meet the busy timeout.
_write_locks: dict[Path, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(path: Path) -> threading.Lock:
    with _write_locks_guard:
        return _write_locks.setdefault(path.resolve(), threading.Lock())


def _json_list(values: Iterable[str | int]) -> str:
    """Addresses or ids as a JSON array (text: newer SQLite reads a BLOB as JSONB)."""
    return _encoder.encode(list(values)).decode()


def moment(text: str) -> float:
    """Unix seconds of a stored RFC 3339 time."""
    return datetime.fromisoformat(text).timestamp()


def _rfc3339(value: str | int | float | None) -> str | None:
    """The migration's conversion: a version 1 float becomes RFC 3339 text."""
    if isinstance(value, int | float):
        return utc_text(float(value))
    return value  # NULL, or already text: left as it is


def _migrate(conn: sqlite3.Connection) -> None:
    """Create the schema on a new file, bring a version 1 file to version 2, and
    refuse a file from a newer version. The version is read again inside the
    write transaction, so two connections opening at once migrate only once."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StateSchemaError(
            f"state.db schema version {version} is newer than this service ({SCHEMA_VERSION})"
        )
    if version == SCHEMA_VERSION:
        return
    conn.create_function("rfc3339", 1, _rfc3339, deterministic=True)
    with immediate_transaction(conn):
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            run_script(conn, _CREATE)
        elif version == 1:
            run_script(conn, _V1_TO_V2)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def listing(path: Path, limit: int, offset: int) -> dict[str, Any]:
    """/api/hops, read on its own read-only connection: discovered hops (by address)
    with when they were last queued and whether they are delivered (neither waiting
    nor dead-lettered), the outbox depth, and the dead letters with the input
    service's reply (times as stored: RFC 3339 UTC). state.db keeps no first-seen
    time, so none is shown."""
    conn = connect.read_only(path)
    try:
        rows = conn.execute(
            "SELECT s.ip, s.queued_at, o.id IS NOT NULL, d.id IS NOT NULL FROM seen s"
            " LEFT JOIN outbox o ON o.ip = s.ip"
            " LEFT JOIN (SELECT ip, max(id) AS id FROM dead_letters GROUP BY ip) d ON d.ip = s.ip"
            " ORDER BY s.ip LIMIT ? OFFSET ?",
            (limit + 1, offset),
        ).fetchall()
        total = int(conn.execute("SELECT count(*) FROM seen").fetchone()[0])
        depth = int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
        dead = conn.execute(
            "SELECT ip, queued_at, failed_at, status, response FROM dead_letters"
            " ORDER BY id DESC LIMIT 100"
        ).fetchall()
        dead_count = int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
    finally:
        conn.close()
    return {
        "discovered": total,
        "outbox_depth": depth,
        "hops": [
            {
                "ip": ip,
                "last_queued": queued,
                "waiting": bool(waiting),
                "dead_lettered": bool(dead_lettered),
                "delivered": not waiting and not dead_lettered,
            }
            for ip, queued, waiting, dead_lettered in rows[:limit]
        ],
        "dead_letters_total": dead_count,
        "dead_letters": [
            {
                "ip": ip,
                "queued_at": q,
                "failed_at": f,
                "status": status,
                "response": response,
            }
            for ip, q, f, status, response in dead
        ],
        "next_offset": offset + limit if len(rows) > limit else None,
    }
