"""Load for the PostgreSQL tests: sample results, and a round-robin client for the
scale-out tests (keyed batches spread over several instances; a batch without an
answer, connection gone or 503, is retried with the same key on the next instance,
until every batch has been acknowledged)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

RESULTS_PER_BATCH = 4
HOPS_PER_RESULT = 3
HOP_POOL = 60  # distinct hop addresses, shared by every instance's batches
RETRY_PAUSE_S = 0.05  # client back-off between tries, not synchronisation


def marker(batch: int, index: int) -> str:
    return f"10.{batch // 250 % 250}.{batch % 250}.{index + 1}"


def hop_ip(n: int) -> str:
    return f"198.18.0.{n % HOP_POOL + 1}"


def body(batch: int) -> bytes:
    return json.dumps(
        [
            {
                "ip": marker(batch, i),
                "sent": 3,
                "received": 3,
                "packet_loss": 0.0,
                "avg_rtt": 2_000_000,
                "timestamp": "2026-03-01T10:00:00Z",
                "traceroute": {
                    "method": "icmp",
                    "completed": True,
                    "hops": [
                        {"ttl": t + 1, "ip": hop_ip(batch * 7 + i * 3 + t), "rtt": 100}
                        for t in range(HOPS_PER_RESULT)
                    ],
                },
            }
            for i in range(RESULTS_PER_BATCH)
        ]
    ).encode()


@dataclass
class RoundRobin:
    """`urls()` gives the results URLs of the instances alive now."""

    urls: Callable[[], list[str]]
    acked: set[int] = field(default_factory=set)
    retries: int = 0
    statuses: list[int] = field(default_factory=list)
    _turn: int = 0

    def _next_url(self) -> str:
        urls = self.urls()
        self._turn += 1
        return urls[self._turn % len(urls)]

    async def send(self, session: aiohttp.ClientSession, batch: int) -> None:
        data = body(batch)
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"batch-{batch}"}
        for _ in range(2000):  # bounded; each try is bounded by the session timeout
            try:
                async with session.post(self._next_url(), data=data, headers=headers) as reply:
                    self.statuses.append(reply.status)
                    if reply.status == 200:
                        assert (await reply.json())["received"] == RESULTS_PER_BATCH
                        self.acked.add(batch)
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass  # unanswered: retry on another instance
            self.retries += 1
            await asyncio.sleep(RETRY_PAUSE_S)
        raise AssertionError(f"batch {batch} never acknowledged")

    async def run(self, batches: range, workers: int = 6) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def worker() -> None:
                while not queue.empty():
                    await self.send(session, queue.get_nowait())

            await asyncio.gather(*(worker() for _ in range(workers)))


def results(n: int, *, base: int = 0, hops: int = 2) -> list[dict[str, Any]]:
    """n results with traceroutes; every fourth one failed (nothing received)."""
    return [
        {
            "ip": f"10.0.{(base + i) // 250}.{(base + i) % 250 + 1}",
            "sent": 4,
            "received": 0 if i % 4 == 3 else 4,
            "packet_loss": 100.0 if i % 4 == 3 else 0.0,
            "avg_rtt": 1_000_000 + i,
            "timestamp": "2026-03-01T10:00:00.123456789Z",
            "traceroute": {
                "method": "icmp",
                "completed": True,
                "hops": [
                    {"ttl": t + 1, "ip": f"198.51.100.{t + 1}", "rtt": 10} for t in range(hops)
                ],
            },
        }
        for i in range(n)
    ]
