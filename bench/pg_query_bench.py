"""The query API's figures on PostgreSQL, on the same data as `make bench-query`.

Starts its own PostgreSQL (as the tests do: `initdb`/`pg_ctl` in a temp dir),
loads `bench.query_data`'s files into it (700,000 results with 10-hop
traceroutes) spread over the last 7 days of arrival (`bench.pg_query_data`:
seven daily partitions, six closed and today's filling, as a week of live
traffic leaves them), runs `ANALYZE` (what autovacuum would do soon after a
load), builds the closed partitions' summaries (what the maintenance pass of a
service running that week would have done), starts the service as a process
with `--storage postgres`, and takes the same query measurements as
`bench.query_bench.measure` (the export three times, the median), plus the
first /api/targets after start-up; the reader clients of the ingest figures
run in a process of their own at nice 19 (`bench.pg_readers`), and each is
the median of three pairs (alone, then with the readers).
Prints the figures and appends a section to BENCHMARKS.md.

    python -m bench.pg_query_bench --dir bench-data
    python -m bench.pg_query_bench --ship    # load with `output-service ship` instead
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import asyncpg

from bench.payload import pool_file
from bench.pg_query_data import load
from bench.query_bench import (
    PAGE_FILTERS,
    WEEK,
    Sampler,
    _free_port,
    export,
    hammer_urls,
    ingest_rate,
    query_loop_urls,
    timed,
    wait_for_port,
)
from bench.query_data import target_ip
from output_service.storage.postgres.summaries import build_pending

INGEST_S = 5.0  # each run of a pair (after loadgen's 1 s warm-up)
PAIRS = 3


def main() -> None:
    from tests.pg_server import start_pg_server

    parser = argparse.ArgumentParser(description="query API benchmark on PostgreSQL")
    parser.add_argument("--dir", type=Path, default=Path("bench-data"))
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument(
        "--ship",
        action="store_true",
        help="load with `output-service ship` (every row in today's partition)",
    )
    parser.add_argument(
        "--database-url",
        help="measure this database as it is (already shipped): no server, no ship",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgqbench-"))
    if args.database_url:
        try:
            figures: dict[str, object] = dict(_measure(args.database_url, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _report(figures, args.out)
        return
    pg = start_pg_server()
    try:
        url = pg.create_database("query")
        t0 = time.perf_counter()
        if args.ship:
            subprocess.run(
                [sys.executable, "-m", "output_service", "ship", "--database-url", url,
                 str(args.dir)],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            pg.psql("ANALYZE", "query")
        else:
            asyncio.run(load(url, sorted(args.dir.glob("results_*.db")), 1.0))
        figures = {"load_s": round(time.perf_counter() - t0, 1)}
        t0 = time.perf_counter()
        figures["summaries_built"] = len(asyncio.run(_summaries(url)))
        figures["summaries_s"] = round(time.perf_counter() - t0, 1)
        figures.update(_measure(url, work))
    finally:
        pg.stop("immediate")
        shutil.rmtree(pg.base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    _report(figures, args.out)


async def _summaries(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return await build_pending(conn, None)
    finally:
        await conn.close()


def _report(figures: dict[str, object], out: Path) -> None:
    print(json.dumps(figures, indent=2))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with out.open("a") as fh:
        fh.write(
            f"\n## Query API on PostgreSQL (`python -m bench.pg_query_bench`, {stamp})\n\n"
            "The same 700,000 results in one database over 7 daily partitions; medians at the"
            " client,"
            " one run on the shared 2-core machine.\n\n"
            "| figure | value |\n|---|---|\n"
            + "".join(f"| {k} | {v} |\n" for k, v in figures.items())
        )


def _wait_ready(base: str, limit_s: float = 600.0) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=10) as resp:
                if resp.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def _measure(url: str, work: Path) -> dict[str, object]:
    pool = pool_file(work, 10, 100, 400_000)
    port, health = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "output_service", "--storage", "postgres", "--database-url", url,
         "--db-dir", str(work / "data"), "--host", "127.0.0.1", "--port", str(port),
         "--health-port", str(health), "--input-url", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(health)
        base = f"http://127.0.0.1:{health}"
        _wait_ready(base)  # start-up builds the closed partitions' hop-IP indexes first
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{base}/api/targets", timeout=120) as resp:
            resp.read()
        cold = {"targets_all_first_after_start_ms": round((time.perf_counter() - t0) * 1000)}
        figures = cold | asyncio.run(_queries(base, proc.pid))
        return figures | _ingest(base, f"http://127.0.0.1:{port}/results", pool)
    finally:
        proc.terminate()
        proc.wait(30)


async def _queries(base: str, pid: int) -> dict[str, object]:
    """The query figures of `bench.query_bench.measure`, same requests and medians."""
    out: dict[str, object] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
        out["targets_all_ms"] = round(await timed(s, f"{base}/api/targets"), 1)
        weeks = [f"{base}/api/targets/{target_ip(k)}?{WEEK}&step=1h" for k in (1, 500, 4999)]
        out["target_week_1h_ms"] = round(
            statistics.median([await timed(s, u, 3) for u in weeks]), 1
        )
        for name, q in PAGE_FILTERS.items():
            out[f"results_page_{name}_ms"] = round(
                await timed(s, f"{base}/api/results?limit=100&{q}"), 1
            )
        routes = [f"{base}/api/routes?ip={target_ip(k)}&{WEEK}" for k in (1, 500, 4999)]
        out["routes_week_ms"] = round(statistics.median([await timed(s, u, 3) for u in routes]), 1)
        with Sampler(pid) as few:
            await export(s, f"{base}/api/results?format=ndjson&ip={target_ip(3)}")
        rates = []
        with Sampler(pid) as many:
            for _ in range(3):
                lines, seconds = await export(s, f"{base}/api/results?format=ndjson")
                rates.append(lines / seconds)
        out["export_results"] = lines
        out["export_results_per_s"] = round(statistics.median(rates))
        out["export_results_per_s_runs"] = " ".join(f"{r:,.0f}" for r in rates)
        out["export_peak_rss_mb_all"] = round(many.peak / 1024, 1)
        out["export_peak_rss_mb_one_target"] = round(few.peak / 1024, 1)
    return out


def _ingest(base: str, results_url: str, pool: Path) -> dict[str, object]:
    """Ingest while reader clients loop, against ingest alone just before: PAIRS pairs of
    runs, the median of the pairs' ratios (other jobs on the shared machine move the
    rate by 2x within a minute; a pair is measured within seconds). The readers run
    in a process of their own at nice 19 (`bench.pg_readers`), so they take only the
    CPU the service, the database and the posting clients leave."""
    out: dict[str, object] = {}
    alone_all: list[float] = []
    for name, urls, clients in (
        ("one_query_loop", query_loop_urls(base), 1),
        ("20_readers", hammer_urls(base), 20),
        ("20_health_readers", [f"{base}/health"], 20),  # the control: nothing read
    ):
        ratios, counts = [], dict[str, int]()
        for _ in range(PAIRS):
            alone = ingest_rate(results_url, pool, INGEST_S)
            readers = subprocess.Popen(
                [sys.executable, "-m", "bench.pg_readers", "--clients", str(clients),
                 "--seconds", str(INGEST_S + 2), *urls],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                rate = ingest_rate(results_url, pool, INGEST_S)
            finally:
                seen, _ = readers.communicate(timeout=120)
            for status, n in json.loads(seen).items():
                counts[status] = counts.get(status, 0) + n
            alone_all.append(alone)
            ratios.append(rate / alone)
        out[f"ingest_with_{name}_kept_pct"] = round(100 * statistics.median(ratios), 1)
        out[f"ingest_with_{name}_kept_pct_pairs"] = " ".join(f"{100 * r:.0f}" for r in ratios)
        out[f"ingest_with_{name}_reader_statuses"] = counts
    out["ingest_alone_results_per_s"] = round(statistics.median(alone_all))
    out["ingest_alone_range"] = f"{min(alone_all):,.0f}-{max(alone_all):,.0f}"
    out["load_average_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return out


if __name__ == "__main__":
    main()
