"""Deterministic request bodies and the rows they become, shared by every benchmark.

The load generator, the ceiling and the naive baseline all start from the same
results, so "% of ceiling" compares the same rows.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

HOPS = 10
TIMESTAMP = "2026-01-02T03:04:05.123456789Z"


def make_results(count: int, hops: int, seed: int) -> list[dict[str, Any]]:
    """`count` results as a Go ping node sends them; `hops` > 0 adds a traceroute."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for _ in range(count):
        received = rng.choice((3, 3, 3, 2, 0))
        result: dict[str, Any] = {
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "sent": 3,
            "received": received,
            "packet_loss": round(100 * (3 - received) / 3, 2),
            "avg_rtt": rng.randrange(1_000_000, 90_000_000),
            "timestamp": TIMESTAMP,
        }
        if hops:
            result["traceroute"] = {
                "method": "icmp",
                "completed": True,
                "hops": [
                    {
                        "ttl": ttl,
                        "ip": _hop_ip(rng, ttl, hops, result["ip"]),
                        "rtt": rng.randrange(100_000, 90_000_000),
                    }
                    for ttl in range(1, hops + 1)
                ],
            }
        out.append(result)
    return out


def _hop_ip(rng: random.Random, ttl: int, hops: int, target: str) -> str:
    """Hop addresses shaped like real paths, which decide what the index on
    `traceroute_hops.ip` costs: the first hops are the node's own few gateways,
    the middle ones a few thousand backbone routers, the last ones tens of
    thousands of edge routers, and the final hop is the target itself."""
    if ttl == hops:
        return target
    if ttl <= 2:
        return f"192.0.2.{rng.randrange(1, 5)}"
    if ttl <= hops // 2 + 1:
        n = rng.randrange(2_000)
        return f"198.51.{n >> 8}.{n & 255}"
    n = rng.randrange(50_000)
    return f"203.{n >> 16}.{(n >> 8) & 255}.{n & 255}"


def make_body(count: int, hops: int, seed: int) -> bytes:
    return json.dumps(make_results(count, hops, seed), separators=(",", ":")).encode()


def shape_name(hops: int) -> str:
    return f"{hops}-hop traceroute" if hops else "no traceroute"


POOL_SEED = 1


def pool_file(directory: Path, hops: int, batch: int, total: int) -> Path:
    """A file of distinct request bodies (one JSON array a line) holding the first
    `total` results of the shape's pool, made once and reused.

    Every result is sent once, as in real traffic: repeating a few bodies would
    put the same hop addresses into the `traceroute_hops.ip` index over and over,
    which SQLite finds much cheaper than new ones, and flatter the service.
    """
    path = directory / f"pool-{hops}-{batch}-{total}.jsonl"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        results = make_results(total, hops, POOL_SEED)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            for lo in range(0, total, batch):
                fh.write(json.dumps(results[lo : lo + batch], separators=(",", ":")).encode())
                fh.write(b"\n")
        tmp.replace(path)
    return path


def read_pool(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()
