"""Distinct paths and route changes from ordered traceroutes.

A path is the tuple of hop addresses by TTL, an unanswered hop as None. For
each node, observations are taken in measurement-time order; a change is
recorded whenever a node's path differs from its previous one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Path = tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class Observation:
    """One traceroute: who ran it, when (stored timestamp text) and its path."""

    node: str | None
    timestamp: str
    path: Path


@dataclass(slots=True)
class _PathStats:
    results: int = 0
    nodes: set[str | None] = field(default_factory=set)
    first_seen: str = ""
    last_seen: str = ""


def path_of(hops: Iterable[tuple[int, str | None, bool]]) -> Path:
    """(ttl, ip, timeout) rows ordered by ttl -> a path; a timeout or empty ip is None."""
    return tuple(None if timeout or not ip else ip for _ttl, ip, timeout in hops)


def summarize(observations: Sequence[Observation]) -> dict[str, Any]:
    """`paths` (most used first) and `changes` (per node, in time order)."""
    stats: dict[Path, _PathStats] = {}
    for obs in observations:
        entry = stats.setdefault(obs.path, _PathStats(first_seen=obs.timestamp))
        entry.results += 1
        entry.nodes.add(obs.node)
        entry.first_seen = min(entry.first_seen, obs.timestamp)
        entry.last_seen = max(entry.last_seen, obs.timestamp)
    ordered = sorted(stats.items(), key=lambda kv: (-kv[1].results, kv[1].first_seen))
    paths = [
        {
            "hops": list(path),
            "results": s.results,
            "nodes": len(s.nodes),
            "first_seen": s.first_seen,
            "last_seen": s.last_seen,
        }
        for path, s in ordered
    ]
    return {"paths": paths, "changes": changes(observations)}


def changes(observations: Sequence[Observation]) -> list[dict[str, Any]]:
    """For each node (null last), the moments its path differed from the one before."""
    by_node: dict[str | None, list[Observation]] = {}
    for obs in observations:
        by_node.setdefault(obs.node, []).append(obs)
    out: list[dict[str, Any]] = []
    for node in sorted(by_node, key=lambda n: (n is None, n or "")):
        seq = sorted(by_node[node], key=lambda o: o.timestamp)
        moves = [
            {"at": cur.timestamp, "from": list(prev.path), "to": list(cur.path)}
            for prev, cur in itertools.pairwise(seq)
            if cur.path != prev.path
        ]
        out.append({"node": node, "changes": moves})
    return out
