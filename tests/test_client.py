"""output_service.client against the real app on loopback sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from output_service.client import Client, ServiceError
from tests.conftest import Running, make_result, query


def _client(service: Running, **kw: object) -> Client:
    return Client(
        str(service.results.make_url("")), str(service.health.make_url("")), backoff_s=0.01, **kw
    )  # type: ignore[arg-type]


async def test_post_and_read_back(service: Running, tmp_path: Path) -> None:
    async with _client(service) as client:
        reply = await client.post(
            [make_result(f"192.0.2.{i}", hops=3) for i in range(1, 6)], node_id="c1"
        )
        assert reply == {"status": "ok", "received": 5}
        got = [r async for r in client.iter_results(node="c1")]
        assert [r["ip"] for r in got] == [f"192.0.2.{i}" for i in range(5, 0, -1)]
        assert len(await client.targets()) == 5
        assert (await client.target("192.0.2.3"))["results"] == 1
        assert (await client.routes("192.0.2.3"))["paths"][0]["hops"] == [
            "10.0.0.1",
            "10.1.0.1",
            "10.2.0.1",
        ]
        assert (await client.nodes())[0]["node_id"] == "c1"
        size = await client.download_dump(tmp_path / "copy.db")
        assert size == (tmp_path / "copy.db").stat().st_size > 0
    assert query(tmp_path / "copy.db", "SELECT count(*) FROM ping_results") == [(5,)]
    assert service.rows("SELECT count(*) FROM batches WHERE node_id = 'c1'") == [(1,)]


async def test_a_4xx_is_not_retried_and_carries_field_errors(service: Running) -> None:
    async with _client(service) as client:
        with pytest.raises(ServiceError) as caught:
            await client.post([make_result("not-an-ip")])
        assert caught.value.status == 400 and caught.value.errors
        with pytest.raises(ServiceError) as bad:
            await client.targets(sort="nope")
        assert bad.value.status == 400
    assert service.rows("SELECT count(*) FROM ping_results") == [(0,)]
