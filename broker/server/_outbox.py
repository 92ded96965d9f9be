"""One connection's answers, in request order, each sent once its changes are durable.

An answer whose changes are durable already is written at once; the others queue, in request
order, each with the ticket its records must reach. The flush that makes a ticket durable sends
what it freed, straight from the event loop when the socket takes it (no task wakes for it, as
Redis writes its replies right after its fsync); what the socket does not take, a writer task
sends. Pipelined requests and concurrent writers so cost one fsync, not one each.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import trio

from prontodb.protocol import (
    Connection,
    ErrorCode,
    Goodbye,
    LocalProtocolError,
    Message,
    ProntoError,
    Response,
)

from ..engine import Claimed
from ._databases import OpenDatabase
from ._stats import Stats

logger = logging.getLogger("prontodb.server")

# Encoded answers held before a send_all: bounds a connection's output buffer (1024 pipelined
# reads of a 1 MiB value must not become one 1 GiB write), and it is where a client that does
# not read holds us back.
SEND_CHUNK = 1 << 20


@dataclass(slots=True)
class Answer:
    """A message to send once ``ticket`` of ``db`` is durable (no wait without a db)."""

    message: Message
    db: OpenDatabase | None = None
    ticket: int = 0
    waiting: bool = False  # a callback waits for its ticket (registered once)
    claim: Claimed | None = None  # the claim it answers: given back if it never goes out
    data: bytes | None = None  # the message encoded while it waited (Connection.encode)
    # The request's operation, counted in the metrics once its answer goes ("": not counted,
    # e.g. a Welcome), and when its bytes were read (perf_counter; 0: not timed, it waited).
    op: str = ""
    began: float = 0.0

    @property
    def settled(self) -> bool:
        """Whether it may go: durable, or the database failed (it then goes as an error)."""
        return self.db is None or self.db.settled(self.ticket)


# What the connection does with an answer that hands out a claimed item: ``sent`` once it went
# (a cancel may still give it back), ``lost`` if it never will (the item goes back now).
Sent = Callable[[Response, OpenDatabase, Claimed], None]
Lost = Callable[[Answer], None]


class Outbox:
    """The ordered, durable-first answers of one connection, and the bytes the socket has not
    taken yet."""

    def __init__(
        self,
        conn: Connection,
        stream: trio.abc.Stream,
        number: int,
        *,
        sent: Sent,
        lost: Lost,
        stats: Stats | None = None,
    ) -> None:
        self.conn = conn
        self._stats = stats or Stats()  # answers counted by operation and code, and timed
        self.stream = stream
        self.number = number  # the session's, for the log
        self._sent = sent
        self._lost = lost
        self.queue: deque[Answer] = deque()  # answers not yet sent, in the order they go
        self.batch: list[Answer] = []  # answers of the requests being read, queued after them
        self.pending = bytearray()  # encoded, waiting for the writer task (the socket was full)
        self._changed = trio.Event()  # wakes the writer task
        self._drained = trio.Event()  # set (and replaced) whenever ``pending`` empties
        self._said_goodbye = False  # nothing may follow a Goodbye
        self.reading = True  # the connection may still queue answers; the writer waits for it
        # A plain socket's fd, for writing answers from the flush without waking a task; -1 for
        # TLS (and once the stream is closed: the number may be reused).
        self.fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        # The reader, the writer and the watches all write (a claim's answer comes any time).
        self._send_lock = trio.Lock()
        self._torn = False  # a write was cut short: the stream holds half a frame

    def unsent(self) -> Iterator[Answer]:
        """Every answer not gone yet: queued, then those of the requests being read."""
        return itertools.chain(self.queue, self.batch)

    def drop_unsent(self) -> None:
        """The connection is over: the items its unsent answers hand out go back."""
        self.fd = -1  # answers still waiting on the disk must not write to a reused fd
        for answer in self.unsent():
            self.lost(answer)
        self.queue.clear()
        self.batch = []

    def reading_done(self) -> None:
        """No more answers will be queued; the writer ends once every one is out."""
        self.reading = False
        self._changed.set()

    async def flush(self, answers: list[Answer], input_waiting: Callable[[], bool]) -> None:
        """Answer ``answers`` in order: what may go now is written, the rest goes out from the
        flush that makes it durable. Returns once the socket took what could go now, so a client
        that does not read its answers is not read from either. ``input_waiting`` says whether
        another client has bytes for the broker (then a durable wait is left to batch)."""
        # Unsent answers are requests in flight (one encoded ahead commits only as it goes):
        # the protocol's limit bounds the queue.
        self.queue.extend(answers)
        self.pump()
        if self.queue and self.queue[0].db is not None:
            # Its answer goes out from this flush, if nothing else could join it.
            self.queue[0].db.flush_if_alone(input_waiting)
        if self.pending:
            await self.write(b"")

    def pump(self) -> None:
        """Encode the answers at the head of the queue that may go, and write them; for the
        first that may not yet, ask its database to call again once it may. No await: this
        runs from the flush loop too."""
        queue = self.queue
        if self.pending:
            return  # the socket is full: whoever writes the backlog pumps again (see write)
        data = bytearray()
        while queue:
            answer = queue[0]
            if not answer.settled:
                if not answer.waiting:
                    answer.waiting = True
                    # Encoded now, so that only the write is left once the fsync returns:
                    # code run right after the process slept in the fsync runs several times
                    # slower than the same code run now (docs/BENCHMARKS.md).
                    answer.data = self._encode_ahead(answer.message)
                    assert answer.db is not None
                    answer.db.when_durable(answer.ticket, self.pump)
                break
            queue.popleft()
            try:
                data += self._encode_answer(answer)
            except Exception:  # a bug; the answers behind it must not be stuck
                logger.exception("session %d: an answer could not be encoded", self.number)
            if len(data) >= SEND_CHUNK:  # bounds the output buffer: 1 MiB pieces
                self.emit(data)
                data = bytearray()
                if self.pending:
                    break  # the socket is full: the writer pumps again once it wrote
        if data:
            self.emit(data)
        if not queue and not self.reading:
            self._changed.set()  # the writer may end

    def emit(self, data: bytes | bytearray) -> None:
        """Write ``data`` now if the socket takes it and nothing else is being written; the
        rest goes to the writer task. Nothing is lost either way: a failed write is the writer's
        to find (its send fails the same way and ends the session)."""
        sent = 0
        if self.fd >= 0 and not self.pending and not self._send_lock.locked() and not self._torn:
            try:
                sent = os.write(self.fd, data)
            except OSError:  # full (BlockingIOError), or the peer is gone
                sent = 0
            if sent == len(data):
                return
        self.pending += memoryview(data)[sent:]
        self._changed.set()

    async def wait_drained(self) -> None:
        """Until the socket took every byte emitted so far (a watch's pace is its reader's)."""
        while self.pending:
            await self._drained.wait()

    # -- the writer task -------------------------------------------------------------------

    async def writer(self, session_scope: trio.CancelScope) -> None:
        """Write what the socket did not take at once, until the reading is over and every
        answer is out; a lost peer ends the session."""
        try:
            while True:
                if self._torn:  # a write was cut short (the peer left): nothing more can go
                    session_scope.cancel()
                    return
                if self.pending:
                    await self.write(b"")
                    continue
                if not self.reading and not self.queue:
                    return
                await self._changed.wait()
                self._changed = trio.Event()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            session_scope.cancel()  # the peer is gone: stop reading for it too

    async def write(self, data: bytes | bytearray) -> None:
        """Write the backlog (it goes first, with every answer that may go after it), then
        ``data``, holding the send lock."""
        lock = self._send_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()  # no yield when nobody else is writing: send_all yields anyway
        try:
            while self.pending:
                queued, self.pending = self.pending, bytearray()
                await self._send_all(queued)
                if not self.pending:
                    self.pump()  # encoding paused at SEND_CHUNK: the next piece (into pending)
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

    # -- encoding ----------------------------------------------------------------------------

    def lost(self, answer: Answer) -> None:
        """``answer`` will never reach the client: the item it hands out, if any, goes back."""
        if answer.claim is not None and answer.db is not None:
            self._lost(answer)

    def _encode_answer(self, answer: Answer) -> bytes:
        """``answer``'s message as bytes (its database failed: ``unavailable`` instead);
        nothing once a Goodbye went."""
        if self._said_goodbye:
            self.lost(answer)
            return b""
        message = answer.message
        if answer.db is not None and not answer.db.is_durable(answer.ticket):
            assert isinstance(message, Response)
            message = Response.fail(message.id, answer.db.unavailable())
            answer.data = None
        if isinstance(message, Goodbye):
            self._said_goodbye = True
        elif answer.op:
            self._count(answer, message)
        data, went = self.encode(message, answer.data)
        if answer.claim is not None and answer.db is not None:
            if went and message is answer.message:
                assert isinstance(message, Response)
                self._sent(message, answer.db, answer.claim)
            else:
                self.lost(answer)  # the item's answer never goes
        return data

    def _count(self, answer: Answer, message: Message) -> None:
        """Count ``answer`` (going out as ``message``) by its operation and code, and time it
        from the read of its request, unless it waited (then its time is the wait's)."""
        error = message.error if isinstance(message, Response) else None
        code = "ok" if error is None else str(error.get("code", ErrorCode.INTERNAL.value))
        took = time.perf_counter() - answer.began if answer.began else None
        self._stats.answered(answer.op, code, took)

    def _encode_ahead(self, message: Message) -> bytes | None:
        """``message``'s bytes before it may go (None if that fails: :meth:`encode` then
        deals with it when it may go)."""
        try:
            return self.conn.encode(message)
        except LocalProtocolError:
            return None

    def encode(self, message: Message, ready: bytes | None = None) -> tuple[bytes, bool]:
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
                raise  # a bug of ours: pump logs it
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
