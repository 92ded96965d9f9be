"""One client connection: a reader that applies requests in order, and the dispatch of each by
the operation registry (_registry.py). Answers go through the connection's outbox (_outbox.py),
in request order, each once its changes are durable.

The reader decodes and applies each request at once (the engine never waits). The operations
that belong to the connection itself are here: a claim that blocks (answered by a task of its
own, in any order), a watch's stream, and the cancels of either.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
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
    ProtocolError,
    RemoteProtocolError,
    Request,
    Response,
    Role,
    Welcome,
)

from ..engine import Claimed
from ..storage import StorageError

# The modules that declare the broker's operations (each fills the registry as it loads).
from . import _backups, _broker_ops, _cursors, _users  # noqa: F401
from ._access import Level, check, nothing, on_prefix, token_matches
from ._args import Arg, Kind
from ._claim_waiters import Waiter
from ._context import Context
from ._database_ops import CLAIM_ARGS, Call, claim_args, claim_wait, claimed_map
from ._databases import EMPTY, OpenDatabase
from ._names import DEFAULT_NAME
from ._outbox import Answer, Outbox
from ._registry import REGISTRY, Layer, OpSpec, lookup, needs, op
from ._watches import WATCH_ARGS, replaced, start_revision, stream, watch_args

logger = logging.getLogger("prontodb.server")

# Below malloc's mmap threshold: a bigger buffer costs a page-faulting mmap on every read.
RECEIVE_SIZE = 64 * 1024
# Claims whose answers went out, by request id, remembered for a `cancel` that crosses its answer
# on the wire (the client gave up before reading it): the item is then given back. The oldest are
# forgotten first; an item whose answer is forgotten waits for its lease, as without `cancel`.
ANSWERED_CLAIMS = 64
UNKNOWN = "(unknown)"  # what requests for an operation the broker does not know count under
CANCEL_NEEDS_ID = "cancel needs 'id': the claim's request id."


class Session:
    """The broker's side of one connection."""

    def __init__(
        self, ctx: Context, stream: trio.abc.Stream, number: int, authenticate: bool = False
    ) -> None:
        self.ctx = ctx
        self.stream = stream
        self.number = number
        self.user = ""
        # Whether this connection must prove its user with a token; then its requests are
        # checked against the user's grants.
        self.authenticate = authenticate
        self.conn = Connection(Role.SERVER, ctx.config.limits)
        # One scope for the session's reading, which a stop cancels only while the reader waits
        # for bytes (``_awaiting_input``): a request is never cut off halfway, and no wait pays
        # for a scope of its own.
        self._receive_scope = trio.CancelScope()
        self._awaiting_input = False
        self._stopping = False
        self.outbox = Outbox(
            self.conn, stream, number, sent=self._remember_claim, lost=self._give_back
        )
        self._socket_fd = _socket_fd(stream)  # the socket under TLS too, for pending_input
        self._waits: trio.Nursery
        # request id -> its blocked claim's waiter, database and args (see _cancel, _end_wait)
        self._claim_waits: dict[int, tuple[Waiter, OpenDatabase, dict[str, Any]]] = {}
        # request id -> the database directory, key and token of a claim answer that went out
        self._answered_claims: OrderedDict[int, tuple[Path, str, int]] = OrderedDict()
        # request id -> its running watch: the scope that ends it, the request's args and the
        # database directory its cursor named
        self._watches: dict[int, tuple[trio.CancelScope, dict[str, Any], Path]] = {}
        self._refused: dict[int, ProntoError] = {}  # waits ended by a revoke: their answers
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
        grants = databases.catalog.grants
        for request_id, name, args, directory in self._waits_running():
            cursor = args.get("cursor", DEFAULT_NAME)
            try:
                if databases.locate(cursor, self.user) != directory:
                    raise _rebound(name, cursor)
                if self.authenticate:
                    check(grants, self.user, needs(name, args, self.user))
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
        return running

    def _end_wait(self, request_id: int, error: ProntoError) -> None:
        """End the wait of request ``request_id`` now; its answer is ``error`` (the first
        reason given, if several come at once)."""
        self._refused.setdefault(request_id, error)
        watch = self._watches.get(request_id)
        if watch is not None:
            watch[0].cancel()
        self._stop_claim_wait(request_id)

    def _stop_claim_wait(self, request_id: int) -> bool:
        """Take the blocked claim ``request_id`` out of its queue at once, so that no write can
        serve it any more, and wake its task to answer; False if it is not waiting."""
        entry = self._claim_waits.get(request_id)
        if entry is None or entry[0].result is not None:
            return False
        del self._claim_waits[request_id]
        waiter, db, _args = entry
        db.waiters.remove(waiter)
        waiter.event.set()
        return True

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
            # Claims bound to this connection go back to their queues now.
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
        if self.authenticate:
            known = self.ctx.catalog.users.get(hello.user)
            if (
                hello.token is None
                or known is None
                or not token_matches(hello.token, known.salt, known.hash)
            ):
                self.ctx.quiet.info(
                    "login", "session %d: %.80r failed to authenticate", self.number, hello.user
                )
                return Answer(
                    Goodbye(
                        ErrorCode.UNAUTHENTICATED,
                        f"This broker needs a valid token for {hello.user!r} here: set "
                        "PRONTODB_TOKEN (an admin makes one with `prontodb user add` or `user "
                        "token`).",
                    )
                )
        self.user = hello.user
        limits = self.conn.limits.as_dict()
        return Answer(Welcome(self.ctx.server_name, self.number, limits))

    async def _execute(self, request: Request) -> Answer | None:
        """Run ``request`` as the registry declares its operation; its answer, or None when a
        task of its own answers it (a blocked claim, a watch)."""
        counts = self.ctx.requests
        counted = request.op if request.op in REGISTRY else UNKNOWN  # bounded: no client's names
        counts[counted] = counts.get(counted, 0) + 1
        try:
            self._authorize(request)  # an unknown name is an admin's: denied before unknown_op
            spec = lookup(request.op)
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

    def _authorize(self, request: Request) -> None:
        """Raise ``denied`` unless this connection's user may make ``request`` now. Checked
        when it is read, and again after any wait before it takes effect (opening a database
        can take seconds): a revoke meanwhile must not let it through."""
        if self.authenticate:
            ctx = self.ctx
            wanted = needs(request.op, request.args, self.user, ctx.backups)
            check(ctx.catalog.grants, self.user, wanted)

    def _cursor(self, request: Request) -> str:
        """The cursor a database operation names (checked by its declaration)."""
        name: str = request.args.get("cursor", DEFAULT_NAME)
        return name

    async def _run_database_op(self, spec: OpSpec, request: Request) -> Answer:
        ctx = self.ctx
        db = await ctx.databases.get(self._cursor(request), create=spec.creates, user=self.user)
        self._authorize(request)
        call = Call(request.args, self.user, ctx.clock())
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
            call = Call(request.args, self.user, ctx.clock())
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

    @op(
        "claim",
        Layer.SESSION,
        access=on_prefix(Level.WRITE),
        args=CLAIM_ARGS,
        writes=True,  # and it creates its database when it waits (not declared: it decides)
        summary="Take the next ready item under a prefix, under a lease; wait for one if asked.",
    )
    async def _claim(self, request: Request) -> Answer | None:
        """``claim``: answer at once, or leave a waiter and answer from a task of its own (the
        connection's other requests go on meanwhile; answers may come in any order)."""
        args = request.args
        name = self._cursor(request)
        wait = claim_wait(args)
        db = await self.ctx.databases.get(name, create=wait > 0, user=self.user)
        self._authorize(request)
        call = Call(args, self.user, self.ctx.clock())
        prefix, lease, bind, max_deliveries = claim_args(args)
        if db is None:
            return Answer(Response(request.id, None, None))
        db.expire_due(call.now)
        bound = self.number if bind else None
        if not db.waiters.queued(prefix):  # nobody came first: try now
            applied = db.engine.claim(
                prefix,
                holder=self.user,
                now=call.now,
                lease=lease,
                bound=bound,
                max_deliveries=max_deliveries,
            )
            ticket = db.submit(applied) if applied.records else db.database.last_ticket
            if applied.records:
                db.deadlines_changed()
            if applied.result is not None or wait <= 0:
                answer = Response(request.id, None, claimed_map(applied.result))
                return Answer(answer, db, ticket, claim=applied.result)
        waiter = Waiter(prefix, self.user, lease, bound, max_deliveries)
        waiter.served = self._answer_when_served(request.id, db)
        db.waiters.add(waiter)
        self._claim_waits[request.id] = (waiter, db, dict(args))
        self._waits.start_soon(self._wait_for_claim, request.id, db, waiter, wait, name)
        return None

    def _answer_when_served(self, request_id: int, db: OpenDatabase) -> Callable[[Waiter], None]:
        """What a waiter does when served: queue its answer behind the write that served it (it
        goes out from that write's flush), then wake its task, which has nothing left to do."""

        def served(waiter: Waiter) -> None:
            answer = Response(request_id, None, claimed_map(waiter.result))
            self.outbox.queue.append(Answer(answer, db, waiter.ticket, claim=waiter.result))
            self.outbox.pump()
            db.when_durable(waiter.ticket, waiter.event.set)

        return served

    async def _wait_for_claim(
        self, request_id: int, db: OpenDatabase, waiter: Waiter, wait: float, name: str
    ) -> None:
        deadline = trio.current_time() + wait
        error: ProntoError | None = None
        try:
            while True:
                with trio.move_on_at(deadline):
                    await waiter.event.wait()
                if waiter.result is not None or not db.retired:
                    break
                if trio.current_time() >= deadline or request_id not in self._claim_waits:
                    break  # ran out, or cancelled or ended meanwhile (that takes the entry)
                # The database was closed (restored, reopened): wait on its next object.
                db.waiters.remove(waiter)
                try:
                    reopened = await self.ctx.databases.get(name, create=True, user=self.user)
                except ProntoError as err:  # it cannot be opened again (damaged, failing disk)
                    error = err
                    break
                assert reopened is not None
                db = reopened
                entry = self._claim_waits.get(request_id)
                if entry is None:
                    break  # cancelled or ended while the database opened
                waiter.event = trio.Event()
                waiter.served = self._answer_when_served(request_id, db)
                db.waiters.add(waiter)
                self._claim_waits[request_id] = (waiter, db, entry[2])
                db.serve_waiters(self.ctx.clock())
            if waiter.result is None:  # not served (a served waiter is answered already)
                error = self._refused.pop(request_id, None) or error
                if error is not None:  # ended by a revoke, or its database is gone
                    self.outbox.queue.append(Answer(Response.fail(request_id, error)))
                else:  # the wait ran out, or was cancelled
                    answer = Response(request_id, None, None)
                    self.outbox.queue.append(Answer(answer, db, db.database.last_ticket))
                self.outbox.pump()
        finally:
            db.waiters.remove(waiter)
            self._claim_waits.pop(request_id, None)

    @op(
        "cancel",
        Layer.SESSION,
        access=nothing,
        args=(Arg("id", Kind.UINT, required=True, missing=CANCEL_NEEDS_ID),),
        writes=True,  # an item claimed for it goes back
        client=None,
        cli=None,
        cursor=False,
        summary="Give up a claim request of this connection: stop its wait, or give its item back.",
    )
    async def _cancel(self, request: Request) -> Answer:
        """``cancel``: the client gave up on its claim request ``id``. A claim still waiting
        stops waiting (its answer: nil); an item already claimed for it is given back, its answer
        turned into nil if it has not gone yet. True if there was something to undo."""
        request_id: int = request.args["id"]
        if self._stop_claim_wait(request_id):  # still waiting: its task answers nil
            return Answer(Response(request.id, None, True))
        for out in self.outbox.unsent():  # claimed, answer not gone
            message = out.message
            if isinstance(message, Response) and message.id == request_id:
                if out.claim is None or out.db is None:
                    break  # answered nil, or an error: nothing to give back
                directory, claim = out.db.directory, out.claim
                out.message, out.data, out.claim = Response(request_id, None, None), None, None
                returned = self._give_back_claim(directory, claim.key, claim.token)
                return self._cancelled(request, returned)
        else:  # no answer to it waits here: it may have gone already
            answered = self._answered_claims.pop(request_id, None)
            if answered is not None:  # its answer crossed the cancel on the wire
                return self._cancelled(request, self._give_back_claim(*answered))
        return Answer(Response(request.id, None, False))

    def _cancelled(self, request: Request, db: OpenDatabase | None) -> Answer:
        """The answer to a ``cancel`` that gave an item back to ``db`` (once that is durable)."""
        if db is None:  # not open, or failed: nothing was given back
            return Answer(Response(request.id, None, False))
        return Answer(Response(request.id, None, True), db, db.database.last_ticket)

    @op(
        "watch",
        Layer.SESSION,
        access=on_prefix(Level.READ),
        args=WATCH_ARGS,
        summary="A stream of every durable change under a prefix, from a revision or from now.",
    )
    async def _watch(self, request: Request) -> Answer | None:
        """``watch``: check the start, then stream from a task of its own; the Response comes
        last, when the stream ends (unwatch, overflow, a failed database)."""
        args = request.args
        name = self._cursor(request)
        prefix, from_rev = watch_args(args)
        # A database that does not exist yet is at revision 0: the watch waits for it.
        db = await self.ctx.databases.get(name, create=False, user=self.user)
        self._authorize(request)
        start = (from_rev or 1) if db is None else start_revision(db, from_rev)
        scope = trio.CancelScope()
        self._watches[request.id] = (
            scope,
            dict(args),
            self.ctx.databases.locate(name, self.user),
        )
        self._waits.start_soon(self._run_watch, request.id, db, name, prefix, start, scope)
        return None

    async def _run_watch(
        self,
        request_id: int,
        db: OpenDatabase | None,
        name: str,
        prefix: str,
        start: int,
        scope: trio.CancelScope,
    ) -> None:
        resume = start

        async def send(packed: bytes, next_rev: int) -> None:
            nonlocal resume
            self.outbox.emit(self.conn.send_push(request_id, packed))
            # The socket is full: the watcher's reading sets the pace. The writer task writes;
            # this only waits, so an unwatch (a cancel) never cuts a frame in half.
            await self.outbox.wait_drained()
            resume = next_rev

        watching: OpenDatabase | None = None
        try:
            try:
                with scope:
                    announced = db is None
                    if db is None:  # in place at once; its changes come once it exists
                        await send(self.conn.pack_event({"events": [], "next_rev": start}), start)
                        db = await self.ctx.databases.wait_for(name, self.user)
                        if db.engine.history.first > start:  # it came by a restore
                            raise replaced(db.engine.revision)
                    watching = db
                    db.watchers += 1
                    await stream(db, prefix, start, send, self.conn.pack_event, announced=announced)
                answer = Response(request_id, None, {"next_rev": resume})  # unwatched
                refused = self._refused.pop(request_id, None)
                if refused is not None:
                    answer = Response.fail(request_id, refused)
            except ProntoError as err:
                answer = Response.fail(request_id, err)
            # Over before its last answer goes: a client that has it may ask about it again.
            del self._watches[request_id]
            await self.outbox.write(self.conn.send(answer))
        except ProtocolError:
            pass  # the peer broke the protocol: the connection is ending, with no more to say
        finally:
            if watching is not None:
                watching.watchers -= 1
            self._watches.pop(request_id, None)

    @op(
        "unwatch",
        Layer.SESSION,
        access=nothing,
        args=(Arg("stream", Kind.UINT, doc="the watch's request id"),),
        client=None,
        cli=None,
        cursor=False,
        summary="End a watch of this connection; whether it was running.",
    )
    async def _unwatch(self, request: Request) -> Answer:
        """``unwatch``: end the watch opened by request ``stream``; False if none is running."""
        running = self._watches.get(request.args.get("stream") or 0)
        if running is not None:
            running[0].cancel()
        return Answer(Response(request.id, None, running is not None))

    # -- the items of claims whose answers never reach the client ----------------------------

    def _give_back(self, answer: Answer) -> None:
        """Return the item ``answer`` hands out, if any: it will never reach the client."""
        if answer.claim is not None and answer.db is not None:
            self._give_back_claim(answer.db.directory, answer.claim.key, answer.claim.token)

    def _give_back_claim(self, directory: Path, key: str, token: int) -> OpenDatabase | None:
        """Return the item ``key`` claimed under ``token`` to its queue in the database open
        at ``directory`` (the claim's, or the one that replaced it: a restore keeps claims):
        nobody will work on it under this claim. The database if it went back; None if the
        claim had ended, or no database that can write is open there (its lease returns it)."""
        db = self.ctx.databases.open_at(directory)
        if db is None or db.failure is not None:
            return None
        try:
            returned = db.give_back(key, token, self.user, self.ctx.clock())
        except Exception:
            logger.exception("session %d: giving back %s failed", self.number, key)
            return None
        return db if returned else None

    def _remember_claim(self, answer: Response, db: OpenDatabase, claim: Claimed) -> None:
        """A claim's answer went out: a ``cancel`` crossing it on the wire may still give the
        item back (see ANSWERED_CLAIMS)."""
        answered = self._answered_claims
        answered[answer.id] = (db.directory, claim.key, claim.token)
        answered.move_to_end(answer.id)
        if len(answered) > ANSWERED_CLAIMS:
            answered.popitem(last=False)


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
