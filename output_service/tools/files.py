"""`output-service check|export|post`: results files and batches from the shell.

- `check FILE|DIR`: integrity (PRAGMA quick_check), schema version, state
  (sealed: has every seed index; live: lacks the hop-IP index), row counts.
  Exit 1 when any file has a problem.
- `export FILE|DIR --format ndjson|csv [filters]`: the /api/results filters,
  the same item shape, newest first, read with the service's own SQLite reads.
- `post FILE|- [--url URL] [--node-id ID] [--batch N]`: send a JSON array (or
  NDJSON, one result a line) to a running service with the client.

A progress line on stderr when it is a terminal, nothing otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from output_service.insight import params
from output_service.insight.rows import csv_text
from output_service.storage.read_gate import ReadGate
from output_service.storage.sqlite import connect
from output_service.storage.sqlite.file_names import RESULTS_FILE, name_key
from output_service.storage.sqlite.reads.reads import SqliteReads
from output_service.storage.sqlite.schema import SCHEMA_VERSION, SEED_INDEX_NAMES, index_names

COMMANDS = ("check", "export", "post")


def _files(target: Path) -> list[Path]:
    """Results files under `target` (a file, or a directory's results files), newest first."""
    if target.is_dir():
        found = [p for p in target.iterdir() if RESULTS_FILE.fullmatch(p.name)]
        return sorted(found, key=lambda p: name_key(p.name), reverse=True)
    return [target]


def check_file(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"file": str(path), "problems": []}
    try:
        conn = connect.read_only(path)
        try:
            integrity = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
            if integrity != ["ok"]:
                report["problems"] += integrity[:10]
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            report["schema_version"] = version
            if version > SCHEMA_VERSION:
                report["problems"].append(
                    f"schema version {version} is newer than {SCHEMA_VERSION}"
                )
            report["state"] = "sealed" if index_names(conn) >= SEED_INDEX_NAMES else "live"
            for table in ("ping_results", "traceroute_results", "traceroute_hops", "batches"):
                try:
                    report[table] = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                except sqlite3.OperationalError:
                    report[table] = None
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        report["problems"].append(str(exc))
    return report


def check(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="output-service check", description="check results files")
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if not args.target.exists():
        print(f"output-service check: {args.target}: no such file or directory", file=sys.stderr)
        return 1
    reports = [check_file(p) for p in _files(args.target)]
    for report in reports:
        print(json.dumps(report))
    return 1 if not reports or any(r["problems"] for r in reports) else 0


def export(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="output-service export", description="export results")
    parser.add_argument("target", type=Path)
    parser.add_argument("--format", choices=("ndjson", "csv"), default="ndjson")
    for name in ("ip", "node", "since", "until", "failed"):
        parser.add_argument(f"--{name}")
    args = parser.parse_args(argv)
    query = {k: v for k in params.FILTER_KEYS if (v := getattr(args, k)) is not None}
    try:
        flt = params.parse_filter(query)
    except params.BadParam as exc:
        print(f"output-service export: {exc}", file=sys.stderr)
        return 2
    paths = _files(args.target)
    return asyncio.run(_export(paths, flt, args.format))


async def _export(paths: list[Path], flt: Any, fmt: str) -> int:
    reads = SqliteReads(lambda: paths, ReadGate(1, 3600.0))
    out, tty, done, header = sys.stdout, sys.stderr.isatty(), 0, True
    async for chunk in reads.iter_results(flt):
        if fmt == "ndjson":
            out.write("\n".join(chunk) + "\n")
        else:
            out.write(csv_text([msgspec.json.decode(t) for t in chunk], header=header))
            header = False
        done += len(chunk)
        if tty:
            print(f"\r{done:,} results", end="", file=sys.stderr, flush=True)
    if header and fmt == "csv":
        out.write(csv_text([], header=True))
    if tty:
        print(file=sys.stderr)
    return 0


def post(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="output-service post", description="send results")
    parser.add_argument("source", help="a JSON array or NDJSON file, or - for stdin")
    parser.add_argument("--url", default="http://127.0.0.1:8081")
    parser.add_argument("--node-id")
    parser.add_argument("--token")
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.source == "-" else Path(args.source).read_text()
    stripped = text.lstrip()
    results = json.loads(text) if stripped.startswith("[") else [
        json.loads(line) for line in text.splitlines() if line.strip()
    ]  # fmt: skip
    return asyncio.run(_post(args, results))


async def _post(args: argparse.Namespace, results: list[dict[str, Any]]) -> int:
    from output_service.client import Client, ServiceError

    tty = sys.stderr.isatty()
    async with Client(args.url, token=args.token) as client:
        for lo in range(0, len(results), args.batch):
            try:
                await client.post(results[lo : lo + args.batch], node_id=args.node_id)
            except ServiceError as exc:
                print(f"output-service post: {exc}", file=sys.stderr)
                return 1
            if tty:
                print(f"\r{min(lo + args.batch, len(results)):,}/{len(results):,}", end="",
                      file=sys.stderr, flush=True)  # fmt: skip
    if tty:
        print(file=sys.stderr)
    print(json.dumps({"sent": len(results)}))
    return 0


def run(argv: Sequence[str]) -> int:
    """Dispatch `output-service COMMAND ...`."""
    return {"check": check, "export": export, "post": post}[argv[0]](argv[1:])
