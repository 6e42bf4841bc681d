"""What the hop hook costs the writer thread, next to the results transaction it precedes.

Run: .venv/bin/python bench/hop_hook.py
Times `ResultsFile.write_group` for batches of 1,000 results with 10 hops each,
then the hop recorder (extract, dedup, queue into state.db) on the same batches
in four situations. Figures are ratios from one run on one machine.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from output_service.hops.recorder import HopCounts, HopRecorder
from output_service.hops.state import StateDB
from output_service.metrics import Metrics
from output_service.models import Batch, Hop, Result, Traceroute
from output_service.storage.sqlite.results_file import BatchMeta, ResultsFile

BATCHES = 30


def address(n: int) -> str:
    return f"{(n >> 24) & 255}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def batch(start: int, distinct: bool = True) -> Batch:
    results = []
    for r in range(1000):
        hops = [
            Hop(ttl=i + 1, ip=address((11 << 24) + (start + r * 10 + i if distinct else i)), rtt=1)
            for i in range(10)
        ]
        trace = Traceroute("icmp", True, "", hops)
        stamp = "2026-01-02T03:04:05.000000000Z"
        results.append(Result(address((12 << 24) + r), 4, 4, 0.0, 1, stamp, "", trace))
    return Batch(results)


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    file = ResultsFile.open(
        tmp / "results_2026-01-01_00-00-00.db",
        synchronous="FULL",
        cache_size_mb=64,
        wal_autocheckpoint=10000,
    )
    meta = BatchMeta("2026-01-01T00:00:00Z")
    batches = [batch(k * 10000) for k in range(BATCHES)]
    started = time.perf_counter()
    for b in batches:
        file.write_group([(b, meta)])
    write = time.perf_counter() - started
    print(
        f"results write_group: {write / BATCHES * 1000:.1f} ms per batch (1000 results x 10 hops)"
    )

    def run(label: str, cache: int, passes: int, feed: list[Batch]) -> None:
        state = StateDB.open(Path(tempfile.mkdtemp()) / "state.db", synchronous="FULL")
        recorder = HopRecorder(
            state,
            HopCounts(),
            Metrics(CollectorRegistry()),
            time.time,
            exclude_private=False,
            resend_after_s=7 * 86400,
            cache_size=cache,
            outbox_max=10**7,
        )
        for _ in range(passes):  # the last pass is the one measured
            started = time.perf_counter()
            for b in feed:
                recorder.record([b])
            took = time.perf_counter() - started
        per_batch = took / len(feed) * 1000
        print(f"{label:46s} {per_batch:6.1f} ms/batch = {took / write * 100:4.0f}% of write_group")
        state.close()

    run("A all hops new (first sight)", 100_000, 1, batches)
    run("B all hops known, in the cache", 400_000, 2, batches)
    run("C all hops known, not in the cache (lookup)", 100_000, 2, batches)
    run("D every result through the same 10 hops", 100_000, 1, [batch(0, False)] * BATCHES)


if __name__ == "__main__":
    main()
