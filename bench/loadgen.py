"""The load generator: its own process, an aiohttp client, request bodies built up front.

Closed loop (`--concurrency N`): N connections each send the next batch as soon
as the previous one is acknowledged; this finds the maximum throughput.
Open loop (`--rate R`): requests leave on a fixed schedule whatever the server
does, and latency is measured from the scheduled send time, so a stalled server
cannot hide its stall by slowing the client down (no coordinated omission).

Prints one JSON line `{"phase": "measure"}` when the measured window starts (the
driver samples the server's CPU then) and one JSON line of results at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.payload import make_body, read_pool

HEADERS = {"Content-Type": "application/json"}
BODIES = 8


@dataclass
class Window:
    """What happened inside the measured window; `next_body` hands out the bodies in
    turn across all connections, so each is sent once until the pool wraps."""

    start: float = 0.0
    end: float = 0.0
    results: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    cpu_start: float = 0.0
    sent_bodies: int = 0

    def next_body(self, bodies: list[bytes]) -> bytes:
        body = bodies[self.sent_bodies % len(bodies)]
        self.sent_bodies += 1
        return body

    def record(self, started: float, done: float, status: int, count: int) -> None:
        """Count a request by when it was acknowledged, as throughput is."""
        if self.start <= done <= self.end:
            self.latencies.append(done - started)
            self.statuses[status] += 1
            if status == 200:
                self.results += count


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, float]:
    """Status and the Retry-After delay the server asked for (0 if none)."""
    async with session.post(url, data=body, headers=HEADERS) as resp:
        await resp.read()
        retry = float(resp.headers.get("Retry-After", 0)) if resp.status == 503 else 0.0
        return resp.status, retry


async def closed_loop(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[bytes],
    batch: int,
    concurrency: int,
    window: Window,
    sent: list[int],
) -> None:
    async def worker() -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < window.end:
            started = loop.time()
            status, retry_after = await _post(session, url, window.next_body(bodies))
            window.record(started, loop.time(), status, batch)
            sent[0] += batch if status == 200 else 0
            if retry_after:  # a well-behaved client, as the Go nodes are
                await asyncio.sleep(retry_after)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def open_loop(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[bytes],
    batch: int,
    rate: float,
    window: Window,
    sent: list[int],
) -> None:
    loop = asyncio.get_running_loop()
    first = loop.time()
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float, body: bytes) -> None:
        status, _ = await _post(session, url, body)
        window.record(scheduled, loop.time(), status, batch)
        sent[0] += batch if status == 200 else 0

    n = 0
    while True:
        scheduled = first + n / rate
        if scheduled >= window.end:
            break
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(one(scheduled, window.next_body(bodies)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.wait(tasks)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.pool:
        bodies = read_pool(args.pool)
    else:
        bodies = [make_body(args.batch, args.hops, seed) for seed in range(BODIES)]
    loop = asyncio.get_running_loop()
    window = Window()
    sent = [0]
    limit = args.concurrency if args.rate is None else 512
    connector = aiohttp.TCPConnector(limit=limit, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        now = loop.time()
        window.start = now + args.warmup
        window.end = window.start + args.duration
        marker = loop.call_at(window.start, _mark, window)
        end_marker = loop.call_at(window.end, _say, {"phase": "end"})
        if args.rate is None:
            await closed_loop(session, args.url, bodies, args.batch, args.concurrency, window, sent)
        else:
            await open_loop(session, args.url, bodies, args.batch, args.rate, window, sent)
        await asyncio.sleep(max(0.0, window.end - loop.time()) + 0.01)  # let "end" be said
        marker.cancel()
        end_marker.cancel()
    cpu = time.process_time() - window.cpu_start
    lat = window.latencies
    return {
        "results_per_s": window.results / args.duration,
        "requests": len(lat),
        "statuses": {str(k): v for k, v in window.statuses.items()},
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": max(lat, default=0.0) * 1000,
        "client_cpu_pct": 100 * cpu / args.duration,
        "stored_results": sent[0],
    }


def _mark(window: Window) -> None:
    window.cpu_start = time.process_time()
    _say({"phase": "measure"})


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def argv(
    url: str,
    pool: Path,
    *,
    batch: int,
    hops: int,
    duration: float,
    warmup: float,
    concurrency: int | None = None,
    rate: float | None = None,
) -> list[str]:
    """The command line that runs this generator in its own process: a closed loop
    of `concurrency` connections, or an open loop at `rate` requests/s."""
    load = ["--rate", str(rate)] if rate else ["--concurrency", str(concurrency)]
    return [
        sys.executable, "-m", "bench.loadgen", "--url", url, "--pool", str(pool),
        "--batch", str(batch), "--hops", str(hops),
        "--duration", str(duration), "--warmup", str(warmup), *load,
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description="POST /results load generator")
    parser.add_argument("--url", required=True)
    parser.add_argument("--batch", type=int, default=100, help="results per request")
    parser.add_argument("--hops", type=int, default=10, help="traceroute hops per result (0: none)")
    parser.add_argument("--concurrency", type=int, default=8, help="closed loop: connections")
    parser.add_argument("--rate", type=float, default=None, help="open loop: requests per second")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    parser.add_argument(
        "--pool", type=Path, default=None, help="file of bodies (bench.payload.pool_file)"
    )
    args = parser.parse_args()
    _say(asyncio.run(run(args)))
    sys.exit(0)


if __name__ == "__main__":
    main()
