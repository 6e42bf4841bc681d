"""Two small SQLite helpers shared by the results files and the hop state database.

Connections here run in autocommit mode (`isolation_level=None`), so transactions
are explicit and nothing opens one behind the code's back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated DDL inside the caller's transaction (executescript() would
    COMMIT on its own)."""
    for statement in (s.strip() for s in script.split(";")):
        if statement:
            conn.execute(statement)
