"""The client's locks, semaphores, elections and barriers (docs/RECIPES.md).

Each is a line of members under a name, kept by the broker: ``acquire`` joins it with a session and
waits for the turn; the member's ``token`` fences writes (``fence=(name, token)``) and leaves the
line (``unlock``). The ``with`` forms hold a session of their own for the block, bound to the
connection and kept alive in the background, and end it on the way out: a holder whose session is
lost has its block cancelled (async) or its calls refused (sync), as :meth:`keep_session` says.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from prontodb.protocol import ErrorCode, ProntoError

from .._types import Member, Recipe
from ._sessions import SessionOperations

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import Any

    from .watch import Watch

FOREVER = 86_400.0  # what "wait as long as it takes" asks the broker for: its longest wait
DEFAULT_TTL = 10.0  # seconds a holder survives without renewals (a crash, a stopped process)


def _member(raw: dict[str, Any] | None) -> Member | None:
    if raw is None:
        return None
    return Member(
        raw["key"], raw["token"], raw["session"], raw["writer"], raw["value"], raw["holding"]
    )


def _recipe(raw: dict[str, Any]) -> Recipe:
    members = [_member(m) for m in raw["members"]]
    return Recipe(raw["name"], raw["recipe"], raw["limit"], [m for m in members if m])


class RecipeOperations(SessionOperations):
    """Locks, semaphores, elections and barriers (a part of the client: see ``AsyncClient``)."""

    if TYPE_CHECKING:

        def watch(
            self,
            prefix: str = "",
            *,
            from_rev: int | None = None,
            cursor: str | None = None,
            reconnect: float = 30.0,
        ) -> Watch: ...

    async def acquire(
        self,
        name: str,
        recipe: str,
        session: int,
        *,
        limit: int = 1,
        value: Any = None,
        wait: float | None = None,
        cursor: str | None = None,
    ) -> Member | None:
        """Join ``recipe`` (lock, semaphore, election or barrier) ``name`` with ``session`` and
        wait up to ``wait`` seconds (None: try once) for the turn; the member once it holds, or
        None (it then left the line). ``limit``: a semaphore's holders, a barrier's parties;
        members that ask for another limit than the ones there are refused (compare_failed)."""
        args = self._args(cursor, name=name, recipe=recipe, session=session, limit=limit)
        if value is not None:
            args["value"] = value
        if wait:
            args["wait"] = wait
        return _member(await self._call("acquire", args))

    async def unlock(self, name: str, token: int, *, cursor: str | None = None) -> bool:
        """Leave ``name``'s line (release the lock, the slot, the leadership) by ``token``,
        never by name; whether that token was there."""
        left: bool = await self._call("unlock", self._args(cursor, name=name, token=token))
        return left

    async def proclaim(
        self, name: str, token: int, value: Any, *, cursor: str | None = None
    ) -> Member:
        """The leader of election ``name`` (holding ``token``) announces a new ``value``; its
        term stays. compare_failed if ``token`` does not lead any more."""
        raw = await self._call("proclaim", self._args(cursor, name=name, token=token, value=value))
        member = _member(raw)
        assert member is not None
        return member

    async def holders(self, name: str, *, cursor: str | None = None) -> Recipe | None:
        """Recipe ``name`` with its members in line, holders first; None if it has none."""
        raw = await self._call("holders", self._args(cursor, name=name))
        return None if raw is None else _recipe(raw)

    async def locks(self, prefix: str = "", *, cursor: str | None = None) -> list[Recipe]:
        """Every lock, semaphore, election and barrier with members at or below ``prefix``."""
        found = await self._call("locks", self._args(cursor, prefix=prefix))
        return [_recipe(raw) for raw in found]

    async def leader(self, name: str, *, cursor: str | None = None) -> Member | None:
        """Election ``name``'s leader (its value, and its term as ``token``), or None."""
        state = await self.holders(name, cursor=cursor)
        return None if state is None or not state.holders else state.holders[0]

    # -- held for a block ----------------------------------------------------------------------

    @asynccontextmanager
    async def lock(
        self,
        name: str,
        *,
        ttl: float = DEFAULT_TTL,
        wait: float | None = None,
        value: Any = None,
        cursor: str | None = None,
    ) -> AsyncIterator[Member]:
        """Hold lock ``name`` for the ``with`` block, waiting up to ``wait`` seconds for it
        (None: as long as it takes; timed_out after that); waiters are served in arrival order.
        ``held.token`` is the fencing token. Lost (the session could not be renewed within
        ``ttl``) → the block is cancelled and its end raises SessionLost."""
        async with self._holding(name, "lock", 1, value, ttl, wait, cursor) as held:
            yield held

    @asynccontextmanager
    async def semaphore(
        self,
        name: str,
        limit: int,
        *,
        ttl: float = DEFAULT_TTL,
        wait: float | None = None,
        value: Any = None,
        cursor: str | None = None,
    ) -> AsyncIterator[Member]:
        """Hold one of ``limit`` slots of semaphore ``name`` for the block (as :meth:`lock`)."""
        async with self._holding(name, "semaphore", limit, value, ttl, wait, cursor) as held:
            yield held

    @asynccontextmanager
    async def elect(
        self,
        name: str,
        value: Any,
        *,
        ttl: float = DEFAULT_TTL,
        wait: float | None = None,
        cursor: str | None = None,
    ) -> AsyncIterator[Member]:
        """Lead election ``name`` with ``value`` for the block, once elected (as :meth:`lock`);
        ``held.token`` is the term. The block's end resigns."""
        async with self._holding(name, "election", 1, value, ttl, wait, cursor) as held:
            yield held

    @asynccontextmanager
    async def barrier(
        self,
        name: str,
        count: int,
        *,
        ttl: float = DEFAULT_TTL,
        wait: float | None = None,
        cursor: str | None = None,
    ) -> AsyncIterator[Member]:
        """A double barrier: entering waits until ``count`` parties are in (timed_out after
        ``wait`` seconds; None: as long as it takes); leaving, at the block's end, waits until
        every party has left (timed_out after ``wait`` seconds with no change). A party whose
        session ends (it crashed) drops out instead of counting forever."""
        async with self._holding(name, "barrier", count, None, ttl, wait, cursor) as held:
            yield held
            await self.unlock(name, held.token, cursor=cursor)
            await self._until_empty(name, wait, cursor)

    @asynccontextmanager
    async def _holding(
        self,
        name: str,
        recipe: str,
        limit: int,
        value: Any,
        ttl: float,
        wait: float | None,
        cursor: str | None,
    ) -> AsyncIterator[Member]:
        async with self.keep_session(ttl, bound=True, cursor=cursor) as session:
            held = await self.acquire(
                name,
                recipe,
                session,
                limit=limit,
                value=value,
                wait=FOREVER if wait is None else wait,
                cursor=cursor,
            )
            if held is None:
                raise ProntoError(
                    ErrorCode.TIMED_OUT,
                    f"{name!r} was not acquired within {wait:g} s; wait longer, or see who holds "
                    f"it with holders({name!r}).",
                )
            yield held

    async def _until_empty(self, name: str, wait: float | None, cursor: str | None) -> None:
        """Return once recipe ``name`` has no member (re-read at the broker after each change
        under it), or raise timed_out after ``wait`` seconds with no change."""
        async with self.watch(name, cursor=cursor) as changes:
            while await self.holders(name, cursor=cursor) is not None:
                if await changes.next_event(wait) is None:
                    raise ProntoError(
                        ErrorCode.TIMED_OUT, f"Not every party left {name!r} in time."
                    )

    def observe(self, name: str, *, cursor: str | None = None) -> Leaders:
        """Election ``name``'s leader now, then each time it changes (a new leader, a new value,
        or None: nobody leads)::

            async with client.observe("primary") as leaders:
                async for leader in leaders:
                    print(leader.value if leader else "no leader")
        """
        return Leaders(self, name, cursor)


class Leaders:
    """The leaders of an election as they change; from ``client.observe(name)``. Each change
    under the election's name is re-read at the broker, so several changes between two reads
    come out as the leader they left."""

    def __init__(self, client: RecipeOperations, name: str, cursor: str | None) -> None:
        self._client = client
        self._name = name
        self._cursor = cursor
        self._changes = client.watch(name, cursor=cursor)
        self._last: Member | None = None
        self._started = False

    async def __aenter__(self) -> Leaders:
        await self._changes.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._changes.aclose()

    def __aiter__(self) -> Leaders:
        return self

    async def __anext__(self) -> Member | None:
        client, name, cursor = self._client, self._name, self._cursor
        if not self._started:
            self._started = True
            self._last = await client.leader(name, cursor=cursor)
            return self._last
        while True:
            await self._changes.__anext__()  # StopAsyncIteration once the watch is closed
            leader = await client.leader(name, cursor=cursor)
            if leader != self._last:
                self._last = leader
                return leader
