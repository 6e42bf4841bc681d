"""The sender on its own, against a real loopback input service, with the waits
it asks for recorded instead of slept (the pause is injectable)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from output_service.hops.outbox import SqliteHopOutbox
from output_service.hops.recorder import HopCounts
from output_service.hops.sender import HopSender, SenderSettings, _retry_after
from output_service.hops.state import StateDB
from output_service.metrics import Metrics
from tests.conftest import wait_for
from tests.hops_input import InputService, Reply, free_port

NOW = 1_800_000_000.0


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDB]:
    db = StateDB.open(tmp_path / "state.db", synchronous="FULL")
    yield db
    db.close()


@pytest.fixture
async def input_service() -> AsyncIterator[InputService]:
    service = await InputService().start()
    yield service
    await service.close()


class Pauses:
    """Records each retry delay the sender asks for and returns at once."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await asyncio.sleep(0)


def sender_for(
    state: StateDB,
    url: str,
    pause: Pauses | None = None,
    *,
    base: float = 0.5,
    cap: float = 4.0,
    metrics: Metrics | None = None,
) -> HopSender:
    counts = HopCounts()
    state.queue(["198.51.100.1", "198.51.100.2"], NOW, cap=100, depth=0)
    counts.depth = state.depth()
    settings = SenderSettings(url, 500, 0.01, base, cap, 5.0)
    return HopSender(
        SqliteHopOutbox(state, lambda: NOW),
        counts,
        metrics or Metrics(CollectorRegistry()),
        settings,
        clock=lambda: NOW,
        jitter=lambda top: top,  # the upper bound of each full-jitter draw
        pause=pause,
    )


async def test_retry_after_is_honoured(state: StateDB, input_service: InputService) -> None:
    input_service.replies.extend(
        [Reply(429, headers={"Retry-After": "7"}), Reply(503, headers={"Retry-After": "120"})]
    )
    pauses = Pauses()
    sender = sender_for(state, input_service.url, pauses)
    sender.start()
    try:
        await input_service.wait_for_hops(2)
    finally:
        await sender.stop(1.0)
    assert pauses.asked == [7.0, 120.0]
    assert [status for status, _ in input_service.requests] == [429, 503, 200]


async def test_backoff_doubles_up_to_the_cap(state: StateDB, input_service: InputService) -> None:
    input_service.replies.extend([Reply(500)] * 6)
    pauses = Pauses()
    sender = sender_for(state, input_service.url, pauses, base=0.5, cap=4.0)
    sender.start()
    try:
        await input_service.wait_for_hops(2)
        await wait_for(lambda: state.depth() == 0, "empty outbox")
    finally:
        await sender.stop(1.0)
    assert pauses.asked == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert state.counters()["sent"] == 2


async def test_stop_interrupts_a_long_backoff(state: StateDB) -> None:
    metrics = Metrics(CollectorRegistry())
    url = f"http://127.0.0.1:{free_port()}/hops"
    sender = sender_for(state, url, base=3600, cap=3600, metrics=metrics)
    sender.start()
    name, labels = "output_service_hop_send_attempts_total", {"outcome": "connection_error"}
    await wait_for(
        lambda: (metrics.registry.get_sample_value(name, labels) or 0) >= 1, "a failed attempt"
    )
    await asyncio.wait_for(sender.stop(0.5), 10)  # bounded: a real 1-hour wait would fail here
    assert [w.ip for w in state.oldest(10)] == ["198.51.100.1", "198.51.100.2"]


def test_retry_after_forms() -> None:
    later = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
    assert _retry_after("12", NOW) == 12.0
    assert _retry_after(later, NOW) == 30.0
    assert _retry_after("99999999", NOW) == 3600.0
    assert _retry_after("soon", NOW) is None
    assert _retry_after(None, NOW) is None


async def test_a_state_db_error_does_not_end_the_sender(
    state: StateDB, input_service: InputService
) -> None:
    sender = sender_for(state, input_service.url, base=0.001, cap=0.01)
    state.close()  # every read of the outbox now fails
    with capture_logs() as logs:
        sender.start()
        await wait_for(
            lambda: sum(e["event"].startswith("hop sender cannot use state.db") for e in logs) >= 1,
            "the error to be logged",
        )
        assert sender.running
        await asyncio.wait_for(sender.stop(0.1), 10)
    assert input_service.requests == []
