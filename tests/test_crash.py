"""Crash safety: kill -9 the service while a separate client posts as fast as it can.

After every kill the service restarts on the same db_dir; at the end every
batch that got a 200 must be stored exactly once, across all results files, and
every file must pass `PRAGMA integrity_check`. Odd rounds also ask for
rotations while posting (with a tiny size limit too), so some kills land during
a rotation once /rotate and size rotation exist.
"""

from __future__ import annotations

import os
import random
import urllib.request
from pathlib import Path

from tests.load_client import WORKERS, batch_body
from tests.service_process import (
    acked,
    lost_or_duplicated,
    run_client,
    start_service,
    stop_leftovers,
    stored_ips,
    wait_for_acks,
)

ROUNDS = 6
# Retention deleting old files is not a loss this test looks for: keep them all.
KEEP_ALL = "--keep-files=100000"


def post_one(url: str, worker: int) -> int:
    request = urllib.request.Request(
        url, data=batch_body(worker, 0), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def test_kill_9_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    db_dir = tmp_path / "data"
    ack_file = tmp_path / "acked.txt"
    for round_no in range(ROUNDS):
        rotating = round_no % 2 == 1
        extra = ["--max-size-mb=0.05"] if rotating else []
        service = start_service(db_dir, KEEP_ALL, *extra)
        before = len(acked(ack_file))
        client = run_client(service.results_port, ack_file, round_no * WORKERS, rotating)
        kill_after = before + rng.randint(1, 120)
        try:
            wait_for_acks(ack_file, kill_after, client)
            service.kill9()
            _, client_err = client.communicate(timeout=60)
        finally:
            stop_leftovers(service, client)
        assert client.returncode == 0, client_err
        assert service.proc.returncode == -9

    final = start_service(db_dir, KEEP_ALL)
    try:
        assert post_one(final.url("/results"), worker=31) == 200
    finally:
        assert final.terminate() == 0, final.stderr()

    acks = acked(ack_file)
    assert len(acks) >= ROUNDS, f"the client got too few acks to test anything (seed {seed})"
    assert lost_or_duplicated(acks, stored_ips(db_dir)) == ([], []), f"seed {seed}"
