"""Where a service process's resident memory is, sampled from inside it.

`python -m bench.variant_service memprobe ...` starts `start()`: a daemon
thread that every 20 ms reads the process's RSS (/proc/self/statm), the bytes
SQLite has allocated (`sqlite3_memory_used`, through ctypes from the same
libsqlite3 the `_sqlite3` module links: its page caches, statements and
connections), glibc's heap (`mallinfo2`: bytes in use, and bytes free but
still held by malloc), and optionally (MEMPROBE_TRACEMALLOC=1, slow) the
Python heap as tracemalloc counts it. At exit it writes the sample taken at
the highest RSS and each figure's own peak to $MEMPROBE_OUT as JSON.

Why from inside: VmHWM says how much, not whose; these counters split it into
SQLite's page cache, Python objects (decoded batches, bodies) and what malloc
keeps after they are freed.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import json
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libs() -> tuple[Any, Any]:
    sqlite = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return sqlite, libc


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


def _rollup() -> dict[str, float]:
    """Rss, Anonymous and the file-backed rest from /proc/self/smaps_rollup, in MB."""
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        if name in ("Rss", "Anonymous", "Shared_Clean", "Private_Clean", "Private_Dirty"):
            out[name] = int(rest.split()[0]) / 1024
    return out


def sample(sqlite: Any, libc: Any, traced: bool) -> dict[str, float]:
    info = libc.mallinfo2()
    out = {
        "rss_mb": _rss_bytes() / MB,
        "sqlite_mb": sqlite.sqlite3_memory_used() / MB,
        # every arena's in-use bytes plus mmapped blocks (pymalloc's arenas are mmapped)
        "malloc_in_use_mb": (info.uordblks + info.hblkhd) / MB,
        "malloc_free_held_mb": info.fordblks / MB,
    }
    if traced:
        out["python_traced_mb"] = tracemalloc.get_traced_memory()[0] / MB
    return out


def start() -> None:
    path = os.environ.get("MEMPROBE_OUT")
    if not path:
        return
    traced = os.environ.get("MEMPROBE_TRACEMALLOC") == "1"
    if traced:
        tracemalloc.start(1)
    sqlite, libc = _libs()
    state: dict[str, Any] = {"at_peak_rss": {}, "peaks": {}}
    lock = threading.Lock()

    def loop() -> None:
        while True:
            now = sample(sqlite, libc, traced)
            with lock:
                if now["rss_mb"] >= state["at_peak_rss"].get("rss_mb", 0.0):
                    state["at_peak_rss"] = now
                for key, value in now.items():
                    state["peaks"][key] = max(state["peaks"].get(key, 0.0), value)
            time.sleep(0.02)

    def write() -> None:
        with lock:
            state["smaps_rollup_at_exit"] = _rollup()
            if traced:  # where the Python heap is at exit: the 15 largest sites
                stats = tracemalloc.take_snapshot().statistics("lineno")[:15]
                state["top_sites_at_exit"] = [
                    f"{s.size / MB:.1f} MB in {s.count} blocks: {s.traceback}" for s in stats
                ]
            Path(path).write_text(json.dumps(state))

    threading.Thread(target=loop, name="memprobe", daemon=True).start()
    atexit.register(write)
