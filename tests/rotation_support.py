"""Helpers shared by the rotation, dump and files tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from output_service.storage.sqlite.file_names import results_files
from tests.conftest import Running, make_result, query

# 2026-01-01T00:00:00Z: file names made from this clock are known in advance.
EPOCH = 1_767_225_600.0
DAY = 86400.0


class FakeClock:
    """The service's injectable time: moves only when a test moves it."""

    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def post(running: Running, results: list[dict[str, Any]]) -> None:
    resp = await running.results.post("/results", json=results)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["received"] == len(results)


async def rotate(running: Running) -> str:
    resp = await running.results.post("/rotate")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "rotated"
    return str(body["file"])


def names(db_dir: Path) -> list[str]:
    return [p.name for p in results_files(db_dir)]


def ips_in(path: Path) -> list[str]:
    return [row[0] for row in query(path, "SELECT ip FROM ping_results")]


def ips_by_file(db_dir: Path) -> dict[str, list[str]]:
    return {p.name: ips_in(p) for p in results_files(db_dir)}


def batch(tag: int, size: int, *, hops: int = 0) -> list[dict[str, Any]]:
    """`size` results whose addresses name the batch: 10.<tag / 256>.<tag % 256>.<i>."""
    return [make_result(f"10.{tag // 256}.{tag % 256}.{i}", hops=hops) for i in range(size)]


def journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def metric(running: Running, name: str, **labels: str) -> float:
    value = running.services.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def settled(running: Running) -> None:
    """Wait until the writer has finished whatever follows its last commit (an
    automatic rotation runs right after the commit that triggered it)."""
    await running.services.storage.writer.call(lambda: None)
