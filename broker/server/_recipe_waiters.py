"""Parties waiting in line for a lock, a semaphore, a leadership or a barrier.

A party that joined a recipe and does not hold it yet leaves a :class:`RecipeWaiter` here, by the
recipe's name. Every change to a database passes :meth:`RecipeWaiters.changed`, which looks again at
the recipes whose members it touched and wakes exactly the waiters that now hold: the next in line
when a lock passes on (no herd), every party when a barrier opens. The state is re-read from the
engine at each wake-up, so a waiter never acts on a stale count.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

from ..engine import Change, Engine, parent_of, recipes


class RecipeWaiter:
    """One party waiting for its turn: its member's token, and how the wait ended."""

    __slots__ = ("event", "member", "ticket", "token")

    def __init__(self, token: int) -> None:
        self.token = token
        self.event = trio.Event()
        self.member: recipes.Member | None = None  # set once it holds
        self.ticket = 0  # the write that made it hold: its answer waits for that to be durable


class RecipeWaiters:
    """The waiting parties of one database, by recipe name (bounded as claim waiters are: each
    is a request awaiting its answer)."""

    def __init__(self) -> None:
        self._lines: dict[str, list[RecipeWaiter]] = {}

    def __len__(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def add(self, name: str, waiter: RecipeWaiter) -> None:
        self._lines.setdefault(name, []).append(waiter)

    def remove(self, name: str, waiter: RecipeWaiter) -> None:
        line = self._lines.get(name)
        if line is not None and waiter in line:
            line.remove(waiter)
            if not line:
                del self._lines[name]

    def changed(self, engine: Engine, changes: Iterable[Change], ticket: int) -> None:
        """``changes`` were applied (durable with ``ticket``): wake the waiters they let in, and
        those whose place in line is gone (their session ended)."""
        if not self._lines:
            return
        touched = {parent_of(change.key) for change in changes} & self._lines.keys()
        for name in touched:
            state = recipes.state(engine, name)
            by_token = {} if state is None else {m.token: m for m in state.members}
            for waiter in self._lines[name]:
                if waiter.event.is_set():
                    continue  # woken already: its task has yet to run
                member = by_token.get(waiter.token)
                if member is None or member.holding:
                    waiter.member, waiter.ticket = member, ticket
                    waiter.event.set()

    def wake_all(self) -> None:
        """Wake every waiter with nothing (the database is going away)."""
        for line in self._lines.values():
            for waiter in line:
                waiter.event.set()
