"""The broker's figures at one instant, as plain data: what the ``stats`` op answers and what
``/metrics`` turns into Prometheus families (``_metrics.py``).

Counters come from :class:`~._stats.Stats` and the engines' counters; gauges (queue depths,
revisions, disk bytes, connections) are read from the broker's state now, so the hot path pays
nothing for them. Every list is bounded (the caps below, in docs/METRICS.md): what falls past a
cap is counted, not named.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

from ..engine import recipes
from ._databases import OpenDatabase
from ._stats import Stats

QUEUES_TRACKED = 100  # queues listed per database, the deepest first
DATABASES_TRACKED = 100  # open databases listed, by name
USERS_TRACKED = 100  # users named in the connection rows, those with most connections first
WATCHES_TRACKED = 10  # watches listed per database, those furthest behind first
OTHER = "(other)"  # the user of the rows past USERS_TRACKED
NOBODY = "(none)"  # the user of a connection that has not said Hello yet


class Connected(Protocol):
    """What the snapshot reads of a connection (a Session)."""

    user: str
    transport: str

    @property
    def watch_count(self) -> int: ...


def snapshot(
    stats: Stats,
    databases: Iterable[OpenDatabase],
    connections: Iterable[Connected],
    now: float,
    uptime: float,
) -> dict[str, Any]:
    """The figures now (``now``: epoch seconds on the broker's clock)."""
    listed, untracked = _databases(databases, stats, now)
    return {
        "time": now,
        "uptime": uptime,
        "process": process(),
        **stats.as_map(),
        "connections": _connections(connections),
        "databases": listed,
        "databases_untracked": untracked,
        "caps": {
            "queues": QUEUES_TRACKED,
            "databases": DATABASES_TRACKED,
            "users": USERS_TRACKED,
            "watches": WATCHES_TRACKED,
        },
    }


_PAGE = os.sysconf("SC_PAGE_SIZE")


def process() -> dict[str, Any]:
    """``{pid, rss_bytes, cpu_seconds}`` of the broker's process: its resident memory now (None
    where /proc cannot be read) and the CPU time (user + system) it has used since it started."""
    try:
        with open("/proc/self/statm", "rb") as statm:  # Linux: sizes in pages; one small read
            rss: int | None = int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        rss = None
    times = os.times()
    return {"pid": os.getpid(), "rss_bytes": rss, "cpu_seconds": times.user + times.system}


def _connections(connections: Iterable[Connected]) -> list[dict[str, Any]]:
    """``[{transport, user, connections, watchers}]``, one row per pair; the users past
    USERS_TRACKED (fewest connections) folded into one ``(other)`` user."""
    counts: Counter[tuple[str, str]] = Counter()
    watchers: Counter[tuple[str, str]] = Counter()
    for connection in connections:
        key = (connection.transport, connection.user or NOBODY)
        counts[key] += 1
        watchers[key] += connection.watch_count
    per_user: Counter[str] = Counter()
    for (_, user), count in counts.items():
        per_user[user] += count
    kept = {user for user, _ in per_user.most_common(USERS_TRACKED)}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for (transport, user), count in sorted(counts.items()):
        label = user if user in kept else OTHER
        row = rows.setdefault(
            (transport, label),
            {"transport": transport, "user": label, "connections": 0, "watchers": 0},
        )
        row["connections"] += count
        row["watchers"] += watchers[(transport, user)]
    return list(rows.values())


def _databases(
    databases: Iterable[OpenDatabase], stats: Stats, now: float
) -> tuple[dict[str, dict[str, Any]], int]:
    """The first DATABASES_TRACKED open databases by name, and how many more are open."""
    by_name: dict[str, OpenDatabase] = {}
    for db in sorted(databases, key=lambda db: (db.name, str(db.directory))):
        # Two cursors of one name bound to different directories: the second by its path.
        name = db.name if db.name not in by_name else f"{db.name} ({db.directory})"
        by_name[name] = db
    names = list(by_name)[:DATABASES_TRACKED]
    listed = {name: _database(by_name[name], stats, now) for name in names}
    return listed, len(by_name) - len(names)


def _database(db: OpenDatabase, stats: Stats, now: float) -> dict[str, Any]:
    engine = db.engine
    figures = engine.statistics()
    files = db.database.storage.stats()
    counters = engine.counters
    held = waiting = 0
    for recipe in recipes.listing(engine):
        holding = sum(1 for member in recipe.members if member.holding)
        held += holding
        waiting += len(recipe.members) - holding
    queues = engine.queues(now=now)
    deepest = sorted(queues, key=lambda q: (-_depth(queues[q]), q))[:QUEUES_TRACKED]
    return {
        "path": str(db.directory),
        "revision": figures["revision"],
        "first_revision": figures["history_first"],  # the oldest a watch may start from
        "keys": figures["keys"],
        "disk_bytes": {
            "snapshot": files.snapshot_bytes,
            "segments": files.bytes_since_compaction,
        },
        "claims_in_flight": figures["claims"],
        "claims": counters.claims,
        "redeliveries": counters.redeliveries,
        "dead_letters": counters.dead_letters,
        "expired_leases": counters.expired_leases,
        "claimers_waiting": len(db.waiters),
        "watchers": db.watchers,
        **_watches(db),
        "watch_overflows": stats.watch_overflows.get(db.name, 0),
        "sessions": figures["sessions"],
        "recipe_holders": held,
        "recipe_waiting": waiting,
        "failed": None if db.failure is None else str(db.failure),
        "queues": {q: _queue(queues[q]) for q in sorted(deepest)},
        "queues_untracked": len(queues) - len(deepest),
    }


def _watches(db: OpenDatabase) -> dict[str, Any]:
    """``watch_lag``, the most revisions any watcher is behind (durable, not yet sent to it), and
    ``watches``, the WATCHES_TRACKED furthest behind: ``[{user, prefix, next_rev, lag}]``. One
    pass over the watchers; only the listed ones are built."""
    head = db.durable_rev
    behind = heapq.nsmallest(
        WATCHES_TRACKED, db.watching, key=lambda w: (w.next_rev, w.user, w.prefix)
    )
    listed = [
        {"user": w.user, "prefix": w.prefix, "next_rev": w.next_rev, "lag": _lag(head, w.next_rev)}
        for w in behind
    ]
    return {"watch_lag": listed[0]["lag"] if listed else 0, "watches": listed}


def _lag(head: int, next_rev: int) -> int:
    # A watch told to start past the head waits for it: it is not behind.
    return max(0, head + 1 - next_rev)


def _depth(counts: dict[str, Any]) -> int:
    return int(counts["ready"] + counts["delayed"] + counts["claimed"] + counts["dead"])


def _queue(counts: dict[str, Any]) -> dict[str, Any]:
    return {
        "ready": counts["ready"],
        "delayed": counts["delayed"],
        "claimed": counts["claimed"],
        "dead": counts["dead"],
        "waiting": counts["waiting"],  # for other keys to go (`after`)
        "oldest_ready_age": counts.get("oldest_ready_age"),
    }
