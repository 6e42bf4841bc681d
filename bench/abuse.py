"""Hostile but ordinary traffic against the service as a process: figures for
BENCHMARKS.md ("Bounded under abuse").

    .venv/bin/python bench/abuse.py                 # this checkout
    .venv/bin/python bench/abuse.py --src OLD_TREE  # another checkout's output_service

Three cases, each on a fresh db_dir:
- fds: RLIMIT_NOFILE 1024 for the service, 1,030 idle connections to the results
  port, then for 10 s: /health answers, ingest on a new connection, stderr growth;
- dumps: 20 concurrent GET /dump of a ~100 MB live file: peak bytes in db_dir/tmp
  and how long a POST /rotate takes meanwhile;
- shutdown: SIGTERM while a /dump is read slowly, shutdown_grace_s = 8: seconds to exit;
- readers: a live file of ~300,000 results, 4 clients posting 100-result batches
  for 10 s alone, then 10 s with 20 clients looping on GET /recent?limit=1000:
  ingest results/s both times, the readers' answers, the largest WAL seen.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def start(src: Path, db_dir: Path, *args: str, fds: int | None = None) -> tuple[Any, int, int]:
    def limit() -> None:
        if fds:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fds, fds))

    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "output_service", "--port=0", "--health-port=0"]
    cmd += ["--host=127.0.0.1", f"--db-dir={db_dir}", "--input-url=", *args]
    err = (db_dir.parent / "stderr.txt").open("w")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, preexec_fn=limit, cwd=src
    )
    out = proc.stdout
    assert out is not None
    for raw in out:
        line = json.loads(raw) if raw.startswith("{") else {}
        if line.get("event") == "listening":  # keep reading, so the pipe never fills
            threading.Thread(target=lambda: [None for _ in out], daemon=True).start()
            return proc, int(line["results_port"]), int(line["health_port"])
    raise RuntimeError("service did not start")


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    except OSError:
        return 0, time.monotonic() - started
    finally:
        conn.close()


def batch(n: int) -> bytes:
    return json.dumps(
        [
            {
                "ip": "192.0.2.1",
                "sent": 1,
                "received": 1,
                "packet_loss": 0,
                "avg_rtt": 1,
                "timestamp": f"2026-01-02T03:04:{i % 60:02d}Z",
            }
            for i in range(n)
        ]
    ).encode()


def big_file(src: Path, db_dir: Path, megabytes: int) -> None:
    """Grow the live results file the service makes to about `megabytes` MB."""
    proc, _, _ = start(src, db_dir)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    (live,) = db_dir.glob("results_*.db")
    conn = sqlite3.connect(live)
    conn.executescript(
        "CREATE TABLE filler(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n"
        f" WHERE i < {megabytes * 200}) INSERT INTO filler SELECT hex(randomblob(2500)) FROM n;"
    )
    conn.close()


def fds_case(src: Path, tmp: Path) -> dict[str, Any]:
    proc, port, health = start(src, tmp / "data", fds=1024)
    idle = []
    for _ in range(1030):
        try:
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break
    health_times, ingest_times, statuses = [], [], []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, took = request(health, "GET", "/health")
        health_times.append(took)
        statuses.append(status)
        status, took = request(port, "POST", "/results", batch(10))
        ingest_times.append(took)
        statuses.append(status)
    for sock in idle:
        sock.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return {
        "health_max_s": round(max(health_times), 3),
        "ingest_max_s": round(max(ingest_times), 3),
        "statuses": sorted(set(statuses)),
        "stderr_bytes": (tmp / "stderr.txt").stat().st_size,
    }


def dumps_case(src: Path, tmp: Path) -> dict[str, Any]:
    db_dir = tmp / "data"
    big_file(src, db_dir, 100)
    proc, port, _ = start(src, db_dir, "--rotation-days=1e6", "--max-size-mb=1000")
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            used = sum(p.stat().st_size for p in (db_dir / "tmp").glob("*") if p.is_file())
            peak = max(peak, used)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(request(port, "GET", "/dump")[0]))
        for _ in range(20)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    status, rotate_s = request(port, "POST", "/rotate")
    for t in threads:
        t.join()
    done.set()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return {
        "peak_tmp_mb": round(peak / 2**20),
        "rotate_s": round(rotate_s, 3),
        "rotate_status": status,
        "dump_statuses": sorted(set(results)),
    }


def shutdown_case(src: Path, tmp: Path) -> dict[str, Any]:
    db_dir = tmp / "data"
    big_file(src, db_dir, 40)
    proc, port, _ = start(src, db_dir, "--rotation-days=1e6", "--shutdown-grace-s=8")
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /dump HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.recv(1024)
    stop = threading.Event()

    def slow() -> None:
        while not stop.is_set() and sock.recv(1024):
            time.sleep(0.05)

    threading.Thread(target=slow, daemon=True).start()
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(120)
    took = time.monotonic() - started
    stop.set()
    sock.close()
    return {"exit_s": round(took, 2), "exit_code": code, "grace_s": 8}


def _loop(stop: threading.Event, call: Any, out: list[int]) -> None:
    while not stop.is_set():
        out.append(call())


def _ingest_and_wal(port: int, wal: Path, seconds: float, health: int, readers: int) -> Any:
    """Posters (and readers) for `seconds`: results stored per second, the
    readers' statuses, the largest WAL seen."""
    stop = threading.Event()
    posted: list[int] = []
    answers: list[int] = []
    body = batch(100)
    threads = [
        threading.Thread(
            target=_loop,
            args=(
                stop,
                lambda: 100 if request(port, "POST", "/results", body)[0] == 200 else 0,
                posted,
            ),
        )
        for _ in range(4)
    ]
    threads += [
        threading.Thread(
            target=_loop,
            args=(stop, lambda: request(health, "GET", "/recent?limit=1000")[0], answers),
        )
        for _ in range(readers)
    ]
    peak = 0
    started = time.monotonic()
    for t in threads:
        t.start()
    while time.monotonic() - started < seconds:
        peak = max(peak, wal.stat().st_size if wal.exists() else 0)
        time.sleep(0.05)
    stop.set()
    took = time.monotonic() - started
    for t in threads:
        t.join()
    statuses = {str(s): answers.count(s) for s in sorted(set(answers))}
    return round(sum(posted) / took), statuses, round(peak / 2**20, 1)


def readers_case(src: Path, tmp: Path) -> dict[str, Any]:
    db_dir = tmp / "data"
    args = ("--rotation-days=1e6", "--max-size-mb=100000")
    proc, port, health = start(src, db_dir, *args)
    body = batch(1000)
    fill = [
        threading.Thread(
            target=lambda: [request(port, "POST", "/results", body) for _ in range(75)]
        )
        for _ in range(4)
    ]
    for t in fill:
        t.start()
    for t in fill:
        t.join()
    (live,) = db_dir.glob("results_*.db")
    wal = live.with_name(live.name + "-wal")
    alone, _, wal_alone = _ingest_and_wal(port, wal, 10, health, 0)
    hammered, statuses, wal_hammered = _ingest_and_wal(port, wal, 10, health, 20)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return {
        "ingest_alone_per_s": alone,
        "ingest_with_20_recent_readers_per_s": hammered,
        "kept": round(hammered / alone, 2),
        "recent_statuses": statuses,
        "wal_peak_mb_alone": wal_alone,
        "wal_peak_mb_with_readers": wal_hammered,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--only", choices=["fds", "dumps", "shutdown", "readers"])
    args = parser.parse_args()
    cases = {
        "fds": fds_case,
        "dumps": dumps_case,
        "shutdown": shutdown_case,
        "readers": readers_case,
    }
    for name, case in cases.items():
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            print(name, json.dumps(case(args.src.resolve(), Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
