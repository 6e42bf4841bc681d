"""`make bench-data`: the query benchmark's data set, written straight with sqlite3.

5 retained files, 700,000 results with 10-hop traceroutes, from 50 nodes to
5,000 targets over 7 days, in the service's own schema (schema.migrate), the
first four sealed (with the hop-IP index), the last one live. Batches of 100
results from one node, as ping nodes send them. Each (node, target) pair takes
one of two paths, switching every ~6 hours, so /api/routes has changes to find.
Deterministic (seeded), so every run measures the same data.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from output_service.storage.sqlite.schema import add_sealed_indexes, migrate

FILES = 5
RESULTS = 700_000
NODES = 50
TARGETS = 5_000
HOPS = 10
DAYS = 7
BATCH = 100
START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def _text(moment: float) -> str:
    dt = datetime.fromtimestamp(moment, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{int(moment % 1 * 1e9):09d}Z"


def target_ip(k: int) -> str:
    return f"198.{18 + k // 65536}.{k // 256 % 256}.{k % 256}"


def write_file(path: Path, first: int, count: int, rng: random.Random, live: bool) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    migrate(conn)
    span = DAYS * 86400 / RESULTS
    pings, traces, hops, batches = [], [], [], []
    hop_id = 0
    for n in range(first, first + count):
        pid = n - first + 1
        if (pid - 1) % BATCH == 0:
            node = rng.randrange(NODES)
            bid = (pid - 1) // BATCH + 1
            arrived = START + (n + BATCH) * span
            batches.append(
                (bid, _text(arrived)[:26] + "Z", f"192.0.2.{node % 4 + 1}", f"node-{node:02d}",
                 None, None, min(BATCH, first + count - n))
            )  # fmt: skip
        target = rng.randrange(TARGETS)
        moment = START + n * span
        lost = rng.random() < 0.03
        loss = 100.0 if lost else rng.choice((0.0, 0.0, 0.0, 25.0))
        received = 0 if lost else 4 - int(loss // 25)
        rtt = 0 if lost else int(rng.lognormvariate(17, 0.4))
        pings.append((pid, target_ip(target), 4, received, loss, rtt, _text(moment),
                      "timeout" if lost else None, bid, None))  # fmt: skip
        traces.append((pid, pid, "icmp", 1, None))
        variant = (int(moment // 21600) + node + target) % 2
        for ttl in range(1, HOPS + 1):
            hop_id += 1
            timeout = ttl == 4
            ip = (
                None
                if timeout
                else f"10.{node}.{ttl * 10 + (variant if ttl == 6 else 0)}.{target % 200}"
            )
            hops.append((hop_id, pid, ttl, ip, 0 if timeout else ttl * 500_000, int(timeout)))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO batches VALUES (?,?,?,?,?,?,?)", batches)
    conn.executemany(
        "INSERT INTO ping_results (id, ip, sent, received, packet_loss, avg_rtt, timestamp,"
        " error, batch_id, raw) VALUES (?,?,?,?,?,?,?,?,?,?)",
        pings,
    )
    conn.executemany("INSERT INTO traceroute_results VALUES (?,?,?,?,?)", traces)
    conn.executemany("INSERT INTO traceroute_hops VALUES (?,?,?,?,?,?)", hops)
    conn.execute("COMMIT")
    if not live:
        add_sealed_indexes(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("bench-data"))
    parser.add_argument("--results", type=int, default=RESULTS)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(12)
    per_file = args.results // FILES
    started = time.monotonic()
    for f in range(FILES):
        moment = START + f * DAYS * 86400 / FILES
        name = f"results_{datetime.fromtimestamp(moment, UTC):%Y-%m-%d_%H-%M-%S}.db"
        path = args.dir / name
        for old in args.dir.glob(name + "*"):
            old.unlink()
        write_file(path, f * per_file, per_file, rng, live=f == FILES - 1)
        print(f"{name}: {per_file} results ({time.monotonic() - started:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
