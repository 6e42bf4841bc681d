"""SIGTERM while the input service stalls: the hop sender's final flush fits in
the shutdown grace. The process (a real one) exits 0 within shutdown_grace_s plus
a margin (the wait is a timeout, not the assertion), although an upload holds
the results port for the whole grace and hops_final_flush_s is far longer; the
hops it could not deliver are still in state.db's outbox for the next start."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from tests.conftest import query
from tests.hops_input import InputService
from tests.test_hops_crash import Process
from tests.test_hops_loop import traced

GRACE_S = 2.0
MARGIN_S = 6.0  # well below hops_final_flush_s: an exit after grace + flush fails
HOPS = [f"198.51.100.{i}" for i in range(1, 11)]


async def test_sigterm_with_a_stalled_input_service_exits_and_keeps_the_hops(
    tmp_path: Path,
) -> None:
    stalled = InputService()
    stalled.hold = asyncio.Event()  # never set while the service runs: every POST hangs
    await stalled.start()
    db_dir, log = tmp_path / "data", tmp_path / "service.log"
    process: Process | None = None
    upload: socket.socket | None = None
    try:
        process = await Process.start(
            db_dir,
            stalled.url,
            log,
            f"--shutdown-grace-s={GRACE_S}",
            "--hops-final-flush-s=60",
            "--hops-send-timeout-s=120",
        )
        await process.post(traced("192.0.2.1", *HOPS))
        await stalled.wait_until(lambda: stalled.arrived >= 1, "the sender's first POST")
        # an upload that never finishes keeps the results port draining for the grace
        upload = socket.create_connection(("127.0.0.1", process.port), timeout=10)
        upload.sendall(
            b"POST /results HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n[{"
        )
        process.proc.send_signal(15)
        code = await asyncio.wait_for(process.proc.wait(), GRACE_S + MARGIN_S)
        assert code == 0, log.read_text()
    finally:
        if upload is not None:
            upload.close()
        if process is not None and process.proc.returncode is None:
            process.proc.kill()
            await process.proc.wait()
        await stalled.close()
    assert stalled.accepted == []
    waiting = query(db_dir / "state.db", "SELECT ip FROM outbox ORDER BY ip")
    assert sorted(ip for (ip,) in waiting) == sorted(HOPS)
