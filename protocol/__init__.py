"""ProntoDB's wire protocol, sans I/O: frames <-> messages, the order rules, the limits, the errors.

A :class:`Connection` turns received bytes into events and messages into bytes; it never reads,
writes, sleeps or looks at a clock, so the server (trio) and the clients (anyio) drive it alike::

    conn = Connection(Role.CLIENT)
    sock.sendall(conn.send(Hello(client="me/1.0", user="alice")))
    conn.receive_data(sock.recv(65536))
    event = conn.next_event()  # a Welcome, or NEED_DATA until its frame is complete

The byte format is specified in docs/PROTOCOL.md.
"""

from ._addresses import LOOPBACK, split_host_port
from ._codec import VALUE_TYPES, check_value
from ._connection import NEED_DATA, Connection, ConnectionStatistics, Role
from ._errors import (
    ERROR_TABLE,
    BadKey,
    BadRequest,
    Compacted,
    CompareFailed,
    Denied,
    ErrorCode,
    ErrorInfo,
    Exists,
    Internal,
    LocalProtocolError,
    NotFound,
    OutOfRange,
    Overflow,
    ProntoError,
    ProtocolError,
    ProtocolViolation,
    QuotaExceeded,
    RemoteProtocolError,
    TimedOut,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnknownOp,
    WrongType,
)
from ._limits import INT64_MAX, INT64_MIN, UINT64_MAX, Limits
from ._messages import (
    PROTOCOL_VERSION,
    ConnectionClosed,
    Event,
    Goodbye,
    Hello,
    Message,
    Push,
    Request,
    Response,
    Welcome,
)
from ._named_tuple import NamedTuple

# The error classes, one per code (ProntoError's subclasses).
ERROR_CLASSES = (
    BadKey,
    BadRequest,
    Compacted,
    CompareFailed,
    Denied,
    Exists,
    Internal,
    NotFound,
    OutOfRange,
    Overflow,
    ProtocolViolation,
    QuotaExceeded,
    TimedOut,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnknownOp,
    WrongType,
)

__all__ = [
    "ERROR_CLASSES",
    "LOOPBACK",
    "BadKey",
    "BadRequest",
    "Compacted",
    "CompareFailed",
    "Denied",
    "Exists",
    "Internal",
    "NotFound",
    "OutOfRange",
    "Overflow",
    "ProtocolViolation",
    "QuotaExceeded",
    "TimedOut",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "UnknownOp",
    "WrongType",
    "check_value",
    "VALUE_TYPES",
    "ERROR_TABLE",
    "INT64_MAX",
    "INT64_MIN",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "Connection",
    "ConnectionClosed",
    "ConnectionStatistics",
    "ErrorCode",
    "ErrorInfo",
    "Event",
    "Goodbye",
    "Hello",
    "Limits",
    "LocalProtocolError",
    "Message",
    "NamedTuple",
    "ProntoError",
    "ProtocolError",
    "RemoteProtocolError",
    "Push",
    "Request",
    "Response",
    "Role",
    "UINT64_MAX",
    "split_host_port",
    "Welcome",
]
