"""The six message kinds, their wire shapes (msgpack arrays led by the kind) and their checks.

Messages are named tuples (immutable, cheap to import: the CLI starts with them). Each class's
``to_wire`` builds the array; :func:`decode` is the one place that checks a shape, used
on received arrays and, by the Connection, on the arrays it is about to send.
"""

from __future__ import annotations

from ._codec import WireError
from ._errors import ErrorCode, ProntoError, ProtocolError
from ._limits import UINT64_MAX
from ._named_tuple import NamedTuple

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final, TypeAlias

PROTOCOL_VERSION: Final = 1

# The kind that leads each message's array.
HELLO: Final = 0
WELCOME: Final = 1
REQUEST: Final = 2
RESPONSE: Final = 3
PUSH: Final = 4
GOODBYE: Final = 5


class Hello(NamedTuple):
    """Client to server, first message: who is connecting, with an optional token.

    ``user_default`` says that ``user`` is only the client's guess (the login name): a token that
    belongs to a user makes the connection that user's.
    """

    client: str
    user: str
    token: str | None = None
    version: int = PROTOCOL_VERSION
    user_default: bool = False

    def to_wire(self) -> list[Any]:
        fields: dict[str, Any] = {"version": self.version, "client": self.client, "user": self.user}
        if self.token is not None:
            fields["token"] = self.token
        if self.user_default:
            fields["user_default"] = True
        return [HELLO, fields]


class Welcome(NamedTuple):
    """Server to client, the answer to Hello: the session's number, the server's limits, and the
    user the connection acts for (None from a server that does not say)."""

    server: str
    session: int
    limits: dict[str, int]
    version: int = PROTOCOL_VERSION
    user: str | None = None

    def to_wire(self) -> list[Any]:
        fields: dict[str, Any] = {
            "version": self.version,
            "server": self.server,
            "session": self.session,
            "limits": self.limits,
        }
        if self.user is not None:
            fields["user"] = self.user
        return [WELCOME, fields]


class Request(NamedTuple):
    """Client to server: run operation ``op`` with ``args``; ``id`` (uint64) names the answer."""

    id: int
    op: str
    args: dict[str, Any]

    def to_wire(self) -> list[Any]:
        return [REQUEST, self.id, self.op, self.args]


class Response(NamedTuple):
    """Server to client: the one answer to the request ``id``, either an error map or a result."""

    id: int
    error: dict[str, Any] | None
    result: Any

    @classmethod
    def fail(cls, id: int, err: ProntoError) -> Response:
        """The error response to request ``id``: ``err``'s wire map and no result."""
        return cls(id, err.to_wire(), None)

    @property
    def ok(self) -> bool:
        """True when the request succeeded."""
        return self.error is None

    def raise_for_error(self) -> Any:
        """Raise the response's error as a :class:`ProntoError`, or return its result."""
        if self.error is not None:
            raise ProntoError.from_wire(self.error)
        return self.result

    def to_wire(self) -> list[Any]:
        return [RESPONSE, self.id, self.error, self.result]


class Push(NamedTuple):
    """Server to client: one event of the stream opened by the request whose id is ``stream``."""

    stream: int
    event: dict[str, Any]

    def to_wire(self) -> list[Any]:
        return [PUSH, self.stream, self.event]


class Goodbye(NamedTuple):
    """Either side, last message it sends: why it is closing (``code`` None for a plain close)."""

    code: ErrorCode | None
    message: str

    @classmethod
    def from_error(cls, err: ProntoError | ProtocolError) -> Goodbye:
        """The Goodbye that reports ``err`` to the peer."""
        return cls(err.code, err.message)

    def to_wire(self) -> list[Any]:
        code: Any = self.code
        if code is not None and not isinstance(code, ErrorCode):
            try:
                code = ErrorCode(code)
            except ValueError:
                raise WireError(f"Goodbye code {code!r} is not an ErrorCode") from None
        return [GOODBYE, {"code": None if code is None else code.value, "message": self.message}]


class ConnectionClosed(NamedTuple):
    """The peer closed its side cleanly, at a frame boundary."""


Message: TypeAlias = Hello | Welcome | Request | Response | Push | Goodbye
Event: TypeAlias = Message | ConnectionClosed


def decode(wire: Any) -> Message:
    """Build the message a wire array describes, or raise WireError saying what is wrong."""
    if not isinstance(wire, list) or not wire:
        raise WireError("a message must be a non-empty array")
    kind = wire[0]
    if not _is_int(kind) or kind not in _SHAPES:
        raise WireError(f"unknown message kind {kind!r}")
    name, length, build = _SHAPES[kind]
    if len(wire) != length:
        raise WireError(f"{name} must be an array of {length} elements, not {len(wire)}")
    return build(wire)


# One builder per kind, each given an array of the right length whose kind is its own.


def _hello(wire: list[Any]) -> Hello:
    fields = _fields(wire[1], "Hello")
    token = fields.get("token")
    if token is not None:
        _check_str(token, "Hello token")
    user_default = fields.get("user_default", False)
    if not isinstance(user_default, bool):
        raise WireError(f"Hello user_default must be a boolean, not {type(user_default).__name__}")
    return Hello(
        client=_check_str(_required(fields, "client", "Hello"), "Hello client"),
        user=_check_str(_required(fields, "user", "Hello"), "Hello user"),
        token=token,
        version=_check_uint(_required(fields, "version", "Hello"), "Hello version"),
        user_default=user_default,
    )


def _welcome(wire: list[Any]) -> Welcome:
    fields = _fields(wire[1], "Welcome")
    limits = _fields(_required(fields, "limits", "Welcome"), "Welcome limits")
    for key, value in limits.items():
        _check_uint(value, f"Welcome limit {key}")
    user = fields.get("user")
    return Welcome(
        server=_check_str(_required(fields, "server", "Welcome"), "Welcome server"),
        session=_check_uint(_required(fields, "session", "Welcome"), "Welcome session"),
        limits=limits,
        version=_check_uint(_required(fields, "version", "Welcome"), "Welcome version"),
        user=None if user is None else _check_str(user, "Welcome user"),
    )


def _request(wire: list[Any]) -> Request:
    _, request_id, op, args = wire
    if not _check_str(op, "Request op"):
        raise WireError("Request op must not be empty")
    return Request(_check_uint(request_id, "Request id"), op, _fields(args, "Request args"))


def _response(wire: list[Any]) -> Response:
    _, request_id, error, result = wire
    if error is not None:
        error = _fields(error, "Response error")
        _check_str(_required(error, "code", "Response error"), "Response error code")
        _check_str(_required(error, "message", "Response error"), "Response error message")
        if result is not None:
            raise WireError("a Response with an error must have a nil result")
    return Response(_check_uint(request_id, "Response id"), error, result)


def _push(wire: list[Any]) -> Push:
    _, stream, event = wire
    return Push(_check_uint(stream, "Push stream"), _fields(event, "Push event"))


def _goodbye(wire: list[Any]) -> Goodbye:
    fields = _fields(wire[1], "Goodbye")
    raw_code = _required(fields, "code", "Goodbye")
    message = _check_str(_required(fields, "message", "Goodbye"), "Goodbye message")
    if raw_code is None:
        return Goodbye(None, message)
    try:
        code = ErrorCode(_check_str(raw_code, "Goodbye code"))
    except ValueError:
        code = ErrorCode.INTERNAL  # a code from a newer peer; the message still says why
    return Goodbye(code, message)


# Each kind's name, the length of its array and its builder.
_SHAPES: dict[int, tuple[str, int, Callable[[list[Any]], Message]]] = {
    HELLO: ("Hello", 2, _hello),
    WELCOME: ("Welcome", 2, _welcome),
    REQUEST: ("Request", 4, _request),
    RESPONSE: ("Response", 4, _response),
    PUSH: ("Push", 3, _push),
    GOODBYE: ("Goodbye", 2, _goodbye),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_uint(value: Any, what: str) -> int:
    if not _is_int(value) or not 0 <= value <= UINT64_MAX:
        raise WireError(f"{what} must be an unsigned 64-bit integer, not {value!r:.40}")
    return int(value)


def _check_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise WireError(f"{what} must be a string, not {type(value).__name__}")
    return value


def _fields(value: Any, what: str) -> dict[str, Any]:
    # Map keys are already known to be strings: the codec checks every map it packs or unpacks.
    if not isinstance(value, dict):
        raise WireError(f"{what} must be a map, not {type(value).__name__}")
    return value


def _required(fields: dict[str, Any], key: str, what: str) -> Any:
    try:
        return fields[key]
    except KeyError:
        raise WireError(f"{what} lacks the field {key!r}") from None
