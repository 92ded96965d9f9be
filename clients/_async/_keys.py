"""The client's operations on keys: values, conditions, TTLs and caches, counters, listings and
transactions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prontodb.protocol import ErrorCode, ProntoError

from .._types import MISSING, ClaimInfo, KeyInfo, TxnResult
from ._base import ClientBase

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any

_PAGE = 10_000  # the most keys the broker returns in one page of keys or scan


class KeyOperations(ClientBase):
    """Reading and writing keys (a part of the client: see ``AsyncClient``)."""

    async def get(self, key: str, *, cursor: str | None = None) -> Any | None:
        """The value at ``key``, or None when the key does not exist."""
        return await self._call("get", self._args(cursor, key=key))

    async def exists(self, key: str, *, cursor: str | None = None) -> bool:
        """Whether ``key`` exists (its value is not sent)."""
        found: bool = await self._call("exists", self._args(cursor, key=key))
        return found

    async def mget(self, keys: Sequence[str], *, cursor: str | None = None) -> list[Any | None]:
        """The values of ``keys``, in their order; None for each one that does not exist."""
        values: list[Any | None] = await self._call("mget", self._args(cursor, keys=list(keys)))
        return values

    async def mset(
        self,
        items: Mapping[str, Any],
        *,
        fence: tuple[str, int] | None = None,
        cursor: str | None = None,
    ) -> int:
        """Store every value of ``items`` at its key, all at one revision, or none of them if
        one is refused (a bad key or value); that revision. At most 128 keys (a transaction's
        limit). ``fence`` as for :meth:`set`."""
        args = _fenced(self._args(cursor, items=dict(items)), fence)
        revision: int = await self._call("mset", args)
        return revision

    async def get_info(self, key: str, *, cursor: str | None = None) -> KeyInfo | None:
        """The value at ``key`` with its revisions, writer and time, or None when it is missing."""
        meta = await self._call("get", self._args(cursor, key=key, meta=True))
        if meta is None:
            return None
        return KeyInfo(
            key=key,
            value=meta["value"],
            create_rev=meta["create_rev"],
            mod_rev=meta["mod_rev"],
            version=meta["version"],
            writer=meta["writer"],
            time=meta["time"],
            size=meta["size"],
            expires=meta.get("expires"),
            deliveries=meta.get("deliveries", 0),
            claim=_claim_info(key, meta.get("claim")),
            session=meta.get("session"),
            priority=meta.get("priority", 100),
            ready_at=meta.get("ready_at"),
            after=meta.get("after", []),
        )

    async def set(
        self,
        key: str,
        value: Any,
        *,
        if_absent: bool = False,
        if_rev: int | None = None,
        if_value: Any = MISSING,
        ttl: float | None = None,
        session: int | None = None,
        fence: tuple[str, int] | None = None,
        priority: int | None = None,
        delay: float | None = None,
        at: float | None = None,
        after: Sequence[str] | None = None,
        cursor: str | None = None,
    ) -> int:
        """Store ``value`` at ``key`` and return the key's new modify revision.

        With ``if_absent`` only if the key does not exist; with ``if_rev`` only if its modify
        revision is that (0: absent); with ``if_value`` only if it holds that value
        (compare-and-set). A condition that does not hold raises ``compare_failed``, whose
        ``details`` give the key's current ``mod_rev``. With ``ttl`` the key expires that many
        seconds from now; without it, after its cache's TTL if it is under a cache prefix. With
        ``session`` (an id from :meth:`session_grant`) the key is attached to that session
        instead: it is deleted when the session ends. With ``fence=(name, token)`` only while
        lock (semaphore, election) ``name`` is held with ``token``: a holder that lost it
        cannot write (``compare_failed``).

        Queue options make the key an item for :meth:`claim` with a ``priority`` (0 most
        urgent, default 100), claimable only ``delay`` seconds from now or from the time ``at``
        (seconds since the epoch), and only once the keys ``after`` names are gone (acked or
        deleted).
        """
        args = _fenced(self._args(cursor, key=key, value=value), fence)
        for name, option in (("priority", priority), ("delay", delay), ("at", at)):
            if option is not None:
                args[name] = option
        if after is not None:
            args["after"] = list(after)
        if ttl is not None:
            args["ttl"] = ttl
        if session is not None:
            args["session"] = session
        if if_absent:
            args["if_absent"] = True
        if if_rev is not None:
            args["if_rev"] = if_rev
        if if_value is not MISSING:
            args["if_value"] = if_value
        revision: int = await self._call("set", args)
        return revision

    async def delete(
        self,
        key: str,
        *,
        if_rev: int | None = None,
        if_value: Any = MISSING,
        fence: tuple[str, int] | None = None,
        cursor: str | None = None,
    ) -> bool:
        """Delete ``key``; return whether it existed. Conditions as for :meth:`set`."""
        args = _fenced(self._args(cursor, key=key), fence)
        if if_rev is not None:
            args["if_rev"] = if_rev
        if if_value is not MISSING:
            args["if_value"] = if_value
        existed: bool = await self._call("del", args)
        return existed

    async def expire(self, key: str, seconds: float, *, cursor: str | None = None) -> bool:
        """Make ``key`` expire ``seconds`` from now (0 or less: now); whether it existed."""
        existed: bool = await self._call("expire", self._args(cursor, key=key, seconds=seconds))
        return existed

    async def persist(self, key: str, *, cursor: str | None = None) -> bool:
        """Remove ``key``'s TTL; whether it had one."""
        had: bool = await self._call("persist", self._args(cursor, key=key))
        return had

    async def ttl(self, key: str, *, cursor: str | None = None) -> float | None:
        """Seconds until ``key`` expires, or None if it has no TTL; ``not_found`` if it does not
        exist."""
        answer = await self._call("ttl", self._args(cursor, key=key))
        if not answer["exists"]:
            raise ProntoError(ErrorCode.NOT_FOUND, f"There is no key {key!r} to have a TTL.")
        remaining: float | None = answer["ttl"]
        return remaining

    async def create_cache(self, prefix: str, seconds: float, *, cursor: str | None = None) -> None:
        """Give every key set under ``prefix`` from now on a TTL of ``seconds`` (unless the set
        names its own)."""
        await self._call("create_cache", self._args(cursor, prefix=prefix, seconds=seconds))

    async def drop_cache(self, prefix: str, *, cursor: str | None = None) -> bool:
        """Stop ``prefix`` being a cache (its keys keep their deadlines); whether it was one."""
        was: bool = await self._call("drop_cache", self._args(cursor, prefix=prefix))
        return was

    async def caches(self, *, cursor: str | None = None) -> dict[str, float]:
        """Every cache prefix of the database with its TTL in seconds."""
        found: dict[str, float] = await self._call("caches", self._args(cursor))
        return found

    async def incr(
        self,
        key: str,
        by: int = 1,
        *,
        fence: tuple[str, int] | None = None,
        cursor: str | None = None,
    ) -> int:
        """Add ``by`` to the integer at ``key`` (missing: 0) and return the result, atomically."""
        total: int = await self._call("incr", _fenced(self._args(cursor, key=key, by=by), fence))
        return total

    async def decr(
        self,
        key: str,
        by: int = 1,
        *,
        fence: tuple[str, int] | None = None,
        cursor: str | None = None,
    ) -> int:
        """Subtract ``by`` from the integer at ``key`` (missing: 0) and return the result."""
        total: int = await self._call("decr", _fenced(self._args(cursor, key=key, by=by), fence))
        return total

    async def keys(
        self, prefix: str = "", *, limit: int | None = None, cursor: str | None = None
    ) -> list[str]:
        """Keys equal to or below ``prefix`` (segment-aware; "" for all), sorted, at most
        ``limit`` (None: all, fetched page by page)."""
        return await self._listing("keys", "keys", prefix, limit, cursor)

    async def scan(
        self, prefix: str = "", *, limit: int | None = None, cursor: str | None = None
    ) -> list[tuple[str, Any]]:
        """``(key, value)`` pairs for the keys :meth:`keys` would list."""
        items = await self._listing("scan", "items", prefix, limit, cursor)
        return [(key, value) for key, value in items]

    async def count(self, prefix: str = "", *, cursor: str | None = None) -> int:
        """How many keys are equal to or below ``prefix``."""
        total: int = await self._call("count", self._args(cursor, prefix=prefix))
        return total

    async def txn(
        self,
        compares: Sequence[Mapping[str, Any]],
        ops: Sequence[Mapping[str, Any]],
        *,
        fence: tuple[str, int] | None = None,
        cursor: str | None = None,
    ) -> TxnResult:
        """If every compare holds, apply every operation at one new revision; else none.

        A compare is ``{"key", "target"?, "op"?, "value"}`` (target ``value``, ``mod_rev``,
        ``create_rev``, ``version`` or ``exists``; op ``==``, ``!=``, ``<``, ``<=``, ``>``,
        ``>=``); an operation ``{"op": "get"|"set"|"del"|"incr", "key", "value"?, "by"?}``. A
        failed compare is not an error: see :class:`TxnResult`; a ``fence`` (as for
        :meth:`set`) that does not hold is (``compare_failed``).
        """
        args = self._args(
            cursor, compares=[dict(item) for item in compares], ops=[dict(item) for item in ops]
        )
        _fenced(args, fence)
        result = await self._call("txn", args)
        return TxnResult(
            succeeded=result["succeeded"],
            revision=result["revision"],
            results=list(result.get("results") or []),
            failed=list(result.get("failed") or []),
        )

    async def _listing(
        self, op: str, field: str, prefix: str, limit: int | None, cursor: str | None
    ) -> list[Any]:
        """Every entry of a paged listing, asking again ``after`` the last key while there is
        ``more``, up to ``limit``."""
        if limit is not None and limit < 0:
            raise ProntoError(ErrorCode.BAD_REQUEST, "The limit must be 0 or more.")
        found: list[Any] = []
        args = self._args(cursor, prefix=prefix)
        while limit is None or len(found) < limit:
            if limit is not None:
                args["limit"] = min(limit - len(found), _PAGE)
            page = await self._call(op, dict(args))
            entries = page[field]
            found.extend(entries)
            if not page["more"] or not entries:
                break
            last = entries[-1]
            args["after"] = last if op == "keys" else last[0]
        return found


def _fenced(args: dict[str, Any], fence: tuple[str, int] | None) -> dict[str, Any]:
    """``args`` with the condition "``fence``'s recipe is held with its token", if given."""
    if fence is not None:
        name, token = fence
        args["fence"] = {"name": name, "token": token}
    return args


def _claim_info(key: str, claim: Any) -> ClaimInfo | None:
    if claim is None:
        return None
    return ClaimInfo(key, claim["holder"], claim["token"], claim["lease"], claim.get("bound"))
