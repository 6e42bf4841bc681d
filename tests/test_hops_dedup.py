"""The writer-side half on its own: bounded cache, seen-set in state.db, outbox."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from output_service.hops.recorder import HopCounts, HopRecorder
from output_service.hops.state import SCHEMA_VERSION, StateDB, StateSchemaError
from output_service.metrics import Metrics
from output_service.models import Batch, Hop, Result, Traceroute

WEEK_S = 7 * 24 * 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDB]:
    db = StateDB.open(tmp_path / "state.db", synchronous="FULL")
    yield db
    db.close()


def recorder(
    state: StateDB, clock: Clock, cache_size: int = 1000, outbox_max: int = 10**7
) -> HopRecorder:
    return HopRecorder(
        state,
        HopCounts(),
        Metrics(CollectorRegistry()),
        clock,
        exclude_private=False,
        resend_after_s=WEEK_S,
        cache_size=cache_size,
        outbox_max=outbox_max,
    )


def batch_of(ips: list[str], per_result: int = 10) -> Batch:
    """Results whose traceroutes together pass through `ips`, as the writer gets them."""
    results = []
    for start in range(0, len(ips), per_result):
        hops = [
            Hop(ttl=i + 1, ip=ip, rtt=1) for i, ip in enumerate(ips[start : start + per_result])
        ]
        results.append(
            Result(
                "192.0.2.1",
                1,
                1,
                0.0,
                1,
                "2026-01-02T03:04:05.000000000Z",
                "",
                Traceroute("icmp", True, "", hops),
            )
        )
    return Batch(results)


def distinct(start: int, count: int) -> list[str]:
    """`count` distinct public-looking IPv4 addresses from 11.0.0.0 on."""
    base = 11 << 24
    return [
        f"{(n >> 24) & 255}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
        for n in range(base + start, base + start + count)
    ]


def outbox(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        conn.close()


def test_cache_stays_at_its_cap_with_200k_distinct_hops(state: StateDB) -> None:
    rec = recorder(state, Clock(), cache_size=1000)
    for start in range(0, 200_000, 10_000):
        rec.record([batch_of(distinct(start, 10_000))])
        assert len(rec.cache) == 1000
    assert outbox(state.path) == 200_000
    # The first hops left the cache long ago; state.db still knows them.
    rec.record([batch_of(distinct(0, 500))])
    assert outbox(state.path) == 200_000
    assert len(rec.cache) == 1000


def test_resend_window_counts_from_when_the_hop_was_queued(state: StateDB) -> None:
    clock = Clock()
    rec = recorder(state, clock, cache_size=1)
    rec.record([batch_of(["198.51.100.1", "198.51.100.2"])])
    clock.now += WEEK_S - 1
    rec.record([batch_of(["198.51.100.1", "198.51.100.2"])])  # one from cache, one from state.db
    assert state.counters()["discovered"] == 2
    clock.now += 1
    rec.record([batch_of(["198.51.100.1", "198.51.100.2"])])
    assert state.counters()["discovered"] == 4
    assert outbox(state.path) == 2  # still waiting: not queued twice


def test_totals_and_outbox_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = StateDB.open(path, synchronous="FULL")
    recorder(first, Clock()).record([batch_of(["198.51.100.1", "198.51.100.2"])])
    first.close()
    second = StateDB.open(path, synchronous="NORMAL")
    try:
        assert [w.ip for w in second.oldest(10)] == ["198.51.100.1", "198.51.100.2"]
        assert second.counters()["discovered"] == 2
        assert second.depth() == 2
    finally:
        second.close()


def test_state_db_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StateSchemaError, match="newer"):
        StateDB.open(path, synchronous="FULL")
