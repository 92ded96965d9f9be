"""Claimers waiting for work: first come, first served, per database and prefix.

A ``claim`` that finds nothing and may wait leaves a :class:`Waiter` here. Whenever a change may
have made an item claimable, :meth:`ClaimWaiters.serve` claims on behalf of the waiters in arrival
order, so no later claimer overtakes an earlier one, and tells each one it served.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from ..engine import Applied, Claimed, Engine


class Waiter:
    """One blocked claim: what it asks for, and what it got.

    Once served (``result`` and ``ticket`` set), ``served(waiter)`` is called at once, from the
    write that made the item claimable, so the answer can go out with that write's fsync; without
    one, ``event`` is set. ``event`` is also how the database going away wakes its task.
    """

    __slots__ = (
        "bound",
        "event",
        "holder",
        "lease",
        "max_deliveries",
        "prefix",
        "result",
        "served",
        "ticket",
    )

    def __init__(
        self,
        prefix: str,
        holder: str,
        lease: float | None,
        bound: int | None,
        max_deliveries: int | None,
        served: Callable[[Waiter], None] | None = None,
    ) -> None:
        self.prefix = prefix
        self.holder = holder
        self.lease = lease
        self.bound = bound
        self.max_deliveries = max_deliveries
        self.served = served
        self.event = trio.Event()
        self.result: Claimed | None = None
        self.ticket = 0


class ClaimWaiters:
    """The waiting claimers of one database, a FIFO queue per prefix (bounded by the protocol's
    in-flight limit per connection: a waiter is a request awaiting its answer)."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[Waiter]] = {}

    def __bool__(self) -> bool:
        return bool(self._queues)

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def queued(self, prefix: str) -> bool:
        """Whether claimers already wait on ``prefix`` (a new one must queue behind them)."""
        return prefix in self._queues

    def add(self, waiter: Waiter) -> None:
        self._queues.setdefault(waiter.prefix, deque()).append(waiter)

    def wake_all(self) -> None:
        """Wake every waiter with nothing (the database is going away)."""
        for queue in self._queues.values():
            for waiter in queue:
                waiter.event.set()

    def remove(self, waiter: Waiter) -> None:
        queue = self._queues.get(waiter.prefix)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._queues[waiter.prefix]

    def serve(self, engine: Engine, now: float, submit: Callable[[Applied[Any]], int]) -> None:
        """Claim for the waiters, oldest first, while their prefixes have claimable items."""
        for prefix in list(self._queues):
            queue = self._queues[prefix]
            index = 0
            while index < len(queue):
                waiter = queue[index]
                if engine.claims_left(waiter.holder) == 0:
                    index += 1  # at its quota of claims: it waits on, the next one goes
                    continue
                applied = engine.claim(
                    prefix,
                    holder=waiter.holder,
                    now=now,
                    lease=waiter.lease,
                    bound=waiter.bound,
                    max_deliveries=waiter.max_deliveries,
                )
                ticket = submit(applied) if applied.records else 0
                if applied.result is None:
                    break
                del queue[index]
                waiter.result, waiter.ticket = applied.result, ticket
                if waiter.served is not None:
                    waiter.served(waiter)
                else:
                    waiter.event.set()
            if not queue:
                del self._queues[prefix]
