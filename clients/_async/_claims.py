"""The client's operations on work queues: claim an item, then ack, release or extend it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prontodb.protocol import ErrorCode, ProntoError

from .. import _anyio_backend as backend
from .._types import Claimed, ClaimInfo, QueueStats
from ._base import ClientBase

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any


class ClaimOperations(ClientBase):
    """Claims (a part of the client: see ``AsyncClient``)."""

    async def claim(
        self,
        prefix: str,
        *,
        wait: float | None = None,
        lease: float | None = None,
        bind: bool = False,
        max_deliveries: int | None = None,
        cursor: str | None = None,
    ) -> Claimed | None:
        """Take the oldest claimable direct child of ``prefix`` for ``lease`` seconds (the
        broker's default: 60), waiting up to ``wait`` seconds for one; None if none came.

        Blocked claimers are served first come, first served. With ``bind`` the claim also ends
        when this connection closes. After ``max_deliveries`` hand-outs an item is moved to
        ``dead.<key>`` instead. Finish with :meth:`ack`, or use :meth:`claiming`.
        """
        args = self._args(cursor, prefix=prefix)
        if wait:
            args["wait"] = wait
        if lease is not None:
            args["lease"] = lease
        if bind:
            args["bind"] = True
        if max_deliveries is not None:
            args["max_deliveries"] = max_deliveries
        got = await self._call("claim", args)
        if got is None:
            return None
        return Claimed(got["key"], got["value"], got["token"], got["lease"], got["deliveries"])

    @asynccontextmanager
    async def claiming(
        self,
        prefix: str,
        *,
        wait: float | None = None,
        lease: float | None = None,
        bind: bool = False,
        max_deliveries: int | None = None,
        cursor: str | None = None,
    ) -> AsyncIterator[Claimed]:
        """Claim an item for the ``with`` block: acked when the block ends normally, released
        when it raises. Nothing to claim in time raises ``timed_out``.

        The release is shielded from cancellation, but under asyncio a second native
        ``Task.cancel()`` can still cut it short (anyio's shield does not hold against those):
        the item then stays claimed until its lease ends, unless ``bind`` is true, which makes the
        broker give it back as soon as the connection closes."""
        task = await self.claim(
            prefix, wait=wait, lease=lease, bind=bind, max_deliveries=max_deliveries, cursor=cursor
        )
        if task is None:
            raise ProntoError(
                ErrorCode.TIMED_OUT, f"Nothing to claim under {prefix!r} in time; wait longer."
            )
        try:
            yield task
        except BaseException:
            with backend.shielded():
                await self.release(task.key, task.token, cursor=cursor)
            raise
        await self.ack(task.key, task.token, cursor=cursor)

    async def ack(self, key: str, token: int, *, cursor: str | None = None) -> None:
        """Finish the claimed ``key`` (it is deleted); ``compare_failed`` if the claim with
        ``token`` is no longer held (its lease ran out: someone else may hold it now)."""
        await self._call("ack", self._args(cursor, key=key, token=token))

    async def release(
        self,
        key: str,
        token: int,
        *,
        delay: float | None = None,
        priority: int | None = None,
        cursor: str | None = None,
    ) -> None:
        """Give the claimed ``key`` back, claimable after ``delay`` seconds (None: after its
        queue's backoff, if configured, else at once), with a new ``priority`` if given."""
        args = self._args(cursor, key=key, token=token)
        if delay:
            args["delay"] = delay
        if priority is not None:
            args["priority"] = priority
        await self._call("release", args)

    async def extend(
        self, key: str, token: int, lease: float, *, cursor: str | None = None
    ) -> float:
        """Hold the claimed ``key`` ``lease`` seconds from now; returns the new deadline."""
        deadline: float = await self._call(
            "extend", self._args(cursor, key=key, token=token, lease=lease)
        )
        return deadline

    async def queue_config(
        self,
        prefix: str,
        *,
        lease: float | None = None,
        max_deliveries: int | None = None,
        backoff: tuple[float, float] | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Set the queue ``prefix``'s settings (kept at the broker, like a cache): the ``lease``
        a claim gets when it names none, the deliveries before an item goes to ``dead.<key>``,
        and a ``backoff`` (first delay, cap; seconds) that spaces out the retries of items whose
        lease ran out or that were released without a delay. None of them: the defaults again.
        Returns the settings."""
        args = self._args(cursor, prefix=prefix)
        if lease is not None:
            args["lease"] = lease
        if max_deliveries is not None:
            args["max_deliveries"] = max_deliveries
        if backoff is not None:
            args["backoff"] = list(backoff)
        config: dict[str, Any] = await self._call("queue_config", args)
        return config

    async def queue_show(self, prefix: str, *, cursor: str | None = None) -> QueueStats:
        """The queue ``prefix``'s settings and statistics."""
        raw = await self._call("queue_show", self._args(cursor, prefix=prefix))
        return QueueStats.from_map(prefix, raw)

    async def queues(self, prefix: str = "", *, cursor: str | None = None) -> list[QueueStats]:
        """Every queue at or below ``prefix`` (claimed from, configured, or holding an item
        written with queue options) with its statistics, by prefix."""
        found = await self._call("queues", self._args(cursor, prefix=prefix))
        return [QueueStats.from_map(q, raw) for q, raw in found.items()]

    async def claims(self, prefix: str = "", *, cursor: str | None = None) -> list[ClaimInfo]:
        """The claims held at and below ``prefix``."""
        held = await self._call("claims", self._args(cursor, prefix=prefix))
        return [ClaimInfo(c["key"], c["holder"], c["token"], c["lease"], c["bound"]) for c in held]
