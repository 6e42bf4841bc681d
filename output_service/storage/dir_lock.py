"""One owner per data directory: an exclusive `flock` on `db_dir/.lock`.

The kernel releases the lock when the process ends, however it ends, so a
crash never leaves a stale lock behind. The holder writes its PID into the
file, so a second process can say who holds the directory. Taking the lock
changes nothing in `db_dir` when it fails (the file is opened, not truncated).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = ".lock"


class DirLockedError(Exception):
    """Another live process holds `db_dir`."""

    def __init__(self, db_dir: Path, pid: str) -> None:
        holder = f"PID {pid}" if pid else "a process that wrote no PID"
        super().__init__(f"{db_dir} is in use by another output-service ({holder})")
        self.pid = pid


class DirLock:
    """Held until `release()` or the end of the process."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, db_dir: Path) -> DirLock:
        """Take the lock (creating `db_dir` and the lock file if missing) and
        write our PID into it; raise DirLockedError if another process has it."""
        db_dir.mkdir(parents=True, exist_ok=True)
        path = db_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DirLockedError(db_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


def holder(db_dir: Path) -> str | None:
    """The PID holding `db_dir`, or None if nobody does; opens nothing for
    writing and creates nothing (for messages about a failed start)."""
    try:
        fd = os.open(db_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        return None
    finally:
        os.close(fd)
