"""What the live file gains by going without the hop-IP index, and what sealing,
dumping and restarting then cost.

Run: .venv/bin/python bench/hop_index.py [--results 130000] [--dir /some/disk]

One run, one machine, figures as ratios:
1. ingest: the same rows (1,000 results per group, 10 hops each, hop addresses
   spread like real paths) go through `ResultsFile.write_group`, with the
   service's default settings, into a fresh live file (no hop-IP index), then
   into a fresh file that keeps it (the seed schema), until ~100 MB;
2. `/dump` of the live file: `backup_to` (copy + index build) against the bare
   online-backup copy;
3. sealing the ~100 MB live file (`snapshot.seal`: index build in WAL, fold
   the WAL in, switch to rollback journal);
4. start-up: dropping the index from a ~100 MB file that is continued live.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from output_service.config import Config
from output_service.models import Batch, Hop, Result, Traceroute
from output_service.storage.sqlite.inventory import make_live
from output_service.storage.sqlite.results_file import BatchMeta, ResultsFile
from output_service.storage.sqlite.schema import HOP_IP_INDEX
from output_service.storage.sqlite.snapshot import backup_to, seal

GROUP = 1000
MB = 1024 * 1024


def address(n: int) -> str:
    return f"{(n >> 24) & 255}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def groups(total: int) -> Iterator[list[tuple[Batch, BatchMeta]]]:
    """The same rows on every call: each result's path shares its first hops
    with many others and ends in one of a million addresses."""
    rng = random.Random(6)
    meta = BatchMeta(received_at="2026-01-02T03:04:05.000000Z", node_id="bench")
    stamp = "2026-01-02T03:04:05.000000000Z"
    for start in range(0, total, GROUP):
        results = []
        for r in range(start, min(total, start + GROUP)):
            hops = [
                Hop(ttl=i + 1, ip=address((10 << 24) + rng.randrange(16 << i)), rtt=1000 * i)
                for i in range(10)
            ]
            trace = Traceroute("icmp", True, "", hops)
            results.append(Result(address((12 << 24) + r), 4, 4, 0.0, 1, stamp, "", trace))
        yield [(Batch(results), meta)]


def open_file(path: Path, config: Config) -> ResultsFile:
    return ResultsFile.open(
        path,
        synchronous=config.synchronous,
        cache_size_mb=config.cache_size_mb,
        wal_autocheckpoint=config.wal_autocheckpoint,
    )


def ingest(path: Path, total: int, hop_index: bool) -> tuple[float, float, float]:
    """Results/s over the whole run, the first fifth and the last fifth."""
    config = Config()
    open_file(path, config).close()
    if hop_index:
        conn = sqlite3.connect(path)
        conn.executescript(HOP_IP_INDEX)
        conn.close()
    file = open_file(path, config)
    marks: list[float] = []
    spent = 0.0
    for group in groups(total):
        t0 = time.perf_counter()
        file.write_group(group)
        spent += time.perf_counter() - t0
        marks.append(spent)
    file.close()  # the last connection: SQLite folds the WAL in and removes it
    fifth = max(1, len(marks) // 5)
    first = fifth * GROUP / marks[fifth - 1]
    last = fifth * GROUP / (marks[-1] - marks[-1 - fifth])
    return total / spent, first, last


def timed(fn: Callable[..., object], *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def bare_backup(source: Path, dest: Path) -> None:
    src = sqlite3.connect(source)
    dst = sqlite3.connect(dest)
    src.backup(dst)
    dst.execute("PRAGMA journal_mode=DELETE")
    dst.close()
    src.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=int, default=130_000, help="results per file")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        live, seed = d / "live.db", d / "seed.db"
        print(f"SQLite {sqlite3.sqlite_version}; {args.results} results of 10 hops per file")
        rate_live = ingest(live, args.results, hop_index=False)
        rate_seed = ingest(seed, args.results, hop_index=True)
        size_live, size_seed = live.stat().st_size / MB, seed.stat().st_size / MB
        print("ingest (results/s)      whole     first 1/5  last 1/5  file MB")
        for label, rate, size in (
            ("live, no hop index", rate_live, size_live),
            ("seed schema", rate_seed, size_seed),
        ):
            print(f"  {label:20} {rate[0]:9,.0f} {rate[1]:11,.0f} {rate[2]:9,.0f} {size:8.1f}")
        ratios = [a / b for a, b in zip(rate_live, rate_seed, strict=True)]
        print("  ratio live/seed     " + " ".join(f"{r:9.2f}x" for r in ratios))

        bare = timed(bare_backup, live, d / "bare.db")
        full = timed(backup_to, live, d / "dump.db")
        print(
            f"/dump of the {size_live:.0f} MB live file: backup {bare:.2f} s,"
            f" with the index build {full:.2f} s (+{full - bare:.2f} s,"
            f" {(d / 'dump.db').stat().st_size / MB:.1f} MB)"
        )
        took = timed(seal, live)
        grown = live.stat().st_size / MB - size_live
        print(f"seal of the {size_live:.0f} MB live file: {took:.2f} s (index +{grown:.1f} MB)")
        took = timed(make_live, seed)
        print(f"start-up drop of the index from the {size_seed:.0f} MB file: {took:.2f} s")


if __name__ == "__main__":
    main()
