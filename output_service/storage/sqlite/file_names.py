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


def created_at(name: str) -> float:
    """The UTC moment a results file was started, read back from its name."""
    stamp = name[len("results_") : len("results_") + 19]
    return datetime.strptime(stamp, "%Y-%m-%d_%H-%M-%S").replace(tzinfo=UTC).timestamp()


def name_time(name: str) -> float | None:
    """The moment a results file's name shows, or None when it shows no real
    date (`results_2026-02-30_...`): names are for people, and a name is
    never trusted to be one."""
    try:
        return created_at(name)
    except ValueError:
        return None


def next_file_name(now: float, current: str | None, taken: set[str]) -> str:
    """The name of the file after `current`: named for `now`, but never sorting
    before `current` even if the clock stepped back, so "newest" stays "last"
    (the order readers page through files in)."""
    shown = None if current is None else name_time(current)
    moment = now if shown is None else max(now, shown)
    name = file_name_for(moment, taken)
    if current is None or name_key(name) > name_key(current):
        return name
    # same second, or a name that shows no date: the next suffix of `current`'s stamp
    stamp, suffix = name_key(current)
    suffix += 1
    while (name := f"results_{stamp}_{suffix}.db") in taken:
        suffix += 1
    return name


def results_files(db_dir: Path) -> list[Path]:
    """Results files in `db_dir`, oldest first (the names sort by creation time)."""
    found = [p for p in db_dir.iterdir() if p.is_file() and RESULTS_FILE.fullmatch(p.name)]
    return sorted(found, key=lambda p: name_key(p.name))


def name_key(name: str) -> tuple[str, int]:
    """Sort key of a results file name: its second, then its same-second suffix."""
    stamp = name[len("results_") : len("results_") + 19]
    rest = name[len("results_") + 19 : -len(".db")]
    return stamp, int(rest[1:]) if rest else 0


def companions(path: Path) -> list[Path]:
    """The files SQLite keeps next to a database: its WAL and shared-memory index."""
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]


def size_on_disk(path: Path) -> int:
    """Main file plus its write-ahead log: what the size limit is about."""
    total = 0
    for candidate in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += candidate.stat().st_size
    return total
