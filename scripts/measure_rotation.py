"""How long does a rotation hold up ingest? Run: python scripts/measure_rotation.py

Starts the service as its own process on a temp dir, drives it from this
process with concurrent POST /results (10-hop results), rotates by size
(--max-size-mb) and by hand (POST /rotate every few seconds), then reports the
writer pause per rotation (from the service's log), the time spent sealing the
old file off the writer thread, and the client-side ingest latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def results(worker: int, n: int, size: int) -> list[dict[str, Any]]:
    return [
        {
            "ip": f"10.{worker}.{(n * size + i) // 256 % 256}.{(n * size + i) % 256}",
            "sent": 4,
            "received": 4,
            "packet_loss": 0.0,
            "avg_rtt": 12_345_678,
            "timestamp": "2026-01-02T03:04:05.123456789Z",
            "traceroute": {
                "method": "icmp",
                "completed": True,
                "hops": [
                    {"ttl": h + 1, "ip": f"172.16.{h}.{i % 256}", "rtt": 1000} for h in range(10)
                ],
            },
        }
        for i in range(size)
    ]


async def drive(url: str, args: argparse.Namespace) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    stored = 0
    deadline = time.monotonic() + args.seconds
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:

        async def sender(worker: int) -> None:
            nonlocal stored
            n = 0
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                async with session.post(f"{url}/results", json=results(worker, n, args.batch)) as r:
                    assert r.status == 200, await r.text()
                latencies.append(time.perf_counter() - t0)
                stored += args.batch
                n += 1

        async def rotator() -> None:
            while time.monotonic() + args.rotate_every < deadline:
                await asyncio.sleep(args.rotate_every)
                async with session.post(f"{url}/rotate") as r:
                    assert r.status == 200, await r.text()

        await asyncio.gather(*(sender(w) for w in range(args.concurrency)), rotator())
    return latencies, stored, time.monotonic() - started


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--max-size-mb", type=float, default=25)
    parser.add_argument("--rotate-every", type=float, default=4)
    args = parser.parse_args()
    port, health = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "service.log"
        with log_path.open("w") as log:
            service = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "output_service", "--host", "127.0.0.1"),
                *(f"--port={port}", f"--health-port={health}", f"--db-dir={tmp}/data"),
                *(f"--max-size-mb={args.max_size_mb}", "--keep-files=3", "--input-url="),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                async with aiohttp.ClientSession() as s:
                    for _ in range(200):
                        try:
                            async with s.get(f"http://127.0.0.1:{health}/ready") as r:
                                if r.status == 200:
                                    break
                        except aiohttp.ClientError:
                            pass
                        await asyncio.sleep(0.05)
                latencies, stored, took = await drive(f"http://127.0.0.1:{port}", args)
            finally:
                service.terminate()
                await asyncio.wait_for(service.wait(), 30)
        events = [
            json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")
        ]
    pauses = [e["writer_paused_ms"] for e in events if e.get("event") == "rotated"]
    reasons = [e["reason"] for e in events if e.get("event") == "rotated"]
    seals = [e["seal_ms"] for e in events if e.get("event") == "sealed"]
    print(
        f"ingest: {stored} results in {took:.1f} s = {stored / took:,.0f} results/s "
        f"({args.concurrency} clients x {args.batch}-result batches, 10 hops each)"
    )
    by_reason = ", ".join(f"{r}={reasons.count(r)}" for r in sorted(set(reasons)))
    print(f"rotations: {len(pauses)} ({by_reason})")
    if pauses:
        print(
            f"writer paused per rotation: median {statistics.median(pauses):.1f} ms, "
            f"max {max(pauses):.1f} ms"
        )
    if seals:
        print(
            f"sealing the old file (checkpoint+close, off the writer thread): "
            f"median {statistics.median(seals):.1f} ms, max {max(seals):.1f} ms"
        )
    print(
        f"POST /results latency: p50 {pct(latencies, 0.5):.1f} ms, "
        f"p99 {pct(latencies, 0.99):.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
