"""Write speed of the live file against the writer's page cache (`cache_size_mb`).

The page cache is most of the service's resident memory (bench.memory_parts);
this says what a smaller one costs. The same rows go through
`ResultsFile.write_group` (the service's insert path and PRAGMAs, 1,000 results
a transaction) into a fresh live file until it holds `--mb` (the default
`max_size_mb`, where it rotates), once per cache size, the sizes alternated
over `--rounds`. Targets are drawn from 50,000 random addresses, as a node
pings a fixed set over and over, so `idx_ping_results_ip` takes inserts all
over its key range (sequential targets would hide what the cache is for).

    python -m bench.cache_size [--sizes 64,16,8] [--hops 10] [--mb 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from output_service.config import Config
from output_service.models import Batch, Hop, Result, Traceroute
from output_service.storage.sqlite.results_file import BatchMeta, ResultsFile

GROUP = 1000
MB = 1024 * 1024


def _address(n: int) -> str:
    return f"{(n >> 24) & 255}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def groups(hops: int) -> Iterator[list[tuple[Batch, BatchMeta]]]:
    """Endless groups, the same on every call."""
    rng = random.Random(15)
    targets = [_address(rng.getrandbits(32)) for _ in range(50_000)]
    meta = BatchMeta(received_at="2026-01-02T03:04:05.000000Z", node_id="bench")
    second = 0
    while True:
        results = []
        for _ in range(GROUP):
            second += 1
            stamp = f"2026-01-{1 + second // 86400 % 28:02d}T00:00:{second % 60:02d}.000000000Z"
            trace = None
            if hops:
                path = [
                    Hop(ttl=i + 1, ip=_address((10 << 24) + rng.randrange(16 << i)), rtt=1000 * i)
                    for i in range(hops)
                ]
                trace = Traceroute("icmp", True, "", path)
            results.append(Result(rng.choice(targets), 4, 4, 0.0, 1, stamp, "", trace))
        yield [(Batch(results), meta)]


def ingest(path: Path, cache_mb: int, hops: int, limit_mb: float) -> tuple[float, float, float]:
    """Results/s over the whole file, its first fifth and its last fifth."""
    config = Config()
    file = ResultsFile.open(
        path,
        synchronous=config.synchronous,
        cache_size_mb=cache_mb,
        wal_autocheckpoint=config.wal_autocheckpoint,
    )
    marks: list[float] = []
    spent = 0.0
    for group in groups(hops):
        t0 = time.perf_counter()
        file.write_group(group)
        spent += time.perf_counter() - t0
        marks.append(spent)
        if path.stat().st_size + _wal(path) > limit_mb * MB:
            break
    file.close()
    fifth = max(1, len(marks) // 5)
    first = fifth * GROUP / marks[fifth - 1]
    last = fifth * GROUP / (marks[-1] - marks[-1 - fifth])
    return len(marks) * GROUP / spent, first, last


def _wal(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,16,8")
    parser.add_argument("--hops", type=int, default=10)
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    got: dict[int, list[tuple[float, float, float]]] = {s: [] for s in sizes}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="cache-size-") as tmp:
        for n in range(args.rounds):
            for size in sizes if n % 2 == 0 else sizes[::-1]:
                path = Path(tmp) / f"live-{size}-{n}.db"
                got[size].append(ingest(path, size, args.hops, args.mb))
                path.unlink()
    print(f"{args.hops}-hop results into a live file up to {args.mb:g} MB, {args.rounds} rounds")
    print("| cache_size_mb | results/s, whole file | first fifth | last fifth |")
    print("|---:|---:|---:|---:|")
    for size, rows in got.items():
        cols = [
            "/".join(f"{r[i]:,.0f}" for r in rows)
            + f" (median {statistics.median(r[i] for r in rows):,.0f})"
            for i in range(3)
        ]
        print(f"| {size} | {' | '.join(cols)} |")


if __name__ == "__main__":
    main()
