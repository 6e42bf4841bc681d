"""The PostgreSQL schema: versioned migrations under an advisory lock, and partitions.

The seed's three tables keep their names and columns; each also carries
`received_at` (arrival time, set by the database), the key every results table
is partitioned on by range, so that retention drops whole partitions of all
three together and a partition's indexes stay the size of one interval (their
insert cost stays flat as the table grows). Partitioning by arrival, not by the
measurement `timestamp`: a late or skewed clock on a node never needs a
partition that does not exist or was already dropped.

`timestamp` stays text (canonical UTC with nine fractional digits, as the
SQLite backend stores it): it sorts as text and keeps nanoseconds that
`timestamptz` would round.

A traceroute's id is its ping result's id (a result has at most one), so one
sequence allocation per commit gives every row its id. No foreign keys: on a
partitioned table they would have to include the partition key, and the writer
is the only one inserting.

`batches` (idempotency keys, unique across every instance) and the hop tables
are not partitioned: the key must be unique over the whole table.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from output_service.storage.postgres.connection import Conn

SCHEMA_VERSION = 4
# pg_advisory_xact_lock keys: any constant; these spell "outs" and "part".
MIGRATION_LOCK = 0x6F757473
PARTITION_LOCK = 0x70617274

PARTITIONED = ("ping_results", "traceroute_results", "traceroute_hops")

_V1 = """
CREATE TABLE batches (
    id bigint PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    remote text,
    node_id text,
    idempotency_key text UNIQUE,
    body_hash text,
    result_count integer NOT NULL,
    failed_count integer NOT NULL DEFAULT 0
);
CREATE INDEX idx_batches_received_at ON batches (received_at);
CREATE SEQUENCE batches_id_seq;
CREATE SEQUENCE ping_results_id_seq;
CREATE SEQUENCE traceroute_hops_id_seq;

CREATE TABLE ping_results (
    id bigint NOT NULL,
    received_at timestamptz NOT NULL,
    ip text NOT NULL,
    sent bigint NOT NULL,
    received bigint NOT NULL,
    packet_loss double precision NOT NULL,
    avg_rtt bigint NOT NULL,
    timestamp text NOT NULL,
    error text,
    batch_id bigint,
    raw text,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX idx_ping_results_ip ON ping_results (ip);
CREATE INDEX idx_ping_results_timestamp ON ping_results (timestamp);

CREATE TABLE traceroute_results (
    id bigint NOT NULL,
    received_at timestamptz NOT NULL,
    ping_result_id bigint NOT NULL,
    method text,
    completed boolean NOT NULL DEFAULT false,
    error text
) PARTITION BY RANGE (received_at);
CREATE INDEX idx_traceroute_results_ping_result_id ON traceroute_results (ping_result_id);

CREATE TABLE traceroute_hops (
    id bigint NOT NULL DEFAULT nextval('traceroute_hops_id_seq'),
    received_at timestamptz NOT NULL,
    traceroute_id bigint NOT NULL,
    ttl integer NOT NULL,
    ip text,
    rtt bigint,
    timeout boolean NOT NULL DEFAULT false
) PARTITION BY RANGE (received_at);
CREATE INDEX idx_traceroute_hops_traceroute_id ON traceroute_hops (traceroute_id);
-- the hop-IP index is built per partition once its interval is over (seal_partitions)

-- the hop feedback loop, shared by every instance
CREATE TABLE hops_seen (
    ip text PRIMARY KEY,
    queued_at timestamptz NOT NULL
);
CREATE TABLE hop_outbox (
    ip text PRIMARY KEY,
    queued_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    claimed_by text,
    claimed_until timestamptz
);
CREATE INDEX idx_hop_outbox_queued_at ON hop_outbox (queued_at);
CREATE TABLE hop_dead_letters (
    ip text NOT NULL,
    queued_at timestamptz NOT NULL,
    status integer NOT NULL,
    response text NOT NULL,
    dead_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE counters (
    name text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO counters VALUES ('hops_sent', 0), ('hops_dead_lettered', 0);
"""

# Read-side summaries of partitions that no longer take rows (postgres/summaries.py):
# built once, by whichever instance gets there first, shared by all of them.
_V2 = """
CREATE TABLE partition_summaries (
    part text NOT NULL,
    kind text NOT NULL,
    max_id bigint NOT NULL,
    built_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (part, kind)
);
CREATE TABLE target_partials (
    part text NOT NULL,
    filter_key text NOT NULL,
    ip text NOT NULL,
    results bigint NOT NULL,
    failed bigint NOT NULL,
    loss_sum double precision NOT NULL,
    first_seen text NOT NULL,
    last_seen text NOT NULL,
    rtts text,
    nodes text[] NOT NULL,
    PRIMARY KEY (part, filter_key, ip)
);
CREATE TABLE export_chunks (
    part text NOT NULL,
    last_id bigint NOT NULL,
    items text NOT NULL,
    PRIMARY KEY (part, last_id)
);
DO $$ BEGIN
    -- lz4 (PostgreSQL 14+, when built with it) decompresses several times faster than pglz
    EXECUTE 'ALTER TABLE export_chunks ALTER COLUMN items SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN NULL;
END $$;
"""

# Export runs of the partitions still taking rows, rendered up to a live cut
# (postgres/export_chunks.py): each run names the segment of arrival time it was
# rendered from, and its lowest id (the export merges runs by id). The runs
# rendered by version 2 have neither, so they are rendered again.
_V3 = """
DELETE FROM export_chunks;
DELETE FROM partition_summaries WHERE kind = 'export';
ALTER TABLE export_chunks
    ADD COLUMN seg_from timestamptz NOT NULL,
    ADD COLUMN first_id bigint NOT NULL;
CREATE TABLE export_segments (
    part text NOT NULL,
    seg_from timestamptz NOT NULL,
    seg_to timestamptz NOT NULL,
    rows bigint NOT NULL,
    id_sum numeric NOT NULL,
    PRIMARY KEY (part, seg_from)
);
"""

# The live cut's check without reading the whole live partition (postgres/target_partials.py):
# an index on arrival time, so the rows after a cut are found by a range scan (one entry
# per row appended at the index's right edge: a transaction's rows share one value), and
# a kept count of rows per hour of arrival, written by each writer transaction with its
# rows (one row per hour and writing backend: concurrent writers never share a row).
# Rows already stored are counted once here; rows loaded around the writer (by hand) are
# not, which only makes the count an offset the check does not see change.
_V4 = """
CREATE INDEX idx_ping_results_received_at ON ping_results (received_at);
CREATE TABLE arrival_counts (
    bucket timestamptz NOT NULL,
    writer integer NOT NULL,
    rows bigint NOT NULL,
    PRIMARY KEY (bucket, writer)
);
INSERT INTO arrival_counts (bucket, writer, rows)
    SELECT date_trunc('hour', received_at, 'UTC'), 0, count(*) FROM ping_results GROUP BY 1;
"""

MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2, 3: _V3, 4: _V4}


class SchemaError(Exception):
    """The database was migrated by a newer version of the service."""


async def migrate(conn: Conn) -> list[int]:
    """Bring the database to SCHEMA_VERSION; the versions this call applied.

    One transaction under a transaction-level advisory lock: instances starting
    together queue on the lock, the first applies, the others then find the
    version recorded and apply nothing. A crash mid-way rolls everything back.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
        if current > SCHEMA_VERSION:
            raise SchemaError(
                f"database schema version {current} is newer than this service ({SCHEMA_VERSION})"
            )
        applied = list(range(current + 1, SCHEMA_VERSION + 1))
        for version in applied:
            await conn.execute(MIGRATIONS[version])
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
    return applied


# -- partitions ------------------------------------------------------------------

_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Partition:
    table: str
    name: str
    start: dt.datetime
    end: dt.datetime


async def partitions(conn: Conn, table: str = "ping_results") -> list[Partition]:
    """The partitions of `table`, oldest first, with their bounds read from the catalog."""
    rows = await conn.fetch(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound"
        " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = $1::regclass",
        table,
    )
    out = []
    for row in rows:
        match = _BOUND.search(row["bound"])
        if match is None:  # a DEFAULT partition an operator added: never dropped by us
            continue
        start, end = (_parse_bound(text) for text in match.groups())
        out.append(Partition(table, row["relname"], start, end))
    return sorted(out, key=lambda p: p.start)


def _parse_bound(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def slot(moment: dt.datetime, days: float) -> tuple[dt.datetime, dt.datetime]:
    """The interval of `days` (aligned to the Unix epoch) that holds `moment`."""
    width = dt.timedelta(days=days)
    index = (moment - _EPOCH) // width
    start = _EPOCH + index * width
    return start, start + width


async def ensure_partitions(conn: Conn, now: dt.datetime, days: float, ahead: int) -> list[str]:
    """Create the partitions for the interval holding `now` and `ahead` more; the names
    created. A slot that overlaps an existing partition (the interval was changed) is
    skipped rather than failing."""
    created: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
        for table in PARTITIONED:
            existing = await partitions(conn, table)
            start, end = slot(now, days)
            for _ in range(ahead + 1):
                if not any(p.start < end and start < p.end for p in existing):
                    name = f"{table}_p{start:%Y%m%d_%H%M}"
                    await conn.execute(
                        f'CREATE TABLE "{name}" PARTITION OF {table}'
                        f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                    )
                    created.append(name)
                start, end = end, end + (end - start)
    return created


HOP_IP_INDEX = "ip_idx"
# the read side's summaries, by partition name (dropped with their partitions)
SUMMARY_TABLES = ("partition_summaries", "target_partials", "export_chunks", "export_segments")


async def seal_partitions(conn: Conn, now: dt.datetime) -> list[str]:
    """Build the hop-IP index of every traceroute_hops partition whose interval is over,
    then (within a time budget) the query API's summaries of closed partitions.

    As on SQLite, where the live file goes without `idx_traceroute_hops_ip` and gets it
    when sealed: random inserts into that index are the largest insert cost. A
    partition that no longer takes inserts gets it in one sorted build (its lock
    blocks nobody: rows arrive in the current partition). Until then, hop-IP reads
    scan the current partition."""
    built: list[str] = []
    for part in await partitions(conn, "traceroute_hops"):
        if part.end > now:
            continue
        name = f"{part.name}_{HOP_IP_INDEX}"
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
        if not exists:
            await conn.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{part.name}" (ip)')
            built.append(name)
    # the read side's summaries of closed partitions (imported here: summaries uses
    # this module's partition listing)
    from output_service.storage.postgres.summaries import build_pending

    return built + await build_pending(conn)


async def drop_expired(conn: Conn, now: dt.datetime, retention_days: float) -> list[str]:
    """Drop every partition that ends before `now - retention_days` (all three tables),
    and the batches rows of that time; the names dropped. Whole partitions, never
    row-by-row deletes of results."""
    horizon = now - dt.timedelta(days=retention_days)
    dropped: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
        for table in PARTITIONED:
            for part in await partitions(conn, table):
                if part.end <= horizon:
                    await conn.execute(f'DROP TABLE "{part.name}"')
                    dropped.append(part.name)
        if dropped:
            for table in SUMMARY_TABLES:
                # the read side's summaries of what was dropped (postgres/closed.py)
                await conn.execute(f"DELETE FROM {table} WHERE part = ANY($1::text[])", dropped)
            oldest = await partitions(conn)
            keep_from = oldest[0].start if oldest else horizon
            # one row per batch, for the idempotency keys and totals of dropped results
            await conn.execute("DELETE FROM batches WHERE received_at < $1", keep_from)
            # the kept counts of hours wholly before what is kept
            await conn.execute(
                "DELETE FROM arrival_counts WHERE bucket + interval '1 hour' <= $1", keep_from
            )
    return dropped
