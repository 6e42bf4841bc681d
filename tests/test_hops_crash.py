"""output-service as a real process, killed with SIGKILL while hops wait or
right after they were delivered: a new process on the same db_dir loses none
and resends none."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import query, wait_for
from tests.hops_input import InputService, free_port
from tests.test_hops_loop import traced


class Process:
    """One output-service process; its log goes to a file (a pipe could fill up)."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, offset: int) -> None:
        self.proc = proc
        self.log = log
        self.offset = offset  # where this process's lines start in the shared log
        self.port = 0

    @classmethod
    async def start(cls, db_dir: Path, input_url: str, log: Path, *extra: str) -> Process:
        args = [
            *("--host", "127.0.0.1", "--port", "0", "--health-port", "0"),
            *("--db-dir", str(db_dir), "--input-url", input_url),
            *("--hops-flush-interval-s", "0.01", "--hops-backoff-base-s", "0.01"),
            *("--hops-backoff-max-s", "0.05", "--synchronous", "FULL"),
            *extra,
        ]
        with log.open("ab") as out:
            offset = out.tell()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "output_service", *args, stdout=out, stderr=out
            )
        self = cls(proc, log, offset)
        await wait_for(self._listening, "the process to listen")
        return self

    def _listening(self) -> bool:
        if self.proc.returncode is not None:
            raise AssertionError(f"output-service exited: {self.log.read_text()}")
        for line in self.log.read_bytes()[self.offset :].decode().splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "listening":
                self.port = int(json.loads(line)["results_port"])
        return self.port != 0

    async def post(self, *results: dict[str, Any]) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{self.port}/results", json=list(results)) as reply,
        ):
            assert reply.status == 200, await reply.text()

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(self.proc.wait(), 10) == -signal.SIGKILL

    async def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(self.proc.wait(), 30) == 0


@pytest.fixture
async def processes() -> AsyncIterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.proc.returncode is None:
            process.proc.kill()
            await process.proc.wait()


HOPS = [f"198.51.100.{i}" for i in range(1, 41)]
SENTINEL = "203.0.113.99"


async def test_kill_with_hops_waiting_loses_none(tmp_path: Path, processes: list[Process]) -> None:
    late = InputService(free_port())
    db_dir, log = tmp_path / "data", tmp_path / "service.log"
    first = await Process.start(db_dir, late.url, log)
    processes.append(first)
    for i in range(0, len(HOPS), 10):
        await first.post(traced(f"192.0.2.{i + 1}", *HOPS[i : i + 10]))
    await first.kill()
    assert query(db_dir / "state.db", "SELECT count(*) FROM outbox") == [(len(HOPS),)]

    await late.start()
    try:
        second = await Process.start(db_dir, late.url, log)
        processes.append(second)
        await late.wait_for_hops(len(HOPS))
        await second.post(traced("192.0.2.200", *HOPS[:5], SENTINEL))
        await late.wait_until(lambda: SENTINEL in late.accepted, "the sentinel hop")
        await second.stop()
    finally:
        await late.close()
    assert late.counts == dict.fromkeys([*HOPS, SENTINEL], 1)
    assert query(db_dir / "state.db", "SELECT count(*) FROM outbox") == [(0,)]


async def test_kill_after_delivery_resends_nothing(
    tmp_path: Path, processes: list[Process]
) -> None:
    db_dir, log = tmp_path / "data", tmp_path / "service.log"
    inputs = await InputService().start()
    try:
        first = await Process.start(db_dir, inputs.url, log)
        processes.append(first)
        await first.post(traced("192.0.2.1", *HOPS[:10]))
        await inputs.wait_for_hops(10)
        await wait_for(
            lambda: query(db_dir / "state.db", "SELECT count(*) FROM outbox") == [(0,)],
            "the outbox to empty",
        )
        await first.kill()
        second = await Process.start(db_dir, inputs.url, log)
        processes.append(second)
        # Hops are sent in the order they were queued: had the repeated ones been
        # queued again, they would arrive no later than the new hop behind them.
        await second.post(traced("192.0.2.1", *HOPS[:10], SENTINEL))
        await inputs.wait_until(lambda: SENTINEL in inputs.accepted, "the sentinel hop")
        await second.stop()
    finally:
        await inputs.close()
    assert inputs.counts == dict.fromkeys([*HOPS[:10], SENTINEL], 1)
