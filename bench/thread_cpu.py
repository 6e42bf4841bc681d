"""CPU per stored result of each of the service's threads, under load.

py-spy's samples count a thread as busy while it waits for the GIL; the
kernel's per-thread counters (/proc/PID/task/TID/stat) do not, so this says
which thread is the bottleneck. Thread names come from one `py-spy dump`.

    python -m bench.thread_cpu [--hop-loop] [--batch 100] [--concurrency 8]
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
import time
from pathlib import Path

from bench import loadgen
from bench.payload import HOPS, pool_file
from bench.run import OUT, POOL
from bench.server import CLK_TCK, Server


def thread_cpu(pid: int) -> dict[int, float]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def thread_names(pid: int) -> dict[int, str]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True).stdout
    return {int(m[1]): m[2] for m in re.finditer(r'Thread (\d+) \(\w+\): "([^"]+)"', dump)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--hops", type=int, default=HOPS)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--hop-loop", action="store_true")
    args = parser.parse_args()
    pool = pool_file(OUT, args.hops, args.batch, POOL[args.hops])
    with tempfile.TemporaryDirectory(prefix="thread-cpu-") as tmp:
        stub = Server.trivial(Path(tmp) / "input", "input") if args.hop_loop else None
        extra = ["--input-url", stub.url.replace("/results", "/hops")] if stub else []
        server = Server.service(Path(tmp), *extra)
        try:
            argv = loadgen.argv(
                server.url,
                pool,
                batch=args.batch,
                hops=args.hops,
                duration=6,
                warmup=1,
                concurrency=args.concurrency,
            )
            gen = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
            time.sleep(2.5)  # warm: every thread has started
            names = thread_names(server.proc.pid)
            before = thread_cpu(server.proc.pid)
            time.sleep(3)
            after = thread_cpu(server.proc.pid)
            stdout = gen.communicate(timeout=60)[0]
        finally:
            server.stop()
            if stub is not None:
                stub.stop()
    rate = json.loads(stdout.splitlines()[-1])["stored_results"] / 6
    print(f"{rate:,.0f} results/s")
    for tid in sorted(after, key=lambda t: before.get(t, 0) - after[t]):
        used = after[tid] - before.get(tid, 0)
        if used > 0:
            name = names.get(tid, "?")
            print(f"{name}: {100 * used / 3:.0f}% CPU, {used / 3 / rate * 1e6:.1f} us/result")


if __name__ == "__main__":
    main()
