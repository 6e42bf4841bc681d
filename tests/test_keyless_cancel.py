"""A key-less batch is awaited without a shield: a handler cancelled while its
batch waits for the writer must still leave the batch committed, and the
writer must go on with the next one."""

from __future__ import annotations

import asyncio
import json

from output_service.models import decode_batch
from output_service.storage.seam import Submission, SubmitResult
from tests.conftest import Running, make_result, wait_for


async def test_a_cancelled_keyless_submit_still_commits(service: Running) -> None:
    storage = service.services.storage
    writer = storage.writer
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    blocker = asyncio.ensure_future(
        writer.call(lambda: asyncio.run_coroutine_threadsafe(gate.wait(), loop).result())
    )
    first = asyncio.ensure_future(
        storage.submit(Submission(decode_batch(json.dumps([make_result()]).encode(), 10)))
    )
    await wait_for(lambda: writer.queued_batches >= 1)  # the batch waits behind the blocker
    first.cancel()  # the client went away: aiohttp cancels its handler
    gate.set()
    await blocker
    two = [make_result("192.0.2.2"), make_result("192.0.2.3")]
    assert await storage.submit(Submission(decode_batch(json.dumps(two).encode(), 10))) == (
        SubmitResult(2)
    )
    assert first.cancelled()
    assert service.rows("SELECT count(*) FROM ping_results") == [(3,)]
