"""The query API's figures on PostgreSQL, on the same data as `make bench-query`.

Starts its own PostgreSQL (as the tests do: `initdb`/`pg_ctl` in a temp dir),
ships `bench.query_data`'s files into it with `output-service ship` (700,000
results with 10-hop traceroutes), runs `ANALYZE` (what autovacuum would
do soon after a load), starts the service as a process with `--storage
postgres`, and takes the same measurements as `bench.query_bench.measure`.
Prints the figures and appends a section to BENCHMARKS.md.

    python -m bench.pg_query_bench --dir bench-data
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.payload import pool_file
from bench.query_bench import _free_port, measure, wait_for_port


def main() -> None:
    from tests.pg_server import start_pg_server

    parser = argparse.ArgumentParser(description="query API benchmark on PostgreSQL")
    parser.add_argument("--dir", type=Path, default=Path("bench-data"))
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
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
        subprocess.run(
            [sys.executable, "-m", "output_service", "ship", "--database-url", url, str(args.dir)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        ship_s = time.perf_counter() - t0
        pg.psql("ANALYZE", "query")
        figures = {"ship_s": round(ship_s, 1)}
        figures.update(_measure(url, work))
    finally:
        pg.stop("immediate")
        shutil.rmtree(pg.base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    _report(figures, args.out)


def _report(figures: dict[str, object], out: Path) -> None:
    print(json.dumps(figures, indent=2))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with out.open("a") as fh:
        fh.write(
            f"\n## Query API on PostgreSQL (`python -m bench.pg_query_bench`, {stamp})\n\n"
            "The same 700,000 results, shipped into one database; medians at the client,"
            " one run on the shared 2-core machine.\n\n"
            "| figure | value |\n|---|---|\n"
            + "".join(f"| {k} | {v} |\n" for k, v in figures.items())
        )


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
        return asyncio.run(measure(base, f"http://127.0.0.1:{port}/results", proc.pid, pool))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
