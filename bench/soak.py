"""`make bench-soak`: a sustained open-loop run, watching the server's memory.

Sends 100-result batches with 10-hop traceroutes at a fixed rate for five
minutes (by default) and samples the server's resident memory every few
seconds. Memory should be flat: a leak shows as a slope over the run. The
service runs with `--max-size-mb 100`, so rotations (once the service rotates
by size) happen under load too; the slowest requests are reported.

    python -m bench.soak [--rate 20] [--duration 300] [--variant no-gc-settle]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import loadgen
from bench.payload import HOPS, pool_file
from bench.run import OUT, POOL
from bench.server import Server

SAMPLE_EVERY_S = 5.0


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over time."""
    if len(samples) < 2:
        return 0.0
    ts = [t for t, _ in samples]
    ms = [m for _, m in samples]
    mt, mm = statistics.fmean(ts), statistics.fmean(ms)
    den = sum((t - mt) ** 2 for t in ts)
    return 60 * sum((t - mt) * (m - mm) for t, m in samples) / den if den else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s (x100 results)")
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--max-size-mb", default="100")
    parser.add_argument(
        "--variant", default="", help="a bench.variant_service variant, or baseline (bench.server)"
    )
    args = parser.parse_args()
    pool = pool_file(OUT, HOPS, 100, POOL[HOPS])
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        server = Server.service(
            Path(tmp), "--max-size-mb", args.max_size_mb, "--keep-files", "3", variant=args.variant
        )
        samples: list[tuple[float, float]] = []
        try:
            gen = subprocess.Popen(
                loadgen.argv(
                    server.url,
                    pool,
                    batch=100,
                    hops=HOPS,
                    duration=args.duration,
                    warmup=0,
                    rate=args.rate,
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            started = time.monotonic()
            while gen.poll() is None:
                samples.append((time.monotonic() - started, server.rss_mb()))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    gen.wait(timeout=SAMPLE_EVERY_S)  # the sampling interval, not a sync
            assert gen.stdout is not None
            result = json.loads(gen.stdout.read().splitlines()[-1])
            peak = server.peak_rss_mb()
            files = sorted(p.name for p in (Path(tmp) / "data").glob("results_*.db"))
        finally:
            code = server.stop()
    steady = [s for s in samples if s[0] >= 60] or samples
    print(
        f"soak: {args.rate:g} requests/s x 100 results ({HOPS}-hop traceroutes) for "
        f"{args.duration:g} s; exit code {code}\n"
        f"- achieved {result['results_per_s']:,.0f} results/s, statuses {result['statuses']}\n"
        f"- latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"max {result['max_ms']:.1f} ms\n"
        f"- RSS: {samples[0][1]:.0f} MB at start, {steady[0][1]:.0f} MB after 1 min, "
        f"{samples[-1][1]:.0f} MB at the end, peak {peak:.0f} MB; slope after the first "
        f"minute {slope_mb_per_min(steady):+.2f} MB/min\n"
        f"- results files at the end: {len(files)}"
    )


if __name__ == "__main__":
    main()
