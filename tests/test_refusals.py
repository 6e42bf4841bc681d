"""Every refusal of `POST /results` is answered in one place: its status, its
JSON reason and its counters (`batches{outcome}`, `rejected_requests{reason}`
for a broken limit) go together. Checked over the real app, counters read
back from the service's own Prometheus registry."""

from __future__ import annotations

import json

from output_service.handlers import refusals
from tests.conftest import Running, StartService, make_result


def counted(running: Running, name: str, label: str, value: str) -> float:
    got = running.services.metrics.registry.get_sample_value(name, {label: value})
    return 0.0 if got is None else float(got)


async def test_each_refusal_answers_and_counts_together(start_service: StartService) -> None:
    running = await start_service(max_body_mb=0.001, max_batch_results=2)
    cases = [
        # (headers, body, status, outcome, limit)
        ({"Content-Type": "text/plain"}, b"[]", 415, "unsupported_media_type", None),
        (
            {"Content-Type": "application/json", "Content-Encoding": "br"},
            b"[]",
            415,
            "unsupported_media_type",
            "unsupported_encoding",
        ),
        (
            {"Content-Type": "application/json"},
            b"x" * 2000,
            413,
            "body_too_large",
            "body_too_large",
        ),
        (
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            b"not gzip",
            400,
            "invalid",
            "bad_encoding",
        ),
        ({"Content-Type": "application/json"}, b"[{]", 400, "invalid", None),
        (
            {"Content-Type": "application/json"},
            json.dumps([make_result(f"192.0.2.{i}") for i in range(3)]).encode(),
            413,
            "too_many_results",
            "too_many_results",
        ),
    ]
    for headers, body, status, outcome, limit in cases:
        before_outcome = counted(running, "output_service_batches_total", "outcome", outcome)
        before_limit = (
            counted(running, "output_service_rejected_requests_total", "reason", limit)
            if limit
            else 0.0
        )
        resp = await running.results.post("/results", data=body, headers=headers)
        assert resp.status == status, (headers, await resp.text())
        reply = await resp.json()
        assert reply["status"] == "error" and reply["error"], reply
        after = counted(running, "output_service_batches_total", "outcome", outcome)
        assert after == before_outcome + 1, outcome
        if limit:
            rejected = counted(running, "output_service_rejected_requests_total", "reason", limit)
            assert rejected == before_limit + 1, limit


def test_a_storage_refusal_says_when_to_retry() -> None:
    full = refusals.storage_failed("disk is full", disk_full=True)
    other = refusals.storage_failed("disk I/O error", disk_full=False)
    assert (full.status, full.headers) == (507, {"Retry-After": "30"})
    assert (other.status, other.headers) == (503, {"Retry-After": "5"})
    assert full.outcome == other.outcome == "storage_error"
