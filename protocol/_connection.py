"""The sans-I/O connection: bytes in, events out; messages in, bytes out; order rules in between."""

from __future__ import annotations

import enum

import msgpack

from ._codec import WireError, pack, packer, unpack
from ._errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ._framing import FrameReader, frame
from ._limits import UINT64_MAX, Limits
from ._messages import (
    PUSH,
    ConnectionClosed,
    Event,
    Goodbye,
    Hello,
    Message,
    Push,
    Request,
    Response,
    Welcome,
    decode,
)
from ._messages import _check_uint as check_uint
from ._named_tuple import NamedTuple

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any, Final, NoReturn

# A Push is the msgpack array [PUSH, stream, event]: its header and kind, packed once.
_PUSH_HEAD: Final = bytes((0x93, PUSH))


class Role(enum.Enum):
    """Which end of the connection this object plays."""

    CLIENT = "client"
    SERVER = "server"


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData.NEED_DATA
"""Returned by :meth:`Connection.next_event` when no complete frame is buffered."""

_SENDS: Final[dict[Role, tuple[type[Message], ...]]] = {
    Role.CLIENT: (Hello, Request, Goodbye),
    Role.SERVER: (Welcome, Response, Push, Goodbye),
}
_RECEIVES: Final[dict[Role, tuple[type[Message], ...]]] = {
    Role.CLIENT: (Welcome, Response, Push, Goodbye),
    Role.SERVER: (Hello, Request, Goodbye),
}
_DEFAULT_LIMITS: Final = Limits()

# The order rules of docs/PROTOCOL.md, written once for both directions. A connection moves
# through three phases, alike at both ends: before Hello; Hello done (sent by a client, received
# by a server); Welcome done (received by a client, sent by a server).
_START: Final = 0
_HELLO: Final = 1
_WELCOME: Final = 2
# Refusals are worded for the direction: index 0 for a message received, 1 for one sent.
_RECEIVED: Final = False
_SENT: Final = True
_NEVER: Final = ("", "")


class _Order(NamedTuple):
    """When one kind of message may pass, received or sent: in the phases from ``earliest`` to
    ``latest``; Hello and Welcome each move the connection to the next phase (``advances``)."""

    earliest: int
    latest: int
    advances: bool
    too_early: tuple[str, str]  # (received, sent)
    too_late: tuple[str, str]


_ORDER: Final[dict[type[Message], _Order]] = {
    Hello: _Order(_START, _START, True, _NEVER, ("a second Hello", "Hello was already sent")),
    Welcome: _Order(
        _HELLO,
        _HELLO,
        True,
        ("Welcome before the client sent Hello", "Welcome before receiving Hello"),
        ("a second Welcome", "Welcome was already sent"),
    ),
    # A client may send Requests right after its Hello, before the Welcome comes.
    Request: _Order(
        _HELLO, _WELCOME, False, ("Request before Hello", "the first message must be Hello"), _NEVER
    ),
    Response: _Order(_WELCOME, _WELCOME, False, ("Response before Welcome",) * 2, _NEVER),
    Push: _Order(_WELCOME, _WELCOME, False, ("Push before Welcome",) * 2, _NEVER),
    Goodbye: _Order(_START, _WELCOME, False, _NEVER, _NEVER),
}
# What commit() was handed that is no message at all: no rule stops it, as none ever did.
_ANYTIME: Final = _Order(_START, _WELCOME, False, _NEVER, _NEVER)
_NOT_IN_FLIGHT: Final = (
    "Response to id {}, which is not in flight",
    "no Request with id {!r} is in flight",
)
# send_push checks the order rules with a Push of its own: only the kind matters to them.
_SOME_PUSH: Final = Push(0, {})


def _order_of(message: object) -> _Order:
    """The rule of a message whose type is a subclass of a message type (or of no message)."""
    for kind, order in _ORDER.items():
        if isinstance(message, kind):
            return order
    return _ANYTIME


class ConnectionStatistics(NamedTuple):
    """A snapshot of a connection's counters, for logs and debugging."""

    buffered_bytes: int
    in_flight: int
    messages_sent: int
    messages_received: int


class Connection:
    """One end of a ProntoDB connection, with no I/O of its own (in the manner of h11).

    Feed received bytes to :meth:`receive_data` and pull messages with :meth:`next_event`; turn
    messages into bytes with :meth:`send` and write them yourself. The order rules of
    docs/PROTOCOL.md are enforced both ways, and so is the pairing of requests and responses: a
    request id stays *in flight* from its Request until its Response, and at most
    ``limits.max_in_flight`` may be in flight at once. ``role`` and ``limits`` are the
    constructor's arguments.
    """

    def __init__(self, role: Role, limits: Limits = _DEFAULT_LIMITS) -> None:
        self.role: Final = role
        self.limits: Final = limits
        self._reader = FrameReader(limits.max_frame_size)
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._phase = _START
        self._goodbye_sent = False
        self._goodbye_received = False
        self._in_flight: set[int] = set()
        self._sent = 0
        self._received = 0
        self._packb = packer()

    @property
    def buffered_bytes(self) -> int:
        """Received bytes not yet returned as events."""
        return len(self._reader)

    def statistics(self) -> ConnectionStatistics:
        """Counters: buffered bytes, requests awaiting a response, messages sent and received."""
        return ConnectionStatistics(
            len(self._reader), len(self._in_flight), self._sent, self._received
        )

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes read from the peer; ``b""`` means the peer closed its side (EOF)."""
        if self._error is not None:
            raise self._error.with_traceback(None)
        if not data:
            self._eof = True
        elif self._eof:
            raise LocalProtocolError(ErrorCode.PROTOCOL, "received data after EOF")
        else:
            self._reader.feed(data)

    def next_event(self) -> Event | _NeedData:
        """The next message, :class:`ConnectionClosed` after a clean EOF, or :data:`NEED_DATA`.

        Raises :class:`RemoteProtocolError` for anything the peer got wrong; from then on every
        call raises that same error.
        """
        if self._error is not None:
            raise self._error.with_traceback(None)
        try:
            body = self._reader.next_frame()
            if body is None:
                if not self._eof:
                    return NEED_DATA
                if len(self._reader):
                    raise WireError(f"connection closed inside a frame ({len(self._reader)} bytes)")
                return ConnectionClosed()
            message = decode(unpack(body, self.limits))
            self._accept_received(message)
        except WireError as exc:
            self._die(exc)
        self._received += 1
        return message

    def _die(self, exc: WireError) -> NoReturn:
        self._error = RemoteProtocolError(exc.code, exc.message)
        raise self._error from None

    def _accept_received(self, message: Message) -> None:
        if self._goodbye_received:
            raise WireError(f"{type(message).__name__} received after the peer's Goodbye")
        if not isinstance(message, _RECEIVES[self.role]):
            raise WireError(f"a {self.role.value} cannot receive {type(message).__name__}")
        self._take(message, self._check_order(message, _RECEIVED), _RECEIVED)

    def _check_order(self, message: Message, sent: bool) -> _Order:
        """Whether ``message`` may pass now, the way ``sent`` says; returns its rule."""
        order = _ORDER.get(type(message)) or _order_of(message)
        phase = self._phase
        if phase < order.earliest:
            raise WireError(order.too_early[sent])
        if phase > order.latest:
            raise WireError(order.too_late[sent])
        if isinstance(message, Request):
            if message.id in self._in_flight:
                raise WireError(f"Request id {message.id} is already in flight")
            self._check_in_flight_room()
        elif isinstance(message, Response) and message.id not in self._in_flight:
            raise WireError(_NOT_IN_FLIGHT[sent].format(message.id))
        return order

    def _take(self, message: Message, order: _Order, sent: bool) -> None:
        """Record that ``message``, checked by :meth:`_check_order`, passed."""
        if order.advances:
            self._phase += 1
        elif isinstance(message, Request):
            self._in_flight.add(message.id)
        elif isinstance(message, Response):
            self._in_flight.remove(message.id)
        elif isinstance(message, Goodbye):
            if sent:
                self._goodbye_sent = True
            else:
                self._goodbye_received = True

    def _check_in_flight_room(self) -> None:
        """A Request (sent or received) needs a free slot: at most max_in_flight await a Response."""
        if len(self._in_flight) >= self.limits.max_in_flight:
            raise WireError(
                f"{len(self._in_flight)} requests are already in flight, the most max_in_flight "
                f"({self.limits.max_in_flight}) allows; wait for a Response before sending another",
                ErrorCode.TOO_LARGE,
            )

    # -- sending -----------------------------------------------------------------------------

    @property
    def peer_broke_protocol(self) -> bool:
        """Whether a RemoteProtocolError was raised: from then on only a Goodbye may be sent."""
        return self._error is not None

    def send(self, message: Message) -> bytes:
        """Encode ``message`` as one frame and return its bytes, for the caller to write.

        Atomic: on :class:`LocalProtocolError` (wrong order, bad field, code ``too_large`` for a
        limit) nothing changes and the connection stays usable. After a RemoteProtocolError only a
        Goodbye may still be sent; after our own Goodbye nothing may.
        """
        data = self.encode(message)
        self.commit(message)
        return data

    def encode(self, message: Message) -> bytes:
        """The frame :meth:`send` would return for ``message``, checked the same way, but not
        sent yet: nothing changes until :meth:`commit`. A server encodes an answer while it
        waits for its fsync, so that only the write is left once the fsync returns.
        """
        if not isinstance(message, _SENDS[self.role]):
            raise LocalProtocolError(
                ErrorCode.PROTOCOL, f"a {self.role.value} cannot send {type(message).__name__}"
            )
        try:
            wire = message.to_wire()
            if type(message) is Response and message.error is None:
                # The one check a successful Response's shape needs (its result is any value,
                # which pack checks): most of what a broker sends, so no full decode for it.
                check_uint(message.id, "Response id")
            else:
                decode(wire)  # the shape checks the peer will make; ids are now known to be ints
            return frame(pack(wire, self.limits, self._packb), self.limits.max_frame_size)
        except WireError as exc:
            raise LocalProtocolError(exc.code, exc.message) from None

    def commit(self, message: Message) -> None:
        """Record that ``message``, as :meth:`encode` made it, goes out now: the order rules
        are checked here (LocalProtocolError, with nothing changed, if it may not go now)."""
        try:
            order = self._check_send(message)
        except WireError as exc:
            raise LocalProtocolError(exc.code, exc.message) from None
        self._take(message, order, _SENT)
        self._sent += 1

    def pack_event(self, event: dict[str, Any]) -> bytes:
        """Check and encode a Push's event once, for :meth:`send_push` to send to many streams
        (a watch fan-out sends the same event to every watcher). WireError-free: raises
        LocalProtocolError as :meth:`send` does."""
        if not isinstance(event, dict):
            raise LocalProtocolError(ErrorCode.PROTOCOL, "a Push event must be a map")
        try:
            return pack(event, self.limits)
        except WireError as exc:
            raise LocalProtocolError(exc.code, exc.message) from None

    def send_push(self, stream: int, packed_event: bytes) -> bytes:
        """The frame of ``Push(stream, event)`` for an event :meth:`pack_event` encoded: the same
        bytes :meth:`send` makes, without checking and encoding the event again."""
        try:
            self._check_send(_SOME_PUSH)
            if not isinstance(stream, int) or not 0 <= stream <= UINT64_MAX:
                raise WireError(f"Push stream must be an unsigned 64-bit integer, not {stream!r}")
            head = _PUSH_HEAD + msgpack.packb(stream)
            data = frame(head + packed_event, self.limits.max_frame_size)
        except WireError as exc:
            raise LocalProtocolError(exc.code, exc.message) from None
        self._sent += 1
        return data

    def _check_send(self, message: Message) -> _Order:
        if self._goodbye_sent:
            raise WireError(f"cannot send {type(message).__name__} after our Goodbye")
        if self._error is not None and not isinstance(message, Goodbye):
            name = type(message).__name__
            raise WireError(f"cannot send {name}: the peer broke the protocol, only Goodbye")
        return self._check_order(message, _SENT)
