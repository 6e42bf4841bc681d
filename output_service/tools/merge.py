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
import contextlib
import hashlib
import json
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from output_service.storage.sqlite import connect
from output_service.storage.sqlite.schema import (
    SCHEMA_VERSION,
    SchemaError,
    add_sealed_indexes,
    migrate,
)
from output_service.storage.sqlite.transactions import immediate_transaction

_PING = "ip, sent, received, packet_loss, avg_rtt, timestamp, error"
_PING_OF_P = ", ".join(f"p.{c}" for c in _PING.split(", "))
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
            with contextlib.closing(connect.read_only(path)) as probe:
                tables = _tables(probe, "main")
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


def _keyless_batches(conn: sqlite3.Connection, schema: str) -> str:
    """SQL selecting the ids of `schema`'s batches that have no Idempotency-Key."""
    if "idempotency_key" in _columns(conn, schema, "batches"):
        return f"SELECT id FROM {schema}.batches WHERE idempotency_key IS NULL"
    return f"SELECT id FROM {schema}.batches"


def _digests(
    conn: sqlite3.Connection, schema: str, group: str, where: str
) -> Iterator[tuple[int, str]]:
    """(group, hash of its results' stored content) for each group of results
    matching `where`: `group` is "p.batch_id" (one hash per batch) or "p.id"
    (one per result). Ids are not hashed, only what they hold, in order: each
    result's columns, its traceroutes (by id) and their hops (by ttl, id).

    One ordered statement for the whole file, hashed as it streams: per-result
    look-ups made a 140,000-result file take a quarter of an hour."""
    rows = conn.execute(
        f"SELECT {group}, p.id, {_PING_OF_P}, t.id, t.method, t.completed, t.error,"
        " h.ttl, h.ip, h.rtt, h.timeout"
        f" FROM {schema}.ping_results p"
        f" LEFT JOIN {schema}.traceroute_results t ON t.ping_result_id = p.id"
        f" LEFT JOIN {schema}.traceroute_hops h ON h.traceroute_id = t.id"
        f" WHERE {where} ORDER BY {group}, p.id, t.id, h.ttl, h.id"
    )
    current: int | None = None
    digest = hashlib.sha256()
    result = trace = None
    for row in rows:
        if row[0] != current:
            if current is not None:
                yield current, digest.hexdigest()
            current, digest, result = row[0], hashlib.sha256(), None
        if row[1] != result:  # a new result: its columns
            result, trace = row[1], None
            digest.update(b"\x00" + repr(row[2:9]).encode())
        if row[9] is not None and row[9] != trace:  # a new traceroute
            trace = row[9]
            digest.update(b"\x01" + repr(row[10:13]).encode())
        if row[13] is not None:  # a hop (ttl is never NULL)
            digest.update(repr(row[13:17]).encode())
    if current is not None:
        yield current, digest.hexdigest()


EMPTY = hashlib.sha256().hexdigest()  # the digest of a batch without results


class Seen:
    """What OUT already holds: keys, (node, digest) of keyless batches, loose results."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.keys: set[str] = set()
        keyless: dict[int, str | None] = {}  # batch id -> node
        for batch_id, node, key in conn.execute(
            "SELECT id, node_id, idempotency_key FROM main.batches"
        ):
            if key is not None:
                self.keys.add(str(key))
            else:
                keyless[int(batch_id)] = node
        where = f"p.batch_id IN ({_keyless_batches(conn, 'main')})"
        digests = dict(_digests(conn, "main", "p.batch_id", where))
        self.batches = {(node, digests.get(b, EMPTY)) for b, node in keyless.items()}
        self.loose = {d for _, d in _digests(conn, "main", "p.id", "p.batch_id IS NULL")}

    def copy(self) -> Seen:
        """A copy to go back to when an input's transaction is rolled back."""
        other = Seen.__new__(Seen)
        other.keys, other.batches, other.loose = set(self.keys), set(self.batches), set(self.loose)
        return other


# The tables a result is made of, each linked to its parent by one column: the
# rows picked for copying, and the parent's id offset their link moves by.
_PICKED = "SELECT src_id FROM temp.picked"
_COPIED = (
    # table, link column, the link's new value, which src rows
    (
        "ping_results",
        "batch_id",
        "(SELECT batch FROM temp.picked WHERE src_id = s.id)",
        f"s.id IN ({_PICKED})",
    ),
    (
        "traceroute_results",
        "ping_result_id",
        "s.ping_result_id + ?",
        f"s.ping_result_id IN ({_PICKED})",
    ),
    (
        "traceroute_hops",
        "traceroute_id",
        "s.traceroute_id + ?",
        "s.traceroute_id IN (SELECT id FROM src.traceroute_results"
        f" WHERE ping_result_id IN ({_PICKED}))",
    ),
)


class Copier:
    """Copies the picked results (with traceroutes and hops) from `src` into OUT in
    SQL: one statement per table, ids moved by one offset per table (past OUT's
    largest), so the links between tables follow."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        ping = _columns(conn, "src", "ping_results")
        extra = [c if c in ping else "NULL" for c in _RESULT_COLUMNS]
        self._columns = {
            "ping_results": (
                f"{_PING}, {', '.join(_RESULT_COLUMNS)}",
                f"{_PING}, {', '.join(extra)}",
            ),
            "traceroute_results": ("method, completed, error",) * 2,
            "traceroute_hops": ("ttl, ip, rtt, timeout",) * 2,
        }

    def copy_picked(self) -> None:
        c = self.conn
        parent_offset: tuple[int, ...] = ()  # the batch link is looked up, not shifted
        for table, link, value, which in _COPIED:
            first = c.execute(f"SELECT min(s.id) FROM src.{table} s WHERE {which}").fetchone()[0]
            if first is None:
                return
            top = c.execute(f"SELECT coalesce(max(id), 0) FROM main.{table}").fetchone()[0]
            offset = int(top) + 1 - int(first)
            into, picks = self._columns[table]
            c.execute(
                f"INSERT INTO main.{table} (id, {link}, {into})"
                f" SELECT s.id + ?, {value}, {picks} FROM src.{table} s"
                f" WHERE {which} ORDER BY s.id",
                (offset, *parent_offset),
            )
            parent_offset = (offset,)


def _batch_rows(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """(id, received_at, remote, node_id, idempotency_key, body_hash) of every src
    batch, by id; NULL for a column the input's schema does not have."""
    cols = _columns(conn, "src", "batches")
    picks = ", ".join(
        c if c in cols else "NULL"
        for c in ("received_at", "remote", "node_id", "idempotency_key", "body_hash")
    )
    return conn.execute(f"SELECT id, {picks} FROM src.batches ORDER BY id").fetchall()


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
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS picked (src_id INTEGER PRIMARY KEY, batch INTEGER)"
            )
            conn.execute("DELETE FROM temp.picked")
            if has_batches:
                _pick_batches(conn, seen, report, progress)
            loose = "p.batch_id IS NULL" if has_batches else "1 = 1"
            picked = []
            for pid, digest in _digests(conn, "src", "p.id", loose):
                if digest in seen.loose:
                    report.results_skipped += 1
                else:
                    seen.loose.add(digest)
                    picked.append((pid,))
                    report.results_added += 1
                progress.add(1)
            conn.executemany("INSERT INTO temp.picked (src_id) VALUES (?)", picked)
            copier.copy_picked()
            conn.execute("DELETE FROM temp.picked")
    finally:
        conn.execute("DETACH DATABASE src")
    return report


def _pick_batches(conn: sqlite3.Connection, seen: Seen, report: Merged, progress: Progress) -> None:
    """Decide for each src batch, in order, whether OUT has it; add the new ones'
    rows to OUT and their results to temp.picked (with the new batch id)."""
    keyless = f"p.batch_id IN ({_keyless_batches(conn, 'src')})"
    digests = dict(_digests(conn, "src", "p.batch_id", keyless))
    counts = dict(
        conn.execute(
            "SELECT batch_id, count(*) FROM src.ping_results WHERE batch_id IS NOT NULL"
            " GROUP BY batch_id"
        ).fetchall()
    )
    mapping: list[tuple[int, int]] = []
    for batch_id, *meta in _batch_rows(conn):
        node, key = meta[2], meta[3]
        n = int(counts.get(batch_id, 0))
        progress.add(n)
        if key is not None:
            duplicate = key in seen.keys
            seen.keys.add(key)
        else:
            identity = (node, digests.get(batch_id, EMPTY))
            duplicate = identity in seen.batches
            seen.batches.add(identity)
        if duplicate:
            report.batches_skipped += 1
            report.results_skipped += n
            continue
        new_id = conn.execute(
            "INSERT INTO main.batches (received_at, remote, node_id, idempotency_key, body_hash,"
            " result_count) VALUES (coalesce(?, strftime('%Y-%m-%dT%H:%M:%fZ')), ?, ?, ?, ?, ?)",
            (*meta, n),
        ).lastrowid
        assert new_id is not None
        mapping.append((batch_id, new_id))
        report.batches_added += 1
        report.results_added += n
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS batch_map (src INTEGER PRIMARY KEY, out INTEGER)")
    conn.execute("DELETE FROM temp.batch_map")
    conn.executemany("INSERT INTO temp.batch_map VALUES (?, ?)", mapping)
    conn.execute(
        "INSERT INTO temp.picked (src_id, batch) SELECT p.id, m.out FROM src.ping_results p"
        " JOIN temp.batch_map m ON m.src = p.batch_id"
    )


def _count(path: Path) -> int:
    try:
        with contextlib.closing(connect.read_only(path)) as probe:
            n = int(probe.execute("SELECT count(*) FROM ping_results").fetchone()[0])
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
