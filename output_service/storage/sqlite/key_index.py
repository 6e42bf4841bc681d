"""The durable index of idempotency keys, in state.db (which never rotates).

Where keys must live: the results file of a batch holds its key in the same
transaction as its rows (`batches.idempotency_key`), so a key never claims a
batch that was not stored. But results files rotate and retention deletes
them, and memory holds at most `idempotency_max_keys`; so a key must also live
somewhere that outlasts its file for the whole window. That is this table: a
key is written here right after its batch committed (so, again, never for a
batch that was not stored), looked up on the writer thread for every keyed
batch that memory does not know, and rebuilt at start-up from the retained
files (which covers a crash between the two commits). Rows older than the
window are deleted.

state.db is opened with synchronous=NORMAL for this: a power cut may lose the
last rows, but those belong to the newest results file, which start-up reads
back anyway.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from output_service.storage.sqlite import connect

KeyRow = tuple[str, int, str | None, str]  # key, result count, body hash, received_at
_LOOKUP_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    result_count INTEGER NOT NULL,
    body_hash TEXT,
    received_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_idempotency_keys_received_at ON idempotency_keys(received_at)
"""
# A key reused after its window is a new batch: the newer use wins.
_RECORD = (
    "INSERT INTO idempotency_keys (key, result_count, body_hash, received_at)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
    " result_count = excluded.result_count, body_hash = excluded.body_hash,"
    " received_at = excluded.received_at WHERE excluded.received_at > received_at"
)


class KeyIndex:
    """One connection, used from one thread at a time (the writer's)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> KeyIndex:
        conn = connect.read_write(path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def lookup(self, keys: Sequence[str], since: str) -> dict[str, tuple[int, str | None]]:
        """(count, body hash) of each of `keys` received at or after `since`."""
        found: dict[str, tuple[int, str | None]] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = list(keys[start : start + _LOOKUP_CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                "SELECT key, result_count, body_hash FROM idempotency_keys"
                f" WHERE key IN ({marks}) AND received_at >= ?",
                (*chunk, since),
            )
            found.update((str(k), (int(c), h)) for k, c, h in rows)
        return found

    def record(self, rows: Iterable[KeyRow], expire_before: str | None = None) -> None:
        """Remember committed keys (and forget those older than `expire_before`)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_RECORD, list(rows))
            if expire_before is not None:
                conn.execute("DELETE FROM idempotency_keys WHERE received_at < ?", (expire_before,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()
