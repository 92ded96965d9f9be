"""``/metrics``: the broker's snapshot (_snapshot.py) as Prometheus families.

prometheus_client does the exposition (its text format, escaping, ``+Inf`` buckets) through a
private CollectorRegistry holding one custom Collector, which builds every family from a fresh
snapshot at each scrape. Its own metric objects and HTTP server are not used: the broker counts in
plain Python numbers on its hot path (_stats.py) and serves HTTP from its own trio loop
(_http.py); docs/METRICS.md says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

CONTENT_TYPE = CONTENT_TYPE_LATEST
QUEUE_STATES = ("ready", "delayed", "claimed", "dead", "waiting")
# Per-database figures of the snapshot: (name, kind, help).
_DATABASE_GAUGES = (
    ("revision", "prontodb_revision", "The database's current revision."),
    ("first_revision", "prontodb_first_revision", "The oldest revision a watch may start from."),
    ("keys", "prontodb_keys", "Live keys."),
    ("claims_in_flight", "prontodb_claims_in_flight", "Items claimed and not yet acked or back."),
    ("claimers_waiting", "prontodb_claimers_waiting", "Blocked claims waiting for an item."),
    ("watchers", "prontodb_database_watchers", "Watches streaming from the database."),
    (
        "watch_lag",
        "prontodb_watch_lag_revisions",
        "The most revisions a watcher of the database is behind (durable, not yet sent to it).",
    ),
    ("sessions", "prontodb_sessions", "Live sessions (leases with keys attached)."),
    (
        "recipe_holders",
        "prontodb_recipe_holders",
        "Members holding a lock, semaphore, election or barrier.",
    ),
    ("recipe_waiting", "prontodb_recipe_waiting", "Members waiting in a recipe's line."),
    ("queues_untracked", "prontodb_queues_untracked", "Queues past the cap, not labelled."),
)
_DATABASE_COUNTERS = (
    ("claims", "prontodb_claims", "Items handed out by claims."),
    ("redeliveries", "prontodb_redeliveries", "Items handed out again (delivery count above 1)."),
    ("dead_letters", "prontodb_dead_letters", "Items moved to dead.<key> after max_deliveries."),
    ("expired_leases", "prontodb_expired_leases", "Claims whose lease ran out (item given back)."),
    ("watch_overflows", "prontodb_watch_overflows", "Watchers cut off: fell out of the history."),
)


class SnapshotCollector(Collector):
    """Every family, built from ``snapshot()`` when the registry collects."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        figures = self.snapshot()
        yield from _broker_families(figures)
        yield from _connection_families(figures["connections"])
        yield from _database_families(figures["databases"])


def exposition(snapshot: Callable[[], dict[str, Any]]) -> Callable[[], bytes]:
    """A function that renders the text format of a fresh snapshot at each call."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return lambda: generate_latest(registry)


def _broker_families(figures: dict[str, Any]) -> Iterator[Metric]:
    uptime = GaugeMetricFamily("prontodb_uptime_seconds", "Seconds since the broker started.")
    uptime.add_metric([], figures["uptime"])
    yield uptime
    yield from _process_families(figures["process"])
    requests = CounterMetricFamily(
        "prontodb_requests",
        "Requests answered, by operation and result code.",
        labels=["op", "code"],
    )
    for op, codes in figures["requests"].items():
        for code, count in codes.items():
            requests.add_metric([op, code], count)
    yield requests
    durations = HistogramMetricFamily(
        "prontodb_request_duration_seconds",
        "From a request's read to its answer's send (after its fsync), by operation; "
        "requests that waited (blocked claims, acquires, watches) are not timed.",
        labels=["op"],
    )
    for op, histogram in figures["request_seconds"].items():
        durations.add_metric([op], *_buckets(histogram))
    yield durations
    yield _histogram(
        "prontodb_fsync_duration_seconds",
        "Data fsyncs of the databases' logs.",
        figures["fsync_seconds"],
    )
    yield _histogram(
        "prontodb_group_commit_records",
        "Records written by each group commit (one write, one fsync).",
        figures["commit_records"],
    )
    yield _histogram(
        "prontodb_compaction_duration_seconds",
        "Compactions, from start to end.",
        figures["compaction_seconds"],
    )
    compactions = CounterMetricFamily(
        "prontodb_compactions", "Compactions, by result.", labels=["result"]
    )
    for result, count in figures["compactions"].items():
        compactions.add_metric([result], count)
    yield compactions
    untracked = GaugeMetricFamily(
        "prontodb_databases_untracked", "Open databases past the cap, not labelled."
    )
    untracked.add_metric([], figures["databases_untracked"])
    yield untracked


def _process_families(process: dict[str, Any]) -> Iterator[Metric]:
    # Named as prometheus_client's ProcessCollector would name them under our prefix.
    cpu = CounterMetricFamily(
        "prontodb_process_cpu_seconds", "CPU time (user and system) the broker has used."
    )
    cpu.add_metric([], process["cpu_seconds"])
    yield cpu
    if process["rss_bytes"] is not None:
        rss = GaugeMetricFamily(
            "prontodb_process_resident_memory_bytes", "The broker's resident memory."
        )
        rss.add_metric([], process["rss_bytes"])
        yield rss


def _connection_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    labels = ["transport", "user"]
    connections = GaugeMetricFamily(
        "prontodb_connections", "Open connections, by transport and user.", labels=labels
    )
    watchers = GaugeMetricFamily(
        "prontodb_watchers", "Running watches, by transport and user.", labels=labels
    )
    for row in rows:
        connections.add_metric([row["transport"], row["user"]], row["connections"])
        watchers.add_metric([row["transport"], row["user"]], row["watchers"])
    yield connections
    yield watchers


def _database_families(databases: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    cursor = ["cursor"]
    for field, name, doc in _DATABASE_GAUGES:
        gauge = GaugeMetricFamily(name, doc, labels=cursor)
        for db, figures in databases.items():
            gauge.add_metric([db], figures[field])
        yield gauge
    for field, name, doc in _DATABASE_COUNTERS:
        counter = CounterMetricFamily(name, doc, labels=cursor)
        for db, figures in databases.items():
            counter.add_metric([db], figures[field])
        yield counter
    failed = GaugeMetricFamily(
        "prontodb_database_failed",
        "1 while the database's writes fail (reopened on next use).",
        labels=cursor,
    )
    disk = GaugeMetricFamily(
        "prontodb_disk_bytes",
        "Bytes of the database's live files, by kind.",
        labels=["cursor", "kind"],
    )
    for db, figures in databases.items():
        failed.add_metric([db], 0 if figures["failed"] is None else 1)
        for kind, size in figures["disk_bytes"].items():
            disk.add_metric([db, kind], size)
    yield failed
    yield disk
    yield from _queue_families(databases)


def _queue_families(databases: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "prontodb_queue_depth", "Items of a queue, by state.", labels=["cursor", "queue", "state"]
    )
    age = GaugeMetricFamily(
        "prontodb_queue_oldest_ready_age_seconds",
        "Age of the queue's oldest ready item by its last write (0: none ready).",
        labels=["cursor", "queue"],
    )
    for db, figures in databases.items():
        for queue, counts in figures["queues"].items():
            for state in QUEUE_STATES:
                depth.add_metric([db, queue, state], counts[state])
            age.add_metric([db, queue], counts["oldest_ready_age"] or 0.0)
    yield depth
    yield age


def _histogram(name: str, doc: str, histogram: dict[str, Any]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[])
    family.add_metric([], *_buckets(histogram))
    return family


def _buckets(histogram: dict[str, Any]) -> tuple[list[tuple[str, float]], float]:
    """A snapshot histogram (per-bucket counts) as Prometheus's cumulative buckets, and its sum."""
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip([*histogram["bounds"], "+Inf"], histogram["counts"], strict=True):
        total += count
        buckets.append((bound if isinstance(bound, str) else _le(bound), total))
    return buckets, histogram["sum"]


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``1.0``, ``0.005``)."""
    return repr(float(bound))
