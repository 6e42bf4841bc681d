"""A separate client process: posts batches as fast as it can and records each acknowledged one.

Each result carries a unique IPv4 address as its marker (worker, batch, index),
so a checker can tell exactly which acknowledged results are in the files.
Acknowledged batch numbers are appended to `--out`, one per line, flushed right
after each 200. The client stops on its own after the first connection error
per worker (the service was killed or stopped) or after `--max-batches`.

Usage: python load_client.py PORT OUT_FILE WORKER_BASE [--rotate]
"""

from __future__ import annotations

import http.client
import json
import sys
import threading

WORKERS = 4
RESULTS_PER_BATCH = 8
MAX_BATCHES = 4000  # per worker: bounds the run even if the service never stops


def marker_ip(worker: int, batch: int, index: int) -> str:
    """Unique per (worker < 32, batch < 65536, index < 8)."""
    return f"10.{worker * 8 + index}.{batch >> 8 & 255}.{batch & 255}"


def batch_body(worker: int, batch: int) -> bytes:
    results = [
        {
            "ip": marker_ip(worker, batch, i),
            "sent": 4,
            "received": 4,
            "packet_loss": 0.0,
            "avg_rtt": 1_000_000,
            "timestamp": "2026-01-02T03:04:05.5Z",
            "traceroute": {
                "method": "icmp",
                "completed": True,
                "hops": [{"ttl": 1, "ip": "192.0.2.1", "rtt": 1000}],
            },
        }
        for i in range(RESULTS_PER_BATCH)
    ]
    return json.dumps(results).encode()


def post_loop(port: int, worker: int, out: list[str], lock: threading.Lock, sink: object) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for batch in range(MAX_BATCHES):
        try:
            conn.request(
                "POST",
                "/results",
                body=batch_body(worker, batch),
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            return
        if response.status == 200:
            with lock:
                sink.write(f"{worker} {batch}\n")  # type: ignore[attr-defined]
                sink.flush()  # type: ignore[attr-defined]
        elif response.status not in (503, 507):
            out.append(f"unexpected status {response.status}")
            return


def rotate_loop(port: int, stop: threading.Event) -> None:
    """Ask for rotations while ingest runs (a 404 before /rotate exists is fine)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        try:
            conn.request("POST", "/rotate")
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            return
        if response.status == 404:
            return


def main() -> int:
    port, out_path, worker_base = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    rotate = "--rotate" in sys.argv[4:]
    problems: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    with open(out_path, "a") as sink:
        threads = [
            threading.Thread(target=post_loop, args=(port, worker_base + w, problems, lock, sink))
            for w in range(WORKERS)
        ]
        if rotate:
            rotator = threading.Thread(target=rotate_loop, args=(port, stop), daemon=True)
            rotator.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
