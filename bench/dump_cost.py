"""What a `/dump` of a ~100 MB live file costs ingest under full load.

The target: "a `/dump` of a 100 MB file under full load costs ingest less than
25% of its throughput". Each run starts the real service (no rotation) on an
empty db_dir, fills its live file (main file plus WAL, as on disk) to
`--fill-mb` with direct POSTs, then measures closed-loop ingest (100-result
batches with 10-hop traceroutes, `--concurrency` connections, the load
generator as its own process) in three windows of `--window` seconds:

1. without a dump,
2. while this process downloads `GET /dump` (results port, from loopback, so
   no token) over and over, streaming each download away and timing it,
3. without a dump again.

The baseline is the mean of windows 1 and 3: the live file grows during the
run and ingest slows as it does, so the two bracket the dump window. The cost
is 1 - (window 2 / baseline). Every window sends results that are not in the
file yet (the same bodies in every run). Figures are medians over `--runs`
with their min-max; the raw figures go to .bench/dump-cost.json. Timings are
reported, never asserted.

    python -m bench.dump_cost [--quick] [--runs 3] [--window 15] [--fill-mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import loadgen
from bench.payload import HOPS, make_body, shape_name
from bench.run import OUT, machine
from bench.server import Server, machine_cpu_seconds

BATCH = 100
MB = 1_000_000
# Bodies are made for a window's warm-up plus window at this many results/s; the
# service does ~12,000-17,000/s on the 2-core development machine. A window that
# sends more than its bodies wraps around (re-sends), which is reported.
HEADROOM_RESULTS_PER_S = 20_000
# A live file holds ~550 bytes per 10-hop result (no hop-IP index); bodies for the
# fill are made for a conservative 350 so that they do not run out first.
FILL_BYTES_PER_RESULT = 350
FILL_CONCURRENCY = 16
# Seeds of make_body, one range per role, so every window gets results of its own.
SEEDS = {"fill": 1_000_000, "before": 2_000_000, "during": 3_000_000, "after": 4_000_000}
WINDOWS = ("before", "during", "after")
READ_BYTES = 1 << 20


def bodies_file(role: str, lines: int) -> Path:
    """`lines` distinct 100-result bodies for one role, made once and kept in .bench/."""
    path = OUT / f"dump-cost-{role}-{lines}.jsonl"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            for n in range(lines):
                fh.write(make_body(BATCH, HOPS, SEEDS[role] + n))
                fh.write(b"\n")
        tmp.replace(path)
    return path


def live_bytes(data_dir: Path) -> int:
    """Main file plus WAL of every results file (with rotation off there is one)."""
    total = 0
    for db in data_dir.glob("results_*.db"):
        for part in (db, db.with_name(db.name + "-wal")):
            if part.exists():
                total += part.stat().st_size
    return total


async def _fill(url: str, bodies: list[bytes], data_dir: Path, target: int) -> int:
    """POST bodies (each once) until the live file reaches `target` bytes; results stored."""
    stored = 0
    next_body = 0
    done = False
    connector = aiohttp.TCPConnector(limit=FILL_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal stored, next_body, done
            while not done:
                if next_body >= len(bodies):
                    raise RuntimeError("ran out of fill bodies before the file reached its size")
                body = bodies[next_body]
                next_body += 1
                headers = {"Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        stored += BATCH
                    elif resp.status == 503:
                        await asyncio.sleep(float(resp.headers.get("Retry-After", 1)))
                    else:
                        raise RuntimeError(f"fill POST answered {resp.status}")
                if live_bytes(data_dir) >= target:
                    done = True

        await asyncio.gather(*(worker() for _ in range(FILL_CONCURRENCY)))
    return stored


@dataclass
class DumpRecord:
    status: int
    bytes: int
    first_byte_s: float  # request to response headers: the snapshot and its index build
    total_s: float  # request to last byte


@dataclass
class DumpLoop:
    """GET /dump again and again on a thread until told to stop; the download in
    progress then completes. Each download is read into one reused buffer and
    dropped, as if streamed to /dev/null."""

    port: int
    records: list[DumpRecord] = field(default_factory=list)
    cpu_s: float = 0.0
    error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dump-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the last /dump did not finish within {timeout:g} s")

    def _run(self) -> None:
        cpu = time.thread_time()
        buf = memoryview(bytearray(READ_BYTES))
        try:
            while not self._stop.is_set():
                record = self._one(buf)
                self.records.append(record)
                if record.status != 200:
                    self._stop.wait(1.0)  # a 503 asks to come back later
        except Exception as exc:  # reported by the driver, which fails the run
            self.error = repr(exc)
        self.cpu_s = time.thread_time() - cpu

    def _one(self, buf: memoryview) -> DumpRecord:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        try:
            conn.request("GET", "/dump")
            resp = conn.getresponse()
            first = time.monotonic()
            size = 0
            while n := resp.readinto(buf):
                size += n
            if resp.status == 200 and size != int(resp.headers.get("Content-Length", -1)):
                raise RuntimeError(f"/dump ended after {size} bytes")
        finally:
            conn.close()
        return DumpRecord(resp.status, size, first - started, time.monotonic() - started)


def measure_window(
    server: Server, bodies: Path, args: argparse.Namespace, data_dir: Path, dump: bool
) -> dict[str, Any]:
    """One load generator process (closed loop) and one measured window; with `dump`,
    a /dump loop runs from the window's first to its last moment."""
    argv = loadgen.argv(
        server.url,
        bodies,
        batch=BATCH,
        hops=HOPS,
        duration=args.window,
        warmup=args.warmup,
        concurrency=args.concurrency,
    )
    loop = DumpLoop(server.port) if dump else None
    gen = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert gen.stdout is not None
    at: dict[str, dict[str, float]] = {}
    result: dict[str, Any] = {}
    try:
        for line in gen.stdout:
            message = json.loads(line)
            phase = message.get("phase")
            if phase in ("measure", "end"):
                at[phase] = {
                    "server_cpu": server.cpu_seconds(),
                    "machine_cpu": machine_cpu_seconds(),
                    "live_bytes": live_bytes(data_dir),
                }
                if loop is not None and phase == "measure":
                    loop.start()
                elif loop is not None:
                    loop.stop()
            else:
                result = message
        code = gen.wait(timeout=120)
    finally:
        if loop is not None:
            loop.stop()
            loop.join(timeout=300)
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    if code != 0 or not result or set(at) != {"measure", "end"}:
        raise RuntimeError(f"load generator failed (exit code {code})")
    window = args.window
    result["server_cpu_pct"] = (
        100 * (at["end"]["server_cpu"] - at["measure"]["server_cpu"]) / window
    )
    busy = 100 * (at["end"]["machine_cpu"] - at["measure"]["machine_cpu"]) / window
    result["live_mb_start"] = at["measure"]["live_bytes"] / MB
    result["live_mb_end"] = at["end"]["live_bytes"] / MB
    result["bodies"] = args.window_lines * BATCH
    result["dump_client_cpu_pct"] = 0.0
    result["dumps"] = []
    if loop is not None:
        if loop.error:
            raise RuntimeError(f"/dump loop failed: {loop.error}")
        # the last download finishes after the window: its CPU is spread over the window
        result["dump_client_cpu_pct"] = 100 * loop.cpu_s / window
        result["dumps"] = [asdict(r) for r in loop.records]
    others = busy - result["server_cpu_pct"] - result["client_cpu_pct"]
    result["others_cpu_pct"] = max(0.0, others - result["dump_client_cpu_pct"])
    return result


def run_once(args: argparse.Namespace, tmp: Path, fill_bodies: Path) -> dict[str, Any]:
    workdir = tmp / "service"
    shutil.rmtree(workdir, ignore_errors=True)
    data_dir = workdir / "data"
    server = Server.service(workdir)
    out: dict[str, Any] = {"windows": {}}
    try:
        started = time.monotonic()
        bodies = fill_bodies.read_bytes().splitlines()
        out["fill_results"] = asyncio.run(
            _fill(server.url, bodies, data_dir, int(args.fill_mb * MB))
        )
        out["fill_s"] = time.monotonic() - started
        out["fill_mb"] = live_bytes(data_dir) / MB
        say(
            f"  filled {out['fill_mb']:.0f} MB ({out['fill_results']:,} results) "
            f"in {out['fill_s']:.0f} s"
        )
        for name in WINDOWS:
            res = measure_window(server, args.bodies[name], args, data_dir, dump=(name == "during"))
            out["windows"][name] = res
            extra = ""
            if res["dumps"]:
                sizes = [d["bytes"] / MB for d in res["dumps"]]
                extra = f", {len(sizes)} dump(s) of {min(sizes):.0f}-{max(sizes):.0f} MB"
            say(
                f"  {name}: {res['results_per_s']:,.0f} results/s, p99 {res['p99_ms']:.0f} ms, "
                f"file {res['live_mb_start']:.0f}->{res['live_mb_end']:.0f} MB{extra}"
            )
    finally:
        out["exit_code"] = server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    w = out["windows"]
    out["baseline"] = (w["before"]["results_per_s"] + w["after"]["results_per_s"]) / 2
    out["cost_pct"] = 100 * (1 - w["during"]["results_per_s"] / out["baseline"])
    return out


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def spread(values: list[float], fmt: str = ",.0f") -> str:
    return (
        f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"
        if values
        else "-"
    )


def render(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def win(name: str, key: str) -> list[float]:
        return [float(r["windows"][name][key]) for r in runs]

    label = {"before": "1. no dump", "during": "2. /dump in a loop", "after": "3. no dump"}
    lines = [
        "| window | results/s | p50 ms | p99 ms | max ms | server CPU % | load gen CPU % "
        "| dump client CPU % | others CPU % | live file MB (start-end) | non-200 | re-sent |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in WINDOWS:
        bad = sum(n for r in runs for s, n in r["windows"][name]["statuses"].items() if s != "200")
        resent = sum(
            max(0, r["windows"][name]["stored_results"] - r["windows"][name]["bodies"])
            for r in runs
        )
        lines.append(
            f"| {label[name]} | {spread(win(name, 'results_per_s'))} "
            f"| {spread(win(name, 'p50_ms'), '.0f')} | {spread(win(name, 'p99_ms'), '.0f')} "
            f"| {spread(win(name, 'max_ms'), '.0f')} "
            f"| {statistics.median(win(name, 'server_cpu_pct')):.0f} "
            f"| {statistics.median(win(name, 'client_cpu_pct')):.0f} "
            f"| {statistics.median(win(name, 'dump_client_cpu_pct')):.0f} "
            f"| {statistics.median(win(name, 'others_cpu_pct')):.0f} "
            f"| {statistics.median(win(name, 'live_mb_start')):.0f}-"
            f"{statistics.median(win(name, 'live_mb_end')):.0f} | {bad} | {resent:,} |"
        )
    costs = [r["cost_pct"] for r in runs]
    met = sum(c < 25 for c in costs)
    dumps = [d for r in runs for d in r["windows"]["during"]["dumps"]]
    ok = [d for d in dumps if d["status"] == 200]
    per_window = [float(len(r["windows"]["during"]["dumps"])) for r in runs]
    stream_mb_s = [d["bytes"] / MB / (d["total_s"] - d["first_byte_s"]) for d in ok]
    lines += [
        "",
        f"- baseline (mean of windows 1 and 3): {spread([r['baseline'] for r in runs])} results/s",
        f"- with /dump downloading: {spread(win('during', 'results_per_s'))} results/s",
        f"- **cost of the /dump loop: {spread(costs, '.1f')} % of ingest throughput**; "
        f"target < 25 %: met in {met} of {len(runs)} run(s)",
        f"- dumps per {args.window:g} s window: {spread(per_window, '.0f')}; "
        f"{len(ok)} of {len(dumps)} answered 200; "
        f"size {spread([d['bytes'] / MB for d in ok])} MB",
        f"- per dump: {spread([d['total_s'] for d in ok], '.1f')} s in all, of which "
        f"{spread([d['first_byte_s'] for d in ok], '.1f')} s before the first byte "
        f"(snapshot + hop-IP index on the copy), then streaming at "
        f"{spread(stream_mb_s)} MB/s",
        f"- fill: {spread([r['fill_mb'] for r in runs])} MB "
        f"({spread([float(r['fill_results']) for r in runs])} results) "
        f"in {spread([r['fill_s'] for r in runs])} s; "
        f"service exit codes {sorted({r['exit_code'] for r in runs})}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run, 6 s windows (~45 s)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=15.0, help="measured seconds per window")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fill-mb", type=float, default=100.0, help="live file size to start at")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.window = 1, 6.0
    started = time.monotonic()
    say("preparing request bodies (cached in .bench/)")
    window_lines = math.ceil((args.window + args.warmup) * HEADROOM_RESULTS_PER_S / BATCH)
    fill_lines = math.ceil(args.fill_mb * MB / FILL_BYTES_PER_RESULT / BATCH)
    fill_bodies = bodies_file("fill", fill_lines)
    args.bodies = {name: bodies_file(name, window_lines) for name in WINDOWS}
    args.window_lines = window_lines
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dump-cost-") as tmp:
        for n in range(args.runs):
            say(f"run {n + 1}/{args.runs}")
            runs.append(run_once(args, Path(tmp), fill_bodies))
    args.bodies = {k: v.name for k, v in args.bodies.items()}
    (OUT / "dump-cost.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"`python -m bench.dump_cost {' '.join(sys.argv[1:])}`, {stamp}, {machine()}; "
        f"{args.runs} run(s): live file filled to {args.fill_mb:g} MB, then "
        f"{BATCH}-result batches with {shape_name(HOPS)}s from {args.concurrency} "
        f"connections, {args.window:g} s windows; took {time.monotonic() - started:.0f} s"
    )
    print(header + "\n\n" + render(runs, args))


if __name__ == "__main__":
    main()
