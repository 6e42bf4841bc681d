"""`make bench`: the whole comparison in one run, printed as one table.

For each run: the SQLite ceiling (bench.ceiling) for both shapes, then every
cell of the matrix against a fresh server process with an empty db_dir (so each
cell starts on an empty file, like the ceiling), then an open-loop latency run
at half the best closed-loop rate for 100-result batches. Figures are medians
over the runs with their min-max spread; the raw figures go to .bench/.

    python -m bench.run [--quick] [--runs 3] [--duration 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import ceiling, loadgen
from bench.payload import HOPS, pool_file, shape_name
from bench.server import Server, machine_cpu_seconds

OUT = Path(".bench")


@dataclass(frozen=True)
class Cell:
    server: str  # "service", "service+hops", "naive", "trivial" or a bench.variant_service variant
    hops: int
    batch: int
    concurrency: int = 0
    rate: float | None = None  # requests/s for an open-loop cell

    @property
    def key(self) -> str:
        load = f"rate{self.rate:g}" if self.rate else f"c{self.concurrency}"
        return f"{self.server}/{self.hops}/{self.batch}/{load}"


def matrix() -> list[Cell]:
    cells = [
        Cell("service", hops, batch, conc)
        for hops in (HOPS, 0)
        for batch in (1, 100, 1000)
        for conc in (1, 8, 64)
    ]
    cells += [Cell("naive", HOPS, batch, conc) for batch in (100, 1000) for conc in (1, 8, 64)]
    # the two references of issue 15: the hop loop on (a loopback input service), and
    # a trivial aiohttp handler for the one-result cells
    cells += [Cell("service+hops", HOPS, 100, 8), Cell("trivial", HOPS, 1, 64)]
    cells += [Cell("trivial", 0, 1, 64)]
    return cells


def variant_matrix(variants: list[str]) -> list[Cell]:
    """`--variants a,b`: the service and each variant, interleaved, on the cells
    where the hot path matters."""
    cells = (
        (HOPS, 100, 8),
        (HOPS, 100, 64),
        (HOPS, 1000, 8),
        (HOPS, 1000, 64),
        (HOPS, 1, 64),
        (0, 1, 64),
        (0, 100, 8),
    )
    compared = [
        Cell(server, hops, batch, conc)
        for hops, batch, conc in cells
        for server in ("service", *variants)
    ]
    # the one-result cells' reference, so `x trivial` has a value for every variant
    return [*compared, Cell("trivial", HOPS, 1, 64), Cell("trivial", 0, 1, 64)]


POOL = {HOPS: 160_000, 0: 400_000}  # distinct results per shape: more than a cell sends


def run_cell(cell: Cell, workdir: Path, duration: float, warmup: float) -> dict[str, Any]:
    """One server process, one load generator process, one measured window."""
    shutil.rmtree(workdir, ignore_errors=True)
    pool = pool_file(OUT, cell.hops, cell.batch, POOL[cell.hops])
    input_service = None
    if cell.server == "naive":
        server = Server.naive(workdir)
    elif cell.server == "trivial":
        server = Server.trivial(workdir)
    elif cell.server.endswith("+hops"):  # the hop loop on, posting to a loopback stub
        input_service = Server.trivial(workdir / "input", "input")
        hops_url = input_service.url.replace("/results", "/hops")
        variant = cell.server.removesuffix("+hops").replace("service", "")
        server = Server.service(workdir, "--input-url", hops_url, variant=variant)
    else:
        variant = "" if cell.server == "service" else cell.server
        server = Server.service(workdir, variant=variant)
    try:
        # a closed loop is in steady state only once every connection has had a reply:
        # large batches at high concurrency wait seconds in the queue, so warm up longer
        warmup = max(warmup, cell.concurrency * cell.batch * (cell.hops + 2) / 150_000)
        argv = loadgen.argv(
            server.url,
            pool,
            batch=cell.batch,
            hops=cell.hops,
            duration=duration,
            warmup=warmup,
            concurrency=cell.concurrency,
            rate=cell.rate,
        )
        gen = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert gen.stdout is not None
        cpu: dict[str, float] = {}
        machine: dict[str, float] = {}
        result: dict[str, Any] = {}
        for line in gen.stdout:
            message = json.loads(line)
            phase = message.get("phase")
            if phase in ("measure", "end"):
                cpu[phase] = server.cpu_seconds()
                machine[phase] = machine_cpu_seconds()
            else:
                result = message
        if gen.wait(timeout=120) != 0 or not result:
            raise RuntimeError(f"load generator failed for {cell.key}")
        result["server_cpu_pct"] = 100 * (cpu["end"] - cpu["measure"]) / duration
        busy = 100 * (machine["end"] - machine["measure"]) / duration
        result["others_cpu_pct"] = max(
            0.0, busy - result["server_cpu_pct"] - result["client_cpu_pct"]
        )
        result["peak_rss_mb"] = server.peak_rss_mb()
    finally:
        code = server.stop()
        if input_service is not None:
            input_service.stop()
    result["exit_code"] = code
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def run_once(
    cells: list[Cell], args: argparse.Namespace, tmp: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    out: dict[str, Any] = {"ceiling": {}, "cells": {}}
    for hops, volume in ((HOPS, args.ceiling_results), (0, args.ceiling_results * 3)):
        # without traceroutes the hop-IP index is empty: seed and live schema are the same
        out["ceiling"][str(hops)] = ceiling.measure(tmp, volume, hops, hop_ip_index=hops > 0)
        say(f"  ceiling {shape_name(hops)}: {out['ceiling'][str(hops)]['results_per_s']:,.0f}/s")
    no_index = ceiling.measure(tmp, args.ceiling_results, HOPS, hop_ip_index=False)
    out["ceiling"]["no_hop_index"] = no_index
    for cell in cells:
        out["cells"][cell.key] = run_cell(cell, tmp / "cell", args.duration, args.warmup)
        say(f"  {cell.key}: {out['cells'][cell.key]['results_per_s']:,.0f}/s")
    rates = [out["cells"][c.key]["results_per_s"] for c in cells if _is_100_hops(c)]
    if not rates:  # --only without the 100-result cells: no rate to halve
        return out
    rate = round(max(rates) / 2 / 100, 1)
    open_cell = Cell("service", HOPS, 100, rate=rate)
    out["open_loop"] = run_cell(open_cell, tmp / "cell", args.open_duration, args.warmup)
    out["open_loop"]["rate_requests_per_s"] = rate
    say(f"  open loop {rate} req/s: p99 {out['open_loop']['p99_ms']:.1f} ms")
    return out


def _is_100_hops(cell: Cell) -> bool:
    return cell.server == "service" and cell.batch == 100 and cell.hops == HOPS


def median_spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def render(runs: list[dict[str, Any]], cells: list[Cell]) -> str:
    """The markdown table: medians, spreads, % of the same-volume ceiling, x naive."""

    def vals(key: str, field: str) -> list[float]:
        return [float(r["cells"][key][field]) for r in runs]

    def live_ratio(cell: Cell) -> str:
        """results/s over the live-schema ceiling (no hop-IP index) for the same volume."""
        out = []
        for r in runs:
            res = r["cells"][cell.key]
            top = ceiling.rate_at(
                r["ceiling"]["no_hop_index" if cell.hops else "0"], res["stored_results"]
            )
            out.append(res["results_per_s"] / top)
        return f"{statistics.median(out):.2f}"

    def trivial_ratio(cell: Cell) -> str:
        """requests/s over the trivial handler's in the same run (one-result cells)."""
        key = Cell("trivial", cell.hops, cell.batch, cell.concurrency).key
        if cell.server == "trivial" or key not in runs[0]["cells"]:
            return ""
        out = [
            r["cells"][cell.key]["results_per_s"] / r["cells"][key]["results_per_s"] for r in runs
        ]
        return f"{statistics.median(out):.2f}"

    def cpu_per_result(cell: Cell) -> list[float]:
        """The server's CPU (both threads) per stored result: what a change removes,
        and steadier than the rate while others use the cores."""
        out = []
        for r in runs:
            res = r["cells"][cell.key]
            out.append(res["server_cpu_pct"] * 1e4 / max(res["results_per_s"], 1e-9))
        return out

    def pct_ceiling(cell: Cell) -> list[float]:
        out = []
        for r in runs:
            res = r["cells"][cell.key]
            top = ceiling.rate_at(r["ceiling"][str(cell.hops)], res["stored_results"])
            out.append(100 * res["results_per_s"] / top)
        return out

    lines = [
        "| server | shape | batch | conc | results/s (min-max) | % ceiling | x live ceiling "
        "| x trivial | x naive "
        "| p50 ms | p99 ms | server CPU % | server CPU us/result | peak RSS MB | client CPU % "
        "| others CPU % | non-200 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        rate, lo, hi = median_spread(vals(cell.key, "results_per_s"))
        naive_key = Cell("naive", cell.hops, cell.batch, cell.concurrency).key
        naive = (
            statistics.median(vals(naive_key, "results_per_s"))
            if (cell.server != "naive" and naive_key in runs[0]["cells"])
            else None
        )
        ratio = "" if naive is None else f"{rate / naive:.2f}" if naive else "inf"
        bad = sum(
            n for r in runs for s, n in r["cells"][cell.key]["statuses"].items() if s != "200"
        )
        lines.append(
            f"| {cell.server} | {shape_name(cell.hops)} | {cell.batch} | {cell.concurrency} "
            f"| {rate:,.0f} ({lo:,.0f}-{hi:,.0f}) | {statistics.median(pct_ceiling(cell)):.0f} "
            f"| {live_ratio(cell)} | {trivial_ratio(cell)} | {ratio} "
            f"| {statistics.median(vals(cell.key, 'p50_ms')):.1f} "
            f"| {statistics.median(vals(cell.key, 'p99_ms')):.1f} "
            f"| {statistics.median(vals(cell.key, 'server_cpu_pct')):.0f} "
            f"| {statistics.median(cpu_per_result(cell)):.1f} "
            f"| {max(vals(cell.key, 'peak_rss_mb')):.0f} "
            f"| {statistics.median(vals(cell.key, 'client_cpu_pct')):.0f} "
            f"| {statistics.median(vals(cell.key, 'others_cpu_pct')):.0f} | {bad} |"
        )
    lines.append("")
    for name, label in (
        (str(HOPS), shape_name(HOPS)),
        ("0", shape_name(0)),
        ("no_hop_index", f"{shape_name(HOPS)}, no index on traceroute_hops.ip"),
    ):
        rate, lo, hi = median_spread([r["ceiling"][name]["results_per_s"] for r in runs])
        n = runs[0]["ceiling"][name]["results"]
        lines.append(
            f"- ceiling, {label}: {rate:,.0f} results/s ({lo:,.0f}-{hi:,.0f}) "
            f"for {n:,} results into an empty file"
        )
    ol = [r["open_loop"] for r in runs if "open_loop" in r]
    if not ol:
        return "\n".join(lines)
    p99, lo, hi = median_spread([o["p99_ms"] for o in ol])
    lines.append(
        f"- open loop, 100-result batches with {HOPS}-hop traceroutes at half the best "
        f"closed-loop rate ({statistics.median([o['rate_requests_per_s'] for o in ol]):g} "
        f"requests/s): p50 {statistics.median([o['p50_ms'] for o in ol]):.1f} ms, "
        f"p99 {p99:.1f} ms ({lo:.1f}-{hi:.1f}), max {max(o['max_ms'] for o in ol):.1f} ms, "
        f"achieved {statistics.median([o['results_per_s'] for o in ol]):,.0f} results/s"
    )
    return "\n".join(lines)


def machine() -> str:
    import os

    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="output-service benchmark")
    parser.add_argument("--quick", action="store_true", help="one short run (~1.5 min)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--open-duration", type=float, default=5.0)
    parser.add_argument("--ceiling-results", type=int, default=80000)
    parser.add_argument(
        "--only", default="", help="run only cells whose key contains this (or any of a,b,...)"
    )
    parser.add_argument(
        "--variants", default="", help="compare the service with bench.variant_service variants"
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration, args.warmup = 1, 1.5, 0.3
        args.open_duration, args.ceiling_results = 3.0, 40000
    chosen = variant_matrix(args.variants.split(",")) if args.variants else matrix()
    wanted = args.only.split(",")  # any of the comma-separated parts
    cells = [c for c in chosen if any(part in c.key for part in wanted)]
    OUT.mkdir(exist_ok=True)
    started = time.monotonic()
    print("preparing request bodies (cached in .bench/)", file=sys.stderr, flush=True)
    for cell in cells:
        pool_file(OUT, cell.hops, cell.batch, POOL[cell.hops])
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for n in range(args.runs):
            print(f"run {n + 1}/{args.runs}", file=sys.stderr, flush=True)
            runs.append(
                run_once(cells, args, Path(tmp), lambda s: print(s, file=sys.stderr, flush=True))
            )
            (OUT / "partial.json").write_text(json.dumps({"args": vars(args), "runs": runs}))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"`python -m bench.run {' '.join(sys.argv[1:])}`, {stamp}, {machine()}; "
        f"{args.runs} run(s), {args.duration:g} s per cell, took {time.monotonic() - started:.0f} s"
    )
    table = header + "\n\n" + render(runs, cells)
    (OUT / "last.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    (OUT / "last.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
