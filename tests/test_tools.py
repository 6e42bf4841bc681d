"""`output-service check|export|post` as real processes, on files the service wrote."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from output_service.storage.sqlite.schema import SCHEMA_VERSION
from tests.conftest import Running, make_result

CMD = [sys.executable, "-m", "output_service"]


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CMD, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


async def test_check_and_export(service: Running, tmp_path: Path) -> None:
    batch = [
        make_result(f"192.0.2.{i}", hops=2, timestamp=f"2026-01-01T00:0{i}:00Z")
        for i in range(1, 5)
    ]
    assert (
        await service.results.post("/results", json=batch, headers={"X-Node-ID": "t1"})
    ).status == 200
    db_dir = service.db_file.parent
    done = _run("check", str(db_dir))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[0])
    assert report["ping_results"] == 4 and report["traceroute_hops"] == 8
    assert (
        report["schema_version"] == SCHEMA_VERSION
        and report["state"] == "live"
        and report["problems"] == []
    )
    out = _run("export", str(db_dir), "--since", "2026-01-01T00:02:00Z")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["ip"] for r in lines] == ["192.0.2.4", "192.0.2.3", "192.0.2.2"]
    assert lines[0]["node_id"] == "t1"
    csv_out = _run("export", str(db_dir), "--format", "csv", "--ip", "192.0.2.1")
    assert csv_out.stdout.splitlines()[1].endswith(",10.0.0.1|10.1.0.1")
    bad = tmp_path / "results_2026-01-01_00-00-00.db"
    bad.write_bytes(b"not a database" * 100)
    assert _run("check", str(bad)).returncode == 1
    assert _run("export", str(db_dir), "--since", "soon").returncode == 2


async def test_post_from_stdin(service: Running) -> None:
    url = str(service.results.make_url(""))
    body = "\n".join(json.dumps(make_result(f"198.51.100.{i}")) for i in range(1, 4))
    # in a thread: the service under test runs on this test's event loop
    done = await asyncio.to_thread(
        _run, "post", "-", "--url", url, "--node-id", "cli", "--batch", "2", stdin=body
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"sent": 3}
    assert service.rows("SELECT count(*) FROM batches WHERE node_id = 'cli'") == [(2,)]
    refused = await asyncio.to_thread(_run, "post", "-", "--url", url, stdin='[{"ip": "nope"}]')
    assert refused.returncode == 1 and "400" in refused.stderr
