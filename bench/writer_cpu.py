"""The writer's CPU per result, on its own: `ResultsFile.write_group` on a real file.

Groups of 8 batches of 100 results (what 8 clients sending 100 each queue), with
10-hop traceroutes and without, `synchronous=FULL`, timed as the process's CPU
time rather than the clock: on a shared machine the clock also counts the time
other work held the cores, CPU time mostly does not. Best of three.

    python -m bench.writer_cpu [--batch 1 --per-group 29]

`--batch 1 --per-group 29` is the one-result shape: at 64 connections a group
held 29 one-result batches on average (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.payload import HOPS, make_body
from output_service.models import decode_batch
from output_service.storage.sqlite.results_file import BatchMeta, ResultsFile

META = BatchMeta("2026-12-03T00:00:00.000000Z", "127.0.0.1")
PER_GROUP = 8


def cpu_per_result(
    hops: int, groups: int, batch: int = 100, per_group: int = PER_GROUP
) -> list[float]:
    batches = [
        decode_batch(make_body(batch, hops, seed), 10_000) for seed in range(per_group * groups)
    ]
    out = []
    for _ in range(3):
        with tempfile.TemporaryDirectory(prefix="writer-cpu-") as tmp:
            file = ResultsFile.open(
                Path(tmp) / "r.db", synchronous="FULL", cache_size_mb=64, wal_autocheckpoint=10000
            )
            started = time.process_time()
            for g in range(groups):
                group = batches[g * per_group : (g + 1) * per_group]
                file.write_group([(b, META) for b in group])
            out.append((time.process_time() - started) / (groups * per_group * batch) * 1e6)
            file.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--per-group", type=int, default=PER_GROUP)
    args = parser.parse_args()
    scale = 100 // args.batch  # as many groups' worth of results whatever the batch
    for hops, groups in ((HOPS, 25), (0, 60)):
        runs = cpu_per_result(hops, groups * scale, args.batch, args.per_group)
        spread = " ".join(f"{r:.1f}" for r in runs)
        print(f"{hops} hops: {min(runs):.1f} us CPU per result (runs: {spread})")


if __name__ == "__main__":
    main()
