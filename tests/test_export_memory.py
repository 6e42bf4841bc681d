"""Streaming export keeps memory flat: peak RSS exporting 50,000 results with
10-hop traceroutes is about that of exporting one target's few dozen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.query_data import target_ip


def _peak_rss_kb(*args: str) -> tuple[int, int]:
    """(peak RSS in kB, bytes written) of `output-service export ...` as its own process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "output_service", "export", *args], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    written = 0
    while chunk := proc.stdout.read(1 << 20):
        written += len(chunk)
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return usage.ru_maxrss, written


def test_export_memory_is_flat(tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-m", "bench.query_data", "--dir", str(data), "--results", "50000"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    many, many_bytes = _peak_rss_kb(str(data))
    few, few_bytes = _peak_rss_kb(str(data), "--ip", target_ip(7))
    assert many_bytes > 100 * few_bytes  # the big export really is big
    assert many < few * 1.5, (many, few)
