"""Protocol fuzzing on live connections of a real broker process.

Many connections each send one kind of abuse: random bytes before and after a valid Hello, valid
traffic with bytes mutated, absurd frame lengths, frames announced and never sent, wrong types in
every field of Hello, Request and the arguments of each operation, deep nesting, oversized values,
unknown ops, truncated frames, half-closed and dropped sockets. Meanwhile a well-behaved client
keeps writing and checking. This proves that the broker survives all of it, refuses each abuse
clearly (a Goodbye with the documented code, or an error Response, and never a hang), answers the
good client right throughout, closes every abusive connection's file descriptor, and logs at most
about a line, with no traceback, per bad connection. One fuzz run serves every case; each case
asserts one of these properties.

The quick run (./scripts/test.sh) uses one fixed seed, so that a check run is repeatable; every
torture run draws a new one. The seed is named in each failure; PRONTODB_FUZZ_SEED=<seed> replays
it.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import string
import struct
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import msgpack
import pytest
from brokers import FD_TIMEOUT, open_fds, running_broker, wait_for_fds
from reliability_kit import Figures, Scale

from prontodb.clients import Client
from prontodb.protocol import ErrorCode, Limits

LIMITS = Limits()  # the broker runs with the defaults
MAX_FRAME = LIMITS.max_frame_size
MAX_VALUE = 1 << 20  # the broker's value limit (docs/PROTOCOL.md, Limits)
READ_TIMEOUT = 30.0  # seconds for the broker to end a conversation; generous on 2 loaded cores
WORKERS = 16  # fuzz connections in flight at once
LOG_LINE_BYTES = 512  # about one line of log per bad connection, at most

KNOWN_CODES = frozenset(code.value for code in ErrorCode)
WELCOME, RESPONSE, PUSH, GOODBYE = 1, 3, 4, 5
SERVER_KINDS = frozenset({WELCOME, RESPONSE, PUSH, GOODBYE})
PING_ID = 999_999  # the request that shows a connection is still served after an abuse


# -- frames -----------------------------------------------------------------------------------


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def packed(obj: Any) -> bytes:
    return frame(msgpack.packb(obj, use_bin_type=True))


def hello_body(**fields: Any) -> dict[str, Any]:
    return {"version": 1, "client": "fuzz/1", "user": "fuzzer", **fields}


HELLO = packed([0, hello_body()])


def request(request_id: Any, op: Any, args: Any) -> bytes:
    return packed([2, request_id, op, args])


PING = request(PING_ID, "ping", {})

# Values of every msgpack type, each wrong for most fields: ints for strings, maps for lists,
# negative, huge, floats, nil, binary. No str here is a valid key, prefix, op or cursor name, so
# no fuzz request creates a database (which would hold fds open on purpose).
BAD_VALUES: tuple[Any, ...] = (
    0,
    7,
    -1,
    -(2**63),
    2**64 - 1,
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    None,
    True,
    False,
    "",
    "not a key!",
    "\u00e9\u2603\x00",
    b"\x00\xff",
    [],
    [1, "a", None],
    {},
    {"a": {"b": [1]}},
)

# Each operation with valid arguments; the fuzz replaces one field at a time (at any depth).
# Destructive admin ops (stop, purge, restore, users) are left out: they would be obeyed.
OPS: dict[str, dict[str, Any]] = {
    "ping": {},
    "get": {"key": "fuzz.a", "meta": True},
    "set": {"key": "fuzz.a", "value": 1, "if_absent": False, "if_rev": 0, "if_value": 1, "ttl": 60},
    "del": {"key": "fuzz.a", "if_rev": 1, "if_value": 1},
    "expire": {"key": "fuzz.a", "seconds": 60},
    "persist": {"key": "fuzz.a"},
    "ttl": {"key": "fuzz.a"},
    "create_cache": {"prefix": "fuzz.cache", "seconds": 60},
    "drop_cache": {"prefix": "fuzz.cache"},
    "caches": {},
    "incr": {"key": "fuzz.n", "by": 1},
    "decr": {"key": "fuzz.n", "by": 1},
    "keys": {"prefix": "fuzz", "after": "fuzz.a", "limit": 10},
    "scan": {"prefix": "fuzz", "after": "fuzz.a", "limit": 10},
    "count": {"prefix": "fuzz"},
    "txn": {
        "compares": [{"key": "fuzz.a", "target": "value", "op": "==", "value": 1}],
        "ops": [{"op": "incr", "key": "fuzz.n", "value": 1, "by": 1}],
    },
    "claim": {"prefix": "fuzz.q", "wait": 0, "lease": 60, "bind": True, "max_deliveries": 3},
    "ack": {"key": "fuzz.q.a", "token": 1},
    "release": {"key": "fuzz.q.a", "token": 1, "delay": 1},
    "extend": {"key": "fuzz.q.a", "token": 1, "lease": 60},
    "cancel": {"id": 1},
    "claims": {"prefix": "fuzz"},
    "watch": {"prefix": "fuzz", "from_rev": 0},
    "unwatch": {"stream": 1},
    "cursor_show": {"name": "default"},
    "cursor_list": {},
    "grants": {"user": "fuzzer"},
    "status": {},
}

# Well-formed traffic that mutations and cuts start from (keys under fuzz., default cursor).
TEMPLATE_REQUESTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("ping", {}),
    ("set", {"key": "fuzz.m", "value": {"list": [1, 2.5, None, "x"], "bin": b"\x01"}}),
    ("get", {"key": "fuzz.m", "meta": True}),
    ("incr", {"key": "fuzz.n", "by": 3}),
    ("keys", {"prefix": "fuzz", "limit": 5}),
    ("count", {"prefix": "fuzz"}),
)


def template_traffic(rng: random.Random, count: int) -> tuple[bytes, list[int]]:
    """Hello and ``count`` valid requests (ids 1..count); the offsets where frames end."""
    frames = [HELLO]
    for request_id in range(1, count + 1):
        op, args = rng.choice(TEMPLATE_REQUESTS)
        frames.append(request(request_id, op, args))
    ends, total = [], 0
    for data in frames:
        total += len(data)
        ends.append(total)
    return b"".join(frames), ends


def nested(depth: int, kind: Literal["list", "map"]) -> bytes:
    """msgpack bytes of ``depth`` lists (or one-key maps) inside each other, around a nil."""
    level = b"\x91" if kind == "list" else b"\x81\xa1k"
    return level * depth + b"\xc0"


def set_value_prefix(key: str) -> bytes:
    """The msgpack bytes of ``[2, 1, "set", {"key": key, "value": `` before the value."""
    head: bytes = msgpack.packb([2, 1, "set", {"key": key, "value": None}])
    return head[:-1]  # without the nil value: the caller puts its own there


# -- what the broker said ---------------------------------------------------------------------


@dataclass(slots=True)
class Heard:
    """The broker's side of one conversation: its messages, whether it ended (EOF, or a reset
    after the last byte) within the timeout, and what was wrong with its bytes, if anything."""

    messages: list[list[Any]] = field(default_factory=list)
    ended: bool = False
    garbled: str | None = None

    def kinds(self) -> list[int]:
        return [m[0] for m in self.messages]

    def error_codes(self) -> list[str]:
        return [m[2]["code"] for m in self.messages if m[0] == RESPONSE and m[2] is not None]

    def answered(self, request_id: int) -> list[Any] | None:
        return next((m for m in self.messages if m[0] == RESPONSE and m[1] == request_id), None)


def parse(data: bytes) -> Heard:
    """Split the broker's bytes into frames and check each is a server message."""
    heard = Heard()
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            heard.garbled = "a cut length prefix"
            return heard
        (size,) = struct.unpack_from(">I", data, offset)
        body = data[offset + 4 : offset + 4 + size]
        if len(body) < size:
            heard.garbled = f"a frame cut at {len(body)} of {size} bytes"
            return heard
        offset += 4 + size
        try:
            message = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as exc:
            heard.garbled = f"a frame that is not msgpack ({exc})"
            return heard
        if not isinstance(message, list) or not message or message[0] not in SERVER_KINDS:
            heard.garbled = f"not a server message: {message!r:.100}"
            return heard
        heard.messages.append(message)
    return heard


# A check of what was heard: None when it is what the abuse must get, else what is wrong.
Check = Callable[[Heard], str | None]


def _well_formed(heard: Heard) -> str | None:
    if heard.garbled:
        return f"garbled output: {heard.garbled}"
    if not heard.ended:
        return f"no end within {READ_TIMEOUT:g} s (the broker held the connection)"
    kinds = heard.kinds()
    if GOODBYE in kinds[:-1]:
        return f"messages after a Goodbye: {kinds}"
    if WELCOME in kinds[1:]:
        return f"a Welcome that is not first: {kinds}"
    if kinds and kinds[-1] == GOODBYE:
        code = heard.messages[-1][1].get("code")
        if code is not None and code not in KNOWN_CODES:
            return f"a Goodbye with an unknown code {code!r}"
    unknown = [c for c in heard.error_codes() if c not in KNOWN_CODES]
    if unknown:
        return f"error Responses with unknown codes {unknown}"
    return None


def anything(heard: Heard) -> str | None:
    """Whatever the broker made of it, it said it in valid frames and ended the conversation."""
    return _well_formed(heard)


def refused(*codes: ErrorCode, before_hello: bool = False) -> Check:
    """The conversation ends with a Goodbye of one of ``codes``; ``before_hello``: nothing was
    accepted or executed before it (no Welcome, no Response)."""
    wanted = {code.value for code in codes}

    def check(heard: Heard) -> str | None:
        problem = _well_formed(heard)
        if problem:
            return problem
        kinds = heard.kinds()
        if not kinds or kinds[-1] != GOODBYE:
            return f"no Goodbye: {kinds}"
        code = heard.messages[-1][1].get("code")
        if code not in wanted:
            return f"Goodbye code {code!r}, not one of {sorted(wanted)}"
        if before_hello and kinds != [GOODBYE]:
            return f"something accepted before the refusal: {kinds}"
        return None

    return check


def served(*ids: int, codes: frozenset[str] | None = None) -> Check:
    """A Welcome, a Response to each of ``ids`` (errors with one of ``codes`` if given; PING_ID's
    must say pong), no Goodbye, and a clean end."""

    def check(heard: Heard) -> str | None:
        problem = _well_formed(heard)
        if problem:
            return problem
        kinds = heard.kinds()
        if not kinds or kinds[0] != WELCOME or GOODBYE in kinds:
            return f"not served: {kinds} {heard.messages[-1] if heard.messages else ''!r:.200}"
        for request_id in ids:
            answer = heard.answered(request_id)
            if answer is None:
                return f"no answer to request {request_id}: {kinds}"
            if request_id == PING_ID and answer[3] != "pong":
                return f"ping answered {answer!r:.200}"
            error = answer[2]
            if request_id == PING_ID or codes is None:
                continue
            if error is None or error["code"] not in codes:
                return f"request {request_id} answered {answer!r:.200}, wanted one of {codes}"
        return None

    return check


def silence(heard: Heard) -> str | None:
    """Nothing said, and the connection closed."""
    return _well_formed(heard) or (
        f"unexpected messages: {heard.kinds()}" if heard.messages else None
    )


# -- one abusive connection -------------------------------------------------------------------

# "eof": half-close, then read to the end; "hold": keep sending side open, the broker must end
# it; "drop": close at once without reading (nothing to check but the broker's health).
Ending = Literal["eof", "hold", "drop"]


@dataclass(frozen=True, slots=True)
class Abuse:
    kind: str
    chunks: tuple[bytes, ...]
    check: Check | None
    ending: Ending = "eof"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    problem: str | None
    internal: int  # error Responses with code `internal` (a peer's fault is never the broker's)


def converse(path: str, abuse: Abuse) -> Outcome:
    """Send ``abuse`` on a fresh connection and check what comes back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(READ_TIMEOUT)
        try:
            sock.connect(path)
        except OSError as exc:
            return Outcome(abuse.kind, f"cannot connect: {exc!r}", 0)
        for chunk in abuse.chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the broker refused and closed before taking it all: read why
            except TimeoutError:
                return Outcome(abuse.kind, "the broker stopped reading but kept the socket", 0)
        if abuse.ending == "drop":
            return Outcome(abuse.kind, None, 0)
        if abuse.ending == "eof":
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # already closed by the broker
        heard = read_to_end(sock)
    assert abuse.check is not None
    problem = abuse.check(heard)
    if problem:
        problem += f" (sent {b''.join(abuse.chunks)[:120]!r})"
    return Outcome(abuse.kind, problem, heard.error_codes().count("internal"))


def read_to_end(sock: socket.socket) -> Heard:
    """Everything the broker sends until it closes (or READ_TIMEOUT passes)."""
    data = bytearray()
    ended = False
    try:
        while chunk := sock.recv(1 << 16):
            data += chunk
        ended = True
    except ConnectionResetError:
        ended = True  # it closed with our unread bytes queued: the reset follows its last byte
    except TimeoutError:
        pass
    heard = parse(bytes(data))
    heard.ended = ended
    return heard


# -- the abuses -------------------------------------------------------------------------------


def hello_cases() -> Iterator[Abuse]:
    """Wrong types in every field of Hello (and of its body), then a ping: a valid Hello is
    welcomed and the ping answered; any other is refused and nothing is executed."""
    for name in ("version", "client", "user", "token"):
        for value in BAD_VALUES:
            body = hello_body(**{name: value})
            yield Abuse("wrong types in Hello", (packed([0, body]) + PING,), hello_check(body))
        missing = {k: v for k, v in hello_body(token="t").items() if k != name}
        yield Abuse("wrong types in Hello", (packed([0, missing]) + PING,), hello_check(missing))
    for value in BAD_VALUES:
        yield Abuse("wrong types in Hello", (packed([0, value]) + PING,), hello_check(value))
        kind_is_hello = is_uint(value) and value == 0
        check = served(PING_ID) if kind_is_hello else refused_first
        yield Abuse("wrong types in Hello", (packed([value, hello_body()]) + PING,), check)
    extra = hello_body(future_field={"x": [1]})  # unknown fields are ignored
    yield Abuse("wrong types in Hello", (packed([0, extra]) + PING,), served(PING_ID))
    for shape in ([0], [0, hello_body(), None], [], "hello", None):
        yield Abuse("wrong types in Hello", (packed(shape) + PING,), refused_first)


refused_first = refused(ErrorCode.PROTOCOL, before_hello=True)


def hello_check(body: Any) -> Check:
    """What a Hello with ``body`` must get (docs/PROTOCOL.md, Hello)."""
    if not isinstance(body, dict) or not all(k in body for k in ("version", "client", "user")):
        return refused_first
    version = body["version"]
    valid = (
        isinstance(version, int)
        and not isinstance(version, bool)
        and 0 <= version < 2**64
        and isinstance(body["client"], str)
        and isinstance(body["user"], str)
        and (body.get("token") is None or isinstance(body.get("token"), str))
    )
    if not valid or version != 1:
        return refused_first
    if not body["user"]:
        return refused(ErrorCode.UNAUTHENTICATED, before_hello=True)
    return served(PING_ID)


def is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def envelope_cases() -> Iterator[Abuse]:
    """Wrong types in every field of Request (kind, id, op, args), wrong lengths and order."""
    kind = "wrong types in Request"
    for value in BAD_VALUES:
        for position in range(4):
            fields: list[Any] = [2, 1, "ping", {}]
            fields[position] = value
            valid = (
                (position != 0 or value == 2)
                and (position != 1 or is_uint(value))
                and (position != 2 or (isinstance(value, str) and value != ""))
                and (position != 3 or isinstance(value, dict))
            )
            check = served(fields[1]) if valid else refused(ErrorCode.PROTOCOL)
            yield Abuse(kind, (HELLO + packed(fields),), check)
    for shape in ([2, 1, "ping"], [2, 1, "ping", {}, None], [2], [2, None, None, None, None]):
        yield Abuse(kind, (HELLO + packed(shape),), refused(ErrorCode.PROTOCOL))
    out_of_order = (
        request(1, "ping", {}),  # before Hello
        HELLO + HELLO,
        HELLO + packed([1, {"version": 1, "server": "s", "session": 1, "limits": {}}]),
        HELLO + packed([3, 1, None, "pong"]),
        HELLO + packed([4, 1, {}]),
        HELLO + request(7, "claim", {"prefix": "fuzz.q", "wait": 30}) * 2,  # id in flight
    )
    for data in out_of_order:
        yield Abuse("protocol order", (data,), refused(ErrorCode.PROTOCOL))
    # The broker reads nothing after a Goodbye: the ping behind it goes unread, unanswered.
    goodbye = packed([5, {"code": None, "message": "bye"}])
    yield Abuse("protocol order", (HELLO + goodbye + PING,), anything)
    yield Abuse("protocol order", (goodbye,), anything)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in ``value`` (map keys and list indexes) a wrong value can go."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of ``value`` with ``new`` at ``path`` (a map gains the key if it lacks it; a path
    through something no longer a container, replaced before, changes nothing)."""
    if not path:
        return new
    if isinstance(value, dict) and isinstance(path[0], str):
        return {**value, path[0]: replaced(value.get(path[0]), path[1:], new)}
    if isinstance(value, list) and isinstance(path[0], int) and path[0] < len(value):
        return [*value[: path[0]], replaced(value[path[0]], path[1:], new), *value[path[0] + 1 :]]
    return value


def argument_cases(rng: random.Random, extra: int) -> Iterator[Abuse]:
    """Wrong types in every argument of every operation (and ``cursor``), all the bad values of
    one field pipelined on one connection, then a ping: each is answered with an error Response
    (or a result, when the value happens to fit), never a Goodbye, and the ping with pong."""
    for op, args in OPS.items():
        for path in [("cursor",), *paths(args)]:
            variants = [replaced(args, path, value) for value in BAD_VALUES]
            yield arguments_abuse(op, variants)
    # Then random values, nested, in two fields at once.
    for _ in range(extra):
        op = rng.choice(list(OPS))
        places = [("cursor",), *paths(OPS[op])]
        variants = []
        for _ in range(8):
            args = OPS[op]
            for path in rng.sample(places, k=min(2, len(places))):
                args = replaced(args, path, random_value(rng, 3))
            variants.append(args)
        yield arguments_abuse(op, variants)


def arguments_abuse(op: str, variants: list[Any]) -> Abuse:
    data = HELLO + b"".join(request(i, op, args) for i, args in enumerate(variants, 1)) + PING
    return Abuse("wrong types in arguments", (data,), served(PING_ID))


def random_value(rng: random.Random, depth: int) -> Any:
    """A random msgpack value: any type, nested up to ``depth``. Its strings start with "!", so
    none names a cursor (a write would create that database, whose files stay open)."""
    choice = rng.randrange(10 if depth > 0 else 7)
    if choice < 6:
        return rng.choice(BAD_VALUES)
    if choice == 6:
        return "!" + "".join(rng.choice(string.printable) for _ in range(rng.randrange(12)))
    if choice == 7:
        return rng.randbytes(rng.randrange(12))
    if choice == 8:
        return [random_value(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {random_text(rng, 6): random_value(rng, depth - 1) for _ in range(rng.randrange(4))}


def random_text(rng: random.Random, length: int) -> str:
    """Random text, now and then far outside ASCII (no surrogates: they are not UTF-8)."""
    alphabet = [
        rng.randrange(32, 127),
        rng.randrange(0xA0, 0xD7FF),
        rng.randrange(0xE000, 0x10FFFF),
    ]
    return "".join(chr(rng.choice(alphabet)) for _ in range(rng.randrange(1, length + 1)))


# A case as a worker builds it when it runs it: a random case builds from a seed of its own, so
# the cases queued cost nothing (some carry MiBs) and each is the same whenever it is built.
Job = Callable[[], Abuse]


def seeded(build: Callable[[random.Random], Abuse], seed: int) -> Job:
    return lambda: build(random.Random(seed))


def ready(abuse: Abuse) -> Job:
    return lambda: abuse


def random_before_hello(rng: random.Random) -> Abuse:
    return Abuse(
        "random bytes before Hello",
        (rng.randbytes(random_size(rng)),),
        refused(ErrorCode.PROTOCOL, ErrorCode.TOO_LARGE, before_hello=True),
    )


def random_after_hello(rng: random.Random) -> Abuse:
    return Abuse(
        "random bytes after Hello",
        (HELLO + rng.randbytes(random_size(rng)),),
        refused(ErrorCode.PROTOCOL, ErrorCode.TOO_LARGE),
    )


def random_size(rng: random.Random) -> int:
    return rng.choice((1, 3, rng.randrange(1, 64), rng.randrange(64, 8192)))


def random_frame_body(rng: random.Random) -> Abuse:
    body = rng.randbytes(rng.randrange(1, 300))
    return Abuse("random frame bodies", (HELLO + frame(body),), refused(ErrorCode.PROTOCOL))


def mutated(rng: random.Random) -> Abuse:
    """Valid traffic with 1 to 3 bytes replaced, inserted or deleted: anything may come of it,
    but in valid frames, and the conversation ends."""
    data, _ = template_traffic(rng, rng.randrange(1, 6))
    buffer = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(buffer))
        action = rng.randrange(4)
        if action == 0:
            buffer[at] = rng.randrange(256)
        elif action == 1:
            buffer[at] ^= 1 << rng.randrange(8)
        elif action == 2:
            buffer.insert(at, rng.randrange(256))
        else:
            del buffer[at]
    return Abuse("mutated frames", (bytes(buffer),), anything)


def truncated(rng: random.Random) -> Abuse:
    """Valid traffic cut anywhere, then EOF: inside a frame it is a protocol error; at a frame
    boundary a clean close, after every complete request is answered."""
    data, ends = template_traffic(rng, rng.randrange(1, 6))
    cut = rng.randrange(len(data))
    if cut in ends:
        complete = ends.index(cut)  # requests whose frames are whole (the first end is Hello's)
        check = served(*range(1, complete + 1))
    elif cut == 0:
        check = silence
    elif cut < ends[0]:
        check = refused(ErrorCode.PROTOCOL, before_hello=True)
    else:
        check = refused(ErrorCode.PROTOCOL)
    return Abuse("truncated frames then EOF", (data[:cut],), check)


def absurd_length(rng: random.Random) -> Abuse:
    """A length prefix over the limit (up to 2^32-1), before or after Hello: refused with
    too_large at once, before any body, while the sender keeps its side open."""
    size = rng.choice((MAX_FRAME + 1, 2**31, 2**32 - 1, rng.randrange(MAX_FRAME + 1, 2**32)))
    start = rng.choice((b"", HELLO))
    data = start + struct.pack(">I", size) + rng.randbytes(rng.randrange(64))
    return Abuse(
        "absurd lengths",
        (data,),
        refused(ErrorCode.TOO_LARGE, before_hello=not start),
        ending="hold",
    )


def deep_nesting(rng: random.Random) -> Abuse:
    """Lists or maps nested thousands deep, in a value, in Hello, or as the message itself:
    refused (the limit is 32 levels); nested past the broker's value limit but within the
    protocol's, a set is answered with an error and the connection goes on."""
    depth = rng.choice((33, 64, 1000, 5000, 100_000))
    kind: Literal["list", "map"] = rng.choice(("list", "map"))
    where = rng.randrange(4)
    if where == 0:
        data = HELLO + frame(set_value_prefix("fuzz.deep") + nested(depth, kind))
        return Abuse("deep nesting", (data,), refused(ErrorCode.PROTOCOL))
    if where == 1:
        hello = b"\x92\x00\x83" + b"".join(
            msgpack.packb(p) for p in ("version", 1, "client", "c", "user")
        )
        data = frame(hello + nested(depth, kind))
        return Abuse("deep nesting", (data,), refused(ErrorCode.PROTOCOL, before_hello=True))
    if where == 2:
        return Abuse(
            "deep nesting",
            (HELLO + frame(nested(depth, kind)),),
            refused(ErrorCode.PROTOCOL),
        )
    data = HELLO + frame(set_value_prefix("fuzz.deep") + nested(rng.randrange(22, 29), kind))
    return Abuse("deep nesting", (data + PING,), served(1, PING_ID, codes=frozenset({"too_large"})))


def oversized(rng: random.Random, choice: int | None = None) -> Abuse:
    """Values, keys, containers and names past their limits (``choice``: which, 0 to 5)."""
    kind = "oversized values"
    choice = rng.randrange(6) if choice is None else choice
    if choice == 0:  # over the value limit, within the frame: an error Response, then on
        size = rng.choice((MAX_VALUE + 1, rng.randrange(MAX_VALUE + 1, MAX_FRAME - 100)))
        value: Any = rng.choice(("x" * size, b"y" * size))
        data = HELLO + request(1, "set", {"key": "fuzz.big", "value": value}) + PING
        return Abuse(kind, (data,), served(1, PING_ID, codes=frozenset({"too_large"})))
    if choice == 1:  # a key far over 1024 characters
        key = "k" * rng.randrange(1025, 100_000)
        data = HELLO + request(1, "get", {"key": key}) + PING
        return Abuse(kind, (data,), served(1, PING_ID, codes=frozenset({"bad_key"})))
    if choice == 2:  # an array of max_container_len + 1 elements
        count = LIMITS.max_container_len + 1
        body = set_value_prefix("fuzz.wide") + b"\xdd" + struct.pack(">I", count) + b"\xc0" * count
        return Abuse(kind, (HELLO + frame(body),), refused(ErrorCode.PROTOCOL))
    if choice == 3:  # a str header that claims more than the frame holds
        body = set_value_prefix("fuzz.str") + b"\xdb\xff\xff\xff\xff" + b"x" * 16
        return Abuse(kind, (HELLO + frame(body),), refused(ErrorCode.PROTOCOL))
    if choice == 4:  # an op name of a MiB: unknown, whatever its size
        data = HELLO + request(1, "z" * rng.randrange(MAX_VALUE, 2 * MAX_VALUE), {}) + PING
        return Abuse(kind, (data,), served(1, PING_ID))
    # A message kind that is a MiB-long string: refused.
    data = packed(["k" * rng.randrange(MAX_VALUE // 2, MAX_VALUE), {}])
    return Abuse(kind, (data,), refused(ErrorCode.PROTOCOL, before_hello=True))


def unknown_ops(rng: random.Random) -> Abuse:
    names = [
        f"zz_{rng.randrange(10**9)}" if rng.random() < 0.5 else "zz" + random_text(rng, 40)
        for _ in range(rng.randrange(1, 8))
    ]
    data = HELLO + b"".join(request(i, name, {}) for i, name in enumerate(names, 1)) + PING
    ids = range(1, len(names) + 1)
    return Abuse("unknown ops", (data,), served(*ids, PING_ID, codes=frozenset({"unknown_op"})))


def half_closed(rng: random.Random) -> Abuse:
    """Requests then a half-close at once: EOF between frames is a clean close, after every
    request is answered. Sent in one piece, or a byte at a time."""
    data, ends = template_traffic(rng, rng.randrange(1, 30))
    count = len(ends) - 1
    chunks: tuple[bytes, ...] = (data,)
    if rng.random() < 0.1:
        chunks = tuple(data[i : i + 1] for i in range(len(data)))
    return Abuse("half-closed sockets", chunks, served(*range(1, count + 1)))


def dropped(rng: random.Random) -> Abuse:
    """Pipelined requests (big answers) and a close without reading any: the broker finds its
    peer gone mid-answer."""
    chunks = rng.choice(((), (HELLO,), (HELLO + blob_gets(rng.randrange(1, 200)),), (HELLO[:5],)))
    return Abuse("dropped sockets", chunks, None, ending="drop")


def blob_gets(count: int) -> bytes:
    """``count`` pipelined gets of the 100 KB value ``fuzz.blob``: more than a socket holds."""
    return b"".join(request(i, "get", {"key": "fuzz.blob"}) for i in range(1, count + 1))


def stalled_sockets(rng: random.Random, path: str, count: int) -> list[tuple[socket.socket, Check]]:
    """Connections that announce a frame (up to the 4 MiB limit) or a Hello and send only part
    of it, held open while the fuzz runs; each with the check for when it half-closes."""
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(READ_TIMEOUT)
        sock.connect(path)
        size = rng.choice((MAX_FRAME, rng.randrange(2, MAX_FRAME)))
        partial = rng.randbytes(rng.randrange(min(size, 65536)))
        if rng.random() < 0.5:
            sock.sendall(struct.pack(">I", size) + partial)
            check = refused(ErrorCode.PROTOCOL, before_hello=True)
        else:
            sock.sendall(HELLO + struct.pack(">I", size) + partial)
            check = refused(ErrorCode.PROTOCOL)
        held.append((sock, check))
    return held


def end_stalled(held: list[tuple[socket.socket, Check]], rng: random.Random) -> list[Outcome]:
    """Half-close about half the stalled connections (a protocol error: EOF inside a frame) and
    drop the others."""
    outcomes = []
    for sock, check in held:
        with sock:
            if rng.random() < 0.5:
                continue  # dropped
            sock.shutdown(socket.SHUT_WR)
            heard = read_to_end(sock)
        outcomes.append(Outcome("frames announced, never sent", check(heard), 0))
    return outcomes


# -- the well-behaved client ------------------------------------------------------------------


class GoodClient(threading.Thread):
    """Sets, gets and increments on its own cursor until told to stop, checking every answer."""

    def __init__(self, url: str) -> None:
        super().__init__(name="good client", daemon=True)
        self.client = Client.connect(url, user="good", cursor="good")
        self.stop = threading.Event()
        self.calls = 0
        self.wrong: list[str] = []
        self.error: BaseException | None = None
        self.written: dict[str, Any] = {}
        self.counter = self.client.incr("good.counter")

    def run(self) -> None:
        client = self.client
        i = 0
        try:
            while not self.stop.is_set():
                key = f"good.k{i % 32}"
                value = {"i": i, "text": "v" * (i % 200), "bin": i.to_bytes(8, "big")}
                client.set(key, value)
                self.written[key] = value
                got = client.get(key)
                if got != value:
                    self.wrong.append(f"get {key} gave {got!r:.80}, not {value!r:.80}")
                counted = client.incr("good.counter")
                if counted != self.counter + 1:
                    self.wrong.append(f"incr gave {counted}, not {self.counter + 1}")
                self.counter = counted
                self.calls += 3
                i += 1
        except BaseException as exc:
            self.error = exc

    def check_all(self) -> None:
        """Read back everything once more, after the fuzz."""
        for key, value in self.written.items():
            got = self.client.get(key)
            if got != value:
                self.wrong.append(f"at the end, {key} is {got!r:.80}, not {value!r:.80}")
        if self.client.get("good.counter") != self.counter:
            self.wrong.append("at the end, good.counter moved")
        self.calls += len(self.written) + 1


# -- the campaign -----------------------------------------------------------------------------


@dataclass(slots=True)
class Campaign:
    """What one fuzz run found."""

    seed: int
    connections: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    internal: int = 0
    crashed: bool = False
    exit_status: int | None = None
    good_calls: int = 0
    good_calls_during_fuzz: int = 0
    wrong: list[str] = field(default_factory=list)
    good_error: str | None = None
    fds_baseline: int = 0
    fds_after: int = 0
    log: str = ""  # what the broker logged from the first fuzz connection to its stop
    seconds: float = 0.0  # the fuzz itself

    @property
    def replay(self) -> str:
        return f"(seed {self.seed}: PRONTODB_FUZZ_SEED={self.seed} replays it)"


RANDOM_KINDS: tuple[Callable[[random.Random], Abuse], ...] = (
    random_before_hello,
    random_after_hello,
    random_frame_body,
    mutated,
    truncated,
    absurd_length,
    deep_nesting,
    oversized,
    unknown_ops,
    half_closed,
    dropped,
)


def jobs(rng: random.Random, scale: Scale) -> list[Job]:
    """Every case of a run, shuffled: the systematic ones (every field, every oversized kind)
    and ``scale`` rounds of the random kinds."""
    systematic = [
        *hello_cases(),
        *envelope_cases(),
        *argument_cases(rng, scale.pick(50, 2000)),
        Abuse("empty connections", (), silence),
        Abuse("empty connections", (), None, ending="drop"),
        # Peers gone while their answers are still being written: in every run, not only
        # when the random cases draw them (test_fuzzed_broker_closes_every_fuzz_connection).
        *[Abuse("dropped sockets", (HELLO + blob_gets(100),), None, ending="drop")] * 5,
    ]
    cases = [ready(abuse) for abuse in systematic]
    cases += [seeded(partial(oversized, choice=c), rng.randrange(2**64)) for c in range(6)]
    for _ in range(scale.pick(40, 3000)):
        cases += [seeded(build, rng.randrange(2**64)) for build in RANDOM_KINDS]
    rng.shuffle(cases)
    return cases


def run_campaign(directory: Path, scale: Scale, seed: int) -> Campaign:
    rng = random.Random(seed)
    found = Campaign(seed)
    with running_broker(directory / "data", directory / "s.sock") as broker:
        good = GoodClient(broker.url)
        try:
            # Open what the fuzz touches (the default database) before counting fds, and put
            # a 100 KB value there for dropped connections to leave unread.
            good.client.set("fuzz.blob", b"b" * 100_000, cursor="default")
            baseline = open_fds(broker.pid)
            log_start = broker.log.stat().st_size
            cases = jobs(rng, scale)
            good.start()
            fuzz_start = time.monotonic()
            # First, alone: a message kind of a MiB, which the broker quotes in its refusal.
            # Its log line (if any) comes before a rate limit could hold lines back.
            outcomes = [converse(broker.socket, oversized(rng, choice=5))]
            held = stalled_sockets(rng, broker.socket, scale.pick(40, 400))
            calls_before = good.calls
            try:
                with ThreadPoolExecutor(WORKERS) as pool:
                    outcomes += pool.map(lambda job: converse(broker.socket, job()), cases)
                outcomes += end_stalled(held, rng)
            finally:
                for sock, _ in held:
                    sock.close()  # closed already unless the fuzz failed
            found.good_calls_during_fuzz = good.calls - calls_before
            found.seconds = time.monotonic() - fuzz_start
            good.stop.set()
            good.join(READ_TIMEOUT)
            found.crashed = broker.process.poll() is not None
            if not found.crashed and good.error is None:
                good.check_all()
                found.fds_after = wait_for_fds(broker, baseline, good.client.ping)
            found.fds_baseline = baseline
            for outcome in outcomes:
                found.connections[outcome.kind] += 1
                found.internal += outcome.internal
                if outcome.problem:
                    found.problems.append(f"{outcome.kind}: {outcome.problem}")
            found.good_calls = good.calls
            found.wrong = good.wrong
            found.good_error = None if good.error is None else repr(good.error)
        finally:
            good.stop.set()
            good.client.close()
        found.exit_status = None if found.crashed else broker.terminate()
        with broker.log.open("rb") as log:
            log.seek(log_start)
            found.log = log.read().decode(errors="replace")
    return found


QUICK_SEED = 20261207


@pytest.fixture(scope="module")
def campaign(scale: Scale) -> Iterator[Campaign]:
    """One fuzz run, shared by the cases below (each asserts its own property of it)."""
    drawn = random.SystemRandom().randrange(2**32) if scale.torture else QUICK_SEED
    seed = int(os.environ.get("PRONTODB_FUZZ_SEED") or drawn)
    directory = Path(tempfile.mkdtemp(prefix="pdb-", dir="/tmp"))
    try:
        yield run_campaign(directory, scale, seed)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_fuzzed_broker_survives_and_serves_the_good_client(
    campaign: Campaign, figures: Figures
) -> None:
    found = campaign
    replay = found.replay
    total = sum(found.connections.values())
    figures.scenario = "protocol fuzzing on live connections"
    figures["seed"] = str(found.seed)
    figures["fuzz connections"] = total
    figures["abuse kinds"] = len(found.connections)
    figures["good calls checked"] = found.good_calls
    figures["good calls during the fuzz"] = found.good_calls_during_fuzz
    figures["fuzz seconds"] = round(found.seconds, 1)
    figures["crashes"] = int(found.crashed)
    figures["wrong values"] = len(found.wrong)
    figures["unclear"] = len(found.problems)

    assert not found.crashed, f"the broker died {replay}; its log:\n{found.log[-3000:]}"
    assert found.exit_status == 0, f"the broker did not stop cleanly {replay}"
    assert found.good_error is None, f"the good client failed: {found.good_error} {replay}"
    assert found.good_calls_during_fuzz > 0, (
        f"the good client made no call during the fuzz {replay}"
    )
    assert figures["wrong values"] == 0, f"{found.wrong[:5]} {replay}"
    assert figures["unclear"] == 0, "\n".join([replay, *found.problems[:20]])


def test_fuzzed_broker_closes_every_fuzz_connection(campaign: Campaign, figures: Figures) -> None:
    found = campaign
    figures.scenario = "protocol fuzzing on live connections"
    figures["seed"] = str(found.seed)
    figures["fuzz connections"] = sum(found.connections.values())
    figures["fds before"] = found.fds_baseline
    figures["fds after"] = found.fds_after
    figures["leaked fds"] = max(0, found.fds_after - found.fds_baseline)
    assert figures["leaked fds"] == 0, (
        f"{found.fds_after} fds open {FD_TIMEOUT:g} s after the fuzz connections closed, "
        f"{found.fds_baseline} before them {found.replay}"
    )


def test_fuzzed_broker_logs_no_traceback_for_a_peers_fault(
    campaign: Campaign, figures: Figures
) -> None:
    found = campaign
    figures.scenario = "protocol fuzzing on live connections"
    figures["seed"] = str(found.seed)
    figures["fuzz connections"] = sum(found.connections.values())
    figures["tracebacks"] = found.log.count("Traceback")
    figures["internal answers"] = found.internal
    replay = found.replay
    assert figures["tracebacks"] == 0, f"{replay}\n{first_traceback(found.log)}"
    assert figures["internal answers"] == 0, f"a peer's fault answered as internal {replay}"


def test_fuzzed_broker_log_stays_bounded(campaign: Campaign, figures: Figures) -> None:
    found = campaign
    total = sum(found.connections.values())
    lines = found.log.splitlines()
    figures.scenario = "protocol fuzzing on live connections"
    figures["seed"] = str(found.seed)
    figures["fuzz connections"] = total
    figures["log lines"] = len(lines)
    figures["log bytes per fuzz connection"] = round(len(found.log.encode()) / total, 1)
    figures["longest log line"] = max((len(line) for line in lines), default=0)
    replay = found.replay
    assert len(lines) <= total, f"{len(lines)} log lines for {total} bad connections {replay}"
    long_lines = [line[:200] + "..." for line in lines if len(line) > LOG_LINE_BYTES]
    assert not long_lines, (
        f"{len(long_lines)} log lines over {LOG_LINE_BYTES} bytes {replay}: {long_lines[:3]}"
    )


def first_traceback(log: str) -> str:
    start = log.find("Traceback")
    return log[max(0, start - 200) : start + 2000]
