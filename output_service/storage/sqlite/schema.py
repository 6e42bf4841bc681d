"""Schema of a results file, and migrations of older files.

The first three tables and their indexes are the Go service's schema (version
0 here: its files carry no `user_version`); tools and dashboards read them, so
their names and columns never change. Version 1 adds the `batches` table (who
sent what, and idempotency keys) and two columns on `ping_results`. Version 2
adds the Go schema's `ping_results.created_at` (the arrival time, RFC 3339) to
files that lack it, filled in for older rows from their batch.

Live and sealed files differ by one index. `SEED_INDEXES` (all five of the Go
service) is what every sealed file has. The live file, the one the writer
writes, goes without `idx_traceroute_hops_ip`: random inserts into that index
cost about 40% of the insert rate and more as the file grows, so it is built
once, in bulk, when the file is sealed (`add_sealed_indexes`). Until then the
live file answers hop-IP queries by a scan. No schema version marks this: a
file's state is simply which indexes `sqlite_master` lists.
"""

from __future__ import annotations

import re
import sqlite3

from output_service.storage.sqlite.transactions import immediate_transaction, run_script

SCHEMA_VERSION = 2

SEED_TABLES = """
CREATE TABLE IF NOT EXISTS ping_results (
    id INTEGER PRIMARY KEY,
    ip TEXT NOT NULL,
    sent INTEGER NOT NULL,
    received INTEGER NOT NULL,
    packet_loss REAL NOT NULL,
    avg_rtt INTEGER NOT NULL,
    timestamp DATETIME NOT NULL,
    error TEXT,
    created_at DATETIME
);
CREATE TABLE IF NOT EXISTS traceroute_results (
    id INTEGER PRIMARY KEY,
    ping_result_id INTEGER NOT NULL REFERENCES ping_results(id),
    method TEXT,
    completed BOOLEAN NOT NULL DEFAULT 0,
    error TEXT
);
CREATE TABLE IF NOT EXISTS traceroute_hops (
    id INTEGER PRIMARY KEY,
    traceroute_id INTEGER NOT NULL REFERENCES traceroute_results(id),
    ttl INTEGER NOT NULL,
    ip TEXT,
    rtt INTEGER,
    timeout BOOLEAN NOT NULL DEFAULT 0
);
"""

# The seed indexes the live file keeps (reads by result, time and traceroute).
LIVE_INDEXES = """
CREATE INDEX IF NOT EXISTS idx_ping_results_ip ON ping_results(ip);
CREATE INDEX IF NOT EXISTS idx_ping_results_timestamp ON ping_results(timestamp);
CREATE INDEX IF NOT EXISTS idx_traceroute_results_ping_result_id
    ON traceroute_results(ping_result_id);
CREATE INDEX IF NOT EXISTS idx_traceroute_hops_traceroute_id ON traceroute_hops(traceroute_id);
"""

# Built when a file is sealed; never maintained row by row in the live file.
HOP_IP_INDEX_NAME = "idx_traceroute_hops_ip"
HOP_IP_INDEX = f"""
CREATE INDEX IF NOT EXISTS {HOP_IP_INDEX_NAME} ON traceroute_hops(ip);
"""

# Every seed index: the truth for sealed files (and Go-era files).
SEED_INDEXES = LIVE_INDEXES + HOP_IP_INDEX

_V1 = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    remote TEXT,
    node_id TEXT,
    idempotency_key TEXT UNIQUE,
    body_hash TEXT,
    result_count INTEGER NOT NULL
);
ALTER TABLE ping_results ADD COLUMN batch_id INTEGER REFERENCES batches(id);
ALTER TABLE ping_results ADD COLUMN raw TEXT;
"""

_V2 = """
UPDATE ping_results SET created_at = (SELECT received_at FROM batches WHERE id = batch_id)
    WHERE created_at IS NULL AND batch_id IS NOT NULL
"""

MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2}
SEED_INDEX_NAMES = frozenset(re.findall(r"CREATE INDEX IF NOT EXISTS (\w+)", SEED_INDEXES))


class SchemaError(Exception):
    """The file was written by a newer version of the service."""


def migrate(conn: sqlite3.Connection) -> int:
    """Create the live schema on an empty file or bring an older file forward.

    Runs in one transaction, so a crash mid-migration leaves the file as it was.
    An empty file gets the seed tables with `LIVE_INDEXES` (a new file is always
    the live one); a Go file keeps the indexes it has. Returns the version the
    file had before.
    """
    before = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if before > SCHEMA_VERSION:
        raise SchemaError(f"schema version {before} is newer than this service ({SCHEMA_VERSION})")
    if before == SCHEMA_VERSION:
        return before
    statements = [SEED_TABLES, LIVE_INDEXES] if before == 0 else []
    statements += [MIGRATIONS[v] for v in range(before + 1, SCHEMA_VERSION + 1)]
    with immediate_transaction(conn):
        for script in statements:
            if script is _V2 and "created_at" not in _columns(conn, "ping_results"):
                conn.execute("ALTER TABLE ping_results ADD COLUMN created_at DATETIME")
            run_script(conn, script)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return before


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}


def index_names(conn: sqlite3.Connection) -> set[str]:
    """The names of the seed indexes (`idx_...`) a file has."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_%'")
    return {str(row[0]) for row in rows}


def add_sealed_indexes(conn: sqlite3.Connection) -> bool:
    """Give a file every seed index it lacks (in practice: build the hop-IP index
    of a file being sealed). True if anything was built.

    One `CREATE INDEX` sorts the column once and writes the index pages in
    order, far cheaper than the same index grown row by row; in WAL mode
    readers of the file go on reading while it runs.
    """
    if SEED_INDEX_NAMES.issubset(index_names(conn)):
        return False
    with immediate_transaction(conn):
        run_script(conn, SEED_INDEXES)
    return True


def drop_live_only_indexes(conn: sqlite3.Connection) -> bool:
    """Make a file live again: drop the hop-IP index if it has one (a Go file, or
    a file sealed by an older version, that is continued). True if dropped."""
    if HOP_IP_INDEX_NAME not in index_names(conn):
        return False
    conn.execute(f"DROP INDEX IF EXISTS {HOP_IP_INDEX_NAME}")
    return True
