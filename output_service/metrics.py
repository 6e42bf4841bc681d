"""Every Prometheus metric of the service, built on a registry passed in.

A fresh registry per app keeps tests independent and lets two apps share a
process. Names keep the Go service's `output_service_` prefix and follow the
Prometheus conventions: counters end in `_total`, units are in the name.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "output_service"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

# Every label value a labelled counter can take, so each series exists (at 0) from
# the first scrape: an alert on `rate(x[5m]) > 0` or `increase(...)` sees data at
# once instead of nothing until the first event.
KNOWN_LABELS: dict[str, list[dict[str, str]]] = {
    "storage_errors": [{"kind": k} for k in ("disk_full", "io")],
    "rotations": [{"reason": r} for r in ("size", "age", "manual")],
    "auth_refusals": [
        {"scope": scope, "reason": reason}
        for scope in ("ingest", "admin", "read")
        for reason in ("missing", "wrong", "not_loopback")
        if reason != "not_loopback" or scope == "admin"
    ],
    "rejected_requests": [
        {"reason": r}
        for r in (
            "body_too_large",
            "inflated_too_large",
            "read_timeout",
            "too_many_results",
            "too_deep",
            "too_many_hops",
            "string_too_long",
            "unsupported_encoding",
            "bad_encoding",
        )
    ],
    "dumps": [{"outcome": o} for o in ("complete", "aborted")],
    "batches": [
        {"outcome": o}
        for o in (
            "ok",
            "duplicate",
            "invalid",
            "unsupported_media_type",
            "queue_full",
            "shutting_down",
            "storage_error",
            "idempotency_conflict",
        )
    ],
    "hop_send_attempts": [
        {"outcome": o}
        for o in (
            "ok",
            "rate_limited",
            "refused",
            "server_error",
            "unexpected_status",
            "timeout",
            "connection_error",
            "state_error",
        )
    ],
}

# The Go service's own series, by its exact names (its README shows
# `output_service_total_results 15420`): the `stats` object of /health, read at
# scrape time. prometheus_client appends `_total` to a Counter's name, so these are
# gauges; the conventional counters (`output_service_results_received_total`, ...)
# are there too, for rate() and new dashboards.
GO_SERIES = {
    "total_results": "Total number of results processed (as the Go service's /stats).",
    "successful_pings": "Total successful pings (as the Go service's /stats).",
    "failed_pings": "Total failed pings (as the Go service's /stats).",
    "hops_discovered": "Hops discovered (as the Go service's /stats).",
    "hops_sent": "Hops sent to the input service (as the Go service's /stats).",
}


class GoStatsCollector(Collector):
    """The Go-named series, computed from the stats at each scrape.

    `describe` is empty on purpose: `output_service_hops_discovered` (a gauge here)
    shares its stem with the `output_service_hops_discovered_total` counter, which
    the registry's duplicate check would refuse although the exposed names differ.
    """

    def __init__(self, read_stats: Callable[[], Mapping[str, Any]]) -> None:
        self._read_stats = read_stats

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stats = self._read_stats()
        except Exception:  # storage not open yet (or closed): no samples, never a failed scrape
            return
        for name, documentation in GO_SERIES.items():
            value = stats.get(name)
            family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation)
            family.add_metric([], float(value) if isinstance(value, int | float) else 0.0)
            yield family


class Metrics:
    """The service's metrics; attributes are the prometheus_client objects."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        process_collector.ProcessCollector(registry=r)
        platform_collector.PlatformCollector(registry=r)
        gc_collector.GCCollector(registry=r)
        self.results_stored = Counter(
            f"{PREFIX}_results_received", "Results committed to the database.", registry=r
        )
        self.batches = Counter(
            f"{PREFIX}_batches", "POST /results requests by outcome.", ["outcome"], registry=r
        )
        self.ingest_latency = Histogram(
            f"{PREFIX}_ingest_latency_seconds",
            "Time from request start to acknowledgement of a stored batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size_results",
            "Results per accepted batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_duration = Histogram(
            f"{PREFIX}_commit_duration_seconds",
            "Duration of one group-commit transaction.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_group = Histogram(
            f"{PREFIX}_commit_group_batches",
            "Batches committed together in one transaction.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_write_queue_results", "Results waiting for the writer.", registry=r
        )
        self.http_requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=r,
        )
        self._request_children: dict[tuple[str, int], Any] = {}
        # The hop feedback loop
        self.hops_discovered = Counter(
            f"{PREFIX}_hops_discovered",
            "Hops queued for the input service (new, or again after hop_resend_after_hours).",
            registry=r,
        )
        self.hops_deduplicated = Counter(
            f"{PREFIX}_hops_deduplicated",
            "Stored hops not queued because they were queued within the resend window.",
            registry=r,
        )
        self.hops_sent = Counter(
            f"{PREFIX}_hops_sent", "Hops the input service acknowledged with a 2xx.", registry=r
        )
        self.hops_dropped = Counter(
            f"{PREFIX}_hops_dropped",
            "Oldest waiting hops dropped because the outbox reached hops_outbox_max.",
            registry=r,
        )
        self.hops_dead_lettered = Counter(
            f"{PREFIX}_hops_dead_lettered",
            "Hops the input service refused with a 4xx other than 429 (kept in dead_letters).",
            registry=r,
        )
        self.hop_send_attempts = Counter(
            f"{PREFIX}_hop_send_attempts",
            "POSTs of hop batches to the input service by outcome.",
            ["outcome"],
            registry=r,
        )
        self.hops_outbox_depth = Gauge(
            f"{PREFIX}_hops_outbox_depth", "Hops waiting in the outbox.", registry=r
        )
        self.hops_oldest_waiting_age = Gauge(
            f"{PREFIX}_hops_oldest_waiting_age_seconds",
            "Age of the oldest hop waiting in the outbox (0 when empty).",
            registry=r,
        )
        # Authentication, limits, storage errors
        self.auth_refusals = Counter(
            f"{PREFIX}_auth_refusals",
            "Requests refused by authentication (scope: ingest or admin).",
            ["scope", "reason"],
            registry=r,
        )
        self.rejected_requests = Counter(
            f"{PREFIX}_rejected_requests",
            "Requests refused at a limit or for their Content-Encoding, by reason.",
            ["reason"],
            registry=r,
        )
        self.storage_errors = Counter(
            f"{PREFIX}_storage_errors",
            "Failed write transactions by kind (disk_full, io).",
            ["kind"],
            registry=r,
        )

        # Rotation, retention, quarantine, dumps
        self.rotations = Counter(
            f"{PREFIX}_rotations", "New results files started, by reason.", ["reason"], registry=r
        )
        self.rotation_errors = Counter(
            f"{PREFIX}_rotation_errors",
            "Rotations that failed (writing went on in the old file).",
            registry=r,
        )
        self.rotation_pause = Histogram(
            f"{PREFIX}_rotation_pause_seconds",
            "How long a rotation held up the writer (creating the new file).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.current_file_bytes = Gauge(
            f"{PREFIX}_current_file_bytes", "Size of the current file plus its WAL.", registry=r
        )
        self.retained_files = Gauge(
            f"{PREFIX}_retained_files", "Results files kept, the current one included.", registry=r
        )
        self.deleted_files = Counter(
            f"{PREFIX}_deleted_files", "Results files deleted by retention.", registry=r
        )
        self.quarantined_files = Counter(
            f"{PREFIX}_quarantined_files",
            "Unreadable files moved to quarantine/ at start-up.",
            registry=r,
        )
        self.dumps = Counter(
            f"{PREFIX}_dumps", "GET /dump downloads, by outcome.", ["outcome"], registry=r
        )
        self.dump_bytes = Counter(
            f"{PREFIX}_dump_bytes", "Bytes of completed /dump downloads.", registry=r
        )
        # The query API
        self.silent_nodes = Gauge(
            f"{PREFIX}_silent_nodes",
            "Nodes whose last batch is older than node_silent_after_s (refreshed every 30 s).",
            registry=r,
        )
        self.reads_refused = Counter(
            f"{PREFIX}_reads_refused",
            "Reads answered 503: too many at once or too slow.",
            registry=r,
        )

        # Connections and descriptors (netlimits)
        self.open_connections = Gauge(
            f"{PREFIX}_open_connections", "Open client connections, by port.", ["port"], registry=r
        )
        self.refused_connections = Counter(
            f"{PREFIX}_refused_connections",
            "Connections closed at once because their port was at its cap, by port.",
            ["port"],
            registry=r,
        )
        self.accept_errors = Counter(
            f"{PREFIX}_accept_errors",
            "Failed accept() calls (EMFILE, ENFILE, ENOBUFS, ENOMEM).",
            registry=r,
        )
        # What the alert rules (deploy/prometheus/alerts.yml) need besides the above
        self.ready = Gauge(
            f"{PREFIX}_ready",
            "1 when /ready would answer 200, else 0 (checked at each scrape).",
            registry=r,
        )
        self.disk_free_bytes = Gauge(
            f"{PREFIX}_disk_free_bytes",
            "Bytes available to the service on the filesystem of db_dir.",
            registry=r,
        )
        self.disk_size_bytes = Gauge(
            f"{PREFIX}_disk_size_bytes", "Size of the filesystem of db_dir.", registry=r
        )

        for attribute, label_sets in KNOWN_LABELS.items():
            counter = getattr(self, attribute)
            for labels in label_sets:
                counter.labels(**labels)
        self._batch_ok = self.batches.labels(outcome="ok")
        self._batch_duplicate = self.batches.labels(outcome="duplicate")

    def go_series_from(self, read_stats: Callable[[], Mapping[str, Any]]) -> None:
        """Expose the Go service's series names, read from `read_stats` at scrape time."""
        self.registry.register(GoStatsCollector(read_stats))

    def count_request(self, route: str, status: int) -> None:
        """One HTTP request in `http_requests`. `labels()` validates and locks on every
        call (~2.3 us against ~0.6 us for a bound child, BENCHMARKS.md); the bound
        children are kept here, bounded whatever routes and statuses appear."""
        key = (route, status)
        child = self._request_children.get(key)
        if child is None:
            if len(self._request_children) >= 4096:
                self._request_children.clear()
            child = self.http_requests.labels(route=route, status=str(status))
            self._request_children[key] = child
        child.inc()

    def batch_stored(self, results: int, seconds: float) -> None:
        """One accepted batch: its outcome, size and time to the ack (on every
        POST, so through children bound once rather than `labels()` each time)."""
        self._batch_ok.inc()
        self.batch_size.observe(results)
        self.ingest_latency.observe(seconds)

    def batch_replayed(self) -> None:
        """One batch answered from an earlier one with the same Idempotency-Key."""
        self._batch_duplicate.inc()

    def observe_commit(self, seconds: float, batches: int) -> None:
        self.commit_duration.observe(seconds)
        self.commit_group.observe(batches)

    def queue_depth_fn(self, read: Callable[[], int]) -> None:
        """Report the writer's queue depth at scrape time rather than on every change."""
        self.queue_depth.set_function(read)

    def watch_disk(self, db_dir: Path) -> None:
        """Report the space left where the results files live, read at scrape time
        (one statvfs call); NaN while db_dir does not exist."""

        def usage(field: str) -> float:
            try:
                return float(getattr(shutil.disk_usage(db_dir), field))
            except OSError:
                return math.nan

        self.disk_free_bytes.set_function(lambda: usage("free"))
        self.disk_size_bytes.set_function(lambda: usage("total"))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
