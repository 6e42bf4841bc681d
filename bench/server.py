"""Start a server under test as its own process, find its port, measure it, stop it.

Both the service and the naive baseline print a JSON line with
`"event": "listening"` and `results_port`; stdout goes to a file (the service
logs a line per request, and a full pipe would stall it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Server:
    """One server process on 127.0.0.1 with its own db_dir."""

    def __init__(
        self,
        argv: list[str],
        workdir: Path,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "server.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self.port = self._wait_listening(deadline=time.monotonic() + 30)

    @classmethod
    def service(cls, workdir: Path, *extra: str, variant: str = "") -> Server:
        """The service; `variant` names a bench.variant_service change to measure,
        or is `baseline`: the service from the source tree in $BENCH_BASELINE_TREE
        (an export of an earlier commit), so before and after share one run."""
        env, cwd = None, None
        if variant == "baseline":  # `-m` puts the working directory first on sys.path
            cwd = os.environ["BENCH_BASELINE_TREE"]
            env = {"PYTHONPATH": cwd}
            variant = ""
        argv = (
            [sys.executable, "-m", "bench.variant_service", variant]
            if variant
            else [sys.executable, "-m", "output_service"]
        )
        argv += ["--host", "127.0.0.1", "--port", "0"]
        argv += ["--health-port", "0", "--db-dir", str(workdir / "data"), "--input-url", ""]
        argv += ["--max-size-mb", "100000", *extra]
        return cls(argv, workdir, env, cwd)

    @classmethod
    def naive(cls, workdir: Path) -> Server:
        return cls(
            [sys.executable, "-m", "bench.naive", "--db-dir", str(workdir / "data")], workdir
        )

    @classmethod
    def trivial(cls, workdir: Path, mode: str = "results") -> Server:
        """bench.trivial: the plain aiohttp handler, or (`input`) a stand-in input service."""
        return cls([sys.executable, "-m", "bench.trivial", mode], workdir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/results"

    def _wait_listening(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            for line in self.log_path.read_text().splitlines():
                if '"listening"' in line:
                    return int(json.loads(line)["results_port"])
            time.sleep(0.05)  # polling a file for the port, bounded by the deadline
        raise RuntimeError("server did not start listening in time")

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole process (all threads) so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def _status_kb(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def rss_mb(self) -> float:
        return self._status_kb("VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        """The kernel's high-water mark of resident memory over the process's life."""
        return self._status_kb("VmHWM") / 1024

    def stop(self) -> int:
        """SIGTERM, as an operator would; the service drains and exits 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine (all cores) so far: with the server's and
    the load generator's own, this shows how much else was running."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK
