"""`make bench-query`: the query API's figures on `make bench-data`'s files.

Starts the service as a process on a copy of the data, then measures (medians
of repeated requests, wall time at the client): /api/targets over everything,
/api/targets/{ip} for the week at 1h, one page of /api/results per filter,
/api/routes for one target over the week, the ndjson export of everything
(results/s, and the service's RSS during it against an export of one target),
and ingest (4 closed-loop posting connections, 100-result batches with 10-hop
traceroutes) alone, while one client loops over the figures' queries, while 20
readers loop over the endpoints, and (the control) while 20 clients loop on
/health. Also the first /api/targets after start-up (the start-up warm-up still
running) and how long the pre-rendering of the sealed files took. Appends a
section to BENCHMARKS.md.

The reader clients run in a process of their own at nice 19
(bench/query_readers.py; `--inline-readers` puts them back in this process):
in a deployment they are other machines, and on this 2-core machine their
client CPU would otherwise be charged to the service. Ingest alone is measured
between the cells, in rounds (`ingest_cells`). `--ingest-only` measures only
the ingest cells; `--service-arg` passes a flag to the service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.loadgen import argv as loadgen_argv
from bench.payload import pool_file
from bench.query_data import target_ip
from bench.query_readers import read_loop

SEALED = 4  # of bench-data's 5 files
READ_NICE = 10  # the read threads' nice value (storage/read_gate.py)
CLK_TCK = os.sysconf("SC_CLK_TCK")
WEEK = "since=2026-01-01T00:00:00Z&until=2026-01-08T00:00:00Z"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, limit_s: float = 120.0) -> None:
    """Until the service listens on `port` (or `limit_s` passed)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Sampler:
    """Peak RSS of a process, sampled every 50 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_kb(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> Sampler:
        self.peak = _rss_kb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def timed(session: aiohttp.ClientSession, url: str, runs: int = 5) -> float:
    """Median ms of `runs` GETs (after one warm-up)."""
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        async with session.get(url) as resp:
            assert resp.status == 200, (url, resp.status, await resp.text())
            await resp.read()
        if i:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def export(session: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    lines = 0
    async with session.get(url) as resp:
        assert resp.status == 200
        async for chunk in resp.content.iter_chunked(1 << 20):
            lines += chunk.count(b"\n")
    return lines, time.perf_counter() - t0


def ingest_rate(url: str, pool: Path, duration: float) -> float:
    return ingest_rate_and_read_cpu(url, pool, duration)[0]


def ingest_rate_and_read_cpu(
    url: str, pool: Path, duration: float, pid: int | None = None
) -> tuple[float, float | None]:
    """Ingest's rate over loadgen's measured window and, given the service's `pid`,
    its read threads' CPU over that same window in % of a core. The window is
    the one loadgen announces ("measure" ... "end"), so reads that run while
    ingest is starting, warming up or gone (the readers start first and finish
    their last read after it) are not counted against the share reads get while
    ingest is busy."""
    proc = subprocess.Popen(
        loadgen_argv(url, pool, batch=100, hops=10, duration=duration, warmup=1.0, concurrency=4),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    marks: dict[str, tuple[float, float]] = {}
    last = ""
    for line in proc.stdout:
        last = line
        phase = json.loads(line).get("phase")
        if phase in ("measure", "end") and pid is not None:
            marks[phase] = (read_thread_cpu_s(pid), time.monotonic())
    if proc.wait(60) != 0:
        raise SystemExit(f"loadgen failed (exit {proc.returncode})")
    rate = float(json.loads(last)["results_per_s"])
    if "measure" not in marks or "end" not in marks:
        return rate, None
    (cpu0, t0), (cpu1, t1) = marks["measure"], marks["end"]
    return rate, 100 * (cpu1 - cpu0) / (t1 - t0)


PAGE_FILTERS = {
    "none": "", "ip": f"ip={target_ip(42)}", "node": "node=node-07", "failed": "failed=true",
    "since_until": "since=2026-01-03T00:00:00Z&until=2026-01-03T01:00:00Z",
    "ip_node": f"ip={target_ip(42)}&node=node-07",
}  # fmt: skip


def hammer_urls(base: str) -> list[str]:
    """The old reader mix: every endpoint, 1,000-result pages."""
    return [
        f"{base}/api/targets", f"{base}/api/targets/{target_ip(7)}?{WEEK}&step=1h",
        f"{base}/api/results?limit=1000", f"{base}/api/routes?ip={target_ip(9)}&{WEEK}",
    ]  # fmt: skip


def query_loop_urls(base: str) -> list[str]:
    """The figures' own queries, one after another: what the goal says runs in a loop."""
    return [
        f"{base}/api/targets", f"{base}/api/targets/{target_ip(7)}?{WEEK}&step=1h",
        *(f"{base}/api/results?limit=100&{q}" for q in PAGE_FILTERS.values()),
        f"{base}/api/routes?ip={target_ip(9)}&{WEEK}",
    ]  # fmt: skip


async def first_targets(base: str) -> float:
    """ms of the first /api/targets after start-up (the warm-up is still running)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
        t0 = time.perf_counter()
        async with s.get(f"{base}/api/targets") as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            await resp.read()
        return (time.perf_counter() - t0) * 1000


async def export_all(base: str) -> tuple[int, float]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
        return await export(s, f"{base}/api/results?format=ndjson")


def wait_for_prerender(data: Path, sealed: int, limit_s: float = 600.0) -> None:
    """Until the upkeep has rendered the side file of every sealed file."""
    deadline = time.monotonic() + limit_s
    cache = data / "read-cache"
    while time.monotonic() < deadline:
        if cache.is_dir() and len(list(cache.glob("*.items"))) >= sealed:
            return
        time.sleep(0.2)
    raise SystemExit("the sealed files were not pre-rendered in time")


async def measure(
    base: str, results_url: str, pid: int, pool: Path, inline: bool
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
        figures["targets_all_ms"] = await timed(s, f"{base}/api/targets")
        figures["target_week_1h_ms"] = statistics.median(
            [
                await timed(s, f"{base}/api/targets/{target_ip(k)}?{WEEK}&step=1h", 3)
                for k in (1, 500, 4999)
            ]
        )
        for name, q in PAGE_FILTERS.items():
            figures[f"results_page_{name}_ms"] = await timed(s, f"{base}/api/results?limit=100&{q}")
        figures["routes_week_ms"] = statistics.median(
            [
                await timed(s, f"{base}/api/routes?ip={target_ip(k)}&{WEEK}", 3)
                for k in (1, 500, 4999)
            ]
        )
        with Sampler(pid) as few:
            await export(s, f"{base}/api/results?format=ndjson&ip={target_ip(3)}")
        with Sampler(pid) as many:
            lines, seconds = await export(s, f"{base}/api/results?format=ndjson")
        figures["export_results"] = lines
        figures["export_results_per_s"] = round(lines / seconds)
        figures["export_peak_rss_mb_all"] = round(many.peak / 1024, 1)
        figures["export_peak_rss_mb_one_target"] = round(few.peak / 1024, 1)
    figures.update(await ingest_cells(base, results_url, pool, inline, pid))
    return figures


INGEST_S = 6.0  # one ingest measurement (after a 1 s warm-up)
ROUNDS = 3


def read_thread_cpu_s(pid: int) -> float:
    """CPU seconds used so far by the service's read threads (the ones at nice 10)."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[16]) == READ_NICE:
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


async def ingest_cells(
    base: str, results_url: str, pool: Path, inline: bool, pid: int
) -> dict[str, Any]:
    """Ingest alone between the cells with readers, in ROUNDS rounds: each cell's
    kept % is against the mean of the alone runs just before and after it, and the
    figure is the median over the rounds. The rate drifts over a run (the live file
    grows; other engineers' jobs come and go on the shared machine: five alone runs
    in a row moved between 5,650/s and 10,670/s), which one alone run at the start
    would have charged to the readers."""
    cells = {
        "one_query_loop": (query_loop_urls(base), 1),
        "20_readers": (hammer_urls(base), 20),
        # the control: as many clients on a trivial endpoint, to tell what the
        # clients and the HTTP work cost on this 2-core machine from what reads cost
        "20_health_readers": ([f"{base}/health"], 20),
    }
    alone = [ingest_rate(results_url, pool, INGEST_S)]
    kept: dict[str, list[float]] = {name: [] for name in cells}
    rates: dict[str, list[float]] = {name: [] for name in cells}
    statuses: dict[str, dict[str, int]] = {name: {} for name in cells}
    read_cpu: dict[str, list[float]] = {name: [] for name in cells}
    window_cpu: dict[str, list[float]] = {name: [] for name in cells}
    for _ in range(ROUNDS):
        for name, (urls, n) in cells.items():
            cpu0, t0 = read_thread_cpu_s(pid), time.monotonic()
            rate, counts, in_window = await ingest_while(results_url, pool, urls, n, inline, pid)
            if in_window is not None:
                window_cpu[name].append(in_window)
            read_cpu[name].append(100 * (read_thread_cpu_s(pid) - cpu0) / (time.monotonic() - t0))
            alone.append(ingest_rate(results_url, pool, INGEST_S))
            kept[name].append(100 * rate / ((alone[-2] + alone[-1]) / 2))
            rates[name].append(rate)
            for status, count in counts.items():
                statuses[name][status] = statuses[name].get(status, 0) + count
    figures: dict[str, Any] = {
        "ingest_alone_results_per_s": " / ".join(f"{r:,.0f}" for r in alone),
        "readers": "in the bench process" if inline else "own process at nice 19",
    }
    for name in cells:
        figures[f"ingest_with_{name}_results_per_s"] = " / ".join(f"{r:,.0f}" for r in rates[name])
        figures[f"ingest_with_{name}_kept_pct"] = round(statistics.median(kept[name]), 1)
        figures[f"ingest_with_{name}_kept_pct_rounds"] = " / ".join(f"{k:.1f}" for k in kept[name])
        figures[f"ingest_with_{name}_reader_statuses"] = statuses[name]
        figures[f"ingest_with_{name}_read_threads_cpu_pct_of_a_core"] = " / ".join(
            f"{c:.1f}" for c in read_cpu[name]
        )
        figures[f"ingest_with_{name}_read_threads_cpu_pct_while_ingest_measured"] = " / ".join(
            f"{c:.1f}" for c in window_cpu[name]
        )
    return figures


async def ingest_while(
    results_url: str, pool: Path, urls: list[str], readers: int, inline: bool, pid: int
) -> tuple[float, dict[str, int], float | None]:
    """Ingest rate while `readers` clients loop over `urls`, their reply statuses,
    and the read threads' CPU over ingest's measured window (% of a core)."""
    if not inline:
        return await asyncio.to_thread(
            _ingest_beside_reader_process, results_url, pool, urls, readers, pid
        )
    stop, counts = asyncio.Event(), dict[str, int]()
    tasks = [
        asyncio.create_task(read_loop(urls, lambda: not stop.is_set(), counts))
        for _ in range(readers)
    ]
    try:
        rate, in_window = await asyncio.to_thread(
            ingest_rate_and_read_cpu, results_url, pool, INGEST_S, pid
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return rate, counts, in_window


def _ingest_beside_reader_process(
    results_url: str, pool: Path, urls: list[str], readers: int, pid: int
) -> tuple[float, dict[str, int], float | None]:
    """The readers in their own process at nice 19 (bench/query_readers.py): the
    load that other machines put on the service, without their client CPU."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.query_readers", "--clients", str(readers),
         "--nice", "19", *urls],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("the reader process did not start")
        rate, in_window = ingest_rate_and_read_cpu(results_url, pool, INGEST_S, pid)
    finally:
        proc.stdin.close()
    summary = json.loads(proc.stdout.readline())
    proc.wait(60)
    return rate, dict(summary["statuses"]), in_window


def start_service(data: Path, port: int, health: int, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "output_service", "--db-dir", str(data), "--host", "127.0.0.1",
         "--port", str(port), "--health-port", str(health), "--input-url", "",
         "--rotation-days", "100000", "--max-size-mb", "100000", "--keep-files", "10",
         "--synchronous", "NORMAL", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(health)
    return proc


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def run(data: Path, pool: Path, inline: bool, extra: list[str]) -> dict[str, Any]:
    port, health = _free_port(), _free_port()
    base = f"http://127.0.0.1:{health}"
    started = time.monotonic()
    proc = start_service(data, port, health, *extra)
    try:  # cold: no side files yet, every file's summary read by SQL
        figures: dict[str, Any] = {
            "targets_first_after_start_ms": round(asyncio.run(first_targets(base)), 1)
        }
        wait_for_prerender(data, SEALED)
        figures["prerender_done_after_start_s"] = round(time.monotonic() - started, 1)
    finally:
        stop_service(proc)
    # a restart: the sealed files' summaries come from their side files
    proc = start_service(data, port, health, *extra)
    try:
        figures["targets_first_after_restart_ms"] = round(asyncio.run(first_targets(base)), 1)
        figures.update(
            asyncio.run(measure(base, f"http://127.0.0.1:{port}/results", proc.pid, pool, inline))
        )
    finally:
        stop_service(proc)
    # the same export without the side files: every item built by SQLite
    proc = start_service(data, port, health, "--no-prerender-exports", *extra)
    try:
        lines, seconds = asyncio.run(export_all(base))
        figures["export_without_side_files_results_per_s"] = round(lines / seconds)
    finally:
        stop_service(proc)
    figures["load_average_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return figures


def run_ingest_only(data: Path, pool: Path, inline: bool, extra: list[str]) -> dict[str, Any]:
    """Only the ingest cells (after the side files are built and the summaries warm)."""
    port, health = _free_port(), _free_port()
    base = f"http://127.0.0.1:{health}"
    proc = start_service(data, port, health, *extra)
    try:
        asyncio.run(first_targets(base))
        wait_for_prerender(data, SEALED)
        figures = asyncio.run(
            ingest_cells(base, f"http://127.0.0.1:{port}/results", pool, inline, proc.pid)
        )
    finally:
        stop_service(proc)
    figures["load_average_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="query API benchmark")
    parser.add_argument("--dir", type=Path, default=Path("bench-data"))
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument(
        "--inline-readers", action="store_true",
        help="run the reader clients in this process at its priority (the old way)",
    )  # fmt: skip
    parser.add_argument("--ingest-only", action="store_true", help="only the ingest cells")
    parser.add_argument("--no-append", action="store_true", help="print, do not append")
    parser.add_argument(
        "--service-arg", action="append", default=[], help="passed to the service (repeatable)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qbench-"))
    data = work / "data"
    shutil.copytree(args.dir, data)
    bench = run_ingest_only if args.ingest_only else run
    try:
        figures = bench(
            data, pool_file(work, 10, 100, 400_000), args.inline_readers, args.service_arg
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    if args.no_append:
        return
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with args.out.open("a") as fh:
        fh.write(
            f"\n## Query API (`make bench-data && make bench-query`, {stamp})\n\n"
            "5 files, 700,000 results with 10-hop traceroutes, 50 nodes, 5,000 targets, 7 days;"
            " medians at the client, one run on the shared 2-core machine.\n\n"
            "| figure | value |\n|---|---|\n"
            + "".join(f"| {k} | {v} |\n" for k, v in figures.items())
        )


if __name__ == "__main__":
    main()
