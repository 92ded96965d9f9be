"""The state of claims in one database: who holds which item, the fencing counter, delivery counts,
delayed releases, and the ready queue of each prefix that has been claimed from.

Pure bookkeeping: the engine decides, logs and calls these methods; nothing here makes records.
A queue is the set of direct children of a prefix (``jobs`` holds ``jobs.j1``, not ``jobs.j1.x``),
served most urgent first (lowest priority number), then oldest first by create revision. Only items
that are neither claimed, nor delayed, nor waiting for other keys to go are in a queue's ready
index, so taking the next one is a pop, however many are in flight.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any, NamedTuple

from sortedcontainers import SortedList

from ._entry import Entry
from ._keys import SEPARATOR


class Claim(NamedTuple):
    """A held item: its holder, its fencing token, its lease's deadline and, for a claim bound
    to a connection, that connection's session number."""

    holder: str
    token: int
    lease: float
    bound: int | None


def parent_of(key: str) -> str:
    """The queue a key belongs to: the prefix one segment up ("" for a top-level key)."""
    return key.rpartition(SEPARATOR)[0]


DEFAULT_PRIORITY = 100  # an item's priority unless it says otherwise (0 is the most urgent)
DUE_PER_PASS = 1000  # lease and delay ends handled in one pass (see ClaimBook.due)


class ClaimBook:
    """Claims, delivery counts, delays, priorities, dependencies and ready queues; driven by
    the engine only."""

    def __init__(self) -> None:
        self.fence = 0  # the last token handed out: every claim gets a higher one
        self.claims: dict[str, Claim] = {}
        self.deliveries: dict[str, int] = {}
        # Not claimable before then: set with a delay, released with one, or backing off.
        self.delayed: dict[str, float] = {}
        self.priority: dict[str, int] = {}  # items whose priority is not DEFAULT_PRIORITY
        self.after: dict[str, set[str]] = {}  # item -> the keys it still waits for
        self.blocking: dict[str, set[str]] = {}  # key -> the items waiting for it to go
        self._queues: dict[str, SortedList] = {}  # prefix -> ready (priority, create_rev, key)
        # Lease ends and delay ends, (time, key), pruned lazily like the TTL heap.
        self._timers: list[tuple[float, str]] = []

    # -- queues --------------------------------------------------------------------------------

    def queue(self, prefix: str, children: Iterable[tuple[str, Entry]]) -> SortedList:
        """The ready index of ``prefix``, built from its ``children`` on first use."""
        ready = self._queues.get(prefix)
        if ready is None:
            ready = SortedList(
                self._place(key, entry) for key, entry in children if self._claimable(key)
            )
            self._queues[prefix] = ready
        return ready

    def _claimable(self, key: str) -> bool:
        return key not in self.claims and key not in self.delayed and key not in self.after

    def _place(self, key: str, entry: Entry) -> tuple[int, int, str]:
        """Where ``key`` stands in its ready index: by priority, then age."""
        return self.priority.get(key, DEFAULT_PRIORITY), entry.create_rev, key

    def _make_ready(self, key: str, entry: Entry) -> None:
        ready = self._queues.get(parent_of(key))
        if ready is not None and self._claimable(key):
            ready.add(self._place(key, entry))

    def _unready(self, key: str, entry: Entry) -> None:
        ready = self._queues.get(parent_of(key))
        if ready is not None:
            ready.discard(self._place(key, entry))

    # -- queue options ---------------------------------------------------------------------------

    def configure(
        self,
        key: str,
        entry: Entry,
        priority: int,
        not_before: float | None,
        waits_for: Iterable[str],
    ) -> None:
        """``key`` was written as a queue item with these options (``waits_for``: the keys that
        exist now among those it is to wait for); a write without options clears its priority
        and dependencies (not a delay: a release's, or a backoff's)."""
        self._unready(key, entry)
        if priority == DEFAULT_PRIORITY:
            self.priority.pop(key, None)
        else:
            self.priority[key] = priority
        self._forget_dependencies(key)
        deps = set(waits_for)
        if deps:
            self.after[key] = deps
            for dep in deps:
                self.blocking.setdefault(dep, set()).add(key)
        if not_before is not None:
            self.delayed[key] = not_before
            heapq.heappush(self._timers, (not_before, key))
        self._make_ready(key, entry)

    def has_options(self, key: str) -> bool:
        """Whether ``key`` has a priority or dependencies to clear on a plain write."""
        return key in self.priority or key in self.after

    def reprioritize(self, key: str, priority: int) -> None:
        """A released item's new priority (it is not in a ready index while claimed)."""
        if priority == DEFAULT_PRIORITY:
            self.priority.pop(key, None)
        else:
            self.priority[key] = priority

    def _forget_dependencies(self, key: str) -> None:
        for dep in self.after.pop(key, ()):
            waiting = self.blocking.get(dep)
            if waiting is not None:
                waiting.discard(key)
                if not waiting:
                    del self.blocking[dep]

    def _unblock(self, key: str) -> list[str]:
        """``key`` is gone: the items that waited for it and wait for nothing else now."""
        freed = []
        for item in self.blocking.pop(key, ()):
            deps = self.after.get(item)
            if deps is not None:
                deps.discard(key)
                if not deps:
                    del self.after[item]
                    freed.append(item)
        return freed

    def moved(self, key: str, to: str) -> None:
        """``key`` was moved to ``to`` (a dead letter): whoever waited for it waits for ``to``."""
        items = self.blocking.pop(key, set())
        for item in items:
            deps = self.after[item]
            deps.discard(key)
            deps.add(to)
        if items:
            self.blocking.setdefault(to, set()).update(items)

    def stored(self, key: str, entry: Entry, new: bool) -> None:
        """The engine wrote ``key`` (``new``: it did not exist before)."""
        if new:
            self._make_ready(key, entry)

    def removed(self, key: str, entry: Entry) -> list[str]:
        """``key`` is gone (deleted, acked, expired): so are its claim, count, delay, priority
        and dependencies. Returns the items that waited only for it (the caller makes them
        ready: they may be claimable now)."""
        self._unready(key, entry)
        self.claims.pop(key, None)
        self.deliveries.pop(key, None)
        self.delayed.pop(key, None)
        self.priority.pop(key, None)
        self._forget_dependencies(key)
        return self._unblock(key) if key in self.blocking else []

    # -- claims --------------------------------------------------------------------------------

    def take(self, key: str, entry: Entry, claim: Claim) -> int:
        """Hand ``key`` out under ``claim``; returns its delivery count (1 the first time)."""
        self._unready(key, entry)
        self.claims[key] = claim
        self.fence = max(self.fence, claim.token)
        count = self.deliveries[key] = self.deliveries.get(key, 0) + 1
        heapq.heappush(self._timers, (claim.lease, key))
        return count

    def give_back(self, key: str, entry: Entry, not_before: float | None) -> None:
        """End ``key``'s claim: ready at once, or from ``not_before`` on."""
        self.claims.pop(key, None)
        if not_before is None:
            self._make_ready(key, entry)
        else:
            self.delayed[key] = not_before
            heapq.heappush(self._timers, (not_before, key))

    def extend(self, key: str, lease: float) -> None:
        claim = self.claims[key]
        self.claims[key] = claim._replace(lease=lease)
        heapq.heappush(self._timers, (lease, key))

    def claims_of(self, holder: str) -> int:
        """How many claims ``holder`` holds."""
        return sum(1 for claim in self.claims.values() if claim.holder == holder)

    # -- time ----------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """The earliest lease end or delay end still current, or None."""
        timers = self._timers
        while timers:
            when, key = timers[0]
            if self._current(when, key):
                return when
            heapq.heappop(timers)
        return None

    def _current(self, when: float, key: str) -> bool:
        claim = self.claims.get(key)
        return (claim is not None and claim.lease == when) or self.delayed.get(key) == when

    def due(self, now: float) -> tuple[list[str], list[str]]:
        """Pop what is due at ``now``: (keys whose lease ran out, keys whose delay ended).
        The caller gives the first back (logged); the second are ready again here."""
        leases: dict[str, None] = {}
        delays: list[str] = []
        timers = self._timers
        # At most DUE_PER_PASS at a time: thousands due at one moment must not hold the broker
        # (every connection) in one pass; the rest stay due, and the next pass takes them.
        while timers and timers[0][0] <= now and len(leases) + len(delays) < DUE_PER_PASS:
            when, key = heapq.heappop(timers)
            claim = self.claims.get(key)
            if claim is not None and claim.lease == when:
                leases[key] = None
            elif self.delayed.get(key) == when:
                del self.delayed[key]
                delays.append(key)
        return list(leases), delays

    def ready_again(self, key: str, entry: Entry) -> None:
        """A delay ended: ``key`` goes back to its queue."""
        self._make_ready(key, entry)

    # -- views ---------------------------------------------------------------------------------

    def queue_prefixes(self) -> list[str]:
        """The prefixes claimed from since the database was opened."""
        return sorted(self._queues)

    def counts(self, prefix: str, children: Iterable[tuple[str, Entry]]) -> dict[str, int]:
        """How many direct children of ``prefix`` are ready, claimed, delayed and waiting for
        other keys to go, and how many deliveries beyond the first its items have had."""
        ready = claimed = delayed = waiting = redeliveries = 0
        for key, _ in children:
            redeliveries += max(self.deliveries.get(key, 0) - 1, 0)
            if key in self.claims:
                claimed += 1
            elif key in self.delayed:
                delayed += 1
            elif key in self.after:
                waiting += 1
            else:
                ready += 1
        return {
            "ready": ready,
            "claimed": claimed,
            "delayed": delayed,
            "waiting": waiting,
            "redeliveries": redeliveries,
        }

    def oldest_ready(self, prefix: str) -> str | None:
        """The ready item of ``prefix`` written longest ago by create revision (None: none
        ready, or the queue has not been indexed yet)."""
        ready = self._queues.get(prefix)
        if not ready:
            return None
        oldest: tuple[int, int, str] = min(ready, key=lambda place: place[1])
        return oldest[2]

    def rebuild(self, entries: dict[str, Entry]) -> None:
        """After loading: drop state of keys that are gone, rebuild the timers, forget queues."""
        tables: tuple[dict[str, Any], ...] = (
            self.claims,
            self.deliveries,
            self.delayed,
            self.priority,
            self.after,
        )
        for table in tables:
            for key in [k for k in table if k not in entries]:
                del table[key]
        self.blocking.clear()
        for item, deps in list(self.after.items()):
            deps.intersection_update(entries)  # a key gone while loading waits for nothing
            if not deps:
                del self.after[item]
            for dep in deps:
                self.blocking.setdefault(dep, set()).add(item)
        self._timers = [(c.lease, k) for k, c in self.claims.items()]
        self._timers += [(t, k) for k, t in self.delayed.items()]
        heapq.heapify(self._timers)
        self._queues.clear()
