"""PostgreSQL cells: one and three instances on one database vs one on SQLite.

Same shapes as `make bench` (10-hop results, 100 per request, closed loop), same
machine, one run. Each instance gets its own load generator process; results/s
is the sum, p99 the worst of them. The database's CPU is read from /proc for the
postmaster and every backend it forked, so the table shows when PostgreSQL
itself becomes the limit.

    python -m bench.pg_cells [--duration 5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.payload import HOPS, pool_file
from bench.server import CLK_TCK, Server, machine_cpu_seconds

OUT = Path(".bench")
BATCH = 100


def process_tree_cpu(root: int) -> float:
    """User + system CPU seconds of `root` and its children (PostgreSQL's backends)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a backend that just ended
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == root or ppid == root:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def run_cell(
    storage: str, instances: int, concurrency: int, duration: float, pg: Any, name: str
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="pgcell-"))
    pool = pool_file(OUT, HOPS, BATCH, 160_000)
    extra: list[str] = []
    if storage == "postgres":
        extra = ["--storage", "postgres", "--database-url", pg.create_database(name)]
    servers = [Server.service(work / f"i{i}", *extra) for i in range(instances)]
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0]) if pg else 0
    try:
        gens = [
            subprocess.Popen(
                loadgen.argv(
                    s.url,
                    pool,
                    batch=BATCH,
                    hops=HOPS,
                    duration=duration,
                    warmup=1.0,
                    concurrency=concurrency,
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            for s in servers
        ]
        marks: dict[str, tuple[float, float, float]] = {}
        results: list[dict[str, Any]] = []
        for gen in gens:
            assert gen.stdout is not None
            for line in gen.stdout:
                message = json.loads(line)
                phase = message.get("phase")
                if phase in ("measure", "end"):
                    if phase not in marks:  # the first generator's marks bound the window
                        marks[phase] = (
                            sum(s.cpu_seconds() for s in servers),
                            process_tree_cpu(postmaster) if postmaster else 0.0,
                            machine_cpu_seconds(),
                        )
                else:
                    results.append(message)
            gen.wait(timeout=120)
    finally:
        codes = [s.stop() for s in servers]
        shutil.rmtree(work, ignore_errors=True)
    (svc0, db0, m0), (svc1, db1, m1) = marks["measure"], marks["end"]
    return {
        "cell": f"{storage} x{instances}",
        "results_per_s": sum(r["results_per_s"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "service_cpu_pct": 100 * (svc1 - svc0) / duration,
        "db_cpu_pct": 100 * (db1 - db0) / duration,
        "machine_cpu_pct": 100 * (m1 - m0) / duration,
        "non_200": sum(v for r in results for k, v in r["statuses"].items() if k != "200"),
        "exit_codes": codes,
    }


def main() -> None:
    from tests.pg_server import start_pg_server

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8, help="connections per instance")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    pg = start_pg_server()
    rows = []
    try:
        cells = (("sqlite", 1), ("postgres", 1), ("postgres", 3))
        for n, (storage, instances) in enumerate(cells):
            rows.append(
                run_cell(storage, instances, args.concurrency, args.duration, pg, f"cell{n}")
            )
    finally:
        pg.stop("immediate")
        shutil.rmtree(pg.base, ignore_errors=True)
    base = rows[0]["results_per_s"]
    print("| cell | results/s | vs sqlite x1 | p99 ms | service CPU % | db CPU % | machine % |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['cell']} | {r['results_per_s']:,.0f} | {r['results_per_s'] / base:.2f} "
            f"| {r['p99_ms']:.0f} | {r['service_cpu_pct']:.0f} | {r['db_cpu_pct']:.0f} "
            f"| {r['machine_cpu_pct']:.0f} |"
        )
    (OUT / "pg_cells.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
