"""One-result cells driven by wrk (C, one thread), next to the trivial aiohttp handler.

The Python load generator tops out near 6,000-8,000 requests/s on this machine,
so against the trivial handler it measures itself (client CPU ~100%). wrk
costs a fraction of that per request, so the ratio service / trivial is the
server's. Bodies are the same pool as `make bench` (each a distinct result),
cycled by a Lua script.

    python -m bench.wrk_cell [--hops 10] [--connections 64] [--duration 5] [--runs 2]
                             [--variants no-store,no-store+no-request-log]

`--variants` adds bench.variant_service variants to each run, alternated with
the trivial handler and the service (and `baseline`, with $BENCH_BASELINE_TREE;
`baseline:no-store` is a variant run from that tree).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.payload import HOPS, pool_file, read_pool
from bench.run import OUT, POOL
from bench.server import CLK_TCK, Server

LUA = """
local bodies = {}
for line in io.lines("%s") do bodies[#bodies + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
                    bodies[(n %% #bodies) + 1])
end
"""


def write_script(tmp: Path, hops: int) -> Path:
    """The Lua script that cycles the pool of one-result bodies (`bench.profile --wrk` too)."""
    OUT.mkdir(exist_ok=True)
    bodies = read_pool(pool_file(OUT, hops, 1, POOL[hops]))
    lines = tmp / "bodies.ndjson"
    lines.write_bytes(b"\n".join(b.replace(b"\n", b"") for b in bodies) + b"\n")
    script = tmp / "post.lua"
    script.write_text(LUA % lines)
    return script


def _user_sys(server: Server) -> tuple[float, float]:
    """The server's user and system CPU seconds so far (all threads)."""
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def measure(server: Server, script: Path, connections: int, duration: float) -> dict[str, float]:
    user_before, sys_before = _user_sys(server)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--latency",
            "-s",
            str(script),
            server.url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    user_after, sys_after = _user_sys(server)
    user, system = user_after - user_before, sys_after - sys_before
    cpu = user + system
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    requests = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "requests_per_s": rate,
        "requests": requests,
        # the server's CPU (all threads) per request: steadier than the rate on a
        # shared machine, since it does not count the time others held the cores
        "cpu_us_per_request": round(cpu / max(requests, 1) * 1e6, 1),
        # the kernel's share (socket reads and writes, the log line's write, fsync)
        "sys_us_per_request": round(system / max(requests, 1) * 1e6, 1),
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else 0.0,
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "peak_rss_mb": server.peak_rss_mb(),
    }


def _server(name: str, work: Path) -> Server:
    """`trivial`, `service`, a bench.variant_service variant, `baseline` (the tree in
    $BENCH_BASELINE_TREE) or `baseline:VARIANT` (a variant run from that tree)."""
    if name == "trivial":
        return Server.trivial(work)
    if not name.startswith("baseline:"):
        return Server.service(work, variant="" if name == "service" else name)
    tree = os.environ["BENCH_BASELINE_TREE"]
    argv = [sys.executable, "-m", "bench.variant_service", name.removeprefix("baseline:")]
    argv += ["--host", "127.0.0.1", "--port", "0", "--health-port", "0"]
    argv += ["--db-dir", str(work / "data"), "--input-url", "", "--max-size-mb", "100000"]
    return Server(argv, work, {"PYTHONPATH": tree}, tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hops", type=int, default=HOPS)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--variants", default="", help="comma-separated bench.variant_service")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed")
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        script = write_script(Path(tmp), args.hops)
        for run in range(args.runs):
            row = {}
            # with $BENCH_BASELINE_TREE set, an earlier commit's service too (bench.server)
            names = ["trivial", "service", *filter(None, args.variants.split(","))]
            if os.environ.get("BENCH_BASELINE_TREE"):
                names.append("baseline")
            for name in names:
                work = Path(tmp) / name
                shutil.rmtree(work, ignore_errors=True)
                server = _server(name, work)
                try:
                    row[name] = measure(server, script, args.connections, args.duration)
                finally:
                    server.stop()
            ratio = row["service"]["requests_per_s"] / row["trivial"]["requests_per_s"]
            print(json.dumps({"run": run + 1, "hops": args.hops, "ratio": round(ratio, 3), **row}))


if __name__ == "__main__":
    main()
