"""Export rows: one result (the /recent item shape) as an NDJSON line or a CSV row.

CSV is flat: one row per result, the traceroute's hops in one column as
`ip|ip|*` by TTL (`*` an unanswered hop), so a spreadsheet opens it as is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

CSV_COLUMNS = (
    "file",
    "id",
    "ip",
    "timestamp",
    "received_at",
    "node_id",
    "sent",
    "received",
    "packet_loss",
    "avg_rtt",
    "error",
    "traceroute_method",
    "traceroute_completed",
    "traceroute_hops",
)


def hops_text(trace: dict[str, Any] | None) -> str:
    if not trace:
        return ""
    return "|".join("*" if h["timeout"] or not h["ip"] else h["ip"] for h in trace["hops"])


def csv_row(item: dict[str, Any]) -> list[Any]:
    trace = item.get("traceroute")
    return [
        item.get("file", ""),
        item["id"],
        item["ip"],
        item["timestamp"],
        item.get("received_at") or "",
        item.get("node_id") or "",
        item["sent"],
        item["received"],
        item["packet_loss"],
        item["avg_rtt"],
        item.get("error") or "",
        trace["method"] if trace else "",
        ("true" if trace["completed"] else "false") if trace else "",
        hops_text(trace),
    ]


def csv_text(items: Iterable[dict[str, Any]], *, header: bool) -> str:
    """CSV for a chunk of items (with the header line when `header`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow(csv_row(item))
    return out.getvalue()
