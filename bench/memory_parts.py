"""Peak RSS of one cell taken apart: SQLite, malloc, Python, the rest.

Runs a `bench.run` cell (default: 1,000 results with 10-hop traceroutes at 64
connections, the worst for memory) against the service with
bench.memory_probe inside it, once per setting given, and prints what was
resident at the highest RSS of the run:

    python -m bench.memory_parts [--cell service/10/1000/c64] [--runs 2] \
        [--setting default] [--setting cache_size_mb=16] [--setting MALLOC_ARENA_MAX=2]

A setting `name=value` in lower case is the service's (OUTPUT_SERVICE_NAME),
in upper case an environment variable as given; `+` joins several.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.run import Cell, run_cell


def _env(setting: str) -> dict[str, str]:
    env: dict[str, str] = {}
    if setting == "default":
        return env
    for part in setting.split("+"):
        name, value = part.split("=", 1)
        env[name if name.isupper() else f"OUTPUT_SERVICE_{name.upper()}"] = value
    return env


def _cell(key: str) -> Cell:
    server, hops, batch, conc = key.split("/")
    return Cell(f"memprobe{server.removeprefix('service')}", int(hops), int(batch), int(conc[1:]))


def measure(cell: Cell, setting: str, tmp: Path, duration: float) -> dict[str, Any]:
    out = tmp / "memprobe.json"
    env = {**_env(setting), "MEMPROBE_OUT": str(out)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = run_cell(cell, tmp / "cell", duration, 0.5)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    probe = json.loads(out.read_text())
    return {"result": result, "probe": probe}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="service/10/1000/c64")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--setting", action="append", default=[])
    args = parser.parse_args()
    settings = args.setting or ["default"]
    cell = _cell(args.cell)
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory(prefix="memparts-") as tmp:
        for _ in range(args.runs):
            for setting in settings:  # interleaved, so a drift of the machine hits all
                rows[setting].append(measure(cell, setting, Path(tmp), args.duration))
    print(
        "| setting | results/s | p99 ms | non-200 | peak RSS MB | at peak: SQLite MB "
        "| malloc in use MB | malloc free held MB | SQLite peak MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for setting, got in rows.items():

        def med(pick: Any, got: list[dict[str, Any]] = got) -> float:
            return float(statistics.median(pick(g) for g in got))

        bad = sum(n for g in got for s, n in g["result"]["statuses"].items() if s != "200")
        print(
            f"| {setting} | {med(lambda g: g['result']['results_per_s']):,.0f} "
            f"| {med(lambda g: g['result']['p99_ms']):.1f} | {bad} "
            f"| {max(g['result']['peak_rss_mb'] for g in got):.0f} "
            f"| {med(lambda g: g['probe']['at_peak_rss']['sqlite_mb']):.1f} "
            f"| {med(lambda g: g['probe']['at_peak_rss']['malloc_in_use_mb']):.1f} "
            f"| {med(lambda g: g['probe']['at_peak_rss']['malloc_free_held_mb']):.1f} "
            f"| {med(lambda g: g['probe']['peaks']['sqlite_mb']):.1f} |"
        )


if __name__ == "__main__":
    main()
