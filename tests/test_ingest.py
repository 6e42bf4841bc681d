"""POST /results over a real socket, checked against the SQLite file itself."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import pytest

from output_service.models import decode_batch
from output_service.storage.seam import StoreError, Submission, SubmitResult
from tests.conftest import Running, StartService, make_result, wait_for


async def post(service: Running, payload: Any, **headers: str) -> tuple[int, dict[str, Any]]:
    resp = await service.results.post(
        "/results",
        data=json.dumps(payload),
        headers={"Content-Type": "application/json", **headers},
    )
    return resp.status, await resp.json()


async def test_batch_is_stored_in_all_three_tables(service: Running) -> None:
    status, body = await post(
        service,
        [make_result("192.0.2.1", hops=3), make_result("192.0.2.2")],
        **{"X-Node-ID": "node-7"},
    )
    assert (status, body) == (200, {"status": "ok", "received": 2})
    pings = service.rows(
        "SELECT id, ip, sent, received, packet_loss, avg_rtt, timestamp, error,"
        " batch_id FROM ping_results ORDER BY id"
    )
    assert pings == [
        (1, "192.0.2.1", 4, 4, 0.0, 12_345_678, "2026-01-02T03:04:05.123456789Z", None, 1),
        (2, "192.0.2.2", 4, 4, 0.0, 12_345_678, "2026-01-02T03:04:05.123456789Z", None, 1),
    ]
    assert service.rows("SELECT ping_result_id, method, completed FROM traceroute_results") == [
        (1, "icmp", 1)
    ]
    assert service.rows(
        "SELECT traceroute_id, ttl, ip, rtt, timeout FROM traceroute_hops ORDER BY ttl"
    ) == [
        (1, 1, "10.0.0.1", 1_000_000, 0),
        (1, 2, "10.1.0.1", 2_000_000, 0),
        (1, 3, "10.2.0.1", 3_000_000, 0),
    ]
    batches = service.rows("SELECT remote, node_id, result_count FROM batches")
    assert batches == [("127.0.0.1", "node-7", 2)]


async def test_single_object_and_unknown_fields(service: Running) -> None:
    item = make_result(agent="go-pinger/1.4")
    status, body = await post(service, item)
    assert (status, body["received"]) == (200, 1)
    (raw,) = service.rows("SELECT raw FROM ping_results")[0]
    assert json.loads(raw)["agent"] == "go-pinger/1.4"


async def test_empty_array_is_ok_and_stores_nothing(service: Running) -> None:
    assert await post(service, []) == (200, {"status": "ok", "received": 0})
    assert service.rows("SELECT count(*) FROM batches") == [(0,)]


async def test_invalid_batch_gets_400_and_nothing_is_stored(service: Running) -> None:
    status, body = await post(service, [make_result(), make_result(ip="nope")])
    assert status == 400
    assert body["status"] == "error"
    assert body["errors"] == [{"index": 1, "field": "ip", "reason": body["errors"][0]["reason"]}]
    assert service.rows("SELECT count(*) FROM ping_results") == [(0,)]


async def test_malformed_json_gets_400(service: Running) -> None:
    resp = await service.results.post(
        "/results", data=b"[{", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert "malformed JSON" in (await resp.json())["errors"][0]["reason"]


async def test_non_json_content_type_gets_415(service: Running) -> None:
    resp = await service.results.post(
        "/results", data=json.dumps([make_result()]), headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 415
    assert "application/json" in (await resp.json())["error"]
    assert service.rows("SELECT count(*) FROM ping_results") == [(0,)]


async def test_missing_content_type_is_accepted_like_go(service: Running) -> None:
    resp = await service.results.post(
        "/results", data=json.dumps([make_result()]).encode(), skip_auto_headers=["Content-Type"]
    )
    assert resp.status == 200


async def test_oversized_body_gets_413(start_service: StartService) -> None:
    service = await start_service(max_body_mb=0.01)
    payload = [make_result(hops=10) for _ in range(30)]
    assert len(json.dumps(payload)) > 0.01 * 1024 * 1024
    status, body = await post(service, payload)
    assert (status, body["status"]) == (413, "error")
    assert service.rows("SELECT count(*) FROM ping_results") == [(0,)]


async def test_gzip_body_is_accepted_and_limit_applies_inflated(
    start_service: StartService,
) -> None:
    service = await start_service(max_body_mb=0.01)
    small = gzip.compress(json.dumps([make_result(hops=2)]).encode())
    resp = await service.results.post(
        "/results",
        data=small,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status == 200
    big_plain = json.dumps([make_result(hops=10) for _ in range(60)]).encode()
    big = gzip.compress(big_plain)
    assert len(big) < 0.01 * 1024 * 1024 < len(big_plain)
    resp = await service.results.post(
        "/results",
        data=big,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status == 413
    assert service.rows("SELECT count(*) FROM ping_results") == [(1,)]


async def test_idempotent_retry_is_stored_once(service: Running) -> None:
    payload = [make_result(), make_result("192.0.2.9")]
    first = await service.results.post("/results", json=payload, headers={"Idempotency-Key": "k1"})
    again = await service.results.post("/results", json=payload, headers={"Idempotency-Key": "k1"})
    assert (first.status, again.status) == (200, 200)
    assert await first.json() == await again.json() == {"status": "ok", "received": 2}
    assert again.headers["Idempotent-Replayed"] == "true"
    assert service.rows("SELECT count(*) FROM ping_results") == [(2,)]
    assert service.rows("SELECT idempotency_key, result_count FROM batches") == [("k1", 2)]


async def test_concurrent_retries_with_one_key_store_once(service: Running) -> None:
    payload = [make_result(hops=2)] * 5
    responses = await asyncio.gather(
        *(
            service.results.post("/results", json=payload, headers={"Idempotency-Key": "same"})
            for _ in range(8)
        )
    )
    assert [r.status for r in responses] == [200] * 8
    assert service.rows("SELECT count(*) FROM ping_results") == [(5,)]


async def test_idempotency_key_reused_for_other_body_gets_422(service: Running) -> None:
    ok = await service.results.post(
        "/results", json=[make_result()], headers={"Idempotency-Key": "k"}
    )
    other = await service.results.post(
        "/results", json=[make_result("192.0.2.3")], headers={"Idempotency-Key": "k"}
    )
    assert (ok.status, other.status) == (200, 422)
    assert service.rows("SELECT ip FROM ping_results") == [("192.0.2.1",)]


async def test_idempotency_keys_survive_a_restart(start_service: StartService) -> None:
    payload = [make_result()]
    first = await start_service()
    resp = await first.results.post("/results", json=payload, headers={"Idempotency-Key": "r"})
    assert resp.status == 200
    await first.results.close()  # stops the app: storage drains and closes
    second = await start_service()
    again = await second.results.post("/results", json=payload, headers={"Idempotency-Key": "r"})
    assert again.status == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert second.rows("SELECT count(*) FROM ping_results") == [(1,)]


async def test_expired_idempotency_key_is_a_new_batch(start_service: StartService) -> None:
    now = [1_800_000_000.0]
    service = await start_service(clock=lambda: now[0], idempotency_window_hours=1)
    payload = [make_result()]
    await service.results.post("/results", json=payload, headers={"Idempotency-Key": "e"})
    now[0] += 3601
    resp = await service.results.post("/results", json=payload, headers={"Idempotency-Key": "e2"})
    assert resp.status == 200
    assert service.rows("SELECT count(*) FROM ping_results") == [(2,)]


async def test_bad_idempotency_key_gets_400(service: Running) -> None:
    resp = await service.results.post(
        "/results", json=[make_result()], headers={"Idempotency-Key": "x" * 300}
    )
    assert resp.status == 400


@pytest.mark.parametrize(
    ("queued", "refused"),
    [
        (3, 1),  # the queue is full: refused before the body is read
        (2, 2),  # room for 1 more result, the batch has 2: refused after decoding
    ],
)
async def test_queue_full_gets_503_with_retry_after(
    start_service: StartService, queued: int, refused: int
) -> None:
    service = await start_service(queue_max_results=3)
    writer = service.services.storage.writer
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Hold the writer thread so queued batches cannot drain; then the queue fills.
    blocker = asyncio.ensure_future(
        writer.call(lambda: asyncio.run_coroutine_threadsafe(gate.wait(), loop).result())
    )
    first = asyncio.ensure_future(service.results.post("/results", json=[make_result()] * queued))
    await wait_for(lambda: writer.queued_results >= queued)
    second = await service.results.post("/results", json=[make_result("192.0.2.9")] * refused)
    assert second.status == 503
    assert second.headers["Retry-After"] == "1"
    gate.set()
    await blocker
    assert (await first).status == 200
    assert service.rows("SELECT count(*), count(DISTINCT ip) FROM ping_results") == [(queued, 1)]


async def test_concurrent_batches_are_group_committed(service: Running) -> None:
    writer = service.services.storage.writer
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    blocker = asyncio.ensure_future(
        writer.call(lambda: asyncio.run_coroutine_threadsafe(gate.wait(), loop).result())
    )
    posts = [
        asyncio.ensure_future(
            service.results.post("/results", json=[make_result(f"192.0.2.{i}", hops=1)])
        )
        for i in range(1, 21)
    ]
    await wait_for(lambda: writer.queued_batches >= 20)
    gate.set()
    await blocker
    assert [(await p).status for p in posts] == [200] * 20
    # the 20 waiting batches went into one transaction: one commit observed
    metrics = (await (await service.health.get("/metrics")).text()).splitlines()
    assert "output_service_commit_group_batches_count 1.0" in metrics
    assert "output_service_commit_group_batches_sum 20.0" in metrics
    assert service.rows("SELECT count(DISTINCT ip) FROM ping_results") == [(20,)]


async def test_a_failing_commit_hook_neither_stops_the_writer_nor_hides_the_ack(
    service: Running,
) -> None:
    writer = service.services.storage.writer

    def broken(_: object) -> None:
        raise RuntimeError("bug in bookkeeping")

    writer._on_commit = broken  # a stand-in for a bug in the stats code
    first = await service.results.post("/results", json=[make_result("192.0.2.1")])
    second = await service.results.post("/results", json=[make_result("192.0.2.2")])
    assert (first.status, second.status) == (200, 200)
    assert writer.alive
    assert service.rows("SELECT ip FROM ping_results ORDER BY id") == [
        ("192.0.2.1",),
        ("192.0.2.2",),
    ]


async def test_strings_with_nul_characters_are_stored_whole(service: Running) -> None:
    item = make_result(error="timeout\u0000after 3 s", note="a\u0000b")
    resp = await service.results.post("/results", json=[item, make_result("192.0.2.2")])
    assert resp.status == 200
    rows = service.rows("SELECT error, raw FROM ping_results ORDER BY id")
    assert rows[0][0] == "timeout\x00after 3 s"
    assert json.loads(rows[0][1])["note"] == "a\x00b"
    assert rows[1] == (None, None)


def hold_writer(writer: Any) -> tuple[asyncio.Event, asyncio.Future[Any]]:
    """Occupy the writer thread until the returned event is set (the future is
    the occupying call): batches submitted meanwhile wait in the queue."""
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    blocker = asyncio.ensure_future(
        writer.call(lambda: asyncio.run_coroutine_threadsafe(gate.wait(), loop).result())
    )
    return gate, blocker


async def test_a_cancelled_keyless_submit_still_commits(service: Running) -> None:
    """A key-less batch is awaited without a shield: a handler cancelled while its
    batch waits for the writer still leaves the batch committed, and the writer
    goes on with the next one."""
    storage = service.services.storage
    writer = storage.writer
    gate, blocker = hold_writer(writer)
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


async def test_a_client_gone_mid_commit_does_not_fail_its_retry(service: Running) -> None:
    storage = service.services.storage
    writer = storage.writer
    gate, blocker = hold_writer(writer)
    batch = decode_batch(json.dumps([make_result()]).encode(), 10)
    first = asyncio.ensure_future(
        storage.submit(Submission(batch, idempotency_key="k", body_hash="h"))
    )
    await wait_for(lambda: writer.queued_batches >= 1)  # the batch waits behind the blocker
    retry = asyncio.ensure_future(
        storage.submit(Submission(batch, idempotency_key="k", body_hash="h"))
    )
    first.cancel()  # the first client went away: aiohttp cancels its handler
    gate.set()
    await blocker
    assert await retry == SubmitResult(1, duplicate=True)
    assert first.cancelled()
    assert service.rows("SELECT count(*) FROM ping_results") == [(1,)]


@pytest.mark.parametrize("death", ["cancelled", "bug"])
async def test_writer_death_answers_every_waiter_503_at_once(service: Running, death: str) -> None:
    """A batch being committed, batches waiting and a POST /rotate all get 503 the
    moment the writer task ends, instead of hanging; later requests too."""
    writer = service.services.storage.writer
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    def hold() -> None:  # the writer thread waits here, so everything queues behind it
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()

    blocker = asyncio.ensure_future(writer.call(hold))
    await wait_for(lambda: writer.queued_batches == 0)  # the blocker is being worked on
    posts = [
        asyncio.ensure_future(service.results.post("/results", json=[make_result(f"192.0.2.{i}")]))
        for i in range(1, 4)
    ]
    rotate = asyncio.ensure_future(service.results.post("/rotate"))
    await wait_for(lambda: writer.queued_batches >= 4)
    task = writer._task
    assert task is not None
    if death == "cancelled":
        task.cancel()
    else:

        def broken() -> list[object]:
            raise RuntimeError("a bug in the writer loop")

        writer._take_group = broken  # type: ignore[method-assign]
        writer._queue.appendleft(writer._queue.pop())  # a batch first: the bug runs next
    gate.set()  # the blocker's thread returns; the task ends by the chosen death
    if death == "bug":
        await asyncio.gather(blocker, return_exceptions=True)
    statuses = [(await p).status for p in posts]
    assert statuses == [503, 503, 503]
    assert (await rotate).status == 503
    later = await service.results.post("/results", json=[make_result("192.0.2.9")])
    assert later.status == 503
    if death == "cancelled":
        with pytest.raises(StoreError):
            await blocker
