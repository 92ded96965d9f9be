"""One client connection: a reader that applies requests in order, and the dispatch of each by
the operation registry (_registry.py). Answers go through the connection's outbox (_outbox.py),
in request order, each once its changes are durable.

The reader decodes and applies each request at once (the engine never waits). The operations
that belong to the connection itself, a claim that blocks and a watch's stream, are the
session's parts (_session_claims.py, _session_watches.py); ending their waits when the catalog
changes is here.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import trio

from prontodb.protocol import (
    NEED_DATA,
    PROTOCOL_VERSION,
    Connection,
    ConnectionClosed,
    ErrorCode,
    Goodbye,
    Hello,
    ProntoError,
    RemoteProtocolError,
    Request,
    Response,
    Role,
    Welcome,
)

from ..storage import StorageError

# The modules that declare the broker's operations (each fills the registry as it loads); the
# connection's own are in the session's parts below.
from . import (  # noqa: F401
    _backups,
    _broker_ops,
    _cursors,
    _leases,
    _queue_ops,
    _quota_ops,
    _recipe_ops,
    _users,
)
from ._access import who_is
from ._context import Context
from ._database_ops import Call
from ._databases import EMPTY
from ._names import DEFAULT_NAME
from ._outbox import Answer, Outbox
from ._registry import REGISTRY, Layer, OpSpec, unknown
from ._session_claims import SessionClaims
from ._session_recipes import SessionRecipes
from ._session_watches import SessionWatches

logger = logging.getLogger("prontodb.server")

# Below malloc's mmap threshold: a bigger buffer costs a page-faulting mmap on every read.
RECEIVE_SIZE = 64 * 1024
UNKNOWN = "(unknown)"  # what requests for an operation the broker does not know count under


class Session(SessionClaims, SessionWatches, SessionRecipes):
    """The broker's side of one connection: its reading and the dispatch of each request; the
    connection's own operations come from :class:`SessionClaims` and :class:`SessionWatches`."""

    def __init__(
        self, ctx: Context, stream: trio.abc.Stream, number: int, authenticate: bool = False
    ) -> None:
        self.ctx = ctx
        self.stream = stream
        self.number = number
        self.user = ""
        self.authenticate = authenticate
        self.conn = Connection(Role.SERVER, ctx.config.limits)
        # One scope for the session's reading, which a stop cancels only while the reader waits
        # for bytes (``_awaiting_input``): a request is never cut off halfway, and no wait pays
        # for a scope of its own.
        self._receive_scope = trio.CancelScope()
        self._awaiting_input = False
        self._stopping = False
        self.outbox = Outbox(
            self.conn,
            stream,
            number,
            sent=self._remember_claim,
            lost=self._give_back,
            stats=ctx.stats,
        )
        self.transport = transport_of(stream)  # "unix", "tcp" or "tls": a label of the metrics
        self._read_at = 0.0  # perf_counter when the bytes being served were read
        self._socket_fd = _socket_fd(stream)  # the socket under TLS too, for pending_input
        self._claim_waits = {}
        self._recipe_waits = {}
        self._answered_claims = OrderedDict()
        self._watches = {}
        self._refused = {}
        self._farewell = Goodbye(ErrorCode.UNAVAILABLE, "The broker is stopping.")

    def stop_reading(self, farewell: Goodbye | None = None) -> None:
        """Take no more requests; answer the ones already read, then say Goodbye (``farewell``,
        else that the broker is stopping)."""
        if farewell is not None:
            self._farewell = farewell
        self._stopping = True
        if self._awaiting_input:
            self._receive_scope.cancel()

    def recheck_waits(self) -> None:
        """The catalog changed: end the waits (blocked claims, running watches) it no longer
        allows, at once. A revoke ends those this user's grants no longer cover (``denied``);
        a cursor bound elsewhere ends those waiting on the database it named before (a
        different database is not what the wait asked for)."""
        databases = self.ctx.databases
        for request_id, name, args, directory in self._waits_running():
            cursor = args.get("cursor", DEFAULT_NAME)
            try:
                if databases.locate(cursor, self.user) != directory:
                    raise _rebound(name, cursor)
                self._authorize_op(name, args)
            except ProntoError as err:
                self._end_wait(request_id, err)

    def end_waits(self, error: ProntoError) -> None:
        """End every wait of this connection with ``error`` (its user was removed, or given a
        new token: the right the waits started with is gone)."""
        for request_id, _op, _args, _directory in self._waits_running():
            self._end_wait(request_id, error)

    def _waits_running(self) -> list[tuple[int, str, dict[str, Any], Path]]:
        """(request id, op, args, database directory) of every blocked claim not yet served,
        and every watch."""
        running = [(i, "watch", args, where) for i, (_s, args, where) in self._watches.items()]
        running += [
            (i, "claim", args, db.directory)
            for i, (waiter, db, args) in self._claim_waits.items()
            if waiter.result is None
        ]
        running += [
            (i, "acquire", args, where) for i, (_s, args, where) in self._recipe_waits.items()
        ]
        return running

    def _end_wait(self, request_id: int, error: ProntoError) -> None:
        """End the wait of request ``request_id`` now; its answer is ``error`` (the first
        reason given, if several come at once)."""
        self._refused.setdefault(request_id, error)
        watch = self._watches.get(request_id)
        if watch is not None:
            watch[0].cancel()
        self._stop_claim_wait(request_id)
        self._stop_recipe_wait(request_id)

    async def run(self) -> None:
        pending_input = self.ctx.pending_input
        if self._socket_fd >= 0:
            pending_input.add(self._socket_fd)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.outbox.writer, nursery.cancel_scope)
                try:
                    async with trio.open_nursery() as waits:
                        self._waits = waits
                        await self._read_loop()
                        waits.cancel_scope.cancel()  # blocked claims end with the reading
                    if self._stopping:
                        await self._flush([Answer(self._farewell)])
                except* trio.BrokenResourceError:
                    pass  # the peer is gone (the waits nursery may wrap it in a group)
                finally:
                    self.outbox.reading_done()  # the writer ends once every answer is out
        finally:
            if self._socket_fd >= 0:
                pending_input.remove(self._socket_fd)
            # Items served to this connection that it never heard of (a batch cut short too).
            self.outbox.drop_unsent()
            # Claims bound to this connection go back to their queues now, and the sessions
            # bound to it end.
            self.ctx.databases.return_session(self.number, self.ctx.clock())
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    # -- reading -----------------------------------------------------------------------------

    async def _receive(self) -> bytes | bytearray | None:
        """The next bytes (b"" at EOF), or None once the broker stops reading. Runs inside
        ``_receive_scope``, which a stop cancels only while this waits for bytes."""
        fd = self.outbox.fd
        if fd < 0:
            return await self._receive_stream()
        waited = False
        # A plain socket is read directly: trio's receive_some passes through the event loop
        # once more after each read, even one that had to wait for its data.
        while not self._stopping:  # a stop that came while this waited ends it here
            try:
                data = os.read(fd, RECEIVE_SIZE)
            except BlockingIOError:
                self._awaiting_input = True
                try:
                    await trio.lowlevel.wait_readable(fd)
                finally:
                    self._awaiting_input = False
                waited = True
                continue
            except OSError:
                return b""  # reset by peer: the same as EOF for us
            if not waited:  # a client that never lets us wait must not starve the others
                await trio.lowlevel.cancel_shielded_checkpoint()
            # Read with no wait pending, so no stop cancelled the scope: these requests are
            # served, and the next call sees the stop.
            return data
        return None

    async def _receive_stream(self) -> bytes | bytearray | None:
        """:meth:`_receive` through the stream (TLS)."""
        if self._stopping:
            return None
        self._awaiting_input = True
        try:
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except trio.BrokenResourceError:
            data = b""  # reset by peer: the same as EOF for us
        finally:
            self._awaiting_input = False
        # A stop that came once the read was done (this task was woken, but had not run yet)
        # cancelled the scope all the same: serving these bytes in it could cut an answer off.
        return None if self._stopping else data

    async def _read_loop(self) -> None:
        with self._receive_scope:
            await self._read_requests()

    async def _read_requests(self) -> None:
        conn = self.conn
        while True:
            data = await self._receive()
            if data is None:
                return
            self._read_at = time.perf_counter()  # every request in these bytes is timed from it
            conn.receive_data(data)
            # Apply every request the bytes hold, then answer them together.
            outs: list[Answer] = []
            self.outbox.batch = outs  # a cancel in these bytes may undo an answer among them
            done = False
            while not done:
                try:
                    event = conn.next_event()
                except RemoteProtocolError as exc:  # the peer's fault: one line, rate-limited
                    self.ctx.quiet.info(
                        "protocol", "session %d: protocol error: %s", self.number, exc.message
                    )
                    outs.append(Answer(Goodbye.from_error(exc)))
                    done = True
                    break
                if event is NEED_DATA:
                    break
                if isinstance(event, Request):
                    # A reused id names this request from now on (a cancel of it means it).
                    self._answered_claims.pop(event.id, None)
                    out = await self._execute(event)
                    if out is not None:  # None: a blocked claim, answered by its own task
                        outs.append(out)
                elif isinstance(event, Hello):
                    outs.append(self._welcome(event))
                    done = isinstance(outs[-1].message, Goodbye)
                elif isinstance(event, ConnectionClosed | Goodbye):
                    done = True
            self.outbox.batch = []  # queued by the flush: a cancel finds them there now
            await self._flush(outs)
            if done:
                return

    async def _flush(self, answers: list[Answer]) -> None:
        await self.outbox.flush(answers, self.ctx.pending_input.waiting)

    def _welcome(self, hello: Hello) -> Answer:
        if hello.version != PROTOCOL_VERSION:
            return Answer(
                Goodbye(
                    ErrorCode.PROTOCOL,
                    f"This broker speaks protocol version {PROTOCOL_VERSION}, not "
                    f"{hello.version}; use a client of the same release.",
                )
            )
        if not hello.user:
            return Answer(
                Goodbye(ErrorCode.UNAUTHENTICATED, "Say who you are: Hello needs a user.")
            )
        if self.ctx.stopping():
            # Arrived as the broker began to stop (an idle exit's moment, or a stop's): no
            # Welcome, so the client knows before any request that nothing was done here.
            return Answer(self._farewell)
        user, refusal = who_is(self.ctx.catalog.users, hello, must_prove=self.authenticate)
        if refusal is not None:
            self.ctx.quiet.info(
                "login", "session %d: %.80r failed to authenticate", self.number, hello.user
            )
            return Answer(Goodbye(ErrorCode.UNAUTHENTICATED, refusal))
        refused = self._over_connections(user)
        if refused is not None:
            return Answer(refused)
        self.user = user
        limits = self.conn.limits.as_dict()
        return Answer(Welcome(self.ctx.server_name, self.number, limits, user=user))

    def _over_connections(self, user: str) -> Goodbye | None:
        """A Goodbye if ``user`` has its quota of connections open already (user_limits)."""
        limit = self.ctx.catalog.limits.get(user, {}).get("max_connections")
        if limit is None or sum(1 for s in self.ctx.sessions.live() if s.user == user) < limit:
            return None
        return Goodbye(
            ErrorCode.QUOTA_EXCEEDED,
            f"User {user!r} is at its quota max_connections={limit:g}; close another "
            "connection first, or ask an admin for a larger quota.",
        )

    def _over_rate(self) -> ProntoError | None:
        """The refusal of a request over the user's rate (user_limits), if it is."""
        limits = self.ctx.catalog.limits.get(self.user)
        rate = None if limits is None else limits.get("rate")
        if rate is None or self.ctx.rates.take(self.user, rate, self.ctx.clock()):
            return None
        return ProntoError(
            ErrorCode.QUOTA_EXCEEDED,
            f"User {self.user!r} is at its quota rate={rate:g} requests per second; slow down "
            "and retry, or ask an admin for a larger quota.",
            {"user": self.user, "limit": "rate", "value": rate},
        )

    async def _execute(self, request: Request) -> Answer | None:
        """Run ``request`` as the registry declares its operation; its answer, or None when a
        task of its own answers it (a blocked claim, a watch)."""
        spec = REGISTRY.get(request.op)
        counts = self.ctx.requests
        counted = UNKNOWN if spec is None else spec.name  # bounded: no client's own names
        counts[counted] = counts.get(counted, 0) + 1
        answer = await self._dispatch(spec, request)
        if answer is not None:  # counted and timed by the outbox when it goes
            answer.op = counted
            answer.began = self._read_at
        return answer

    async def _dispatch(self, spec: OpSpec | None, request: Request) -> Answer | None:
        """:meth:`_execute`'s work: the answer, or None when a task of its own answers."""
        try:
            if self.ctx.catalog.limits:
                over = self._over_rate()
                if over is not None:
                    raise over
            self._authorize(request)  # an unknown name is an admin's: denied before unknown_op
            if spec is None:
                raise unknown(request.op)
            spec.check_args(request.args)
            if spec.layer is Layer.DATABASE:
                return await self._run_database_op(spec, request)
            if spec.layer is Layer.SESSION:
                answer: Answer | None = await spec.handler(self, request)
                return answer
            result = await spec.handler(self.ctx, self.user, request.args)
            return Answer(Response(request.id, None, result))
        except ProntoError as err:
            return Answer(Response.fail(request.id, err))
        except StorageError as exc:
            self.ctx.quiet.error(
                "storage", "session %d: %s failed in storage: %s", self.number, request.op, exc
            )
            unavailable = ProntoError(
                ErrorCode.UNAVAILABLE,
                f"The broker could not write to the database ({exc}); retry once that is fixed.",
            )
            return Answer(Response.fail(request.id, unavailable))
        except Exception:
            logger.exception("session %d: %s failed", self.number, request.op)
            return Answer(Response.fail(request.id, ProntoError(ErrorCode.INTERNAL)))

    async def _run_database_op(self, spec: OpSpec, request: Request) -> Answer:
        ctx = self.ctx
        # Most requests find their database open: no await, so nothing could have changed the
        # grants since _dispatch checked them.
        db = ctx.databases.open_now(self._cursor(request), self.user)
        if db is None:
            db = await ctx.databases.get(self._cursor(request), create=spec.creates, user=self.user)
            self._authorize(request)  # opening can take seconds: a revoke meanwhile counts
        call = Call(request.args, self.user, ctx.clock(), self.number)
        run = spec.handler
        if db is None:  # nobody has written this database yet: it reads as empty
            result, applied = run(EMPTY, call)
            if applied is not None and applied.records:
                raise RuntimeError(f"{request.op} changed the shared empty engine")
            return Answer(Response(request.id, None, result))
        database = db.database
        if spec.writes and database.writer.backlog_bytes > ctx.config.max_write_backlog:
            await db.wait_durable(database.last_ticket)  # backpressure: let the disk catch up
            self._authorize(request)
            call = Call(request.args, self.user, ctx.clock(), self.number)
        # Keys past their deadline go first, as a logged change: no request sees them, whether
        # or not the sweeper has run yet.
        db.expire_due(call.now)
        try:
            result, applied = run(db.engine, call)
        except ProntoError as err:
            # A refusal (compare_failed, wrong_type, ...) reports state as much as a read does:
            # it too waits until what it saw is durable.
            return Answer(Response.fail(request.id, err), db, database.last_ticket)
        if applied is None:
            return Answer(Response(request.id, None, result), db, database.last_ticket)
        ticket = db.submit(applied)
        if applied.records:
            db.deadlines_changed()
            db.serve_waiters(call.now)  # the change may be work a blocked claimer waits for
            ctx.databases.maybe_compact(db)
        return Answer(Response(request.id, None, result), db, ticket)


def transport_of(stream: trio.abc.Stream) -> str:
    """How a connection came: ``tls``, ``unix`` or ``tcp`` (a label of the metrics)."""
    if isinstance(stream, trio.SSLStream):
        return "tls"
    if isinstance(stream, trio.SocketStream) and stream.socket.family == socket.AF_UNIX:
        return "unix"
    return "tcp"


def _socket_fd(stream: trio.abc.Stream) -> int:
    """The fd of the socket under ``stream`` (plain or TLS), or -1."""
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1


def _rebound(op: str, cursor: str) -> ProntoError:
    """The answer to a wait whose cursor was bound to another database meanwhile."""
    if op == "watch":
        return ProntoError(
            ErrorCode.COMPACTED,
            f"The cursor {cursor!r} was bound to another database while this watch ran; re-read "
            "it (scan) and watch again.",
            {"restored": True},
        )
    return ProntoError(
        ErrorCode.UNAVAILABLE,
        f"The cursor {cursor!r} was bound to another database while this claim waited; claim "
        "again to wait on the database it names now.",
    )
