"""`make profile`: where the service's time goes per result, under load.

Starts the service, samples every thread of it with py-spy (a sampling profiler
in its own process: it does not slow the service much and sees the SQLite
writer thread, which an in-process profiler of the event loop would miss),
drives it with the load generator, and prints the samples grouped by stage of
the hot path, as milliseconds per 1,000 results.

    python -m bench.profile [--batch 100] [--concurrency 8] [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import linecache
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench import loadgen, wrk_cell
from bench.payload import HOPS, pool_file
from bench.run import OUT, POOL
from bench.server import Server

RATE = 250  # samples per second per thread

# (stage, test on a frame "function (file:line)" and its source line); leaf first wins
STAGES: list[tuple[str, str]] = [
    ("sqlite: insert traceroute_hops", "_HOPS.run("),
    ("sqlite: insert traceroute_results", "_TRACES.run("),
    ("sqlite: insert ping_results", "_PINGS.run("),
    ("sqlite: batches row", "_INSERT_BATCH"),
    ("sqlite: batches row", "_BATCHES.run("),
    ("sqlite: BEGIN/COMMIT (fsync)", 'execute("COMMIT")'),
    ("sqlite: BEGIN/COMMIT (fsync)", 'execute("BEGIN IMMEDIATE")'),
    ("rows: build tuples", "ResultsFile._add_batch"),
    ("hook: before_commit", "before_commit"),
    ("hook: before_commit", "hops/"),
    ("decode: msgspec + checks", "decode_batch"),
    ("http: read body", "read_body"),
    ("http: json response", "json_response"),
    ("logging: request line", "structlog"),
    ("metrics", "prometheus_client"),
    ("storage.submit/futures", "Store.submit"),
    ("aiohttp: parse/dispatch/write", "aiohttp/"),
    ("asyncio: event loop", "asyncio/"),
]


def stage_of(stack: str) -> str:
    """The first stage matching the stack, from the leaf frame up."""
    frames = stack.split(";")
    for frame in reversed(frames):
        source = ""
        if "(" in frame and frame.endswith(")"):
            location = frame[frame.rfind("(") + 1 : -1]
            path, _, line = location.rpartition(":")
            if line.isdigit() and path.startswith("output_service/"):
                source = linecache.getline(path, int(line))
        for stage, needle in STAGES:
            if needle in frame or needle in source:
                return stage
    return "other"


def summarise(raw: Path, results: int) -> str:
    threads: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        head = stack.split(";", 1)[0]  # "thread (1234): sqlite-writer_0"
        thread = head.split(": ", 1)[1] if head.startswith("thread") else "?"
        threads["writer thread" if thread.startswith("sqlite-writer") else "event loop"] += int(
            count
        )
        stages[stage_of(stack)] += int(count)
    total = sum(stages.values())
    per_k = 1000 / max(results, 1)
    lines = [
        f"{results:,} results stored while sampling; {total:,} samples at {RATE}/s per thread",
        "",
        "| stage | share of samples | ms per 1,000 results |",
        "|---|---:|---:|",
    ]
    for stage, n in stages.most_common():
        lines.append(f"| {stage} | {100 * n / total:.1f}% | {n / RATE * 1000 * per_k:.1f} |")
    lines.append("")
    for thread, n in threads.most_common():
        lines.append(
            f"- {thread}: {n / RATE:.1f} s busy "
            f"({n / RATE * 1000 * per_k:.1f} ms per 1,000 results)"
        )
    return "\n".join(lines)


def _loadgen(server: Server, pool: Path, args: argparse.Namespace) -> int:
    """Drive the service with bench.loadgen; the results it stored."""
    gen = subprocess.run(
        loadgen.argv(
            server.url,
            pool,
            batch=args.batch,
            hops=args.hops,
            duration=args.duration,
            warmup=0,
            concurrency=args.concurrency,
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    return int(json.loads(gen.stdout.splitlines()[-1])["stored_results"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--hops", type=int, default=HOPS)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--hop-loop", action="store_true", help="the hop loop on, posting to a loopback stub"
    )
    parser.add_argument(
        "--wrk", action="store_true", help="drive one-result requests with wrk (bench.wrk_cell)"
    )
    args = parser.parse_args()
    if args.wrk and args.batch != 1:
        raise SystemExit("--wrk sends one-result requests: use it with --batch 1")
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    pool = pool_file(OUT, args.hops, args.batch, POOL[args.hops])
    raw = OUT / "profile.txt"
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        script = wrk_cell.write_script(Path(tmp), args.hops) if args.wrk else None
        stub = Server.trivial(Path(tmp) / "input", "input") if args.hop_loop else None
        extra = ["--input-url", stub.url.replace("/results", "/hops")] if stub else []
        server = Server.service(Path(tmp), *extra)
        try:
            spy = subprocess.Popen(
                [
                    spy_bin,
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--rate",
                    str(RATE),
                    "--duration",
                    str(int(args.duration)),
                    "--format",
                    "raw",
                    "--threads",
                    "--nonblocking",
                    "-o",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
            )
            if script is not None:
                done = wrk_cell.measure(server, script, args.concurrency, args.duration)
                stored = int(done["requests"] - done["non2xx"])
            else:
                stored = _loadgen(server, pool, args)
            if spy.wait(timeout=60) != 0:
                raise SystemExit("py-spy failed (it needs ptrace: run as root or allow it)")
        finally:
            server.stop()
            if stub is not None:
                stub.stop()
    print(f"batch {args.batch}, {args.hops} hops, concurrency {args.concurrency}; raw: {raw}\n")
    print(summarise(raw, stored))


if __name__ == "__main__":
    main()
