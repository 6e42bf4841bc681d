"""One-result requests through wrk against N service processes sharing one port.

An upper bound for "more ingest processes sharing the port" (issue 15), not
the design itself: each process here is the whole service with a db_dir of
its own (its own writer and fsyncs), so the figure leaves out what handing
decoded rows to one writer would cost (a pipe or socket write per group, the
rows encoded and decoded once more) and counts N writers' commits instead of
one. Variants of each: the whole service, and `no-store` (HTTP, the
middlewares, the request line and decode, nothing written), against the
trivial aiohttp handler in one process, in the same run.

    python -m bench.reuseport [--processes 1,2] [--duration 4] [--runs 2]

`bench.variant_service reuseport` is the service with SO_REUSEPORT set on its
results socket, so that a second process can bind the first one's port.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench.payload import HOPS
from bench.server import Server
from bench.wrk_cell import measure, write_script


class Group:
    """Several server processes on one port, measured as one."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self.url = servers[0].url

    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds() for s in self.servers)

    def peak_rss_mb(self) -> float:
        return sum(s.peak_rss_mb() for s in self.servers)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start(work: Path, variant: str, processes: int) -> Group:
    first = Server.service(work / "0", variant=variant)
    servers = [first]
    try:
        for n in range(1, processes):
            servers.append(
                Server.service(work / str(n), "--port", str(first.port), variant=variant)
            )
    except BaseException:
        Group(servers).stop()
        raise
    return Group(servers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hops", type=int, default=HOPS)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    with tempfile.TemporaryDirectory(prefix="reuseport-") as tmp:
        script = write_script(Path(tmp), args.hops)
        for run in range(args.runs):
            row: dict[str, dict[str, float]] = {}
            work = Path(tmp) / "trivial"
            trivial = Server.trivial(work)
            try:
                row["trivial"] = measure(trivial, script, args.connections, args.duration)
            finally:
                trivial.stop()
            for variant in ("reuseport", "reuseport+no-store"):
                for n in counts:
                    work = Path(tmp) / f"{variant}-{n}"
                    shutil.rmtree(work, ignore_errors=True)
                    group = start(work, variant, n)
                    try:
                        got = measure(group, script, args.connections, args.duration)  # type: ignore[arg-type]
                    finally:
                        group.stop()
                    got["x_trivial"] = round(
                        got["requests_per_s"] / row["trivial"]["requests_per_s"], 3
                    )
                    row[f"{variant} x{n}"] = got
            print(json.dumps({"run": run + 1, "hops": args.hops, **row}))


if __name__ == "__main__":
    main()
