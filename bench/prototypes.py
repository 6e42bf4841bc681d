"""Measure storage ideas on the ceiling's rows before touching the service.

Each variant inserts the same results (10-hop traceroutes) into a fresh file,
as bench.ceiling does, changing one thing; printed as results/s over the whole
file and over its last fifth (a file slows down as it grows, and the last part
is what a full file costs). The "index at seal" variant also times building the
`traceroute_hops.ip` index afterwards, as rotation would do when it seals a file.

    python -m bench.prototypes [--results 100000]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import ceiling
from bench.payload import HOPS


def _variant(tmp: Path, total: int, **options: Any) -> dict[str, Any]:
    out = ceiling.measure(tmp, total, HOPS, keep=True, **options)
    curve = out["curve"]
    n0, t0 = next((n, t) for n, t in curve if n >= total * 0.8)
    out["last_fifth_per_s"] = (total - n0) / (out["seconds"] - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=100_000)
    args = parser.parse_args()
    n = args.results
    variants: list[tuple[str, dict[str, Any]]] = [
        ("seed schema, 1,000/txn (the ceiling)", {}),
        ("400/txn (4 requests of 100 per group)", {"per_txn": 400}),
        ("800/txn (8 requests of 100 per group)", {"per_txn": 800}),
        ("2,000/txn (the service's commit_max_results)", {"per_txn": 2000}),
        ("5,000/txn", {"per_txn": 5000}),
        ("synchronous=NORMAL", {"pragmas": ["synchronous=NORMAL"]}),
        ("wal_autocheckpoint=1000", {"pragmas": ["wal_autocheckpoint=1000"]}),
        ("cache_size 256 MB", {"pragmas": ["cache_size=-262144"]}),
        ("page_size 8192", {"page_size": 8192}),
        ("page_size 16384", {"page_size": 16384}),
        ("no index on traceroute_hops.ip (index at seal)", {"hop_ip_index": False}),
    ]
    print(f"{n:,} results with {HOPS}-hop traceroutes per variant\n")
    print("| variant | results/s, whole file | results/s, last fifth | file MB |")
    print("|---|---:|---:|---:|")
    for name, kw in variants:
        with tempfile.TemporaryDirectory(prefix="proto-") as tmp:
            out = _variant(Path(tmp), n, **kw)
            extra = ""
            if not kw.get("hop_ip_index", True):
                conn = sqlite3.connect(out["path"])
                started = time.perf_counter()
                conn.execute("CREATE INDEX idx_traceroute_hops_ip ON traceroute_hops(ip)")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.close()
                extra = f"; building the index at seal took {time.perf_counter() - started:.2f} s"
            print(
                f"| {name}{extra} | {out['results_per_s']:,.0f} | {out['last_fifth_per_s']:,.0f} "
                f"| {out['bytes'] / 1e6:.0f} |"
            )


if __name__ == "__main__":
    main()
