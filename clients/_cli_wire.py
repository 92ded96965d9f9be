"""The fast path's client: the CLI's common commands over one Unix socket, in one round trip.

Hand-written, because the sync client cannot start fast enough: importing it (the protocol with
msgpack, enum and named tuples, the pipeline, its threads' locks) cost a ``prontodb get`` about
18 ms of CPU on top of the interpreter's 10 (docs/BENCHMARKS.md, "CLI start-up"), while this
module and ``_socket`` cost under 1. It speaks the protocol of docs/PROTOCOL.md for one purpose: Hello and
the first Request go in one write (the protocol allows Requests before the Welcome), the Welcome
and the Response come back in one read, in msgpack written by hand for the value types the
protocol allows. Each method sends the request its namesake of the sync client sends, and
tests/test_cli_parity.py runs every fast form through both clients and compares what they print.

Whatever it cannot do the way the sync client would, it leaves to it, before anything was sent or
once the broker has said that nothing was done (a Goodbye instead of the Welcome): another URL
scheme (TCP, TLS), no broker answering (the sync client starts one, or says why not), a value it
cannot encode, a greeting refused.
"""

from __future__ import annotations

import _socket
import os

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any


PROTOCOL_VERSION = 1
_HELLO, _WELCOME, _REQUEST, _RESPONSE, _GOODBYE = 0, 1, 2, 3, 5
_GREETING_TIMEOUT = 10.0  # seconds, as the sync client's connect() waits for the Welcome
_PAGE_FIELD = {"keys": "keys", "scan": "items"}
_LOST = (
    "The connection to the broker was lost; the request may or may not have been applied. "
    "Connect again, and re-read before retrying a write."
)


class Declined(Exception):
    """Nothing was done at the broker: the sync client takes the command over."""


# -- msgpack, the protocol's value types only ----------------------------------------------------


def pack(obj: Any, out: bytearray) -> None:
    """Append ``obj`` to ``out``; Declined for a type (or a str) msgpack would refuse."""
    if obj is None or obj is True or obj is False:
        out.append(0xC0 if obj is None else 0xC3 if obj else 0xC2)
    elif isinstance(obj, int):
        _pack_int(obj, out)
    elif isinstance(obj, float):
        import _struct  # only a value or an option with a fraction needs it

        out.append(0xCB)
        out += _struct.pack(">d", obj)
    elif isinstance(obj, str):
        try:
            data = obj.encode()
        except UnicodeEncodeError:  # a lone surrogate: the sync client says what is wrong
            raise Declined from None
        _header(out, len(data), 0xA0, 32, 0xDA)
        out += data
    elif isinstance(obj, bytes):
        _header(out, len(obj), None, 0, 0xC5)
        out += obj
    elif isinstance(obj, list | tuple):
        _header(out, len(obj), 0x90, 16, 0xDC)
        for item in obj:
            pack(item, out)
    elif isinstance(obj, dict):
        _header(out, len(obj), 0x80, 16, 0xDE)
        for key, value in obj.items():
            pack(key, out)
            pack(value, out)
    else:
        raise Declined


def _pack_int(number: int, out: bytearray) -> None:
    if -32 <= number < 128:
        out.append(number & 0xFF)
    elif -(2**63) <= number < 2**63:
        out.append(0xD3)
        out += number.to_bytes(8, "big", signed=True)
    elif 0 <= number < 2**64:
        out.append(0xCF)
        out += number.to_bytes(8, "big")
    else:
        raise Declined  # the sync client says it is out of range


def _header(out: bytearray, size: int, fix: int | None, fix_limit: int, wide: int) -> None:
    """A length header: the fix form below ``fix_limit``, else 16 bits (``wide``), else 32."""
    if fix is not None and size < fix_limit:
        out.append(fix | size)
    elif size < 0x10000:
        out.append(wide)
        out += size.to_bytes(2, "big")
    else:
        out.append(wide + 1)
        out += size.to_bytes(4, "big")


_CONSTANTS = {0xC0: None, 0xC2: False, 0xC3: True}
# Formats by first byte: (kind, bytes of the length or value that follow).
_SIZED = {
    0xC4: ("bin", 1), 0xC5: ("bin", 2), 0xC6: ("bin", 4),
    0xD9: ("str", 1), 0xDA: ("str", 2), 0xDB: ("str", 4),
    0xDC: ("array", 2), 0xDD: ("array", 4), 0xDE: ("map", 2), 0xDF: ("map", 4),
    0xCC: ("uint", 1), 0xCD: ("uint", 2), 0xCE: ("uint", 4), 0xCF: ("uint", 8),
    0xD0: ("int", 1), 0xD1: ("int", 2), 0xD2: ("int", 4), 0xD3: ("int", 8),
    0xCA: ("float", 4), 0xCB: ("float", 8),
}  # fmt: skip


def unpack(data: bytes, pos: int = 0) -> tuple[Any, int]:
    """The object at ``data[pos:]`` and the position after it (the broker's answers are valid
    msgpack without ext types: anything else raises ValueError)."""
    first = data[pos]
    pos += 1
    if first < 0x80 or first >= 0xE0:
        return (first if first < 0x80 else first - 0x100), pos
    if first <= 0x8F:
        return _items("map", first & 0x0F, data, pos)
    if first <= 0x9F:
        return _items("array", first & 0x0F, data, pos)
    if first <= 0xBF:
        end = pos + (first & 0x1F)
        return data[pos:end].decode(), end
    if first in _CONSTANTS:
        return _CONSTANTS[first], pos
    kind, width = _SIZED[first]  # KeyError: an ext type or a reserved byte
    raw = data[pos : pos + width]
    pos += width
    if kind in ("uint", "int"):
        return int.from_bytes(raw, "big", signed=kind == "int"), pos
    if kind == "float":
        import _struct

        return _struct.unpack(">f" if width == 4 else ">d", raw)[0], pos
    size = int.from_bytes(raw, "big")
    if kind in ("map", "array"):
        return _items(kind, size, data, pos)
    chunk = data[pos : pos + size]
    return (chunk.decode() if kind == "str" else bytes(chunk)), pos + size


def _items(kind: str, count: int, data: bytes, pos: int) -> tuple[Any, int]:
    if kind == "array":
        items = []
        for _ in range(count):
            item, pos = unpack(data, pos)
            items.append(item)
        return items, pos
    mapping = {}
    for _ in range(count):
        key, pos = unpack(data, pos)
        mapping[key], pos = unpack(data, pos)
    return mapping, pos


def _frame(message: list[Any]) -> bytes:
    body = bytearray()
    pack(message, body)
    return len(body).to_bytes(4, "big") + body


# -- the client ---------------------------------------------------------------------------------


class WireClient:
    """A greeting and requests on one connection, for the ``_cli_commands`` bodies that use
    only the methods below (each as the sync client's of the same name)."""

    def __init__(self, sock: _socket.socket, hello: bytes, cursor: str) -> None:
        self._sock = sock
        self._hello = hello  # sent with the first request, then b""
        self._buffer = b""
        self._next_id = 1
        self.cursor = cursor

    @classmethod
    def connect(cls, url: str | None, user: str | None, cursor: str, name: str) -> WireClient:
        """A client connected to ``url`` as ``user`` on ``cursor`` (not greeted yet: the first
        request greets); Declined when the sync client should connect instead."""
        from ._locations import default_url

        url = url or default_url()
        if not url.startswith("unix:///"):
            raise Declined
        user = user or os.environ.get("PRONTODB_USER")
        token = os.environ.get("PRONTODB_TOKEN") or None
        fields: dict[str, Any] = {"version": PROTOCOL_VERSION, "client": name, "user": user}
        if user is None:  # as the sync client: the login name, a guess a token overrides
            fields["user"] = _login_name()
            if token is not None:
                fields["user_default"] = True
        if token is not None:
            fields["token"] = token
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(_GREETING_TIMEOUT)
        try:
            sock.connect(url.removeprefix("unix://"))
        except OSError:
            sock.close()
            raise Declined from None  # the sync client says why, or starts a broker
        return cls(sock, _frame([_HELLO, fields]), cursor)

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._sock.sendall(
                _frame([_GOODBYE, {"code": None, "message": "The client is closing."}])
            )
        except OSError:
            pass  # the broker is gone already: nothing to say goodbye to
        finally:
            self._sock.close()

    def _call(self, op: str, args: dict[str, Any]) -> Any:
        request = _frame([_REQUEST, self._next_id, op, args])  # Declined: nothing sent yet
        greeting, self._hello = self._hello, b""
        try:
            self._sock.sendall(greeting + request)
            if greeting:
                self._greeted()
            message = self._receive()
        except (OSError, IndexError, KeyError, ValueError):
            raise _lost() from None
        self._next_id += 1
        if message[0] != _RESPONSE:
            raise _lost()
        if message[2] is not None:
            from prontodb.protocol import ProntoError

            raise ProntoError.from_wire(message[2])
        return message[3]

    def _greeted(self) -> None:
        """Read the Welcome; Declined if the broker said Goodbye (then it did nothing)."""
        try:
            message = self._receive()
        except (OSError, IndexError, KeyError, ValueError):
            raise _lost() from None
        if message[0] == _GOODBYE:
            raise Declined
        if message[0] != _WELCOME or message[1].get("version") != PROTOCOL_VERSION:
            raise _lost()
        self._sock.settimeout(None)  # a request takes as long as it takes, as the sync client's

    def _receive(self) -> list[Any]:
        """The next message; ValueError at EOF."""
        while True:
            if len(self._buffer) >= 4:
                end = 4 + int.from_bytes(self._buffer[:4], "big")
                if len(self._buffer) >= end:
                    message: list[Any] = unpack(self._buffer[4:end])[0]
                    self._buffer = self._buffer[end:]
                    return message
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ValueError("EOF")
            self._buffer += chunk

    def _args(self, **args: Any) -> dict[str, Any]:
        args["cursor"] = self.cursor
        return args

    # -- the operations, as the sync client's ---------------------------------------------------

    def get(self, key: str) -> Any:
        return self._call("get", self._args(key=key))

    def exists(self, key: str) -> bool:
        found: bool = self._call("exists", self._args(key=key))
        return found

    def mget(self, keys: Sequence[str]) -> list[Any]:
        values: list[Any] = self._call("mget", self._args(keys=list(keys)))
        return values

    def mset(self, items: Mapping[str, Any]) -> int:
        revision: int = self._call("mset", self._args(items=dict(items)))
        return revision

    def set(self, key: str, value: Any, **options: Any) -> int:
        """``options``: as the sync client's (``fence`` as a pair, the rest as sent), each left
        out when None or False."""
        args = self._args(key=key, value=value)
        for name, option in options.items():
            if option is None or option is False:
                continue
            if name == "fence":
                args["fence"] = {"name": option[0], "token": option[1]}
            elif name == "after":
                args["after"] = list(option)
            else:
                args[name] = option
        revision: int = self._call("set", args)
        return revision

    def delete(self, key: str, *, fence: tuple[str, int] | None = None) -> bool:
        existed: bool = self._fenced("del", key, fence)
        return existed

    def incr(self, key: str, by: int = 1, *, fence: tuple[str, int] | None = None) -> int:
        total: int = self._fenced("incr", key, fence, by=by)
        return total

    def decr(self, key: str, by: int = 1, *, fence: tuple[str, int] | None = None) -> int:
        total: int = self._fenced("decr", key, fence, by=by)
        return total

    def _fenced(self, op: str, key: str, fence: tuple[str, int] | None, **args: Any) -> Any:
        request = self._args(key=key, **args)
        if fence is not None:
            request["fence"] = {"name": fence[0], "token": fence[1]}
        return self._call(op, request)

    def keys(self, prefix: str = "") -> list[str]:
        return self._listing("keys", prefix)

    def scan(self, prefix: str = "") -> list[tuple[str, Any]]:
        return [(key, value) for key, value in self._listing("scan", prefix)]

    def _listing(self, op: str, prefix: str) -> list[Any]:
        """Every page, asking again ``after`` the last key while there is ``more``."""
        found: list[Any] = []
        args = self._args(prefix=prefix)
        while True:
            page = self._call(op, dict(args))
            entries = page[_PAGE_FIELD[op]]
            found.extend(entries)
            if not page["more"] or not entries:
                return found
            args["after"] = entries[-1] if op == "keys" else entries[-1][0]

    def expire(self, key: str, seconds: float) -> bool:
        existed: bool = self._call("expire", self._args(key=key, seconds=seconds))
        return existed

    def persist(self, key: str) -> bool:
        had: bool = self._call("persist", self._args(key=key))
        return had

    def ttl(self, key: str) -> float | None:
        answer = self._call("ttl", self._args(key=key))
        if not answer["exists"]:
            from prontodb.protocol import ErrorCode, ProntoError

            raise ProntoError(ErrorCode.NOT_FOUND, f"There is no key {key!r} to have a TTL.")
        remaining: float | None = answer["ttl"]
        return remaining

    def caches(self) -> dict[str, float]:
        found: dict[str, float] = self._call("caches", self._args())
        return found

    def claim(
        self,
        prefix: str,
        *,
        wait: float | None = None,
        lease: float | None = None,
        max_deliveries: int | None = None,
    ) -> Claimed | None:
        """As the sync client's, without ``wait`` (a claim that waits is the sync client's: it
        tells the broker when it gives up)."""
        if wait:
            raise Declined  # nothing sent yet: never the case, run() keeps it off this client
        args = self._args(prefix=prefix)
        if lease is not None:
            args["lease"] = lease
        if max_deliveries is not None:
            args["max_deliveries"] = max_deliveries
        got = self._call("claim", args)
        return None if got is None else Claimed(got)

    def ack(self, key: str, token: int) -> None:
        self._call("ack", self._args(key=key, token=token))

    def release(
        self, key: str, token: int, *, delay: float | None = None, priority: int | None = None
    ) -> None:
        args = self._args(key=key, token=token)
        if delay:
            args["delay"] = delay
        if priority is not None:
            args["priority"] = priority
        self._call("release", args)

    def extend(self, key: str, token: int, lease: float) -> float:
        deadline: float = self._call("extend", self._args(key=key, token=token, lease=lease))
        return deadline

    def unlock(self, name: str, token: int) -> bool:
        left: bool = self._call("unlock", self._args(name=name, token=token))
        return left


class Claimed:
    """An item claimed, with what the claim command reads of the sync client's ``Claimed``."""

    __slots__ = ("deliveries", "key", "lease", "token", "value")

    def __init__(self, got: dict[str, Any]) -> None:
        self.key: str = got["key"]
        self.value: Any = got["value"]
        self.token: int = got["token"]
        self.lease: float = got["lease"]
        self.deliveries: int = got["deliveries"]

    def _asdict(self) -> dict[str, Any]:
        return {
            name: getattr(self, name) for name in ("key", "value", "token", "lease", "deliveries")
        }


def _login_name() -> str:
    """``getpass.getuser()``'s answer, found as it finds it: getpass itself would load contextlib,
    warnings and termios, about 2 ms."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        user = os.environ.get(name)
        if user:
            return user
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _lost() -> Exception:
    from prontodb.protocol import ErrorCode, ProntoError

    return ProntoError(ErrorCode.UNAVAILABLE, _LOST)
