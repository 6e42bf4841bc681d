"""The batches rows of a group: key-less ones go in with multi-row statements,
keyed ones one at a time (to learn whether the key is taken); both end up the
same in the file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from output_service.models import Batch, Result
from output_service.storage.sqlite.results_file import BatchMeta, ResultsFile

STAMP = "2026-01-02T03:04:05.000000000Z"


def _batch(n: int, size: int) -> Batch:
    return Batch([Result(f"192.0.2.{n % 250}", 4, 4, 0.0, 1, STAMP) for _ in range(size)])


def test_keyless_and_keyed_batches_of_one_group_are_all_stored(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    file = ResultsFile.open(path, synchronous="FULL", cache_size_mb=4, wal_autocheckpoint=1000)
    items: list[tuple[Batch, BatchMeta]] = []
    expected = []
    # 300 key-less batches (more than one statement's 256 rows), keyed ones in between
    for n in range(300):
        key = f"k{n}" if n % 100 == 7 else None
        meta = BatchMeta(f"2026-01-02T03:04:{n % 60:02d}.000000Z", "127.0.0.1", f"node{n}", key)
        items.append((_batch(n, 1 + n % 3), meta))
        expected.append((n + 1, meta.received_at, "127.0.0.1", f"node{n}", key, None, 1 + n % 3))
    # the same key again in the same group: a duplicate, nothing stored for it
    items.append((_batch(0, 5), BatchMeta("2026-01-02T03:05:00.000000Z", idempotency_key="k7")))
    outcomes = file.write_group(items)
    file.close()
    assert [o.duplicate for o in outcomes] == [False] * 300 + [True]
    assert outcomes[-1].count == 1 + 7 % 3
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT id, received_at, remote, node_id, idempotency_key, body_hash, result_count"
            " FROM batches ORDER BY id"
        ).fetchall()
        per_batch = conn.execute(
            "SELECT batch_id, count(*) FROM ping_results GROUP BY batch_id ORDER BY batch_id"
        ).fetchall()
    assert rows == expected
    assert per_batch == [(n + 1, 1 + n % 3) for n in range(300)]
