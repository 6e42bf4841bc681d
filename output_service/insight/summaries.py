"""Target summaries, per-step series and node listings from plain rows.

Backends hand over per-file (or per-partition) partial aggregates; these merge
them, so a summary over five files is the same as one over a single file:
sums and counts add, first/last take min/max, node sets unite, and the RTTs
(ascending runs per file) are merged before the nearest-rank percentiles.
"""

from __future__ import annotations

import itertools
import json
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from output_service.insight.stats import bucket_start, epoch_of, loss_pct, nearest_rank, rfc3339


@dataclass(slots=True)
class _Target:
    results: int = 0
    failed: int = 0
    loss_sum: float = 0.0
    first_seen: str | None = None
    last_seen: str | None = None
    rtt_runs: list[array[int]] = field(default_factory=list)
    nodes: set[str | None] = field(default_factory=set)


class TargetAccumulator:
    """Per-target partial aggregates, merged across files."""

    def __init__(self) -> None:
        self._targets: dict[str, _Target] = {}

    def _get(self, ip: str) -> _Target:
        target = self._targets.get(ip)
        if target is None:
            target = self._targets[ip] = _Target()
        return target

    def add_totals(self, rows: Iterable[Sequence[Any]]) -> None:
        """(ip, results, failed, sum of packet_loss, first timestamp, last timestamp)."""
        for ip, results, failed, loss_sum, first, last in rows:
            t = self._get(ip)
            t.results += results
            t.failed += failed
            t.loss_sum += loss_sum
            t.first_seen = first if t.first_seen is None else min(t.first_seen, first)
            t.last_seen = last if t.last_seen is None else max(t.last_seen, last)

    def add_rtts(self, rows: Iterable[Sequence[Any]]) -> None:
        """(ip, ascending RTTs comma-joined) of results that got replies."""
        for ip, joined in rows:
            if joined:
                self._get(ip).rtt_runs.append(array("q", map(int, joined.split(","))))

    def add_nodes(self, rows: Iterable[Sequence[Any]]) -> None:
        """(ip, node id or None) pairs."""
        for ip, node in rows:
            self._get(ip).nodes.add(node)

    def merge(self, other: TargetAccumulator) -> None:
        """Add another file's (or another id range's) partial aggregates to these."""
        for ip, o in other._targets.items():
            t = self._get(ip)
            t.results += o.results
            t.failed += o.failed
            t.loss_sum += o.loss_sum
            if o.first_seen is not None:
                t.first_seen = (
                    o.first_seen if t.first_seen is None else min(t.first_seen, o.first_seen)
                )
            if o.last_seen is not None:
                t.last_seen = o.last_seen if t.last_seen is None else max(t.last_seen, o.last_seen)
            t.rtt_runs.extend(o.rtt_runs)
            t.nodes |= o.nodes

    def only(self, ips: Iterable[str]) -> TargetAccumulator:
        """The targets among `ips` that this holds, shared, not copied: merge the result
        into a new accumulator to add to them without changing these."""
        part = TargetAccumulator()
        part._targets = {ip: self._targets[ip] for ip in ips if ip in self._targets}
        return part

    def compact(self, max_runs: int = 4) -> None:
        """Merge a target's sorted RTT runs into one once there are many (a cached
        live-file partial gains one run per extension)."""
        for t in self._targets.values():
            if len(t.rtt_runs) > max_runs:
                t.rtt_runs = [array("q", sorted(itertools.chain(*t.rtt_runs)))]

    def dump(self) -> Iterator[tuple[Any, ...]]:
        """Each target as plain values (ip, results, failed, loss sum, first, last,
        the RTTs ascending as int64 bytes, the nodes as a JSON list), to be kept
        on disk for a file that never changes and read back with `load`."""
        for ip, t in self._targets.items():
            rtts = array("q", sorted(itertools.chain(*t.rtt_runs)))
            nodes = sorted(t.nodes, key=lambda n: (n is not None, n or ""))
            yield (ip, t.results, t.failed, t.loss_sum, t.first_seen, t.last_seen,
                   rtts.tobytes(), json.dumps(nodes))  # fmt: skip

    @classmethod
    def load(cls, rows: Iterable[Sequence[Any]]) -> TargetAccumulator:
        acc = cls()
        for ip, results, failed, loss_sum, first, last, rtts, nodes in rows:
            run = array("q")
            run.frombytes(rtts)
            acc._targets[ip] = _Target(
                results, failed, loss_sum, first, last, [run] if run else [], set(json.loads(nodes))
            )
        return acc

    def rows(
        self,
        other: TargetAccumulator | None = None,
        *,
        ips: Iterable[str] | None = None,
        rtts: bool = True,
    ) -> list[dict[str, Any]]:
        """One summary per target: of these partials, or of these and `other`'s
        together (the same as merging them first, without building the merge:
        a query over the live file and the older ones' merge does this). Only
        for `ips` when given; `rtts=False` leaves the RTT figures out (sorting
        each target's RTTs is most of the cost)."""
        out = []
        theirs = {} if other is None else other._targets
        empty = _Target()
        for ip in self._targets.keys() | theirs.keys() if ips is None else ips:
            t, o = self._targets.get(ip, empty), theirs.get(ip, empty)
            runs = t.rtt_runs + o.rtt_runs if rtts else []
            # sorting the concatenated runs runs in C; heapq.merge would step in Python
            ordered: Sequence[int] = runs[0] if len(runs) == 1 else sorted(itertools.chain(*runs))
            results = t.results + o.results
            firsts = [x for x in (t.first_seen, o.first_seen) if x is not None]
            lasts = [x for x in (t.last_seen, o.last_seen) if x is not None]
            out.append(
                {
                    "ip": ip,
                    "results": results,
                    "failed": t.failed + o.failed,
                    "loss_pct": loss_pct((t.loss_sum + o.loss_sum) / results) if results else None,
                    **rtt_summary(ordered, (50, 95), "rtt_avg_ns"),
                    "nodes": len(t.nodes | o.nodes)
                    if o.nodes and t.nodes
                    else len(t.nodes or o.nodes),
                    "first_seen": min(firsts) if firsts else None,
                    "last_seen": max(lasts) if lasts else None,
                }
            )
        return out


def rtt_summary(
    rtts: Sequence[int], percentiles: Sequence[int], mean_key: str | None
) -> dict[str, int | None]:
    """rtt_min_ns, [mean], rtt_pNN_ns..., rtt_max_ns over ascending `rtts`."""
    out: dict[str, int | None] = {"rtt_min_ns": rtts[0] if rtts else None}
    if mean_key is not None:
        out[mean_key] = round(sum(rtts) / len(rtts)) if rtts else None
    for pct in percentiles:
        out[f"rtt_p{pct}_ns"] = nearest_rank(rtts, pct)
    out["rtt_max_ns"] = rtts[-1] if rtts else None
    return out


_SORT_KEYS = {
    # worst first: most loss, slowest median, most results, most recently seen
    "loss": lambda r: (-(r["loss_pct"] or 0.0), r["ip"]),
    "rtt": lambda r: (-(r["rtt_p50_ns"] if r["rtt_p50_ns"] is not None else -1), r["ip"]),
    "results": lambda r: (-r["results"], r["ip"]),
    "last_seen": lambda r: (_desc_text(r["last_seen"] or ""), r["ip"]),
}


def _desc_text(text: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in text)


def sort_targets(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """Worst first by `sort`; ties by ip, so pages are stable."""
    return sorted(rows, key=_SORT_KEYS[sort])


def target_page(
    acc: TargetAccumulator, other: TargetAccumulator | None, sort: str, offset: int, limit: int
) -> list[dict[str, Any]]:
    """The targets of acc (with other's) sorted by `sort`, rows offset..offset+limit.
    Unless the sort is by RTT, the order is decided without the RTT figures and
    they are computed for the page's rows only: 100 targets' RTTs sorted, not
    every target's (5,000 in the query benchmark), on each query."""
    if sort == "rtt":
        return sort_targets(acc.rows(other), sort)[offset : offset + limit]
    order = sort_targets(acc.rows(other, rtts=False), sort)[offset : offset + limit]
    return acc.rows(other, ips=[r["ip"] for r in order])


def series(ip: str, step_s: int, rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """A target's summary plus one bucket per step that has results.

    rows: (timestamp, received, packet_loss, avg_rtt, failed, node_id)."""
    acc = TargetAccumulator()
    buckets: dict[int, list[Any]] = {}
    totals: list[Any] = []
    rtts: list[int] = []
    nodes: set[str | None] = set()
    for ts, received, loss, rtt, failed, node in rows:
        start = bucket_start(epoch_of(ts), step_s)
        bucket = buckets.setdefault(start, [0, 0.0, []])
        bucket[0] += 1
        bucket[1] += loss
        if received > 0:
            bucket[2].append(rtt)
            rtts.append(rtt)
        totals.append((ip, 1, int(bool(failed)), loss, ts, ts))
        nodes.add(node)
    acc.add_totals(totals)
    acc.add_nodes((ip, n) for n in nodes)
    if rtts:
        acc.add_rtts([(ip, ",".join(map(str, sorted(rtts))))])
    summary = acc.rows()[0]
    summary["step_s"] = step_s
    summary["series"] = [
        {
            "t": rfc3339(start),
            "results": count,
            "loss_pct": loss_pct(loss_sum / count),
            **_band(sorted(values)),
        }
        for start, (count, loss_sum, values) in sorted(buckets.items())
    ]
    return summary


def _band(rtts: list[int]) -> dict[str, int | None]:
    out = rtt_summary(rtts, (10, 50, 90), None)
    return {
        k: out[k] for k in ("rtt_p10_ns", "rtt_p50_ns", "rtt_p90_ns", "rtt_min_ns", "rtt_max_ns")
    }


def merge_nodes(
    per_file: Iterable[tuple[Sequence[Sequence[Any]], Sequence[Sequence[Any]]]],
    silent_after_s: float,
    now: float,
) -> list[dict[str, Any]]:
    """Per file: batch rows (node, remote, batches, first, last received_at) and
    result rows (node, results, failed); one entry per node, most recent first."""
    nodes: dict[str | None, dict[str, Any]] = {}

    def entry(node: str | None) -> dict[str, Any]:
        return nodes.setdefault(
            node,
            {
                "node_id": node,
                "batches": 0,
                "results": 0,
                "failed": 0,
                "first_seen": None,
                "last_seen": None,
                "remotes": set(),
            },
        )

    for batch_rows, result_rows in per_file:
        for node, remote, count, first, last in batch_rows:
            e = entry(node)
            e["batches"] += count
            if remote is not None:
                e["remotes"].add(remote)
            e["first_seen"] = first if e["first_seen"] is None else min(e["first_seen"], first)
            e["last_seen"] = last if e["last_seen"] is None else max(e["last_seen"], last)
        for node, results, failed in result_rows:
            e = entry(node)
            e["results"] += results
            e["failed"] += failed or 0
    out = []
    for e in nodes.values():
        e["remotes"] = sorted(e["remotes"])
        last = e["last_seen"]
        e["silent"] = last is None or now - epoch_of(last) > silent_after_s
        out.append(e)
    return sorted(out, key=lambda e: (e["last_seen"] is None, _desc_text(e["last_seen"] or "")))
