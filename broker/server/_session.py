"""One client connection: a reader that applies requests in order, a sender that answers them.

The reader decodes and applies each request at once (the engine never waits), then queues the
response with the ticket its records must reach before it may go out. The sender waits for those
tickets in order and writes every response that is ready in one ``send_all``, so pipelined
requests and concurrent writers cost one fsync, not one each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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

from ..storage import StorageError
from ._access import check, needs, token_matches
from ._admin_ops import ADMIN_OPS
from ._claim_waiters import Waiter
from ._databases import DEFAULT_NAME, EMPTY, OpenDatabase, validate_name
from ._ops import KV_OPS, Call, KvOp, claim_args, claim_wait, claimed_map, uint_arg
from ._watches import start_revision, stream, watch_args

if TYPE_CHECKING:
    from ._broker import Broker

logger = logging.getLogger("prontodb.server")

# Below malloc's mmap threshold: a bigger buffer costs a page-faulting mmap on every read.
RECEIVE_SIZE = 64 * 1024
MAX_BATCH = 512  # responses joined into one send_all
# Encoded answers held before a send_all: bounds a connection's output buffer (1024 pipelined
# reads of a 1 MiB value must not become one 1 GiB write), and it is where a client that does
# not read holds us back.
SEND_CHUNK = 1 << 20


@dataclass(slots=True)
class _Out:
    """A message to send once ``ticket`` of ``db`` is durable (no wait without a db)."""

    message: Message
    db: OpenDatabase | None = None
    ticket: int = 0

    @property
    def ready(self) -> bool:
        return self.db is None or self.db.is_durable(self.ticket)


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
        self._receive_scope = trio.CancelScope()
        self._stopping = False
        self._unsent = 0  # messages handed to the sender and not yet written
        # The reader and the sender both write (a blocked claim's answer can come at any time).
        self._send_lock = trio.Lock()
        self._send: trio.MemorySendChannel[_Out]
        self._waits: trio.Nursery
        # request id -> its running watch: the scope that ends it and the request's args
        self._watches: dict[int, tuple[trio.CancelScope, dict[str, Any]]] = {}
        self._refused: dict[int, ProntoError] = {}  # watches ended by a revoked grant
        self._torn = False  # a write was cut short: the stream holds half a frame
        self._farewell = Goodbye(ErrorCode.UNAVAILABLE, "The broker is stopping.")

    def stop_reading(self, farewell: Goodbye | None = None) -> None:
        """Take no more requests; answer the ones already read, then say Goodbye (``farewell``,
        else that the broker is stopping)."""
        if farewell is not None:
            self._farewell = farewell
        self._stopping = True
        self._receive_scope.cancel()

    def recheck_watches(self) -> None:
        """End the running watches this user's grants no longer allow (after a revoke)."""
        if not self.authenticate:
            return
        grants = self.broker.databases.catalog.grants
        for request_id, (scope, args) in list(self._watches.items()):
            try:
                check(grants, self.user, needs("watch", args, self.user))
            except ProntoError as err:
                self._refused[request_id] = err
                scope.cancel()

    async def run(self) -> None:
        capacity = self.conn.limits.max_in_flight + 4  # the protocol bounds what is in flight
        send, receive = trio.open_memory_channel[_Out](capacity)
        self._send = send
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, receive, nursery.cancel_scope)
                async with send:
                    try:
                        async with trio.open_nursery() as waits:
                            self._waits = waits
                            await self._read_loop(send)
                            waits.cancel_scope.cancel()  # blocked claims end with the reading
                        if self._stopping:
                            await self._flush([_Out(self._farewell)], send)
                    except* trio.BrokenResourceError:
                        pass  # the peer is gone (the waits nursery may wrap it in a group)
        finally:
            # Claims bound to this connection go back to their queues now.
            self.broker.databases.return_session(self.number, self.broker.clock())
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    # -- reading -----------------------------------------------------------------------------

    async def _receive(self) -> bytes | bytearray | None:
        """The next bytes (b"" at EOF), or None once the broker stops reading. Only this wait is
        cancelled by a stop, so a response is never cut off in the middle of its frame."""
        if self._stopping:
            return None
        scope = self._receive_scope = trio.CancelScope()
        with scope:
            try:
                return await self.stream.receive_some(RECEIVE_SIZE)
            except trio.BrokenResourceError:
                return b""  # reset by peer: the same as EOF for us
        return None

    async def _read_loop(self, send: trio.MemorySendChannel[_Out]) -> None:
        conn = self.conn
        while True:
            data = await self._receive()
            if data is None:
                return
            conn.receive_data(data)
            # Apply every request the bytes hold, then answer them together.
            outs: list[_Out] = []
            done = False
            while not done:
                try:
                    event = conn.next_event()
                except RemoteProtocolError as exc:
                    logger.info("session %d: protocol error: %s", self.number, exc.message)
                    outs.append(_Out(Goodbye.from_error(exc)))
                    done = True
                    break
                if event is NEED_DATA:
                    break
                if isinstance(event, Request):
                    out = await self._execute(event)
                    if out is not None:  # None: a blocked claim, answered by its own task
                        outs.append(out)
                elif isinstance(event, Hello):
                    outs.append(self._welcome(event))
                    done = isinstance(outs[-1].message, Goodbye)
                elif isinstance(event, ConnectionClosed | Goodbye):
                    done = True
            await self._flush(outs, send)
            if done:
                return

    async def _flush(self, outs: list[_Out], send: trio.MemorySendChannel[_Out]) -> None:
        """Send ``outs`` now if they are ready and nothing is queued before them (one task hop
        less on the common path); else queue them for the sender, which waits for the disk."""
        if not outs:
            return
        if not self._unsent and all(o.ready for o in outs):
            data = bytearray()
            for item in outs:
                data += self._encode(item.message)
                if len(data) >= SEND_CHUNK:  # a client that does not read stops us here
                    await self._write(data)
                    data = bytearray()
            if data:
                await self._write(data)
            return
        self._unsent += len(outs)
        for out in outs:
            # The protocol bounds what is in flight below the capacity, so this never blocks.
            send.send_nowait(out)

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
                logger.info("session %d: %r failed to authenticate", self.number, hello.user)
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
            if self.authenticate:
                grants = self.broker.databases.catalog.grants
                check(grants, self.user, needs(request.op, request.args, self.user))
            if request.op == "claim":
                return await self._claim(request)
            if request.op == "watch":
                return await self._watch(request)
            if request.op == "unwatch":
                return _Out(Response(request.id, None, self._unwatch(request)))
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
            logger.error("session %d: %s failed in storage: %s", self.number, request.op, exc)
            unavailable = ProntoError(
                ErrorCode.UNAVAILABLE,
                "The broker could not write to the database (see its log); retry.",
            )
            return _Out(Response.fail(request.id, unavailable))
        except Exception:
            logger.exception("session %d: %s failed", self.number, request.op)
            return _Out(Response.fail(request.id, ProntoError(ErrorCode.INTERNAL)))

    async def _run_kv(self, op: KvOp, request: Request) -> _Out:
        name = validate_name(request.args.get("cursor", DEFAULT_NAME))
        db = await self.broker.databases.get(name, create=op.creates, user=self.user)
        call = Call(request.args, self.user, self.broker.clock())
        if db is None:  # nobody has written this database yet: it reads as empty
            result, applied = op.run(EMPTY, call)
            if applied is not None and applied.records:
                raise RuntimeError(f"{request.op} changed the shared empty engine")
            return _Out(Response(request.id, None, result))
        database = db.database
        if op.writes and database.writer.backlog_bytes > self.broker.config.max_write_backlog:
            await db.wait_durable(database.last_ticket)  # backpressure: let the disk catch up
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
                return _Out(Response(request.id, None, claimed_map(applied.result)), db, ticket)
        waiter = Waiter(prefix, self.user, lease, bound, max_deliveries)
        db.waiters.add(waiter)
        self._waits.start_soon(self._wait_for_claim, request.id, db, waiter, wait, name)
        return None

    async def _wait_for_claim(
        self, request_id: int, db: OpenDatabase, waiter: Waiter, wait: float, name: str
    ) -> None:
        answered = False
        deadline = trio.current_time() + wait
        try:
            while True:
                with trio.move_on_at(deadline):
                    await waiter.event.wait()
                if waiter.result is not None or not db.retired:
                    break
                if trio.current_time() >= deadline:
                    break
                # The database was closed (restored, reopened): wait on its next object.
                db.waiters.remove(waiter)
                reopened = await self.broker.databases.get(name, create=True, user=self.user)
                assert reopened is not None
                db = reopened
                waiter.event = trio.Event()
                db.waiters.add(waiter)
                db.serve_waiters(self.broker.clock())
            # Served even as the wait ran out: the item is this claimer's, answer with it.
            ticket = waiter.ticket if waiter.result is not None else db.database.last_ticket
            out = _Out(Response(request_id, None, claimed_map(waiter.result)), db, ticket)
            self._unsent += 1
            self._send.send_nowait(out)
            answered = True
        finally:
            db.waiters.remove(waiter)
            if waiter.result is not None and not answered:
                # Served, but the connection is going before the answer could: give it back
                # rather than leave it held, unseen, until its lease ends.
                db.give_back(waiter.result.key, waiter.result.token, self.user, self.broker.clock())

    async def _watch(self, request: Request) -> _Out | None:
        """``watch``: check the start, then stream from a task of its own; the Response comes
        last, when the stream ends (unwatch, overflow, a failed database)."""
        args = request.args
        name = validate_name(args.get("cursor", DEFAULT_NAME))
        prefix, from_rev = watch_args(args)
        # A watch may come before the first write, so it creates the database it waits on.
        db = await self.broker.databases.get(name, create=True, user=self.user)
        assert db is not None
        start = start_revision(db, from_rev)
        scope = trio.CancelScope()
        self._watches[request.id] = (scope, dict(args))
        self._waits.start_soon(self._run_watch, request.id, db, prefix, start, scope)
        return None

    async def _run_watch(
        self, request_id: int, db: OpenDatabase, prefix: str, start: int, scope: trio.CancelScope
    ) -> None:
        resume = start

        async def send(packed: bytes, next_rev: int) -> None:
            nonlocal resume
            await self._write(self.conn.send_push(request_id, packed))
            resume = next_rev

        db.watchers += 1
        try:
            with scope:
                await stream(db, prefix, start, send, self.conn.pack_event)
            answer = Response(request_id, None, {"next_rev": resume})  # unwatched
            refused = self._refused.pop(request_id, None)
            if refused is not None:
                answer = Response.fail(request_id, refused)
            await self._write(self.conn.send(answer))
        except ProntoError as err:
            await self._write(self.conn.send(Response.fail(request_id, err)))
        except ProtocolError:
            pass  # the peer broke the protocol: the connection is ending, with no more to say
        finally:
            db.watchers -= 1
            del self._watches[request_id]

    def _unwatch(self, request: Request) -> bool:
        """``unwatch``: end the watch opened by request ``stream``; False if none is running."""
        running = self._watches.get(uint_arg(request.args, "stream") or 0)
        if running is not None:
            running[0].cancel()
        return running is not None

    # -- sending -----------------------------------------------------------------------------

    async def _send_loop(
        self, receive: trio.MemoryReceiveChannel[_Out], session_scope: trio.CancelScope
    ) -> None:
        try:
            async with receive:
                async for first in receive:
                    batch = [first]
                    while len(batch) < MAX_BATCH:
                        try:
                            batch.append(receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    if await self._send_batch(batch):
                        return
                    self._unsent -= len(batch)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            session_scope.cancel()  # the peer is gone: stop reading for it too

    async def _write(self, data: bytes | bytearray) -> None:
        lock = self._send_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()  # no yield when nobody else is writing: send_all yields anyway
        try:
            if self._torn:
                raise trio.BrokenResourceError("an earlier write was cut short")
            written = False
            try:
                await self.stream.send_all(data)
                written = True
            finally:
                # Cancelled or failed inside a frame: nothing more may follow it.
                self._torn = not written
        finally:
            lock.release()

    async def _send_batch(self, batch: list[_Out]) -> bool:
        """Send ``batch`` in order, each once durable; True once a Goodbye went out."""
        out = bytearray()
        for item in batch:
            message: Any = item.message
            if item.db is not None and not item.db.is_durable(item.ticket):
                if out:  # what is ready need not wait for the disk
                    await self._write(out)
                    out = bytearray()
                try:
                    await item.db.wait_durable(item.ticket)
                except ProntoError as err:
                    message = Response.fail(message.id, err)
            out += self._encode(message)
            if isinstance(message, Goodbye):
                await self._write(out)
                return True
            if len(out) >= SEND_CHUNK:
                await self._write(out)
                out = bytearray()
        if out:
            await self._write(out)
        return False

    def _encode(self, message: Message) -> bytes:
        try:
            return self.conn.send(message)
        except LocalProtocolError as exc:
            if not isinstance(message, Response):
                raise
            # A result over the frame limit: say so instead of dropping the answer.
            err = ProntoError(
                ErrorCode.TOO_LARGE,
                f"The answer does not fit in one frame ({exc.message}); ask for less "
                "(a smaller limit or a narrower prefix).",
            )
            return self.conn.send(Response.fail(message.id, err))
