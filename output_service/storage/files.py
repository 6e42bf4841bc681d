"""Names of results files: `results_YYYY-MM-DD_HH-MM-SS.db`, in UTC."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from pathlib import Path

RESULTS_FILE = re.compile(r"results_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(?:_\d+)?\.db")


def file_name_for(moment: float, taken: set[str]) -> str:
    """A new file name for `moment`, with a numeric suffix if that second is taken."""
    stem = "results_" + datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d_%H-%M-%S")
    name = f"{stem}.db"
    suffix = 1
    while name in taken:
        name = f"{stem}_{suffix}.db"
        suffix += 1
    return name


def results_files(db_dir: Path) -> list[Path]:
    """Results files in `db_dir`, oldest first (the names sort by creation time)."""
    found = [p for p in db_dir.iterdir() if p.is_file() and RESULTS_FILE.fullmatch(p.name)]
    return sorted(found, key=_sort_key)


def _sort_key(path: Path) -> tuple[str, int]:
    stamp = path.name[len("results_") : len("results_") + 19]
    rest = path.name[len("results_") + 19 : -len(".db")]
    return stamp, int(rest[1:]) if rest else 0


def size_on_disk(path: Path) -> int:
    """Main file plus its write-ahead log: what the size limit is about."""
    total = 0
    for candidate in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += candidate.stat().st_size
    return total
