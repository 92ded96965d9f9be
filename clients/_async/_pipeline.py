"""The connection under a client: one socket to a broker, shared by any number of concurrent callers.

Calls made at once are pipelined on the connection, up to the broker's ``max_in_flight``. There is
no background reader: a caller waiting for its answer reads for everyone (see ``Pipeline._wait``).
So this module needs nothing but its backend's sockets, locks and events, and scripts/unasync.py
turns it into the sync client's (threads and blocking sockets instead of tasks and anyio) by
substitution.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from prontodb.protocol import (
    NEED_DATA,
    PROTOCOL_VERSION,
    VALUE_TYPES,
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
from .._types import BrokerUnavailable
from .._urls import Address

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any

# Bytes asked of the socket per read: below malloc's mmap threshold, or each read pays for an mmap.
_CHUNK = 64 * 1024
# Requests that may wait at the broker: given up, they are cancelled there too (see _cancel_claim).
_CANCELLABLE = ("claim", "acquire")
# Requests call_many sends in one write before it reads their answers.
_WINDOW = 512

_LOST = (
    "The connection to the broker was lost; the request may or may not have been applied. "
    "Connect again, and re-read before retrying a write."
)


class _Waiter:
    """One call in progress: its slot, its request id, its response, the event it sleeps on."""

    __slots__ = ("blocking", "event", "has_slot", "queued", "request_id", "response")

    def __init__(self, blocking: bool = False) -> None:
        self.blocking = blocking  # a claim or acquire that waits: its answer may take that long
        self.event: backend.Event | None = None
        self.has_slot = False  # counts towards max_in_flight
        self.queued = False  # in the queue for a slot
        self.request_id = 0  # 0 until its Request is sent
        self.response: Response | None = None


class Pipeline:
    """A greeted connection to a broker: :meth:`call` sends a request and returns its result.

    Open one with :meth:`open`. ``stream`` and ``conn`` (the socket and the protocol's Connection)
    are for a watch, which owns its connection and reads its pushes itself; ``welcome`` is the
    broker's greeting.
    """

    def __init__(self, stream: backend.Stream, conn: Connection, welcome: Welcome) -> None:
        """Private: use :meth:`open`."""
        self.stream = stream
        self.conn = conn
        self.welcome = welcome
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

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        address: Address,
        url: str,
        hello: Hello,
        timeout: float | None,  # noqa: ASYNC109
        tls: Any = None,
    ) -> Pipeline:
        """Connect to ``address`` (``url`` is how errors name it), with TLS if given a context,
        and greet the broker with ``hello``; ``timeout`` bounds the connection and the greeting
        in seconds (None: no limit).

        Raises :class:`BrokerUnavailable` when nothing answers there, and ProntoError when the
        broker refuses the greeting or does not answer it in time.
        """
        stream = await _open(address, url, timeout, tls)
        conn = Connection(Role.CLIENT)
        try:
            try:
                with stream.deadline(timeout):
                    welcome = await _handshake(stream, conn, hello, url)
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
        return cls(stream, conn, welcome)

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
                goodbye = self.conn.send(Goodbye(None, "The client is closing."))
            except LocalProtocolError:
                goodbye = b""
        try:
            if goodbye:
                async with self._send_lock:
                    await self.stream.send_all(goodbye)
        except OSError:
            pass  # the broker is gone already: nothing to say goodbye to
        finally:
            await self.stream.aclose()

    def statistics(self) -> dict[str, int]:
        """Requests ``in_flight`` (sent, unanswered, ``abandoned`` ones included), callers
        ``queued`` for a slot, callers ``waiting`` for an answer, and ``max_in_flight``."""
        with self._mutex:
            return {
                "in_flight": self.conn.statistics().in_flight,
                "abandoned": len(self._abandoned) + len(self._abandoned_waits),
                "queued": len(self._slot_queue),
                "waiting": len(self._waiters),
                "max_in_flight": self._max_in_flight,
            }

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

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        """Send request ``op`` with ``args`` and return its result; ProntoError if it failed."""
        waiter = _Waiter(blocking=op in _CANCELLABLE and bool(args.get("wait")))
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
            if op in _CANCELLABLE and waiter.request_id and not answered:
                await self._cancel_claim(waiter.request_id)
        assert waiter.response is not None
        return waiter.response.raise_for_error()

    async def call_many(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Send every request, a window of them in one write at a time, and return each one's
        result, or the ProntoError it failed with, in order (a failure does not stop the
        others). Two windows are in flight at once, so the broker works on one while this
        reads the answers of the other; together they stay within the in-flight limit."""
        results: list[Any] = []
        window = max(1, min(self._max_in_flight // 2, _WINDOW))
        sent: list[_Waiter] = []  # the window whose answers are still to read
        try:
            for start in range(0, len(requests), window):
                chunk = requests[start : start + window]
                waiters = [_Waiter() for _ in chunk]
                for waiter in waiters:
                    await self._wait(waiter, lambda w=waiter: self._take_slot(w))  # type: ignore[misc]
                await self._send_all(waiters, chunk)
                await self._collect(sent, results)
                sent = waiters
            await self._collect(sent, results)
        finally:
            with self._mutex:
                for waiter in sent:
                    self._settle(waiter)
        return results

    async def _collect(self, waiters: list[_Waiter], results: list[Any]) -> None:
        """Append the answers of ``waiters`` (sent, in order) to ``results``."""
        try:
            for waiter in waiters:
                await self._wait(waiter, lambda w=waiter: w.response is not None)  # type: ignore[misc]
                assert waiter.response is not None
                try:
                    results.append(waiter.response.raise_for_error())
                except ProntoError as err:
                    results.append(err)
        finally:
            with self._mutex:
                for waiter in waiters:
                    self._settle(waiter)

    async def _send_all(
        self, waiters: list[_Waiter], requests: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        """Send ``requests``, each awaited by its waiter, framed together and written at once."""
        frames = []
        async with self._send_lock:
            with self._mutex:
                if self._error is not None:
                    raise _copy(self._error)
                for waiter, (op, args) in zip(waiters, requests, strict=True):
                    request_id = self._next_id
                    try:
                        frames.append(self.conn.send(Request(request_id, op, args)))
                    except LocalProtocolError as exc:
                        raise _refused(exc) from None
                    self._next_id += 1
                    self._unanswered += 1
                    waiter.request_id = request_id
                    self._waiters[request_id] = waiter
            try:
                await self.stream.send_all(frames[0] if len(frames) == 1 else b"".join(frames))
            except OSError:
                # The broker is gone or going. Its Goodbye may still be there to read, and
                # reading is how each call learns of the end (as every other waiting call does).
                pass
            except BaseException:
                # Interrupted inside a frame (sync: KeyboardInterrupt): the stream is corrupt for
                # every caller. Closing it ends the read of whoever is reading.
                with self._mutex:
                    self._fail(ProntoError(ErrorCode.UNAVAILABLE, _LOST))
                await self.stream.aclose()
                raise

    async def _cancel_claim(self, request_id: int) -> None:
        """The caller of claim (or acquire) ``request_id`` gave up before it had the answer:
        tell the broker, so that a waiting claim stops waiting (an acquire leaves its line) and an
        item claimed for it is given back rather than held until its lease ends. Best effort: it never waits for a slot, and its own
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
        await self._send_all([waiter], ((op, args),))

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
                data = await self.stream.receive_some(_CHUNK)
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
            self.conn.receive_data(data)
            while True:
                event = self.conn.next_event()
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
        f"The request cannot be sent ({exc.message}); {VALUE_TYPES}.",
    )


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
            if event.code in (None, ErrorCode.UNAVAILABLE):
                # A broker stopping (an idle exit, a stop) as we came: nothing answers here
                # for us, as if it had gone already, so a CLI starts the next one.
                raise BrokerUnavailable(url, "it is stopping")
            raise ProntoError(event.code, event.message)
        else:
            raise BrokerUnavailable(url, "it closed the connection before a greeting; stopping?")
