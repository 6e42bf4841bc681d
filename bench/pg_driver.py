"""asyncpg vs psycopg 3 on the PostgreSQL backend's insert path, COPY vs multi-row INSERT.

Starts its own PostgreSQL (tests/pg_server.py), creates the backend's schema, and
inserts the same generated results (10 hops each) in transactions of `--group`
results, each way, timing only the inserts. Prints results/s per variant.

    python -m bench.pg_driver --results 20000 --group 1000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg

from output_service.storage.postgres import schema
from tests.pg_server import start_pg_server

Rows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]
PING_COLS = ("id", "received_at", "ip", "sent", "received", "packet_loss", "avg_rtt",
             "timestamp", "error", "batch_id", "raw")  # fmt: skip
TRACE_COLS = ("id", "received_at", "ping_result_id", "method", "completed", "error")
HOP_COLS = ("received_at", "traceroute_id", "ttl", "ip", "rtt", "timeout")


def make_rows(first_id: int, count: int) -> Rows:
    now = dt.datetime.now(dt.UTC)
    pings, traces, hops = [], [], []
    for i in range(first_id, first_id + count):
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        stamp = f"2026-01-01T00:00:{i % 60:02d}.000000000Z"
        pings.append((i, now, ip, 4, 4, 0.0, 1_500_000, stamp, None, None, None))
        traces.append((i, now, i, "icmp", True, None))
        for ttl in range(1, 11):
            hops.append((now, i, ttl, f"192.0.{ttl}.{i % 250}", 1000 * ttl, False))
    return pings, traces, hops


def _values(table: str, cols: tuple[str, ...], n: int) -> str:
    width = len(cols)
    rows = ",".join(
        "(" + ",".join(f"${r * width + c + 1}" for c in range(width)) + ")" for r in range(n)
    )
    return f"INSERT INTO {table} ({','.join(cols)}) VALUES {rows}"


async def asyncpg_copy(conn: Any, rows: Rows) -> None:
    async with conn.transaction():
        for table, cols, data in zip(_TABLES, _COLS, rows, strict=True):
            await conn.copy_records_to_table(table, records=data, columns=cols)


async def asyncpg_executemany(conn: Any, rows: Rows) -> None:
    async with conn.transaction():
        for table, cols, data in zip(_TABLES, _COLS, rows, strict=True):
            await conn.executemany(_values(table, cols, 1), data)


async def psycopg_copy(conn: psycopg.AsyncConnection[Any], rows: Rows) -> None:
    async with conn.transaction():
        cur = conn.cursor()
        for table, cols, data in zip(_TABLES, _COLS, rows, strict=True):
            async with cur.copy(f"COPY {table} ({','.join(cols)}) FROM STDIN") as copy:
                for row in data:
                    await copy.write_row(row)


async def psycopg_insert(conn: psycopg.AsyncConnection[Any], rows: Rows) -> None:
    async with conn.transaction():
        cur = conn.cursor()
        for table, cols, data in zip(_TABLES, _COLS, rows, strict=True):
            for start in range(0, len(data), 500):  # bound the parameters of one statement
                chunk = data[start : start + 500]
                sql = f"INSERT INTO {table} ({','.join(cols)}) VALUES " + ",".join(
                    ["(" + ",".join(["%s"] * len(cols)) + ")"] * len(chunk)
                )
                await cur.execute(sql, [v for row in chunk for v in row])


_TABLES = ("ping_results", "traceroute_results", "traceroute_hops")
_COLS = (PING_COLS, TRACE_COLS, HOP_COLS)


async def _time(
    name: str, insert: Callable[[Any, Rows], Awaitable[None]], conn: Any, total: int, group: int
) -> float:
    first = _time.next_id  # type: ignore[attr-defined]
    groups = [make_rows(first + s, min(group, total - s)) for s in range(0, total, group)]
    _time.next_id = first + total  # type: ignore[attr-defined]
    started = time.perf_counter()
    for rows in groups:
        await insert(conn, rows)
    rate = total / (time.perf_counter() - started)
    print(f"{name:>16}: {rate:9.0f} results/s")
    return rate


async def growth(conn: Any, total: int, group: int) -> None:
    """Insert `total` results into one partition with the chosen path; the rate of the
    first and the last tenth, to see whether it stays flat as the partition fills."""
    first = _time.next_id  # type: ignore[attr-defined]
    tenth = total // 10
    rates = []
    for step in range(10):
        start = first + step * tenth
        groups = [make_rows(start + s, min(group, tenth - s)) for s in range(0, tenth, group)]
        began = time.perf_counter()
        for rows in groups:
            await asyncpg_copy(conn, rows)
        rates.append(tenth / (time.perf_counter() - began))
    _time.next_id = first + total  # type: ignore[attr-defined]
    print(f"growth to {total:,} results: first tenth {rates[0]:,.0f}/s, last {rates[-1]:,.0f}/s,"
          f" last/first {rates[-1] / rates[0]:.2f}")  # fmt: skip


async def main(total: int, group: int, grow: int) -> None:
    server = start_pg_server()
    try:
        url = server.create_database("bench")
        setup = await asyncpg.connect(url)
        await schema.migrate(setup)
        await schema.ensure_partitions(setup, dt.datetime.now(dt.UTC), 1, 1)
        await setup.close()
        _time.next_id = 1  # type: ignore[attr-defined]
        a = await asyncpg.connect(url)
        p = await psycopg.AsyncConnection.connect(url)
        rates = {}
        for _ in range(2):  # the second round is the one reported (warm caches)
            rates["asyncpg COPY"] = await _time("asyncpg COPY", asyncpg_copy, a, total, group)
            rates["asyncpg executemany"] = await _time(
                "asyncpg executemany", asyncpg_executemany, a, total, group
            )
            rates["psycopg COPY"] = await _time("psycopg COPY", psycopg_copy, p, total, group)
            rates["psycopg INSERT"] = await _time("psycopg INSERT", psycopg_insert, p, total, group)
        if grow:
            await growth(a, grow, group)
        best = max(rates.values())
        print("ratios to the fastest:", {k: round(v / best, 2) for k, v in rates.items()})
        await a.close()
        await p.close()
    finally:
        server.stop("immediate")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=int, default=20000)
    parser.add_argument("--group", type=int, default=1000)
    parser.add_argument("--grow", type=int, default=0, help="then this many more, by tenths")
    args = parser.parse_args()
    asyncio.run(main(args.results, args.group, args.grow))
