"""What makes the slow requests: garbage collections and the writer's groups,
timed from inside the service.

`python -m bench.variant_service tailprobe ...` (or `tailprobe+gcfreeze`, see
variant_service) starts `start()`: a `gc.callbacks` hook times every
collection (the event loop stops for it: every thread waits on the GIL), and
`ResultsFile.write_group` is wrapped to time each group's transaction (its
inserts and COMMIT, a checkpoint included when one falls due). At exit the
figures go to $TAILPROBE_OUT as JSON: per generation the number of collections,
their total and largest pause; the groups' p50/p99/max.

    python -m bench.tail_probe [--rate 73] [--variants tailprobe,tailprobe+gcfreeze]
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.payload import HOPS


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": _quantile(values, 0.5),
        "p99_ms": _quantile(values, 0.99),
        "max_ms": max(values, default=0.0),
    }


def start() -> None:
    path = os.environ.get("TAILPROBE_OUT")
    if not path:
        return
    from output_service.storage.sqlite import results_file

    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    groups: list[float] = []
    commits: list[float] = []
    began: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append((time.perf_counter() - began[0]) * 1000)

    gc.callbacks.append(on_gc)
    original = results_file.ResultsFile.write_group

    class TimedCommit:
        """The writer's connection with its COMMIT timed (a checkpoint runs in it)."""

        def __init__(self, conn: Any) -> None:
            self._conn = conn

        def execute(self, sql: str, *args: Any) -> Any:
            if sql != "COMMIT":
                return self._conn.execute(sql, *args)
            t0 = time.perf_counter()
            try:
                return self._conn.execute(sql, *args)
            finally:
                commits.append((time.perf_counter() - t0) * 1000)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

    def write_group(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        conn = self._conn
        self._conn = TimedCommit(conn)
        try:
            return original(self, *args, **kwargs)
        finally:
            self._conn = conn
            groups.append((time.perf_counter() - t0) * 1000)

    results_file.ResultsFile.write_group = write_group  # type: ignore[method-assign]

    def write() -> None:
        out = {
            "gc": {
                str(g): {"count": len(p), "total_ms": sum(p), "max_ms": max(p, default=0.0)}
                for g, p in pauses.items()
            },
            "groups": _summary(groups),
            "commits": _summary(commits),
        }
        Path(path).write_text(json.dumps(out))

    atexit.register(write)


def main() -> None:
    from bench.run import Cell, run_cell

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=73.0, help="requests/s (100 results)")
    parser.add_argument("--variants", default="tailprobe,tailprobe+gcfreeze")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    variants = args.variants.split(",")
    got: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="tailprobe-") as tmp:
        out = Path(tmp) / "tail.json"
        os.environ["TAILPROBE_OUT"] = str(out)
        for _ in range(args.runs):
            for variant in variants:
                cell = Cell(variant, HOPS, 100, rate=args.rate)
                result = run_cell(cell, Path(tmp) / "cell", args.duration, 0.5)
                got[variant].append({"result": result, "probe": json.loads(out.read_text())})
    print(
        "| variant | p50 ms | p99 ms | max ms | gen0 / gen1 / gen2 collections "
        "| gen2 max pause ms | all pauses ms | group p50 / p99 / max ms "
        "| COMMIT p50 / p99 / max ms |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---|---|")
    for variant, runs in got.items():
        for r in runs:
            res, probe = r["result"], r["probe"]
            gcs = probe["gc"]
            g, c = probe["groups"], probe["commits"]
            print(
                f"| {variant} | {res['p50_ms']:.1f} | {res['p99_ms']:.1f} | {res['max_ms']:.1f} "
                f"| {gcs['0']['count']} / {gcs['1']['count']} / {gcs['2']['count']} "
                f"| {gcs['2']['max_ms']:.1f} "
                f"| {sum(v['total_ms'] for v in gcs.values()):.0f} "
                f"| {g['p50_ms']:.1f} / {g['p99_ms']:.1f} / {g['max_ms']:.1f} "
                f"| {c['p50_ms']:.1f} / {c['p99_ms']:.1f} / {c['max_ms']:.1f} |"
            )
        p99 = statistics.median(r["result"]["p99_ms"] for r in runs)
        print(f"|  {variant}: median p99 {p99:.1f} ms | | | | | | | | |")


if __name__ == "__main__":
    main()
