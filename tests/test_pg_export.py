"""The unfiltered ndjson export on PostgreSQL: pre-rendered runs, live runs behind the
cut, and the rows after it, always in the order of the pages (id, newest first).

Rows are posted to the real service; a result's arrival is moved by updating
`received_at` (as a transaction that began earlier, or in another partition,
would have stamped it), so that arrival order and id order disagree where two
partitions or a live run and the later rows meet.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

asyncpg = pytest.importorskip("asyncpg")

from output_service.storage.postgres import export_chunks, summaries  # noqa: E402
from output_service.storage.postgres.export_merge import Block, item_id, merged  # noqa: E402
from tests.conftest import Running, StartService  # noqa: E402
from tests.pg_server import PgDatabase  # noqa: E402
from tests.test_pg_summaries import (  # noqa: E402
    _age,
    _arrived_between,
    _batch,
    _export,
    _max_id,
    _post,
)

A, B = "203.0.113.1", "203.0.113.2"


async def _pages(service: Running) -> list[dict[str, Any]]:
    url: str | None = "/api/results?limit=2"
    out: list[dict[str, Any]] = []
    while url is not None:
        resp = await service.health.get(url)
        assert resp.status == 200
        body = await resp.json()
        out += body["results"]
        url = body["next"]
    return out


async def _build_live(pg_db: PgDatabase) -> list[str]:
    conn = await asyncpg.connect(pg_db.url)
    try:
        return await export_chunks.build_live(conn, 30.0, min_rows=1)
    finally:
        await conn.close()


async def _build_all(pg_db: PgDatabase) -> None:
    conn = await asyncpg.connect(pg_db.url)
    try:
        await summaries.build_pending(conn, None)
    finally:
        await conn.close()


@pytest.fixture
def no_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live cut at the oldest open transaction (or now): every posted row behind it."""
    monkeypatch.setattr(export_chunks, "LIVE_LAG", dt.timedelta(0))


async def test_export_is_in_page_order_where_partitions_meet(
    start_service: StartService, pg_db: PgDatabase, no_lag: None
) -> None:
    service = await start_service(storage="postgres", database_url=pg_db.url)
    await _post(service, _batch(A, [1, 2, 3], 0), "n1")
    start = _max_id(pg_db) + 1
    await _post(service, _batch(B, [4, 5], 10), "n1")
    # B's results: higher ids, but arrived (by their stamp) two days ago
    await _age(pg_db, start, dt.timedelta(days=2))
    pages = await _pages(service)
    assert [r["avg_rtt"] for r in pages] == [5, 4, 3, 2, 1]
    assert await _export(service) == pages  # rendered as it goes
    await _build_all(pg_db)
    assert await _build_live(pg_db) != []  # today's three of A behind the cut
    kinds = pg_db.psql("SELECT count(*) FROM export_segments")
    assert kinds == "2"  # the closed partition's and today's
    assert await _export(service) == pages  # from the runs, merged by id


async def test_live_runs_and_the_rows_after_the_cut(
    start_service: StartService, pg_db: PgDatabase, no_lag: None
) -> None:
    service = await start_service(storage="postgres", database_url=pg_db.url)
    await _post(service, _batch(A, [1, 2, 3], 0), "n1")
    assert len(await _build_live(pg_db)) == 1
    assert pg_db.psql("SELECT sum(rows) FROM export_segments") == "3"
    await _post(service, _batch(B, [4, 5], 10), "n2")  # after the cut
    pages = await _pages(service)
    assert [r["avg_rtt"] for r in pages] == [5, 4, 3, 2, 1]
    assert await _export(service) == pages
    # a row committed behind the cut (its transaction began with A's first one, so it
    # lands in the segment's partition whatever the time of day): the segment no longer
    # holds every row of its interval, and is not used
    start = _max_id(pg_db) + 1
    await _post(service, _batch(A, [6], 20), "n3")
    await _age(pg_db, start, _arrived_between(pg_db, 1, start))
    pages = await _pages(service)
    assert [r["avg_rtt"] for r in pages] == [6, 5, 4, 3, 2, 1]
    assert await _export(service) == pages
    # the next maintenance pass renders the partition again, the late row in it
    assert len(await _build_live(pg_db)) == 1
    assert pg_db.psql("SELECT count(*), sum(rows) FROM export_segments") == "1|6"
    assert await _export(service) == pages
    # csv from the same runs (stored many items a line-separated text): a row each
    resp = await service.health.get("/api/results?format=csv")
    assert resp.status == 200
    lines = (await resp.text()).splitlines()
    assert len(lines) == 7 and lines[0].startswith("file,id,")
    assert [int(line.split(",")[1]) for line in lines[1:]] == [r["id"] for r in pages]


def _items(ids: list[int]) -> list[str]:
    return [json.dumps({"id": i, "ip": "x"}, separators=(", ", " : ")) for i in ids]


async def _stream(blocks: list[list[int]], known: bool) -> AsyncIterator[Block]:
    """Rows with their ids (`known`), or runs as stored: one text, ids unknown."""
    for ids in blocks:
        if known:
            yield Block(_items(ids), ids[0], ids[-1], ids)
        else:
            yield Block(["\n".join(_items(ids))], ids[0], ids[-1], packed=True)


async def test_merge_orders_overlapping_blocks_by_id() -> None:
    assert item_id(_items([1234])[0]) == 1234
    runs = [[20, 19, 17], [16, 12, 11], [10, 9]]
    rows = [[18, 13], [8, 1]]
    out = [
        item_id(t)
        for chunk in [c async for c in merged([_stream(runs, False), _stream(rows, True)])]
        for t in "\n".join(chunk).split("\n")
    ]
    assert out == [20, 19, 18, 17, 16, 13, 12, 11, 10, 9, 8, 1]
    # disjoint blocks go out whole, one chunk each
    chunks = [c async for c in merged([_stream([[9, 8], [5, 4]], False), _stream([[7, 6]], True)])]
    assert [len(c) for c in chunks] == [1, 2, 1]  # runs as stored, rows one by one
    assert [item_id(t) for c in chunks for t in "\n".join(c).split("\n")] == [9, 8, 7, 6, 5, 4]


async def test_a_live_segment_is_bounded(
    start_service: StartService,
    pg_db: PgDatabase,
    no_lag: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(export_chunks, "LIVE_MAX_ROWS", 2)
    service = await start_service(storage="postgres", database_url=pg_db.url)
    for minute in range(3):  # three transactions, three arrival times
        await _post(service, _batch(A, [minute + 1], minute), "n1")
    assert len(await _build_live(pg_db)) == 1
    assert pg_db.psql("SELECT rows FROM export_segments") == "2"
    assert len(await _build_live(pg_db)) == 1
    assert pg_db.psql("SELECT rows FROM export_segments ORDER BY seg_from").split() == ["2", "1"]
    assert await _export(service) == await _pages(service)
