"""Request ids and the per-request counter, after issue 15 made both cheaper."""

from __future__ import annotations

import re

from tests.conftest import Running, make_result

HEX16 = re.compile(r"[0-9a-f]{16}")


async def test_each_request_gets_its_own_id_and_a_client_id_is_kept(service: Running) -> None:
    ids = []
    for _ in range(3):
        resp = await service.results.post("/results", json=[make_result()])
        assert resp.status == 200
        ids.append(resp.headers["X-Request-ID"])
    assert all(HEX16.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == 3
    resp = await service.results.post(
        "/results", json=[make_result()], headers={"X-Request-ID": "from-the-node"}
    )
    assert resp.headers["X-Request-ID"] == "from-the-node"


async def test_http_requests_counts_every_request_by_route_and_status(service: Running) -> None:
    for _ in range(4):
        assert (await service.results.post("/results", json=[make_result()])).status == 200
    malformed = await service.results.post(
        "/results", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert malformed.status == 400
    registry = service.services.metrics.registry

    def count(status: str) -> float | None:
        return registry.get_sample_value(
            "output_service_http_requests_total", {"route": "/results", "status": status}
        )

    assert count("200") == 4
    assert count("400") == 1
