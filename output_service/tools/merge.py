"""`output-service merge OUT FILE...`: results files from several instances into one.

What counts as the same batch (stored once):
- a batch with an Idempotency-Key is the same batch as any other with that key
  (the service's own rule: the key is authoritative, the first copy wins);
- a batch without a key is the same as one from the same `X-Node-ID` whose
  results are identical (every stored column of every result, its traceroute
  and hops, in order). That is a file merged twice, or a /dump backup merged
  beside the file it was taken from;
- a result outside any batch (a Go-era file has no `batches` table) is the
  same as an identical loose result.

OUT is created when missing. When it exists it must be a results file: then it
is extended (brought to the current schema first, what it holds counts for the
duplicates above). Anything else at OUT is refused and nothing is written;
so is OUT named among the inputs. Inputs are opened read-only and never
changed. Each input goes in within one transaction, so a failure leaves OUT as
it was before that input. OUT ends sealed (every seed index), as an archive.

Exit 0 when every input was merged, 1 when OUT was refused or an input could
not be read (the others are still merged), 2 on bad usage. One JSON line per
input on stdout; a progress bar on stderr only when it is a terminal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from output_service.storage.sqlite.schema import (
    SCHEMA_VERSION,
    SchemaError,
    add_sealed_indexes,
    migrate,
)
from output_service.storage.sqlite.transactions import immediate_transaction

_PING = "ip, sent, received, packet_loss, avg_rtt, timestamp, error"
_RESULT_COLUMNS = ("created_at", "raw")  # copied when the input has them, else NULL


class MergeError(Exception):
    """OUT or an input cannot be used; the message says why."""


@dataclass
class Merged:
    file: str
    batches_added: int = 0
    batches_skipped: int = 0
    results_added: int = 0
    results_skipped: int = 0
    error: str | None = None


class Progress:
    """`\\r[#####.....] 12,345/70,000 results` on a terminal; nothing elsewhere."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled, self._shown = max(total, 1), 0, enabled, -1

    def add(self, n: int) -> None:
        self.done += n
        tenth = self.done * 40 // self.total
        if self.enabled and tenth != self._shown:
            self._shown = tenth
            bar = "#" * tenth + "." * (40 - tenth)
            print(f"\r[{bar}] {self.done:,}/{self.total:,} results", end="", file=sys.stderr)
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> set[str]:
    return {str(r[1]) for r in conn.execute(f"PRAGMA {schema}.table_info({table})")}


def _tables(conn: sqlite3.Connection, schema: str) -> set[str]:
    rows = conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")
    return {str(r[0]) for r in rows}


def open_out(path: Path) -> sqlite3.Connection:
    """OUT, at the current schema: a new file, or an existing results file."""
    existed = path.exists()
    if existed:
        try:
            with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as probe:
                tables = _tables(probe, "main")
            probe.close()
        except sqlite3.DatabaseError as exc:
            raise MergeError(f"{path}: not a results file ({exc}); refusing to overwrite") from None
        if "ping_results" not in tables:
            raise MergeError(f"{path}: not a results file; refusing to overwrite")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    try:
        migrate(conn)
    except SchemaError as exc:
        conn.close()
        raise MergeError(f"{path}: {exc}") from None
    return conn


def _result_digest(conn: sqlite3.Connection, schema: str, ids: Iterable[int]) -> str:
    """A hash of the stored content of these results (not their ids)."""
    digest = hashlib.sha256()
    for pid in ids:
        row = conn.execute(f"SELECT {_PING} FROM {schema}.ping_results WHERE id = ?", (pid,))
        digest.update(repr(tuple(row.fetchone())).encode())
        traces = conn.execute(
            f"SELECT id, method, completed, error FROM {schema}.traceroute_results"
            " WHERE ping_result_id = ? ORDER BY id",
            (pid,),
        ).fetchall()
        for trace in traces:
            digest.update(repr(tuple(trace[1:])).encode())
            hops = conn.execute(
                f"SELECT ttl, ip, rtt, timeout FROM {schema}.traceroute_hops"
                " WHERE traceroute_id = ? ORDER BY ttl, id",
                (trace[0],),
            ).fetchall()
            digest.update(repr(hops).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def _ids(conn: sqlite3.Connection, schema: str, where: str, args: Sequence[Any]) -> list[int]:
    sql = f"SELECT id FROM {schema}.ping_results WHERE {where} ORDER BY id"
    return [int(r[0]) for r in conn.execute(sql, args)]


class Seen:
    """What OUT already holds: keys, (node, digest) of keyless batches, loose results."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.keys: set[str] = set()
        self.batches: set[tuple[str | None, str]] = set()
        self.loose: set[str] = set()
        rows = conn.execute("SELECT id, node_id, idempotency_key FROM main.batches").fetchall()
        for batch_id, node, key in rows:
            if key is not None:
                self.keys.add(str(key))
            else:
                ids = _ids(conn, "main", "batch_id = ?", (batch_id,))
                self.batches.add((node, _result_digest(conn, "main", ids)))
        for pid in _ids(conn, "main", "batch_id IS NULL", ()):
            self.loose.add(_result_digest(conn, "main", [pid]))

    def copy(self) -> Seen:
        """A copy to go back to when an input's transaction is rolled back."""
        other = Seen.__new__(Seen)
        other.keys, other.batches, other.loose = set(self.keys), set(self.batches), set(self.loose)
        return other


class Copier:
    """Copies results (with traceroutes and hops) from `src` into OUT in SQL, new ids."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        present = _columns(conn, "src", "ping_results")
        extra = ", ".join(c if c in present else "NULL" for c in _RESULT_COLUMNS)
        self._extra = extra

    def _max(self, table: str) -> int:
        return int(
            self.conn.execute(f"SELECT coalesce(max(id), 0) FROM main.{table}").fetchone()[0]
        )

    def copy(self, where: str, args: Sequence[Any], batch_id: int | None) -> None:
        """The input's results matching `where` (on src.ping_results), in order; ids move
        by one offset per table (past OUT's largest), so the links between tables follow."""
        c = self.conn
        mine = f"SELECT id FROM src.ping_results WHERE {where}"
        lo = c.execute(f"SELECT min(id) FROM ({mine})", args).fetchone()[0]
        if lo is None:
            return
        ping_off = self._max("ping_results") + 1 - int(lo)
        c.execute(
            f"INSERT INTO main.ping_results (id, {_PING}, created_at, raw, batch_id)"
            f" SELECT id + ?, {_PING}, {self._extra}, ? FROM src.ping_results"
            f" WHERE {where} ORDER BY id",
            (ping_off, batch_id, *args),
        )
        traces = f"SELECT id FROM src.traceroute_results WHERE ping_result_id IN ({mine})"
        first = c.execute(f"SELECT min(id) FROM ({traces})", args).fetchone()[0]
        if first is None:
            return
        trace_off = self._max("traceroute_results") + 1 - int(first)
        c.execute(
            "INSERT INTO main.traceroute_results (id, ping_result_id, method, completed, error)"
            " SELECT id + ?, ping_result_id + ?, method, completed, error"
            f" FROM src.traceroute_results WHERE ping_result_id IN ({mine}) ORDER BY id",
            (trace_off, ping_off, *args),
        )
        hops = f"FROM src.traceroute_hops WHERE traceroute_id IN ({traces})"
        hop_first = c.execute(f"SELECT min(id) {hops}", args).fetchone()[0]
        if hop_first is None:
            return
        hop_off = self._max("traceroute_hops") + 1 - int(hop_first)
        c.execute(
            "INSERT INTO main.traceroute_hops (id, traceroute_id, ttl, ip, rtt, timeout)"
            f" SELECT id + ?, traceroute_id + ?, ttl, ip, rtt, timeout {hops} ORDER BY id",
            (hop_off, trace_off, *args),
        )


def _batch_row(conn: sqlite3.Connection, batch_id: int) -> tuple[Any, ...]:
    cols = _columns(conn, "src", "batches")
    picks = ", ".join(
        c if c in cols else "NULL"
        for c in ("received_at", "remote", "node_id", "idempotency_key", "body_hash")
    )
    row = conn.execute(f"SELECT {picks} FROM src.batches WHERE id = ?", (batch_id,)).fetchone()
    return tuple(row)


def merge_one(conn: sqlite3.Connection, seen: Seen, path: Path, progress: Progress) -> Merged:
    """One input into OUT in one transaction."""
    report = Merged(str(path))
    conn.execute("ATTACH DATABASE ? AS src", (f"{path.resolve().as_uri()}?mode=ro",))
    try:
        if "ping_results" not in _tables(conn, "src"):
            raise MergeError(f"{path}: not a results file (no ping_results table)")
        version = int(conn.execute("PRAGMA src.user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise MergeError(f"{path}: schema version {version} is newer than {SCHEMA_VERSION}")
        copier = Copier(conn)
        has_batches = "batches" in _tables(conn, "src")
        with immediate_transaction(conn):
            if has_batches:
                for (batch_id,) in conn.execute(
                    "SELECT id FROM src.batches ORDER BY id"
                ).fetchall():
                    _merge_batch(conn, copier, seen, int(batch_id), report, progress)
            loose = "batch_id IS NULL" if has_batches else "1 = 1"
            for pid in _ids(conn, "src", loose, ()):
                digest = _result_digest(conn, "src", [pid])
                if digest in seen.loose:
                    report.results_skipped += 1
                else:
                    seen.loose.add(digest)
                    copier.copy("id = ?", (pid,), None)
                    report.results_added += 1
                progress.add(1)
    finally:
        conn.execute("DETACH DATABASE src")
    return report


def _merge_batch(
    conn: sqlite3.Connection,
    copier: Copier,
    seen: Seen,
    batch_id: int,
    report: Merged,
    progress: Progress,
) -> None:
    meta = _batch_row(conn, batch_id)
    node, key = meta[2], meta[3]
    ids = _ids(conn, "src", "batch_id = ?", (batch_id,))
    progress.add(len(ids))
    if key is not None:
        duplicate = key in seen.keys
        seen.keys.add(key)
    else:
        identity = (node, _result_digest(conn, "src", ids))
        duplicate = identity in seen.batches
        seen.batches.add(identity)
    if duplicate:
        report.batches_skipped += 1
        report.results_skipped += len(ids)
        return
    new_id = conn.execute(
        "INSERT INTO main.batches (received_at, remote, node_id, idempotency_key, body_hash,"
        " result_count) VALUES (coalesce(?, strftime('%Y-%m-%dT%H:%M:%fZ')), ?, ?, ?, ?, ?)",
        (*meta, len(ids)),
    ).lastrowid
    copier.copy("batch_id = ?", (batch_id,), new_id)
    report.batches_added += 1
    report.results_added += len(ids)


def _count(path: Path) -> int:
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as probe:
            n = int(probe.execute("SELECT count(*) FROM ping_results").fetchone()[0])
        probe.close()
        return n
    except sqlite3.DatabaseError:
        return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="output-service merge", description="merge results files into one (OUT)"
    )
    parser.add_argument("out", type=Path, help="the results file to create or extend")
    parser.add_argument("files", type=Path, nargs="+", help="results files to merge into OUT")
    args = parser.parse_args(argv)
    out: Path = args.out
    if any(p.exists() and out.exists() and p.samefile(out) for p in args.files):
        print(f"output-service merge: {out} is also an input", file=sys.stderr)
        return 1
    try:
        conn = open_out(out)
    except MergeError as exc:
        print(f"output-service merge: {exc}", file=sys.stderr)
        return 1
    status = 0
    try:
        seen = Seen(conn)
        progress = Progress(sum(_count(p) for p in args.files), sys.stderr.isatty())
        for path in args.files:
            before = seen.copy()
            try:
                if not path.is_file():
                    raise MergeError(f"{path}: no such file")
                report = merge_one(conn, seen, path, progress)
            except (MergeError, sqlite3.DatabaseError) as exc:
                report, status, seen = Merged(str(path), error=str(exc)), 1, before
            print(json.dumps(asdict(report)))
        progress.close()
        add_sealed_indexes(conn)
    finally:
        conn.close()
    return status
