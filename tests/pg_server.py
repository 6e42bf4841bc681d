"""A real PostgreSQL for the tests: initdb + pg_ctl into a temp dir, stopped at the end.

The server listens on a Unix socket in its own directory only (no TCP), so tests on
one machine never collide on ports. initdb refuses to run as root; as root (CI on a
fresh Debian) the cluster is created and run as `nobody` in a directory chowned to
it. Binaries come from PATH or Debian's /usr/lib/postgresql/*/bin; without them the
tests that need a server skip with one line naming the package.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "postgresql"
START_TIMEOUT_S = 60


def find_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl, newest Debian version first."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
        reverse=True,
    )
    return Path(candidates[0]).parent if candidates else None


def _as_owner() -> list[str]:
    """The prefix that runs a command as the cluster's owner (nobody when we are root)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


@dataclass
class PgServer:
    bin_dir: Path
    base: Path  # owned by the cluster's user: data/ and the socket live here
    user: str = "postgres"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        """A libpq URL over the Unix socket (trust auth: a password is accepted and ignored)."""
        auth = self.user if password is None else f"{self.user}:{password}"
        return f"postgresql://{auth}@/{database}?host={self.socket_dir}"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        subprocess.run(
            [*_as_owner(), *args],
            check=True,
            capture_output=True,
            timeout=timeout,
            cwd=self.base,
        )

    def start(self) -> None:
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.base / "server.log"),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-o",
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
            "-c fsync=on -c max_connections=200",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Stop (dropping every connection) and start again, as an operator's restart does."""
        self.stop()
        self.start()

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with psql (a client separate from the service's driver); its output."""
        done = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-U",
                self.user,
                "-d",
                database,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        path = self.base / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _discard(server: PgServer) -> None:
    """Stop the server if it still runs (a test may have stopped it) and remove it."""
    try:
        server.stop("immediate")
    except subprocess.CalledProcessError:
        pass  # already stopped
    finally:
        shutil.rmtree(server.base, ignore_errors=True)


def start_pg_server() -> PgServer:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL binaries not found: install the Debian package {PACKAGE!r}")
    # Not under pytest's tmp_path: that is 0700 root, and the socket path must stay short.
    base = Path(tempfile.mkdtemp(prefix="pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "nobody", "nogroup")
    server = PgServer(bin_dir, base)
    server._run(
        str(bin_dir / "initdb"),
        "-D",
        str(server.data),
        "-U",
        server.user,
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--no-sync",
        timeout=120,
    )
    server.start()
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One server for the session; each test makes its own database (`pg_url`)."""
    server = start_pg_server()
    try:
        yield server
    finally:
        _discard(server)


@dataclass
class PgDatabase:
    """One test's database: its URL for the service, psql for reading rows back."""

    server: PgServer
    name: str

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def psql(self, sql: str) -> str:
        return self.server.psql(sql, self.name)


@pytest.fixture
def pg_db(pg_server: PgServer) -> PgDatabase:
    """A fresh, empty database on the session's server."""
    name = f"t{time.monotonic_ns()}"
    pg_server.create_database(name)
    return PgDatabase(pg_server, name)


@pytest.fixture
def own_pg_server() -> Iterator[PgServer]:
    """A server of the test's own, for tests that restart or stop it."""
    server = start_pg_server()
    try:
        yield server
    finally:
        _discard(server)
