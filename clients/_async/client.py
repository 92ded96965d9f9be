"""A ProntoDB client: one connection to a broker, shared by any number of concurrent callers.

Calls made at once are pipelined on the connection, up to the broker's ``max_in_flight``. There is
no background reader: a caller waiting for its answer reads for everyone (see ``_wait``). So this
module needs nothing but its backend's sockets, locks and events, and scripts/unasync.py turns it
into the sync client (threads and blocking sockets instead of tasks and anyio) by substitution.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType

from prontodb.protocol import (
    NEED_DATA,
    PROTOCOL_VERSION,
    Connection,
    ConnectionClosed,
    ErrorCode,
    Goodbye,
    Hello,
    LocalProtocolError,
    ProntoError,
    RemoteProtocolError,
    Request,
    Response,
    Role,
    Welcome,
)

from .. import _anyio_backend as backend
from .._locations import default_url
from .._types import MISSING, BrokerUnavailable, Claimed, ClaimInfo, KeyInfo, TxnResult
from .._urls import Address, parse_url, tls_context
from .watch import Watch

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any

# Bytes asked of the socket per read: below malloc's mmap threshold, or each read pays for an mmap.
_CHUNK = 64 * 1024
_PAGE = 10_000  # the most keys the broker returns in one page of keys or scan

_LOST = (
    "The connection to the broker was lost; the request may or may not have been applied. "
    "Connect again, and re-read before retrying a write."
)


class _Waiter:
    """One call in progress: its slot, its request id, its response, the event it sleeps on."""

    __slots__ = ("blocking", "event", "has_slot", "queued", "request_id", "response")

    def __init__(self, blocking: bool = False) -> None:
        self.blocking = blocking  # a claim that waits: its answer may take as long as the wait
        self.event: backend.Event | None = None
        self.has_slot = False  # counts towards max_in_flight
        self.queued = False  # in the queue for a slot
        self.request_id = 0  # 0 until its Request is sent
        self.response: Response | None = None


class AsyncClient:
    """A connection to a ProntoDB broker; its methods are the broker's operations.

    Open one with :meth:`connect` and close it with ``async with`` or :meth:`aclose`::

        async with await AsyncClient.connect("unix:///run/prontodb.sock") as client:
            await client.set("project.status", "ready")

    Any number of callers may use one client at once: their requests are pipelined on the one
    connection and each gets its own answer. A call cancelled while it waits leaves the
    connection usable; its answer is dropped when it arrives (the operation may have been applied).
    A claim cancelled before its caller has the item tells the broker so (``cancel``): a waiting
    claim stops waiting, and an item already claimed for it goes back to its queue.

    Errors are :class:`~prontodb.protocol.ProntoError` with the broker's code (``compare_failed``,
    ``wrong_type``, ...). When the connection ends, the calls waiting on it and every later call
    raise ``unavailable`` (or the code of the broker's Goodbye).

    Attributes (set by :meth:`connect`, not to be changed): ``url``, ``user``, ``cursor`` (the
    database operations act on unless told otherwise), ``session`` (the broker's number for this
    connection) and ``server`` (the broker's name and version).
    """

    def __init__(
        self,
        stream: backend.Stream,
        conn: Connection,
        welcome: Welcome,
        *,
        url: str,
        user: str,
        cursor: str,
    ) -> None:
        """Private: use :meth:`connect`."""
        self.url = url
        self.user = user
        self.cursor = cursor
        self.session = welcome.session
        self.server = welcome.server
        self._stream = stream
        self._conn = conn
        advertised = welcome.limits.get("max_in_flight", conn.limits.max_in_flight)
        # The Connection, built before the Welcome, enforces its default bound too.
        self._max_in_flight = max(1, min(advertised, conn.limits.max_in_flight))
        self._send_lock = backend.Lock()  # one frame on the wire at a time
        self._mutex = backend.Mutex()
        # Guarded by _mutex: the Connection and all of the following.
        self._next_id = 1
        self._slots_taken = 0  # requests sent or about to be, and not yet answered
        self._slot_queue: deque[_Waiter] = deque()  # callers waiting for a slot, first come first
        self._waiters: dict[int, _Waiter] = {}  # request id -> the caller awaiting its answer
        self._abandoned: set[int] = set()  # ids sent by callers who gave up; answers are dropped
        self._abandoned_waits: set[int] = set()  # the same, for claims that wait
        self._parked: dict[_Waiter, None] = {}  # callers asleep on their event, oldest first
        self._unanswered = 0  # requests sent and not answered, abandoned ones included
        self._reader: _Waiter | None = None  # the caller reading for everyone
        self._error: ProntoError | None = None  # why the connection is unusable
        self._closed = False
        # How connect() was called, for the connections of watches: token, timeout, name.
        self._again: tuple[str | None, float | None, str, str | None] = (
            None,
            10.0,
            "prontodb-python",
            None,
        )

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        *,
        user: str | None = None,
        token: str | None = None,
        cursor: str = "default",
        timeout: float | None = 10.0,  # noqa: ASYNC109
        name: str = "prontodb-python",
        ca_file: str | None = None,
    ) -> AsyncClient:
        """Connect to the broker at ``url`` and greet it.

        ``url`` is ``unix:///path/to/socket``, ``tcp://host:port`` or ``tcps://host:port`` (TLS)
        (None: ``$PRONTODB_URL``, else the default socket). ``user`` defaults to
        ``$PRONTODB_USER``, else the login name; ``token`` is the user's secret, if the broker
        wants one (None: ``$PRONTODB_TOKEN``). ``cursor`` is the database the client's
        operations act on by default. ``timeout`` bounds the connection and the greeting in
        seconds (None: wait as long as it takes). ``name`` tells the broker which program this
        is. ``ca_file`` (None: ``$PRONTODB_CA_FILE``, else the system's CAs) is what a
        ``tcps://`` broker's certificate is checked against.

        Raises :class:`BrokerUnavailable` when nothing answers at ``url``, and ProntoError when
        the broker refuses the greeting (``unauthenticated``, ``protocol``) or hangs up.
        """
        if url is None:
            url = default_url()
        address = parse_url(url)
        if user is None:
            user = os.environ.get("PRONTODB_USER") or _login_name()
        if token is None:
            token = os.environ.get("PRONTODB_TOKEN") or None
        tls = None
        if address.scheme == "tcps":
            tls = tls_context(ca_file or os.environ.get("PRONTODB_CA_FILE") or None)
        stream = await _open(address, url, timeout, tls)
        conn = Connection(Role.CLIENT)
        try:
            try:
                with stream.deadline(timeout):
                    welcome = await _handshake(stream, conn, Hello(name, user, token), url)
            except TimeoutError:
                raise ProntoError(
                    ErrorCode.UNAVAILABLE,
                    f"The broker at {url} accepted the connection but did not answer within "
                    f"{timeout:g} s; it may be overloaded or stuck. Retry, or check its log.",
                ) from None
            except OSError as exc:
                # Reset before the Welcome: a broker that closed its listener (it is stopping)
                # with us still in the listen queue. For a caller, as good as nobody there.
                raise BrokerUnavailable(url, f"reset before a greeting: {exc}") from None
        except BaseException:
            await stream.aclose()
            raise
        client = cls(stream, conn, welcome, url=url, user=user, cursor=cursor)
        client._again = (token, timeout, name, ca_file)
        return client

    async def aclose(self) -> None:
        """Say Goodbye and close the connection; closing twice does nothing.

        Calls still waiting, and any later call, raise ProntoError ``unavailable``.
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._fail(ProntoError(ErrorCode.UNAVAILABLE, "This client is closed; connect again."))
            try:
                goodbye = self._conn.send(Goodbye(None, "The client is closing."))
            except LocalProtocolError:
                goodbye = b""
        try:
            if goodbye:
                async with self._send_lock:
                    await self._stream.send_all(goodbye)
        except OSError:
            pass  # the broker is gone already: nothing to say goodbye to
        finally:
            await self._stream.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def statistics(self) -> dict[str, int]:
        """Counters for debugging: requests ``in_flight`` (sent, unanswered, ``abandoned`` ones
        included), callers ``queued`` for a slot, callers ``waiting`` for an answer, and
        ``max_in_flight``."""
        with self._mutex:
            return {
                "in_flight": self._conn.statistics().in_flight,
                "abandoned": len(self._abandoned) + len(self._abandoned_waits),
                "queued": len(self._slot_queue),
                "waiting": len(self._waiters),
                "max_in_flight": self._max_in_flight,
            }

    # -- operations ------------------------------------------------------------------------

    async def get(self, key: str, *, cursor: str | None = None) -> Any | None:
        """The value at ``key``, or None when the key does not exist."""
        return await self._call("get", self._args(cursor, key=key))

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
        cursor: str | None = None,
    ) -> int:
        """Store ``value`` at ``key`` and return the key's new modify revision.

        With ``if_absent`` only if the key does not exist; with ``if_rev`` only if its modify
        revision is that (0: absent); with ``if_value`` only if it holds that value
        (compare-and-set). A condition that does not hold raises ``compare_failed``, whose
        ``details`` give the key's current ``mod_rev``. With ``ttl`` the key expires that many
        seconds from now; without it, after its cache's TTL if it is under a cache prefix.
        """
        args = self._args(cursor, key=key, value=value)
        if ttl is not None:
            args["ttl"] = ttl
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
        cursor: str | None = None,
    ) -> bool:
        """Delete ``key``; return whether it existed. Conditions as for :meth:`set`."""
        args = self._args(cursor, key=key)
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
        self, key: str, token: int, *, delay: float | None = None, cursor: str | None = None
    ) -> None:
        """Give the claimed ``key`` back, claimable at once or after ``delay`` seconds."""
        args = self._args(cursor, key=key, token=token)
        if delay:
            args["delay"] = delay
        await self._call("release", args)

    async def extend(
        self, key: str, token: int, lease: float, *, cursor: str | None = None
    ) -> float:
        """Hold the claimed ``key`` ``lease`` seconds from now; returns the new deadline."""
        deadline: float = await self._call(
            "extend", self._args(cursor, key=key, token=token, lease=lease)
        )
        return deadline

    async def claims(self, prefix: str = "", *, cursor: str | None = None) -> list[ClaimInfo]:
        """The claims held at and below ``prefix``."""
        held = await self._call("claims", self._args(cursor, prefix=prefix))
        return [ClaimInfo(c["key"], c["holder"], c["token"], c["lease"], c["bound"]) for c in held]

    async def incr(self, key: str, by: int = 1, *, cursor: str | None = None) -> int:
        """Add ``by`` to the integer at ``key`` (missing: 0) and return the result, atomically."""
        total: int = await self._call("incr", self._args(cursor, key=key, by=by))
        return total

    async def decr(self, key: str, by: int = 1, *, cursor: str | None = None) -> int:
        """Subtract ``by`` from the integer at ``key`` (missing: 0) and return the result."""
        total: int = await self._call("decr", self._args(cursor, key=key, by=by))
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
        cursor: str | None = None,
    ) -> TxnResult:
        """If every compare holds, apply every operation at one new revision; else none.

        A compare is ``{"key", "target"?, "op"?, "value"}`` (target ``value``, ``mod_rev``,
        ``create_rev``, ``version`` or ``exists``; op ``==``, ``!=``, ``<``, ``<=``, ``>``,
        ``>=``); an operation ``{"op": "get"|"set"|"del"|"incr", "key", "value"?, "by"?}``. A
        failed compare is not an error: see :class:`TxnResult`.
        """
        args = self._args(
            cursor, compares=[dict(item) for item in compares], ops=[dict(item) for item in ops]
        )
        result = await self._call("txn", args)
        return TxnResult(
            succeeded=result["succeeded"],
            revision=result["revision"],
            results=list(result.get("results") or []),
            failed=list(result.get("failed") or []),
        )

    def watch(
        self,
        prefix: str = "",
        *,
        from_rev: int | None = None,
        cursor: str | None = None,
        reconnect: float = 30.0,
    ) -> Watch:
        """Every change under ``prefix`` (segment-aware; "" for all) from revision ``from_rev``
        (None: from now), as :class:`WatchEvent`::

            async with client.watch("jobs") as watch:
                async for event in watch:
                    print(event.rev, event.type, event.key, event.value)

        The watch runs on a connection of its own, opened with this client's URL, user and
        token. If that connection is lost, it connects again (for up to ``reconnect`` seconds)
        and resumes where it was, so no event is lost or repeated across a broker restart.
        """
        return Watch(
            self._connect_again,
            prefix,
            from_rev=from_rev,
            cursor=self.cursor if cursor is None else cursor,
            reconnect=reconnect,
        )

    async def _connect_again(self) -> AsyncClient:
        token, timeout, name, ca_file = self._again
        return await AsyncClient.connect(
            self.url,
            user=self.user,
            token=token,
            cursor=self.cursor,
            timeout=timeout,
            name=name,
            ca_file=ca_file,
        )

    async def cursor_set(self, name: str, path: str, *, mine: bool = False) -> dict[str, Any]:
        """Bind cursor ``name`` to the database directory ``path`` (absolute, on the broker's
        machine; made by the first write). ``mine``: for this client's user only, shadowing a
        global cursor of that name. The answer describes the binding (as :meth:`cursor_show`)."""
        args = {"name": name, "path": path, "mine": mine}
        result: dict[str, Any] = await self._call("cursor_set", args)
        return result

    async def cursor_delete(
        self, name: str, *, mine: bool = False, purge: bool = False
    ) -> dict[str, Any]:
        """Forget cursor ``name``'s binding (the data stays); ``purge`` deletes the database's
        files too. The answer says what was ``forgotten`` and ``purged``, and the ``path``."""
        args = {"name": name, "mine": mine, "purge": purge}
        result: dict[str, Any] = await self._call("cursor_delete", args)
        return result

    async def cursors(self) -> list[dict[str, Any]]:
        """Every cursor this user sees: name, path, owner (None: global), shadows, defined."""
        result: list[dict[str, Any]] = await self._call("cursor_list", {})
        return result

    async def cursor_show(self, name: str) -> dict[str, Any]:
        """What cursor ``name`` means for this user: its definition or the default directory."""
        result: dict[str, Any] = await self._call("cursor_show", {"name": name})
        return result

    async def backup(self, output: str, *, cursor: str | None = None) -> dict[str, Any]:
        """Write a backup of every database (or only ``cursor``'s) to a new file: ``output``
        itself if it ends in ``.db``, ``output.db``, or a timestamped file inside ``output`` if it
        is a directory (an absolute path on the broker's machine). The answer has the ``path``
        written, its ``bytes`` and the ``databases`` it holds (name, owner, revision, keys)."""
        args: dict[str, Any] = {"output": output}
        if cursor is not None:
            args["cursor"] = cursor
        result: dict[str, Any] = await self._call("backup", args)
        return result

    async def restore(self, path: str, *, cursor: str | None = None) -> dict[str, Any]:
        """Put back every database the backup file ``path`` holds (or only ``cursor``'s, into
        that cursor), each atomically; a damaged or foreign file changes nothing."""
        args: dict[str, Any] = {"path": path}
        if cursor is not None:
            args["cursor"] = cursor
        result: dict[str, Any] = await self._call("backup_restore", args)
        return result

    async def backup_list(self, path: str) -> list[dict[str, Any]]:
        """What the backup file ``path`` holds, or each backup file directly inside a
        directory: path, created, bytes and databases, or the error that makes it unusable."""
        result: list[dict[str, Any]] = await self._call("backup_list", {"path": path})
        return result

    async def user_add(self, name: str) -> str:
        """Make user ``name``; its token, which the broker shows this once (it keeps a hash)."""
        made: dict[str, Any] = await self._call("user_add", {"name": name})
        return str(made["token"])

    async def user_token(self, name: str) -> str:
        """Give user ``name`` a new token (the old one stops working); the new token."""
        made: dict[str, Any] = await self._call("user_token", {"name": name})
        return str(made["token"])

    async def user_remove(self, name: str) -> None:
        """Remove user ``name`` and its grants."""
        await self._call("user_remove", {"name": name})

    async def users(self) -> list[dict[str, Any]]:
        """Every user: name, created, by (who made it), grants (how many)."""
        result: list[dict[str, Any]] = await self._call("user_list", {})
        return result

    async def grant(
        self, user: str, level: str, *, cursor: str | None = None, prefix: str = ""
    ) -> dict[str, Any]:
        """Give ``user`` ``level`` (read, write or admin) on ``cursor`` (None: every cursor) at
        and below ``prefix`` ("": every key)."""
        args = {"user": user, "level": level, "cursor": cursor, "prefix": prefix}
        result: dict[str, Any] = await self._call("grant", args)
        return result

    async def revoke(
        self, user: str, level: str, *, cursor: str | None = None, prefix: str = ""
    ) -> bool:
        """Take back the grant made with the same arguments; whether there was one."""
        args = {"user": user, "level": level, "cursor": cursor, "prefix": prefix}
        return bool(await self._call("revoke", args))

    async def grants(self, user: str | None = None) -> list[dict[str, Any]]:
        """The grants of ``user`` (None: of everyone): user, level, cursor, prefix."""
        result: list[dict[str, Any]] = await self._call("grants", {"user": user})
        return result

    async def ping(self) -> None:
        """Ask the broker to answer; raises if it cannot."""
        await self._call("ping", self._args(None))

    async def status(self) -> dict[str, Any]:
        """What the broker says about itself: pid, version, uptime, data_dir, databases, ..."""
        status: dict[str, Any] = await self._call("status", self._args(None))
        return status

    async def stop(self) -> None:
        """Ask the broker to shut down cleanly (it answers first); this connection then ends."""
        await self._call("stop", self._args(None))

    async def call(self, op: str, args: Mapping[str, Any]) -> Any:
        """Send the raw request ``op`` with ``args`` and return its result (no cursor added)."""
        return await self._call(op, dict(args))

    def _args(self, cursor: str | None, **args: Any) -> dict[str, Any]:
        args["cursor"] = self.cursor if cursor is None else cursor
        return args

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

    # -- requests and responses ------------------------------------------------------------
    #
    # Every call takes a slot (at most max_in_flight requests unanswered), sends its Request,
    # then waits for its Response. Waiting is where the leader hand-off lives: at most one caller
    # reads the socket at a time, for everyone. It feeds each chunk to the Connection, files every
    # Response under its id and wakes that caller, and stops once its own Response (or slot) is
    # there; leaving, it wakes a sleeping caller to take over reading. Callers sleep on their own
    # event. All of that state is touched only under _mutex, in sections that never await.
    #
    # A read cannot be interrupted (not in the sync client), so a caller reads only while some
    # sent request is unanswered: its Response is bound to come and end the read. A caller
    # waiting for a slot reads too, when it can (abandoned requests may hold every slot).

    async def _call(self, op: str, args: dict[str, Any]) -> Any:
        waiter = _Waiter(blocking=op == "claim" and bool(args.get("wait")))
        answered = False
        try:
            with self._mutex:  # the common case: a free slot and nothing abandoned to read first
                ready = self._error is None and not self._abandoned and self._take_slot(waiter)
            if not ready:
                await self._wait(waiter, lambda: self._take_slot(waiter))
            # Answers to abandoned (cancelled) calls are read before anything more is sent: if
            # nobody read them, a large one could fill the socket, the broker would stop
            # reading, and a large request would then block this send for good. A waiting
            # claim's answer is not waited for: it may be the whole of its wait away. (Its item,
            # if one comes, is dropped here and held until its lease ends; bind=True gives it
            # back when the connection closes.)
            if not ready:
                await self._wait(waiter, lambda: not self._abandoned)
            await self._send(waiter, op, args)
            await self._wait(waiter, lambda: waiter.response is not None)
            answered = True  # nothing awaits from here on: the caller gets the answer
        finally:
            with self._mutex:
                self._settle(waiter)
            if op == "claim" and waiter.request_id and not answered:
                await self._cancel_claim(waiter.request_id)
        assert waiter.response is not None
        return waiter.response.raise_for_error()

    async def _cancel_claim(self, request_id: int) -> None:
        """The caller of claim ``request_id`` gave up before it had the answer: tell the broker,
        so that a waiting claim stops waiting and an item claimed for it is given back rather
        than held until its lease ends. Best effort: it never waits for a slot, and its own
        answer is dropped."""
        waiter = _Waiter()
        try:
            with self._mutex:
                ready = self._error is None and self._take_slot(waiter)
            if ready:
                with backend.shielded():
                    await self._send(waiter, "cancel", {"id": request_id})
        except ProntoError:
            pass  # the connection failed meanwhile: what the caller was stopped by stands
        finally:
            with self._mutex:
                self._settle(waiter)

    async def _send(self, waiter: _Waiter, op: str, args: dict[str, Any]) -> None:
        async with self._send_lock:
            with self._mutex:
                if self._error is not None:
                    raise _copy(self._error)
                request_id = self._next_id
                try:
                    data = self._conn.send(Request(request_id, op, args))
                except LocalProtocolError as exc:
                    raise _refused(exc) from None
                self._next_id += 1
                self._unanswered += 1
                waiter.request_id = request_id
                self._waiters[request_id] = waiter
            try:
                await self._stream.send_all(data)
            except OSError:
                # The broker is gone or going. Its Goodbye may still be there to read, and
                # reading is how this call learns of the end (as every other waiting call does).
                pass
            except BaseException:
                # Interrupted inside a frame (sync: KeyboardInterrupt): the stream is corrupt for
                # every caller. Closing it ends the read of whoever is reading.
                with self._mutex:
                    self._fail(ProntoError(ErrorCode.UNAVAILABLE, _LOST))
                await self._stream.aclose()
                raise

    async def _wait(self, waiter: _Waiter, ready: Callable[[], bool]) -> None:
        """Return once ``ready()`` (checked under the mutex), reading for everyone meanwhile if
        nobody else is; raise once the connection has failed."""
        while True:
            with self._mutex:
                if ready():
                    if self._reader is None:
                        self._wake_reader()  # in case we were the one woken to read
                    return
                if self._error is not None:
                    raise _copy(self._error)
                lead = self._reader is None and self._unanswered > 0
                if lead:
                    self._reader = waiter
                else:
                    event = waiter.event = backend.Event()
                    self._parked[waiter] = None
            if lead:
                try:
                    await self._read_until(ready)
                finally:
                    with self._mutex:
                        self._reader = None
                        self._wake_reader()
            else:
                try:
                    await event.wait()
                finally:
                    with self._mutex:
                        self._parked.pop(waiter, None)

    async def _read_until(self, ready: Callable[[], bool]) -> None:
        while True:
            with self._mutex:
                if self._error is not None or ready() or not self._unanswered:
                    return
            try:
                data = await self._stream.receive_some(_CHUNK)
            except OSError:
                data = b""
            # Nothing may be awaited between the read and the feed: a cancellation here would
            # lose the bytes and desynchronise the stream.
            with self._mutex:
                self._receive(data)

    def _receive(self, data: bytes) -> None:
        """Feed a chunk (b"": the stream ended) and dispatch every complete message in it."""
        if self._error is not None:
            return
        if not data:
            self._fail(ProntoError(ErrorCode.UNAVAILABLE, _LOST))
            return
        try:
            self._conn.receive_data(data)
            while True:
                event = self._conn.next_event()
                if event is NEED_DATA:
                    return
                if isinstance(event, Response):
                    self._dispatch(event)
                elif isinstance(event, Goodbye):
                    self._fail(ProntoError(event.code or ErrorCode.UNAVAILABLE, event.message))
                    return
                elif isinstance(event, ConnectionClosed):
                    self._fail(ProntoError(ErrorCode.UNAVAILABLE, _LOST))
                    return
                # A Push belongs to a stream, and this client opens none: ignore it.
        except RemoteProtocolError as exc:
            self._fail(
                ProntoError(
                    exc.code,
                    f"The broker sent bytes that break the protocol ({exc.message}); the "
                    "connection was closed. Connect again, and report it if it repeats.",
                )
            )

    def _dispatch(self, response: Response) -> None:
        self._unanswered -= 1
        self._free_slot()
        waiter = self._waiters.pop(response.id, None)
        if waiter is None:
            self._abandoned_waits.discard(response.id)
            self._abandoned.discard(response.id)
            if not self._abandoned:  # callers waiting to send may go now
                for parked in self._parked:
                    _wake(parked)
            return
        waiter.response = response
        _wake(waiter)

    def _take_slot(self, waiter: _Waiter) -> bool:
        """Whether ``waiter`` holds a slot, taking a free one if nobody queues before it."""
        if waiter.has_slot:
            return True
        if not self._slot_queue and self._slots_taken < self._max_in_flight:
            self._slots_taken += 1
            waiter.has_slot = True
            return True
        if not waiter.queued:
            waiter.queued = True
            self._slot_queue.append(waiter)
        return False

    def _free_slot(self) -> None:
        """A request was answered, or a slot given back unused: hand the slot on to the first
        caller in the queue (not the reader if another can take it: the reader is busy until its
        read ends, and the slot may be all another caller needs)."""
        queue = self._slot_queue
        if not queue:
            self._slots_taken -= 1
            return
        index = 1 if queue[0] is self._reader and len(queue) > 1 else 0
        waiter = queue[index]
        del queue[index]
        waiter.queued = False
        waiter.has_slot = True
        _wake(waiter)

    def _settle(self, waiter: _Waiter) -> None:
        """A call is over, answered or not (cancelled, failed): release what it holds."""
        self._parked.pop(waiter, None)
        if waiter.queued:
            waiter.queued = False
            self._slot_queue.remove(waiter)
        if not waiter.request_id:
            if waiter.has_slot:
                self._free_slot()
        elif waiter.response is None:
            # Sent but unanswered. On a live connection the answer still comes and must be
            # dropped then; it also frees the slot then, since the broker still counts it.
            del self._waiters[waiter.request_id]
            if self._error is None:
                abandoned = self._abandoned_waits if waiter.blocking else self._abandoned
                abandoned.add(waiter.request_id)
        if self._reader is None:
            self._wake_reader()

    def _wake_reader(self) -> None:
        """Nobody is reading: wake the longest-sleeping caller, which reads if it still needs to
        and there is something to read (or passes the turn on)."""
        if self._unanswered:
            for waiter in self._parked:
                _wake(waiter)
                return

    def _fail(self, error: ProntoError) -> None:
        """The connection is over: every waiting caller, and every later call, raises ``error``."""
        if self._error is None:
            self._error = error
        for waiter in self._parked:
            _wake(waiter)


def _tls_failure(exc: OSError) -> bool:
    """Whether ``exc`` is the TLS handshake's failure (a certificate, a protocol mismatch)."""
    import ssl  # imported already by whoever made a TLS context

    return isinstance(exc, ssl.SSLError)


def _claim_info(key: str, claim: Any) -> ClaimInfo | None:
    if claim is None:
        return None
    return ClaimInfo(key, claim["holder"], claim["token"], claim["lease"], claim.get("bound"))


def _wake(waiter: _Waiter) -> None:
    if waiter.event is not None:
        waiter.event.set()


def _copy(error: ProntoError) -> ProntoError:
    # Each caller raises its own instance: one exception raised in many places collects a
    # tangle of tracebacks.
    return ProntoError(error.code, error.message, error.details)


def _refused(exc: LocalProtocolError) -> ProntoError:
    """What a caller hears when the protocol refuses to encode its request."""
    if exc.code is ErrorCode.TOO_LARGE:
        return ProntoError(
            ErrorCode.TOO_LARGE,
            f"The request is over the protocol's limits ({exc.message}); send less at once.",
        )
    return ProntoError(
        ErrorCode.BAD_REQUEST,
        f"The request cannot be sent ({exc.message}); values may be None, bools, numbers, "
        "str, bytes, and lists and dicts (with str keys) of those.",
    )


def _login_name() -> str:
    import getpass  # only when no user is given, to keep the import light

    return getpass.getuser()


async def _open(
    address: Address,
    url: str,
    timeout: float | None,  # noqa: ASYNC109
    tls: Any = None,
) -> backend.Stream:
    """Connect to ``address`` (with TLS if given a context); BrokerUnavailable when nothing
    answers there."""
    try:
        if address.scheme == "unix":
            return await backend.connect_unix(address.path, timeout)
        return await backend.connect_tcp(address.host, address.port, timeout, tls)
    except TimeoutError:
        raise BrokerUnavailable(url, f"no connection within {timeout:g} s") from None
    except FileNotFoundError:
        raise BrokerUnavailable(url, "no socket there") from None
    except ConnectionRefusedError:
        raise BrokerUnavailable(url, "connection refused") from None
    except PermissionError as exc:
        raise ProntoError(
            ErrorCode.UNAVAILABLE,
            f"Cannot connect to {url} ({exc.strerror}); check the permissions of the socket.",
        ) from None
    except OSError as exc:
        if tls is not None and _tls_failure(exc):
            raise ProntoError(
                ErrorCode.UNAVAILABLE,
                f"The TLS handshake with {url} failed ({exc}); check that the broker serves TLS "
                "there and that your CA file (PRONTODB_CA_FILE) signed its certificate.",
            ) from None
        raise BrokerUnavailable(url, exc.strerror or str(exc) or type(exc).__name__) from None


async def _handshake(stream: backend.Stream, conn: Connection, hello: Hello, url: str) -> Welcome:
    """Send ``hello`` and return the broker's Welcome; ProntoError if it says Goodbye instead."""
    try:
        data = conn.send(hello)
    except LocalProtocolError as exc:
        raise _refused(exc) from None
    await stream.send_all(data)
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            raise ProntoError(
                exc.code,
                f"The server at {url} does not speak the ProntoDB protocol ({exc.message}); "
                "check the URL.",
            ) from None
        if event is NEED_DATA:
            conn.receive_data(await stream.receive_some(_CHUNK))
        elif isinstance(event, Welcome):
            if event.version != PROTOCOL_VERSION:
                raise ProntoError(
                    ErrorCode.PROTOCOL,
                    f"The broker at {url} speaks protocol version {event.version}, this client "
                    f"{PROTOCOL_VERSION}; use a client of the broker's release.",
                )
            return event
        elif isinstance(event, Goodbye):
            raise ProntoError(event.code or ErrorCode.UNAVAILABLE, event.message)
        else:
            raise BrokerUnavailable(url, "it closed the connection before a greeting; stopping?")
