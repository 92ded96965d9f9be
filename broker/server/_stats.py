"""The broker's own counters and histograms, kept as plain Python numbers on the hot path.

A request costs a dict look-up and two additions here, nothing more: the conversion to
Prometheus families (``_metrics.py``) and to the ``stats`` op's map (``_snapshot.py``) happens
only when someone asks. Every key is bounded: operations are the registry's names (one name for
every unknown one), codes the protocol's error codes, databases the open ones.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any

# Upper bounds (seconds, inclusive, as Prometheus's ``le``) of the latency buckets: from a cached
# read (tens of µs) to a slow disk's fsync (tens of ms) and a request stuck behind backpressure.
REQUEST_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
FSYNC_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
COMMIT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)  # records per group commit
COMPACTION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class Histogram:
    """Fixed buckets: ``counts[i]`` holds the observations at most ``bounds[i]`` and above the
    bound before it; the last count is those above every bound (Prometheus's ``+Inf``)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def as_map(self) -> dict[str, Any]:
        """The histogram as plain data: bounds, per-bucket counts (not cumulative; one more
        than the bounds, the last above them all), sum and count."""
        counts = list(self.counts)
        return {
            "bounds": list(self.bounds),
            "counts": counts,
            "sum": self.sum,
            "count": sum(counts),
        }


class Stats:
    """What the broker counts as it serves, since it started. Written from the event loop,
    except :meth:`fsynced` and :meth:`committed`, which a database's writer thread may call
    (the storage's ``WriteObserver``): those take a lock."""

    def __init__(self) -> None:
        # (op, code) -> requests answered; code "ok" or the error's code
        self.requests: dict[tuple[str, str], int] = {}
        self.request_seconds: dict[str, Histogram] = {}  # by op: from read to answer sent
        self.fsync_seconds = Histogram(FSYNC_BUCKETS)
        self.commit_records = Histogram(COMMIT_BUCKETS)
        self.compaction_seconds = Histogram(COMPACTION_BUCKETS)
        self.compactions: dict[str, int] = {"ok": 0, "failed": 0}
        self.watch_overflows: dict[str, int] = {}  # by database name
        self._lock = threading.Lock()

    def answered(self, op: str, code: str, seconds: float | None) -> None:
        """A request of ``op`` was answered with ``code``, ``seconds`` after it was read (None:
        not timed, for a request that waited: a blocked claim, an acquire, a watch)."""
        key = (op, code)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        if seconds is not None:
            histogram = self.request_seconds.get(op)
            if histogram is None:
                histogram = self.request_seconds[op] = Histogram(REQUEST_BUCKETS)
            histogram.observe(seconds)

    def fsynced(self, seconds: float) -> None:
        with self._lock:
            self.fsync_seconds.observe(seconds)

    def committed(self, records: int) -> None:
        with self._lock:
            self.commit_records.observe(records)

    def compacted(self, ok: bool, seconds: float) -> None:
        self.compactions["ok" if ok else "failed"] += 1
        self.compaction_seconds.observe(seconds)

    def overflowed(self, database: str) -> None:
        """A watcher of ``database`` fell out of its history window and was cut off."""
        self.watch_overflows[database] = self.watch_overflows.get(database, 0) + 1

    def as_map(self) -> dict[str, Any]:
        """The counters as plain data (the ``stats`` op's ``counters``)."""
        requests: dict[str, dict[str, int]] = {}
        for (op, code), count in sorted(self.requests.items()):
            requests.setdefault(op, {})[code] = count
        with self._lock:
            fsync = self.fsync_seconds.as_map()
            commits = self.commit_records.as_map()
        return {
            "requests": requests,
            "request_seconds": {op: h.as_map() for op, h in sorted(self.request_seconds.items())},
            "fsync_seconds": fsync,
            "commit_records": commits,
            "compactions": dict(self.compactions),
            "compaction_seconds": self.compaction_seconds.as_map(),
        }
