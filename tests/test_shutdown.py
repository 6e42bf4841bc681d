"""Graceful shutdown under load: SIGTERM while a separate client posts as fast as it can.

Every batch that got a 200 is stored exactly once, the process exits 0, and the
client saw only 200s, 503s or a closed connection (the client fails on anything else).
"""

from __future__ import annotations

from pathlib import Path

from tests.service_process import (
    acked,
    lost_or_duplicated,
    run_client,
    start_service,
    stop_leftovers,
    stored_ips,
    wait_for_acks,
)


def test_sigterm_under_load_keeps_every_acknowledged_batch(tmp_path: Path) -> None:
    db_dir = tmp_path / "data"
    ack_file = tmp_path / "acked.txt"
    service = start_service(db_dir)
    client = run_client(service.results_port, ack_file, worker_base=0, rotate=False)
    try:
        wait_for_acks(ack_file, 100, client)
        assert client.poll() is None, "the client stopped before the signal"
        status = service.terminate()
        _, client_err = client.communicate(timeout=60)
    finally:
        stop_leftovers(service, client)
    assert status == 0, service.stderr()
    assert client.returncode == 0, client_err
    assert service.events("stopped"), "no 'stopped' log line"
    acks = acked(ack_file)
    assert len(acks) >= 100
    assert lost_or_duplicated(acks, stored_ips(db_dir)) == ([], [])
    stopped = service.events("stopped")[0]
    assert stopped["total_results"] == sum(stored_ips(db_dir).values())
