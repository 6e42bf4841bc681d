"""Schema of a results file, and migrations of older files.

The first three tables and their indexes are the Go service's schema (version
0 here: its files carry no `user_version`); tools and dashboards read them, so
their names and columns never change. Version 1 adds the `batches` table (who
sent what, and idempotency keys) and two columns on `ping_results`.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1

SEED_TABLES = """
CREATE TABLE IF NOT EXISTS ping_results (
    id INTEGER PRIMARY KEY,
    ip TEXT NOT NULL,
    sent INTEGER NOT NULL,
    received INTEGER NOT NULL,
    packet_loss REAL NOT NULL,
    avg_rtt INTEGER NOT NULL,
    timestamp DATETIME NOT NULL,
    error TEXT
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

SEED_INDEXES = """
CREATE INDEX IF NOT EXISTS idx_ping_results_ip ON ping_results(ip);
CREATE INDEX IF NOT EXISTS idx_ping_results_timestamp ON ping_results(timestamp);
CREATE INDEX IF NOT EXISTS idx_traceroute_results_ping_result_id
    ON traceroute_results(ping_result_id);
CREATE INDEX IF NOT EXISTS idx_traceroute_hops_traceroute_id ON traceroute_hops(traceroute_id);
CREATE INDEX IF NOT EXISTS idx_traceroute_hops_ip ON traceroute_hops(ip);
"""

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

MIGRATIONS: dict[int, str] = {1: _V1}


class SchemaError(Exception):
    """The file was written by a newer version of the service."""


def migrate(conn: sqlite3.Connection) -> int:
    """Create the schema on an empty file or bring an older file forward.

    Runs in one transaction, so a crash mid-migration leaves the file as it was.
    Returns the version the file had before.
    """
    before = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if before > SCHEMA_VERSION:
        raise SchemaError(f"schema version {before} is newer than this service ({SCHEMA_VERSION})")
    if before == SCHEMA_VERSION:
        return before
    statements = [SEED_TABLES, SEED_INDEXES] if before == 0 else []
    statements += [MIGRATIONS[v] for v in range(before + 1, SCHEMA_VERSION + 1)]
    conn.execute("BEGIN IMMEDIATE")
    try:
        for script in statements:
            for statement in _split(script):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return before


def _split(script: str) -> list[str]:
    """executescript() would COMMIT on its own; run statements one by one instead."""
    return [s.strip() for s in script.split(";") if s.strip()]
