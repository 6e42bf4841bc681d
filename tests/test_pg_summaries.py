"""The query API over closed partitions on PostgreSQL: target partials and pre-rendered
export runs give the answers the raw rows give, stay right when rows reach an old
partition or arrive behind the live cut, and go with their partitions.

Rows are posted to the real service, then moved into the partitions of earlier
days by updating `received_at` in the three tables (as a week of traffic would
have left them); every expected number is computed here from what was posted.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

asyncpg = pytest.importorskip("asyncpg")

from output_service.storage.postgres import schema, summaries, target_partials  # noqa: E402
from tests.conftest import Running, StartService, make_result  # noqa: E402
from tests.pg_server import PgDatabase  # noqa: E402
from tests.test_api import get, nearest  # noqa: E402

A, B = "203.0.113.1", "203.0.113.2"


def _batch(ip: str, rtts: list[int], minute: int) -> list[dict[str, Any]]:
    return [
        make_result(ip, hops=3, avg_rtt=rtt, timestamp=f"2026-01-01T00:{minute + i:02d}:00Z")
        for i, rtt in enumerate(rtts)
    ]


async def _post(service: Running, batch: list[dict[str, Any]], node: str) -> None:
    resp = await service.results.post("/results", json=batch, headers={"X-Node-ID": node})
    assert resp.status == 200, await resp.text()


async def _age(pg_db: PgDatabase, ids_from: int, by: dt.timedelta) -> None:
    """Move the results with id >= ids_from (and their traceroutes and hops) `by` back
    in arrival time, into partitions created for those days."""
    conn = await asyncpg.connect(pg_db.url)
    try:
        now = dt.datetime.now(dt.UTC)
        await schema.ensure_partitions(conn, now - by - dt.timedelta(days=1), 1.0, 3)
        async with conn.transaction():
            for table, key in (
                ("traceroute_hops", "traceroute_id"),
                ("traceroute_results", "id"),
                ("ping_results", "id"),
            ):
                shift = f"UPDATE {table} SET received_at = received_at - $1::interval"
                await conn.execute(
                    f"{shift} WHERE {key} >= $2",
                    by,
                    ids_from,
                )
    finally:
        await conn.close()


def _arrived_between(pg_db: PgDatabase, earlier_id: int, later_id: int) -> dt.timedelta:
    """How long after result `earlier_id` result `later_id` arrived (exact to the
    microsecond): moving the later one back by this puts it at the earlier one's
    arrival, in the same partition whatever the time of day."""
    seconds = pg_db.psql(
        "SELECT extract(epoch FROM (SELECT received_at FROM ping_results WHERE id = "
        f"{later_id}) - (SELECT received_at FROM ping_results WHERE id = {earlier_id}))"
    )
    return dt.timedelta(microseconds=int(Decimal(seconds) * 1_000_000))


async def _build(pg_db: PgDatabase) -> list[str]:
    """What the maintenance pass does, without its time budget."""
    conn = await asyncpg.connect(pg_db.url)
    try:
        return await summaries.build_pending(conn, None)
    finally:
        await conn.close()


def _max_id(pg_db: PgDatabase) -> int:
    return int(pg_db.psql("SELECT coalesce(max(id), 0) FROM ping_results"))


async def _export(service: Running) -> list[dict[str, Any]]:
    resp = await service.health.get("/api/results?format=ndjson")
    assert resp.status == 200
    return [json.loads(line) for line in (await resp.text()).splitlines()]


def _expected(rtts: list[int], nodes: int) -> dict[str, Any]:
    return {
        "results": len(rtts),
        "failed": 0,
        "rtt_min_ns": min(rtts),
        "rtt_p50_ns": nearest(rtts, 50),
        "rtt_p95_ns": nearest(rtts, 95),
        "rtt_max_ns": max(rtts),
        "rtt_avg_ns": round(sum(rtts) / len(rtts)),
        "nodes": nodes,
    }


def _targets(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    keys = _expected([1], 1).keys()
    return {t["ip"]: {k: t[k] for k in keys} for t in body["targets"]}


@pytest.fixture
async def week(start_service: StartService, pg_db: PgDatabase) -> Running:
    """A's results three days and two days ago (closed partitions), B's and more of
    A's today (the live partition)."""
    service = await start_service(storage="postgres", database_url=pg_db.url)
    await _post(service, _batch(A, [5, 9, 1, 7], 0), "n1")
    await _age(pg_db, 1, dt.timedelta(days=3))
    start = _max_id(pg_db) + 1
    await _post(service, _batch(A, [4, 8, 2], 10), "n2")
    await _age(pg_db, start, dt.timedelta(days=2))
    await _post(service, _batch(A, [6, 3], 20) + _batch(B, [30, 10, 20], 30), "n1")
    return service


async def test_targets_over_closed_partitions_equal_the_raw_rows(
    week: Running, pg_db: PgDatabase
) -> None:
    want = {A: _expected([5, 9, 1, 7, 4, 8, 2, 6, 3], 2), B: _expected([30, 10, 20], 1)}
    # first query: the partials of the two closed partitions are built by it
    assert _targets(await get(week, "/api/targets")) == want
    built = pg_db.psql("SELECT count(*) FROM partition_summaries WHERE kind LIKE 'targets%'")
    assert built == "2"
    # again, from the partials and the instance's merged copy
    assert _targets(await get(week, "/api/targets")) == want
    # a filter kept apart: node=n2 is only the closed partition of two days ago
    assert _targets(await get(week, "/api/targets?node=n2")) == {A: _expected([4, 8, 2], 1)}
    # not kept (since/until): one aggregate over the rows, the same numbers
    early = await get(week, "/api/targets?since=2026-01-01T00:00:00Z&until=2026-01-01T00:12:00Z")
    assert _targets(early) == {A: _expected([5, 9, 1, 7, 4, 8], 2)}


async def test_export_from_rendered_runs_equals_rendering_on_the_fly(
    week: Running, pg_db: PgDatabase
) -> None:
    on_the_fly = await _export(week)
    assert len(on_the_fly) == 12
    names = await _build(pg_db)
    assert sorted(n.split("/")[1] for n in names) == ["export", "export", "targets", "targets"]
    assert pg_db.psql("SELECT count(*) FROM export_chunks") == "2"
    rendered = await _export(week)
    assert rendered == on_the_fly
    # newest partition first; the three closed-partition rows of A have their hops
    assert [r["ip"] for r in rendered[:3]] == [B, B, B]
    # the oldest partition last, newest first within it: A's first result last
    assert rendered[-1]["avg_rtt"] == 5 and rendered[-1]["node_id"] == "n1"
    assert [h["ttl"] for h in rendered[-1]["traceroute"]["hops"]] == [1, 2, 3]
    # the same items as the pages of /api/results
    paged = (await get(week, "/api/results?limit=100"))["results"]
    assert sorted(json.dumps(r, sort_keys=True) for r in paged) == sorted(
        json.dumps(r, sort_keys=True) for r in rendered
    )


async def test_a_row_reaching_a_closed_partition_later_is_counted(
    week: Running, pg_db: PgDatabase
) -> None:
    await _build(pg_db)
    await get(week, "/api/targets")
    start = _max_id(pg_db) + 1
    await _post(week, _batch(A, [100], 40), "n3")
    await _age(pg_db, start, dt.timedelta(days=3))  # into the partition summarised
    body = await get(week, "/api/targets")
    assert _targets(body)[A] == _expected([5, 9, 1, 7, 4, 8, 2, 6, 3, 100], 3)
    exported = await _export(week)
    assert len(exported) == 13 and any(r["avg_rtt"] == 100 for r in exported)
    # the query rebuilt the stale target partial; the next maintenance pass the export's
    assert [n.split("/")[1] for n in await _build(pg_db)] == ["export"]


async def test_a_live_row_committed_behind_the_cut_is_counted(
    week: Running, pg_db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the cut at the query (no transaction open): every row posted before it is behind it
    monkeypatch.setattr(target_partials, "LIVE_LAG", dt.timedelta(0))
    await get(week, "/api/targets")  # the live rows are merged and kept up to the cut
    await get(week, "/api/targets")  # and extended to a later cut (nothing new)
    today = _max_id(pg_db)  # the last of B's rows posted by the fixture, before the cuts
    await _post(week, _batch(B, [40], 50), "n2")
    # as a transaction that began with the fixture's would have stamped it: behind both
    # cuts, in the same partition (whatever the time of day), and never seen by a query
    await _age(pg_db, today + 1, _arrived_between(pg_db, today, today + 1))
    assert _targets(await get(week, "/api/targets"))[B] == _expected([30, 10, 20, 40], 2)
    # the live rows read again, the kept count checked from the new cut on
    assert _targets(await get(week, "/api/targets"))[B] == _expected([30, 10, 20, 40], 2)


async def test_retention_drops_the_summaries_with_their_partitions(
    week: Running, pg_db: PgDatabase
) -> None:
    await _build(pg_db)
    now = dt.datetime.now(dt.UTC)
    _, end = schema.slot(now - dt.timedelta(days=3), 1.0)  # three days ago's partition ends
    conn = await asyncpg.connect(pg_db.url)
    try:
        dropped = await schema.drop_expired(conn, now, (now - end) / dt.timedelta(days=1))
    finally:
        await conn.close()
    assert any(name.startswith("ping_results_") for name in dropped)
    parts = pg_db.psql("SELECT DISTINCT part FROM partition_summaries").split()
    assert len(parts) == 1 and parts[0] not in dropped
    for table in ("target_partials", "export_chunks"):
        left = pg_db.psql(f"SELECT DISTINCT part FROM {table}").split()
        assert left == parts
    assert _targets(await get(week, "/api/targets")) == {
        A: _expected([4, 8, 2, 6, 3], 2),
        B: _expected([30, 10, 20], 1),
    }
    assert len(await _export(week)) == 8


async def test_a_time_range_page_reads_the_partitions_holding_it(week: Running) -> None:
    url: str | None = "/api/results?since=2026-01-01T00:01:00Z&until=2026-01-01T00:11:00Z&limit=2"
    seen = []
    while url is not None:
        body = await get(week, url)
        seen += body["results"]
        url = body["next"]
    # A's minutes 1-3 (three days ago) and minute 10 (two days ago), newest arrival first
    assert [r["avg_rtt"] for r in seen] == [4, 7, 1, 9]
    none = await get(week, "/api/results?since=2025-01-01T00:00:00Z&until=2025-01-02T00:00:00Z")
    assert none["results"] == [] and none["next"] is None
