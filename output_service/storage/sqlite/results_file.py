"""One SQLite results file, as the writer thread sees it.

Synchronous on purpose: every method runs on the writer's own thread with a
plain sqlite3 connection, so one transaction costs the event loop one await and
SQLite never runs on the loop thread. Ids are assigned here, from counters, so
inserts go in with a few multi-row statements per table instead of a
`lastrowid` read per row.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from output_service.models import Batch
from output_service.storage.sqlite import connect, file_info
from output_service.storage.sqlite.schema import migrate

_PING_COLUMNS = (
    "id, ip, sent, received, packet_loss, avg_rtt, timestamp, error, batch_id, raw, created_at"
)
_TRACE_COLUMNS = "id, ping_result_id, method, completed, error"
_HOP_COLUMNS = "traceroute_id, ttl, ip, rtt, timeout"
_BATCH_COLUMNS = "id, received_at, remote, node_id, idempotency_key, body_hash, result_count"
_INSERT_BATCH = f"INSERT OR IGNORE INTO batches ({_BATCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"


def _variable_limit() -> int:
    """How many `?` one statement may have in this SQLite build (32766 since 3.32,
    999 before)."""
    with contextlib.closing(sqlite3.connect(":memory:")) as probe:
        return probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


_MAX_ROWS_PER_STATEMENT = 256  # a power of two: see _Insert.run


class _Insert:
    """Many rows in few statements: `INSERT ... VALUES (?, ...), (?, ...), ...`.

    `executemany` steps once per row and releases and retakes the GIL every
    time; each retake waits while the event loop thread runs Python (decoding
    the next batches), which cost the writer half its speed under load. One
    statement carries up to 256 rows, so a group of 800 results with 10 hops
    each is 3 + 4 + 32 steps instead of 9,600. Values are bound as they are
    (integers, floats bit for bit, text with any character, NULL, booleans as
    1/0), so nothing is encoded or parsed on the way. This replaced one
    `json_each` statement per table, which made SQLite parse every row's JSON
    again: 1.3-1.5x the cost for the same rows (BENCHMARKS.md).

    Row counts are cut into full statements and then halves (300 rows: 256 +
    32 + 8 + 4), so a table needs at most nine statement texts, each prepared
    once and then taken from the connection's statement cache."""

    def __init__(self, table: str, columns: str) -> None:
        self._head = f"INSERT INTO {table} ({columns}) VALUES "
        self._width = len(columns.split(","))
        self._one = "(" + ", ".join("?" * self._width) + ")"
        self._per_statement = min(_MAX_ROWS_PER_STATEMENT, _variable_limit() // self._width)
        self._texts: dict[int, str] = {}

    def _text(self, rows: int) -> str:
        text = self._texts.get(rows)
        if text is None:
            text = self._texts[rows] = self._head + ", ".join([self._one] * rows)
        return text

    def run(self, conn: sqlite3.Connection, values: list[Any]) -> None:
        """Insert `values`: the rows' values one after the other, row after row
        (built flat, so no tuple per row is made only to be taken apart here)."""
        width = self._width
        start, total, size = 0, len(values) // width, self._per_statement
        while start < total:
            left = total - start
            while size > left:
                size >>= 1
            conn.execute(self._text(size), values[start * width : (start + size) * width])
            start += size


# Key-less batches only: without a key nothing can conflict (ids come from the
# counter), so their rows go in with the others' multi-row statements instead of
# one INSERT OR IGNORE each (a statement per one-result request; BENCHMARKS.md).
_BATCHES = _Insert("batches", _BATCH_COLUMNS)
_PINGS = _Insert("ping_results", _PING_COLUMNS)
_TRACES = _Insert("traceroute_results", _TRACE_COLUMNS)
_HOPS = _Insert("traceroute_hops", _HOP_COLUMNS)

# A result counts as failed when it reports an error or got no reply at all.
FAILED_SQL = "(error IS NOT NULL AND error != '') OR received = 0"


@dataclass(frozen=True, slots=True)
class BatchMeta:
    """Who sent a batch, when, and under which idempotency key."""

    received_at: str
    remote: str | None = None
    node_id: str | None = None
    idempotency_key: str | None = None
    body_hash: str | None = None


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What the commit did with one batch. `duplicate` means an earlier batch with
    the same idempotency key is stored and this one was not; `count` is then the
    earlier batch's count, so the client gets the original reply."""

    count: int
    failed: int
    duplicate: bool = False
    body_hash: str | None = None


@dataclass(frozen=True, slots=True)
class FileCounts:
    results: int
    failed: int


class ResultsFile:
    """The write connection to one results file; used only from the writer thread."""

    def __init__(self, path: Path, conn: sqlite3.Connection, options: dict[str, Any]) -> None:
        self.path = path
        self._conn = conn
        self._options = options
        self._identity = _identity(path)
        self._next_ping = self._max_id("ping_results") + 1
        self._next_trace = self._max_id("traceroute_results") + 1
        self._next_batch = self._max_id("batches") + 1

    @classmethod
    def open(
        cls, path: Path, *, synchronous: str, cache_size_mb: int, wal_autocheckpoint: int
    ) -> ResultsFile:
        """Open (creating or migrating) a results file for writing."""
        conn = connect.writer(
            path,
            synchronous=synchronous,
            cache_size_mb=cache_size_mb,
            wal_autocheckpoint=wal_autocheckpoint,
        )
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        options = {
            "synchronous": synchronous,
            "cache_size_mb": cache_size_mb,
            "wal_autocheckpoint": wal_autocheckpoint,
        }
        return cls(path, conn, options)

    def restore_if_removed(self) -> bool:
        """If the file was deleted underneath us, write it back and go on; True if so.

        SQLite keeps writing to a deleted file's inode without an error, so every
        later "commit" would vanish at the next restart. The open connection still
        sees everything committed, so it is copied back to the path (backup API)
        before the writer continues on the restored file.
        """
        if _identity(self.path) == self._identity:
            return False
        if self.path.exists():
            raise OSError(f"{self.path.name} was replaced underneath the writer")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".restoring")
        target = connect.backup_target(partial)
        try:
            self._conn.backup(target)
        finally:
            target.close()
        os.replace(partial, self.path)
        restored = ResultsFile.open(self.path, **self._options)
        self._conn.close()
        self._conn, self._identity = restored._conn, restored._identity
        return True

    def _max_id(self, table: str) -> int:
        return int(self._conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0])

    def write_group(
        self,
        items: Sequence[tuple[Batch, BatchMeta]],
        known: dict[str, tuple[int, str | None]] | None = None,
        keys_since: str = "",
        commit_after: Future[None] | None = None,
    ) -> list[BatchOutcome]:
        """Store several batches in one transaction (group commit).

        All or nothing: on any error the transaction is rolled back, the id
        counters are restored and the error propagates, so no batch of the group
        is acknowledged. A batch whose key is in `known` (the durable key index
        has it from an earlier batch) is not stored; nor is one whose key this
        file already holds, unless that use was received before `keys_since`
        (outside the window, the key is free again). With `commit_after` (the hop
        outbox's work, on a thread of its own), the rows are inserted while it runs
        and COMMIT waits for it: its error rolls the group back.
        """
        saved = (self._next_ping, self._next_trace, self._next_batch)
        # each table's values, flat, in column order (see _Insert.run)
        batches: list[Any] = []
        pings: list[Any] = []
        traces: list[Any] = []
        hops: list[Any] = []
        outcomes: list[BatchOutcome] = []
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for batch, meta in items:
                earlier = known.get(meta.idempotency_key or "") if known else None
                if earlier is not None:
                    outcome = BatchOutcome(earlier[0], 0, True, earlier[1])
                else:
                    rows = (batches, pings, traces, hops)
                    outcome = self._add_batch(batch, meta, rows, keys_since)
                outcomes.append(outcome)
            _BATCHES.run(conn, batches)
            _PINGS.run(conn, pings)
            _TRACES.run(conn, traces)
            _HOPS.run(conn, hops)
            if commit_after is not None:
                commit_after.result()
            conn.execute("COMMIT")
        except BaseException:
            self._next_ping, self._next_trace, self._next_batch = saved
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    def _add_batch(
        self,
        batch: Batch,
        meta: BatchMeta,
        rows: tuple[list[Any], list[Any], list[Any], list[Any]],
        keys_since: str,
    ) -> BatchOutcome:
        """The batch's rows added to the group's (batches, pings, traces, hops);
        a batch with a key is inserted at once, to learn whether the key is taken."""
        batches, pings, traces, hops = rows
        batch_id = self._next_batch
        row = (
            batch_id,
            meta.received_at,
            meta.remote,
            meta.node_id,
            meta.idempotency_key,
            meta.body_hash,
            len(batch.results),
        )
        if meta.idempotency_key is None:
            batches += row
        elif self._conn.execute(_INSERT_BATCH, row).rowcount == 0:
            count, body_hash, received_at = self._conn.execute(
                "SELECT result_count, body_hash, received_at FROM batches"
                " WHERE idempotency_key = ?",
                (meta.idempotency_key,),
            ).fetchone()
            if received_at >= keys_since:
                return BatchOutcome(count=count, failed=0, duplicate=True, body_hash=body_hash)
            # the earlier use is outside the window: the key is free again
            self._conn.execute(
                "UPDATE batches SET idempotency_key = NULL WHERE idempotency_key = ?",
                (meta.idempotency_key,),
            )
            self._conn.execute(_INSERT_BATCH, row)
        self._next_batch += 1
        ping_id = self._next_ping
        trace_id = self._next_trace
        failed = 0
        raw = batch.raw
        for index, r in enumerate(batch.results):
            error = r.error or None
            if error is not None or r.received == 0:
                failed += 1
            extra = raw.get(index) if raw else None
            pings += (
                ping_id,
                r.ip,
                r.sent,
                r.received,
                r.packet_loss,
                r.avg_rtt,
                r.timestamp,
                error,
                batch_id,
                extra.decode() if extra else None,
                meta.received_at,
            )
            t = r.traceroute
            if t is not None:
                traces += (trace_id, ping_id, t.method, t.completed, t.error or None)
                for h in t.hops or ():
                    hops += (trace_id, h.ttl, h.ip or None, h.rtt, h.timeout)
                trace_id += 1
            ping_id += 1
        self._next_ping = ping_id
        self._next_trace = trace_id
        return BatchOutcome(count=len(batch.results), failed=failed, body_hash=meta.body_hash)

    def record_start(self, started: float) -> None:
        """Write the new file's own record of when it started (state live)."""
        file_info.write_new(self._conn, started)

    def record_state(self, state: file_info.State) -> None:
        """Record in the file where it is in its life (live, sealing, sealed)."""
        file_info.set_state(self._conn, state)

    def close(self) -> None:
        self._conn.close()


def file_counts(conn: sqlite3.Connection) -> FileCounts:
    """How many results a file holds, and how many of them failed."""
    row = conn.execute(
        f"SELECT count(*), coalesce(sum({FAILED_SQL}), 0) FROM ping_results"
    ).fetchone()
    return FileCounts(results=int(row[0]), failed=int(row[1]))


def idempotency_keys_since(
    conn: sqlite3.Connection, since: str
) -> list[tuple[str, int, str | None, str]]:
    """Keys of batches received at or after `since`, oldest first."""
    rows = conn.execute(
        "SELECT idempotency_key, result_count, body_hash, received_at FROM batches"
        " WHERE idempotency_key IS NOT NULL AND received_at >= ? ORDER BY id",
        (since,),
    ).fetchall()
    return [(str(k), int(c), h, str(t)) for k, c, h, t in rows]


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, or None if there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
