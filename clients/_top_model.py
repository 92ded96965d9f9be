"""What ``prontodb top`` shows, computed from ``stats`` snapshots: plain functions, no I/O.

The broker's counters only grow (docs/METRICS.md), so the rates and percentiles of an interval
are those of the difference between two snapshots: ops/s from the request counts, p99 from the
latency histograms' bucket counts. With a single snapshot (the first frame of the live view, or
after the broker restarted) the differences are taken from zero, over the broker's uptime: the
figures since it started. The drawing is ``_cli_top``'s; this module only counts and formats.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

Snapshot = dict[str, Any]

# Per-database counters whose rates the view shows: (snapshot field, row field).
_DATABASE_RATES = (
    ("claims", "claims"),
    ("redeliveries", "redeliveries"),
    ("dead_letters", "dead_letters"),
    ("expired_leases", "expired_leases"),
)


@dataclass(frozen=True, slots=True)
class OpRow:
    """One operation's requests in the interval."""

    op: str
    rate: float  # requests answered per second
    errors: float  # of those, answered with an error, per second
    p99: float | None  # seconds (from the histogram's buckets); None: none was timed
    total: int  # answered since the broker started


@dataclass(frozen=True, slots=True)
class UserRow:
    """A user's connections on one transport."""

    user: str
    transport: str
    connections: int
    watchers: int


@dataclass(frozen=True, slots=True)
class QueueRow:
    """A queue's items by state, and the age of its oldest ready one (None: none is ready)."""

    cursor: str
    queue: str
    ready: int
    delayed: int
    claimed: int
    dead: int
    waiting: int
    oldest_ready_age: float | None

    @property
    def depth(self) -> int:
        return self.ready + self.delayed + self.claimed + self.dead


@dataclass(frozen=True, slots=True)
class WatchRow:
    """A watcher and how many revisions it is behind the durable head."""

    cursor: str
    user: str
    prefix: str
    lag: int
    next_rev: int


@dataclass(frozen=True, slots=True)
class DatabaseRow:
    """An open database: its size and what moved in it in the interval (rates per second)."""

    cursor: str
    revision: int
    writes: float  # revisions per second
    keys: int
    disk_bytes: int
    claims_in_flight: int
    claims: float
    redeliveries: float
    dead_letters: float
    expired_leases: float
    watchers: int
    watch_overflows: int  # since the broker started
    failed: str | None


@dataclass(frozen=True, slots=True)
class Frame:
    """One screen of ``top``: totals, then the tables, each sorted busiest first."""

    time: float  # the broker's clock at the later snapshot
    interval: float | None  # the seconds the rates cover; None: since the broker started
    uptime: float
    pid: int | None
    rss_bytes: int | None
    cpu_percent: float | None  # of one core
    requests: float  # per second, every operation
    errors: float
    fsyncs: float  # per second
    fsync_p99: float | None  # seconds
    commit_records: float | None  # records per group commit (mean)
    connections: int
    watchers: int
    disk_bytes: int
    ops: tuple[OpRow, ...]
    users: tuple[UserRow, ...]
    queues: tuple[QueueRow, ...]
    watches: tuple[WatchRow, ...]
    databases: tuple[DatabaseRow, ...]
    untracked: int  # databases and queues the broker counted but did not list (its caps)

    def as_json(self) -> dict[str, Any]:
        """The frame as plain data, what ``top --json`` prints (queue rows with their depth)."""
        document = asdict(self)
        for table in ("ops", "users", "queues", "watches", "databases"):
            document[table] = list(document[table])  # as JSON has them
        for row, queue in zip(document["queues"], self.queues, strict=True):
            row["depth"] = queue.depth
        return document


def comparable(previous: Snapshot | None, current: Snapshot) -> bool:
    """Whether ``previous`` is an earlier snapshot of the same broker run, so that differences
    between the two are the interval's (a restarted broker counts from zero again)."""
    if previous is None:
        return False
    return bool(
        _pid(previous) == _pid(current)
        and previous["uptime"] <= current["uptime"]
        and previous["time"] < current["time"]
    )


def frame(current: Snapshot, previous: Snapshot | None = None) -> Frame:
    """The view of ``current``, its rates over the time since ``previous`` (or since the
    broker started, when ``previous`` is None or of another broker run)."""
    base = previous if comparable(previous, current) else None
    seconds = current["time"] - base["time"] if base is not None else current["uptime"]
    seconds = max(seconds, 1e-9)
    ops = _ops(current, base, seconds)
    fsync = _delta_histogram(current["fsync_seconds"], base and base["fsync_seconds"])
    commits = _delta_histogram(current["commit_records"], base and base["commit_records"])
    databases = current["databases"]
    process = current.get("process") or {}
    cpu = process.get("cpu_seconds")
    if cpu is not None and base is not None:
        cpu -= (base.get("process") or {}).get("cpu_seconds") or 0.0
    return Frame(
        time=current["time"],
        interval=None if base is None else seconds,
        uptime=current["uptime"],
        pid=process.get("pid"),
        rss_bytes=process.get("rss_bytes"),
        cpu_percent=None if cpu is None else max(0.0, cpu) / seconds * 100,
        requests=sum(row.rate for row in ops),
        errors=sum(row.errors for row in ops),
        fsyncs=fsync["count"] / seconds,
        fsync_p99=quantile(0.99, fsync),
        commit_records=commits["sum"] / commits["count"] if commits["count"] else None,
        connections=sum(row["connections"] for row in current["connections"]),
        watchers=sum(row["watchers"] for row in current["connections"]),
        disk_bytes=sum(sum(db["disk_bytes"].values()) for db in databases.values()),
        ops=ops,
        users=_users(current),
        queues=_queues(databases),
        watches=_watches(databases),
        databases=_databases(current, base, seconds),
        untracked=current.get("databases_untracked", 0)
        + sum(db.get("queues_untracked", 0) for db in databases.values()),
    )


def quantile(q: float, histogram: dict[str, Any]) -> float | None:
    """The ``q`` quantile of a snapshot histogram (per-bucket counts), as Prometheus's
    ``histogram_quantile`` estimates it: linear within the bucket it falls in (from 0 in the
    first), and the highest bound when it falls above every bound. None for no observation."""
    bounds: list[float] = histogram["bounds"]
    counts: list[int] = histogram["counts"]
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(counts):
        if count > 0 and below + count >= rank:
            if index == len(bounds):
                return float(bounds[-1])
            lower = bounds[index - 1] if index else 0.0
            return float(lower + (bounds[index] - lower) * (rank - below) / count)
        below += count
    return float(bounds[-1])


def _pid(snapshot: Snapshot) -> Any:
    return (snapshot.get("process") or {}).get("pid")


def _delta_histogram(current: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """The observations of ``current`` that ``previous`` had not seen (all of them without it,
    or if the buckets differ)."""
    if previous is None or previous["bounds"] != current["bounds"]:
        return current
    counts = [max(0, a - b) for a, b in zip(current["counts"], previous["counts"], strict=True)]
    return {
        "bounds": current["bounds"],
        "counts": counts,
        "sum": max(0.0, current["sum"] - previous["sum"]),
        "count": sum(counts),
    }


def _ops(current: Snapshot, base: Snapshot | None, seconds: float) -> tuple[OpRow, ...]:
    """The operations answered in the interval, the busiest first."""
    before = base["requests"] if base is not None else {}
    timed_before = base["request_seconds"] if base is not None else {}
    rows = []
    for op, codes in current["requests"].items():
        earlier = before.get(op, {})
        done = {code: count - earlier.get(code, 0) for code, count in codes.items()}
        answered = sum(done.values())
        if answered <= 0:
            continue
        failed = answered - done.get("ok", 0)
        histogram = current["request_seconds"].get(op)
        p99 = None
        if histogram is not None:
            p99 = quantile(0.99, _delta_histogram(histogram, timed_before.get(op)))
        rows.append(OpRow(op, answered / seconds, failed / seconds, p99, sum(codes.values())))
    return tuple(sorted(rows, key=lambda row: (-row.rate, row.op)))


def _users(current: Snapshot) -> tuple[UserRow, ...]:
    rows = [
        UserRow(row["user"], row["transport"], row["connections"], row["watchers"])
        for row in current["connections"]
    ]
    return tuple(sorted(rows, key=lambda row: (-row.connections, row.user, row.transport)))


def _queues(databases: dict[str, Any]) -> tuple[QueueRow, ...]:
    """Every listed queue of every database, the deepest first."""
    rows = [
        QueueRow(
            cursor,
            queue,
            counts["ready"],
            counts["delayed"],
            counts["claimed"],
            counts["dead"],
            counts.get("waiting", 0),
            counts.get("oldest_ready_age"),
        )
        for cursor, db in databases.items()
        for queue, counts in db["queues"].items()
    ]
    return tuple(sorted(rows, key=lambda row: (-row.depth, row.cursor, row.queue)))


def _watches(databases: dict[str, Any]) -> tuple[WatchRow, ...]:
    """The watchers the broker listed (those furthest behind), the furthest behind first."""
    rows = [
        WatchRow(cursor, w["user"], w["prefix"], w["lag"], w["next_rev"])
        for cursor, db in databases.items()
        for w in db.get("watches", ())
    ]
    return tuple(sorted(rows, key=lambda row: (-row.lag, row.cursor, row.user, row.prefix)))


def _databases(current: Snapshot, base: Snapshot | None, seconds: float) -> tuple[DatabaseRow, ...]:
    rows = []
    for name, db in sorted(current["databases"].items()):
        # A database opened during the interval counts from zero.
        before = (base["databases"].get(name) if base is not None else None) or {}
        rates = {
            row_field: max(0, db[field] - before.get(field, 0)) / seconds
            for field, row_field in _DATABASE_RATES
        }
        # Revisions are not counters of this run: a database opened meanwhile has no rate yet.
        writes = max(0, db["revision"] - before["revision"]) / seconds if before else 0.0
        rows.append(
            DatabaseRow(
                cursor=name,
                revision=db["revision"],
                writes=writes,
                keys=db["keys"],
                disk_bytes=sum(db["disk_bytes"].values()),
                claims_in_flight=db["claims_in_flight"],
                watchers=db["watchers"],
                watch_overflows=db["watch_overflows"],
                failed=db["failed"],
                **rates,
            )
        )
    return tuple(rows)


# -- formatting: numbers as the view prints them ------------------------------------------------


def rate(value: float) -> str:
    """Per-second figures: ``0``, ``0.5``, ``12``, ``1,234``, ``12.3k``, ``1.2M``."""
    if value == 0:
        return "0"
    if value < 10:
        return f"{value:.1f}".removesuffix(".0")
    if value < 10_000:
        return f"{value:,.0f}"
    if value < 1_000_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1_000_000:.1f}M"


def duration(seconds: float | None) -> str:
    """A latency: ``-`` for none, else µs, ms or s with three significant digits at most."""
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g}ms"
    return f"{seconds:.3g}s"


def age(seconds: float | None) -> str:
    """An age or uptime: ``-``, ``0.4s``, ``42s``, ``3m05s``, ``2h03m``, ``3d04h``."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def size(count: int | None) -> str:
    """Bytes: ``-``, ``512 B``, ``1.5 KiB``, ``12.0 MiB``, ``3.1 GiB``."""
    if count is None:
        return "-"
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def budget(height: int, wanted: list[int]) -> list[int]:
    """Rows for each table out of ``height`` rows: one at a time to each table that wants more,
    in turn, so that a short terminal shows the top of every table rather than all of one."""
    given = [0] * len(wanted)
    left = max(0, height)
    while left > 0:
        moved = False
        for index, want in enumerate(wanted):
            if left > 0 and given[index] < want:
                given[index] += 1
                left -= 1
                moved = True
        if not moved:
            break
    return given
