"""One client connection: a reader that applies requests in order, and their answers.

The reader decodes and applies each request at once (the engine never waits). An answer whose
changes are durable already is written at once; the others queue, in request order, each with
the ticket its records must reach. The flush that makes a ticket durable sends what it freed,
straight from the event loop when the socket takes it (no task wakes for it, as Redis writes its
replies right after its fsync); what the socket does not take, a writer task sends. Pipelined
requests and concurrent writers so cost one fsync, not one each.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from prontodb.protocol import (
    NEED_DATA,
    PROTOCOL_VERSION,
    Connection,
    ConnectionClosed,
    ErrorCode,
    Goodbye,
    Hello,
    LocalProtocolError,
    Message,
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
from ._access import check, needs, token_matches
from ._admin_ops import ADMIN_OPS
from ._claim_waiters import Waiter
from ._databases import EMPTY, OpenDatabase
from ._names import DEFAULT_NAME, validate_name
from ._ops import KV_OPS, Call, KvOp, claim_args, claim_wait, claimed_map, uint_arg
from ._watches import replaced, start_revision, stream, watch_args

if TYPE_CHECKING:
    from ._broker import Broker

logger = logging.getLogger("prontodb.server")

# Below malloc's mmap threshold: a bigger buffer costs a page-faulting mmap on every read.
RECEIVE_SIZE = 64 * 1024
# Encoded answers held before a send_all: bounds a connection's output buffer (1024 pipelined
# reads of a 1 MiB value must not become one 1 GiB write), and it is where a client that does
# not read holds us back.
SEND_CHUNK = 1 << 20
# Claims whose answers went out, by request id, remembered for a `cancel` that crosses its answer
# on the wire (the client gave up before reading it): the item is then given back. The oldest are
# forgotten first; an item whose answer is forgotten waits for its lease, as without `cancel`.
ANSWERED_CLAIMS = 64


@dataclass(slots=True)
class _Out:
    """A message to send once ``ticket`` of ``db`` is durable (no wait without a db)."""

    message: Message
    db: OpenDatabase | None = None
    ticket: int = 0
    waiting: bool = False  # a callback waits for its ticket (registered once)
    claim: Claimed | None = None  # the claim it answers: given back if it never goes out
    data: bytes | None = None  # the message encoded while it waited (Connection.encode)

    @property
    def settled(self) -> bool:
        """Whether it may go: durable, or the database failed (it then goes as an error)."""
        return self.db is None or self.db.settled(self.ticket)


class Session:
    """The broker's side of one connection."""

    def __init__(
        self, broker: Broker, stream: trio.abc.Stream, number: int, authenticate: bool = False
    ) -> None:
        self.broker = broker
        self.stream = stream
        self.number = number
        self.user = ""
        # Whether this connection must prove its user with a token; then its requests are
        # checked against the user's grants.
        self.authenticate = authenticate
        self.conn = Connection(Role.SERVER, broker.config.limits)
        # One scope for the session's reading, which a stop cancels only while the reader waits
        # for bytes (``_awaiting_input``): a request is never cut off halfway, and no wait pays
        # for a scope of its own.
        self._receive_scope = trio.CancelScope()
        self._awaiting_input = False
        self._stopping = False
        self._reading = True
        self._queue: deque[_Out] = deque()  # answers not yet sent, in the order they go
        self._batch: list[_Out] = []  # answers of the requests being read, queued after them
        self._outbox = bytearray()  # encoded, waiting for the writer task (the socket was full)
        self._outbox_changed = trio.Event()  # wakes the writer task
        self._drained = trio.Event()  # set (and replaced) whenever the outbox empties
        self._said_goodbye = False  # nothing may follow a Goodbye
        # A plain socket's fd, for writing answers from the flush without waking a task; -1 for
        # TLS (and once the stream is closed: the number may be reused).
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._socket_fd = _socket_fd(stream)  # the socket under TLS too, for pending_input
        # The reader, the writer and the watches all write (a claim's answer comes any time).
        self._send_lock = trio.Lock()
        self._waits: trio.Nursery
        # request id -> its blocked claim's waiter, database and args (see _cancel, _end_wait)
        self._claim_waits: dict[int, tuple[Waiter, OpenDatabase, dict[str, Any]]] = {}
        # request id -> the database directory, key and token of a claim answer that went out
        self._answered_claims: OrderedDict[int, tuple[Path, str, int]] = OrderedDict()
        # request id -> its running watch: the scope that ends it, the request's args and the
        # database directory its cursor named
        self._watches: dict[int, tuple[trio.CancelScope, dict[str, Any], Path]] = {}
        self._refused: dict[int, ProntoError] = {}  # waits ended by a revoke: their answers
        self._torn = False  # a write was cut short: the stream holds half a frame
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
        databases = self.broker.databases
        grants = databases.catalog.grants
        for request_id, op, args, directory in self._waits_running():
            cursor = args.get("cursor", DEFAULT_NAME)
            try:
                if databases.locate(cursor, self.user) != directory:
                    raise _rebound(op, cursor)
                if self.authenticate:
                    check(grants, self.user, needs(op, args, self.user))
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
        if self._socket_fd >= 0:
            self.broker.pending_input.add(self._socket_fd)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, nursery.cancel_scope)
                try:
                    async with trio.open_nursery() as waits:
                        self._waits = waits
                        await self._read_loop()
                        waits.cancel_scope.cancel()  # blocked claims end with the reading
                    if self._stopping:
                        await self._flush([_Out(self._farewell)])
                except* trio.BrokenResourceError:
                    pass  # the peer is gone (the waits nursery may wrap it in a group)
                finally:
                    self._reading = False  # the writer ends once every answer is out
                    self._outbox_changed.set()
        finally:
            self._fd = -1  # answers still waiting on the disk must not write to a reused fd
            if self._socket_fd >= 0:
                self.broker.pending_input.remove(self._socket_fd)
            # Items served to this connection that it never heard of (a batch cut short too).
            for out in itertools.chain(self._queue, self._batch):
                self._give_back(out)
            self._queue.clear()
            self._batch = []
            # Claims bound to this connection go back to their queues now.
            self.broker.databases.return_session(self.number, self.broker.clock())
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    # -- reading -----------------------------------------------------------------------------

    async def _receive(self) -> bytes | bytearray | None:
        """The next bytes (b"" at EOF), or None once the broker stops reading. Runs inside
        ``_receive_scope``, which a stop cancels only while this waits for bytes."""
        if self._fd < 0:
            return await self._receive_stream()
        fd = self._fd
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
            outs: list[_Out] = []
            self._batch = outs  # a cancel in these bytes may undo an answer among them
            done = False
            while not done:
                try:
                    event = conn.next_event()
                except RemoteProtocolError as exc:  # the peer's fault: one line, rate-limited
                    self.broker.quiet.info(
                        "protocol", "session %d: protocol error: %s", self.number, exc.message
                    )
                    outs.append(_Out(Goodbye.from_error(exc)))
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
            self._batch = []  # queued by the flush: a cancel finds them there now
            await self._flush(outs)
            if done:
                return

    async def _flush(self, outs: list[_Out]) -> None:
        """Answer ``outs`` in order: what may go now is written, the rest goes out from the
        flush that makes it durable. Returns once the socket took what could go now, so a client
        that does not read its answers is not read from either."""
        # Unsent answers are requests in flight (one encoded ahead commits only as it goes):
        # the protocol's limit bounds the queue.
        self._queue.extend(outs)
        self._pump()
        if self._queue and self._queue[0].db is not None:
            # Its answer goes out from this flush, if nothing else could join it.
            self._queue[0].db.flush_if_alone(self.broker.pending_input.waiting)
        if self._outbox:
            await self._write(b"")

    def _pump(self) -> None:
        """Encode the answers at the head of the queue that may go, and write them; for the
        first that may not yet, ask its database to call again once it may. No await: this
        runs from the flush loop too."""
        queue = self._queue
        if self._outbox:
            return  # the socket is full: whoever writes the outbox pumps again (see _write)
        data = bytearray()
        while queue:
            out = queue[0]
            if not out.settled:
                if not out.waiting:
                    out.waiting = True
                    # Encoded now, so that only the write is left once the fsync returns:
                    # code run right after the process slept in the fsync runs several times
                    # slower than the same code run now (docs/BENCHMARKS.md).
                    out.data = self._encode_ahead(out.message)
                    assert out.db is not None
                    out.db.when_durable(out.ticket, self._pump)
                break
            queue.popleft()
            try:
                data += self._encode_out(out)
            except Exception:  # a bug; the answers behind it must not be stuck
                logger.exception("session %d: an answer could not be encoded", self.number)
            if len(data) >= SEND_CHUNK:  # bounds the output buffer: 1 MiB pieces
                self._emit(data)
                data = bytearray()
                if self._outbox:
                    break  # the socket is full: the writer pumps again once it wrote
        if data:
            self._emit(data)
        if not queue and not self._reading:
            self._outbox_changed.set()  # the writer may end

    def _emit(self, data: bytes | bytearray) -> None:
        """Write ``data`` now if the socket takes it and nothing else is being written; the
        rest goes to the writer task. Nothing is lost either way: a failed write is the writer's
        to find (its send fails the same way and ends the session)."""
        sent = 0
        if self._fd >= 0 and not self._outbox and not self._send_lock.locked() and not self._torn:
            try:
                sent = os.write(self._fd, data)
            except OSError:  # full (BlockingIOError), or the peer is gone
                sent = 0
            if sent == len(data):
                return
        self._outbox += memoryview(data)[sent:]
        self._outbox_changed.set()

    def _welcome(self, hello: Hello) -> _Out:
        if hello.version != PROTOCOL_VERSION:
            return _Out(
                Goodbye(
                    ErrorCode.PROTOCOL,
                    f"This broker speaks protocol version {PROTOCOL_VERSION}, not "
                    f"{hello.version}; use a client of the same release.",
                )
            )
        if not hello.user:
            return _Out(Goodbye(ErrorCode.UNAUTHENTICATED, "Say who you are: Hello needs a user."))
        if self.authenticate:
            known = self.broker.databases.catalog.users.get(hello.user)
            if (
                hello.token is None
                or known is None
                or not token_matches(hello.token, known.salt, known.hash)
            ):
                self.broker.quiet.info(
                    "login", "session %d: %.80r failed to authenticate", self.number, hello.user
                )
                return _Out(
                    Goodbye(
                        ErrorCode.UNAUTHENTICATED,
                        f"This broker needs a valid token for {hello.user!r} here: set "
                        "PRONTODB_TOKEN (an admin makes one with `prontodb user add` or `user "
                        "token`).",
                    )
                )
        self.user = hello.user
        limits = self.conn.limits.as_dict()
        return _Out(Welcome(self.broker.server_name, self.number, limits))

    async def _execute(self, request: Request) -> _Out | None:
        try:
            self._authorize(request)
            if request.op == "claim":
                return await self._claim(request)
            if request.op == "watch":
                return await self._watch(request)
            if request.op == "unwatch":
                return _Out(Response(request.id, None, self._unwatch(request)))
            if request.op == "cancel":
                return self._cancel(request)
            cursor_op = ADMIN_OPS.get(request.op)
            if cursor_op is not None:
                result = await cursor_op(self.broker, self.user, request.args)
                return _Out(Response(request.id, None, result))
            op = KV_OPS.get(request.op)
            if op is not None:
                return await self._run_kv(op, request)
            result = self.broker.run_broker_op(request.op, request.args)
            return _Out(Response(request.id, None, result))
        except ProntoError as err:
            return _Out(Response.fail(request.id, err))
        except StorageError as exc:
            self.broker.quiet.error(
                "storage", "session %d: %s failed in storage: %s", self.number, request.op, exc
            )
            unavailable = ProntoError(
                ErrorCode.UNAVAILABLE,
                f"The broker could not write to the database ({exc}); retry once that is fixed.",
            )
            return _Out(Response.fail(request.id, unavailable))
        except Exception:
            logger.exception("session %d: %s failed", self.number, request.op)
            return _Out(Response.fail(request.id, ProntoError(ErrorCode.INTERNAL)))

    def _authorize(self, request: Request) -> None:
        """Raise ``denied`` unless this connection's user may make ``request`` now. Checked
        when it is read, and again after any wait before it takes effect (opening a database
        can take seconds): a revoke meanwhile must not let it through."""
        if self.authenticate:
            grants = self.broker.databases.catalog.grants
            check(
                grants, self.user, needs(request.op, request.args, self.user, self.broker.backups)
            )

    async def _run_kv(self, op: KvOp, request: Request) -> _Out:
        name = validate_name(request.args.get("cursor", DEFAULT_NAME))
        db = await self.broker.databases.get(name, create=op.creates, user=self.user)
        self._authorize(request)
        call = Call(request.args, self.user, self.broker.clock())
        if db is None:  # nobody has written this database yet: it reads as empty
            result, applied = op.run(EMPTY, call)
            if applied is not None and applied.records:
                raise RuntimeError(f"{request.op} changed the shared empty engine")
            return _Out(Response(request.id, None, result))
        database = db.database
        if op.writes and database.writer.backlog_bytes > self.broker.config.max_write_backlog:
            await db.wait_durable(database.last_ticket)  # backpressure: let the disk catch up
            self._authorize(request)
            call = Call(request.args, self.user, self.broker.clock())
        # Keys past their deadline go first, as a logged change: no request sees them, whether
        # or not the sweeper has run yet.
        db.expire_due(call.now)
        try:
            result, applied = op.run(db.engine, call)
        except ProntoError as err:
            # A refusal (compare_failed, wrong_type, ...) reports state as much as a read does:
            # it too waits until what it saw is durable.
            return _Out(Response.fail(request.id, err), db, database.last_ticket)
        if applied is None:
            return _Out(Response(request.id, None, result), db, database.last_ticket)
        ticket = db.submit(applied)
        if applied.records:
            db.deadlines_changed()
            db.serve_waiters(call.now)  # the change may be work a blocked claimer waits for
            self.broker.maybe_compact(db)
        return _Out(Response(request.id, None, result), db, ticket)

    async def _claim(self, request: Request) -> _Out | None:
        """``claim``: answer at once, or leave a waiter and answer from a task of its own (the
        connection's other requests go on meanwhile; answers may come in any order)."""
        args = request.args
        name = validate_name(args.get("cursor", DEFAULT_NAME))
        wait = claim_wait(args)
        db = await self.broker.databases.get(name, create=wait > 0, user=self.user)
        self._authorize(request)
        call = Call(args, self.user, self.broker.clock())
        prefix, lease, bind, max_deliveries = claim_args(args)
        if db is None:
            return _Out(Response(request.id, None, None))
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
                return _Out(answer, db, ticket, claim=applied.result)
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
            self._queue.append(_Out(answer, db, waiter.ticket, claim=waiter.result))
            self._pump()
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
                    reopened = await self.broker.databases.get(name, create=True, user=self.user)
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
                db.serve_waiters(self.broker.clock())
            if waiter.result is None:  # not served (a served waiter is answered already)
                error = self._refused.pop(request_id, None) or error
                if error is not None:  # ended by a revoke, or its database is gone
                    self._queue.append(_Out(Response.fail(request_id, error)))
                else:  # the wait ran out, or was cancelled
                    answer = Response(request_id, None, None)
                    self._queue.append(_Out(answer, db, db.database.last_ticket))
                self._pump()
        finally:
            db.waiters.remove(waiter)
            self._claim_waits.pop(request_id, None)

    def _cancel(self, request: Request) -> _Out:
        """``cancel``: the client gave up on its claim request ``id``. A claim still waiting
        stops waiting (its answer: nil); an item already claimed for it is given back, its answer
        turned into nil if it has not gone yet. True if there was something to undo."""
        request_id = uint_arg(request.args, "id")
        if request_id is None:
            raise ProntoError(ErrorCode.BAD_REQUEST, "cancel needs 'id': the claim's request id.")
        if self._stop_claim_wait(request_id):  # still waiting: its task answers nil
            return _Out(Response(request.id, None, True))
        for out in itertools.chain(self._queue, self._batch):  # claimed, answer not gone
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
        return _Out(Response(request.id, None, False))

    def _cancelled(self, request: Request, db: OpenDatabase | None) -> _Out:
        """The answer to a ``cancel`` that gave an item back to ``db`` (once that is durable)."""
        if db is None:  # not open, or failed: nothing was given back
            return _Out(Response(request.id, None, False))
        return _Out(Response(request.id, None, True), db, db.database.last_ticket)

    async def _watch(self, request: Request) -> _Out | None:
        """``watch``: check the start, then stream from a task of its own; the Response comes
        last, when the stream ends (unwatch, overflow, a failed database)."""
        args = request.args
        name = validate_name(args.get("cursor", DEFAULT_NAME))
        prefix, from_rev = watch_args(args)
        # A database that does not exist yet is at revision 0: the watch waits for it.
        db = await self.broker.databases.get(name, create=False, user=self.user)
        self._authorize(request)
        start = (from_rev or 1) if db is None else start_revision(db, from_rev)
        scope = trio.CancelScope()
        self._watches[request.id] = (
            scope,
            dict(args),
            self.broker.databases.locate(name, self.user),
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
            self._emit(self.conn.send_push(request_id, packed))
            # The socket is full: the watcher's reading sets the pace. The writer task writes;
            # this only waits, so an unwatch (a cancel) never cuts a frame in half.
            while self._outbox:
                await self._drained.wait()
            resume = next_rev

        watching: OpenDatabase | None = None
        try:
            try:
                with scope:
                    announced = db is None
                    if db is None:  # in place at once; its changes come once it exists
                        await send(self.conn.pack_event({"events": [], "next_rev": start}), start)
                        db = await self.broker.databases.wait_for(name, self.user)
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
            await self._write(self.conn.send(answer))
        except ProtocolError:
            pass  # the peer broke the protocol: the connection is ending, with no more to say
        finally:
            if watching is not None:
                watching.watchers -= 1
            self._watches.pop(request_id, None)

    def _unwatch(self, request: Request) -> bool:
        """``unwatch``: end the watch opened by request ``stream``; False if none is running."""
        running = self._watches.get(uint_arg(request.args, "stream") or 0)
        if running is not None:
            running[0].cancel()
        return running is not None

    # -- sending -----------------------------------------------------------------------------

    async def _writer(self, session_scope: trio.CancelScope) -> None:
        """Write what the socket did not take at once, until the reading is over and every
        answer is out; a lost peer ends the session."""
        try:
            while True:
                if self._torn:  # a write was cut short (the peer left): nothing more can go
                    session_scope.cancel()
                    return
                if self._outbox:
                    await self._write(b"")
                    continue
                if not self._reading and not self._queue:
                    return
                await self._outbox_changed.wait()
                self._outbox_changed = trio.Event()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            session_scope.cancel()  # the peer is gone: stop reading for it too

    async def _write(self, data: bytes | bytearray) -> None:
        """Write the outbox (it goes first, with every answer that may go after it), then
        ``data``, holding the send lock."""
        lock = self._send_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()  # no yield when nobody else is writing: send_all yields anyway
        try:
            while self._outbox:
                queued, self._outbox = self._outbox, bytearray()
                await self._send_all(queued)
                if not self._outbox:
                    self._pump()  # encoding paused at SEND_CHUNK: the next piece (into the outbox)
            self._drained.set()
            self._drained = trio.Event()
            if data and not self._said_goodbye:  # nothing may follow a Goodbye
                await self._send_all(data)
        finally:
            lock.release()

    async def _send_all(self, data: bytes | bytearray) -> None:
        if self._torn:
            raise trio.BrokenResourceError("an earlier write was cut short")
        written = False
        try:
            await self.stream.send_all(data)
            written = True
        finally:
            # Cancelled or failed inside a frame: nothing more may follow it.
            self._torn = not written

    def _give_back(self, out: _Out) -> None:
        """Return the item ``out`` hands out, if any: its answer will never reach the client."""
        if out.claim is not None and out.db is not None:
            self._give_back_claim(out.db.directory, out.claim.key, out.claim.token)

    def _give_back_claim(self, directory: Path, key: str, token: int) -> OpenDatabase | None:
        """Return the item ``key`` claimed under ``token`` to its queue in the database open
        at ``directory`` (the claim's, or the one that replaced it: a restore keeps claims):
        nobody will work on it under this claim. The database if it went back; None if the
        claim had ended, or no database that can write is open there (its lease returns it)."""
        db = self.broker.databases.open_at(directory)
        if db is None or db.failure is not None:
            return None
        try:
            returned = db.give_back(key, token, self.user, self.broker.clock())
        except Exception:
            logger.exception("session %d: giving back %s failed", self.number, key)
            return None
        return db if returned else None

    def _encode_out(self, out: _Out) -> bytes:
        """``out``'s message as bytes (its database failed: ``unavailable`` instead); nothing
        once a Goodbye went."""
        if self._said_goodbye:
            self._give_back(out)
            return b""
        message = out.message
        if out.db is not None and not out.db.is_durable(out.ticket):
            assert isinstance(message, Response)
            message = Response.fail(message.id, out.db.unavailable())
            out.data = None
        if isinstance(message, Goodbye):
            self._said_goodbye = True
        data, went = self._encode(message, out.data)
        if out.claim is not None and out.db is not None:
            if went and message is out.message:
                self._remember_claim(message, out.db.directory, out.claim)
            else:
                self._give_back(out)  # the item's answer never goes
        return data

    def _remember_claim(self, answer: Message, directory: Path, claim: Claimed) -> None:
        assert isinstance(answer, Response)
        answered = self._answered_claims
        answered[answer.id] = (directory, claim.key, claim.token)
        answered.move_to_end(answer.id)
        if len(answered) > ANSWERED_CLAIMS:
            answered.popitem(last=False)

    def _encode_ahead(self, message: Message) -> bytes | None:
        """``message``'s bytes before it may go (None if that fails: :meth:`_encode` then
        deals with it when it may go)."""
        try:
            return self.conn.encode(message)
        except LocalProtocolError:
            return None

    def _encode(self, message: Message, ready: bytes | None = None) -> tuple[bytes, bool]:
        """``message``'s bytes, and whether they are its own (not an error that stands in for
        a Response too large to send, nor nothing once the peer broke the protocol). ``ready``:
        its bytes from :meth:`_encode_ahead`, committed as they go rather than made again."""
        try:
            if ready is None:
                return self.conn.send(message), True
            self.conn.commit(message)  # only the order rules can refuse it now
            return ready, True
        except LocalProtocolError as exc:
            if self.conn.peer_broke_protocol and not isinstance(message, Goodbye):
                # Only our Goodbye may go now, and it says why (a Welcome or an answer read in
                # the same bytes as the fault is dropped: nothing to log, the peer's doing).
                return b"", False
            if not isinstance(message, Response) or exc.code != ErrorCode.TOO_LARGE:
                raise  # a bug of ours: _pump logs it
            # A result over the frame limit: say so instead of dropping the answer.
            err = ProntoError(
                ErrorCode.TOO_LARGE,
                f"The answer does not fit in one frame ({exc.message}); ask for less "
                "(a smaller limit or a narrower prefix).",
            )
            try:
                return self.conn.send(Response.fail(message.id, err)), False
            except LocalProtocolError:  # and the peer broke the protocol meanwhile
                return b"", False


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
