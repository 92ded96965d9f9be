"""Malformed input: each case is a RemoteProtocolError with the right code, never anything else,
and the connection refuses further use afterwards."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prontodb.protocol import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorCode,
    Goodbye,
    Hello,
    Limits,
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    Response,
    Role,
    Welcome,
)

SMALL = Limits(
    max_frame_size=4096, max_container_len=10, max_depth=6, max_str_len=200, max_bin_len=200
)
HELLO_BODY = msgpack.packb([0, {"version": 1, "client": "c", "user": "u"}])
WELCOME_BODY = msgpack.packb([1, {"version": 1, "server": "s", "session": 1, "limits": {}}])


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def packed(obj: Any) -> bytes:
    return frame(msgpack.packb(obj, use_bin_type=True))


def server_after_hello(limits: Limits = SMALL) -> Connection:
    server = Connection(Role.SERVER, limits)
    server.receive_data(frame(HELLO_BODY))
    assert isinstance(server.next_event(), Hello)
    return server


def client_after_welcome(in_flight: int = 1) -> Connection:
    client = Connection(Role.CLIENT, SMALL)
    client.send(Hello("c", "u"))
    client.send(Request(in_flight, "op", {}))
    client.receive_data(frame(WELCOME_BODY))
    assert isinstance(client.next_event(), Welcome)
    return client


def expect_remote_error(conn: Connection, data: bytes, code: ErrorCode) -> RemoteProtocolError:
    """Feed ``data``; valid messages may come first, then the error must."""
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        pull_three(conn)
    assert info.value.code is code
    return info.value


def pull_three(conn: Connection) -> None:
    for _ in range(3):
        assert conn.next_event() is not NEED_DATA


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


# Byte strings a server (after Hello) must refuse, with the code it must give.
SERVER_BAD_INPUT: dict[str, tuple[bytes, ErrorCode]] = {
    "zero length": (b"\x00\x00\x00\x00", ErrorCode.PROTOCOL),
    "declared length over the limit, no body": (struct.pack(">I", 4097), ErrorCode.TOO_LARGE),
    "declared length 2**32-1": (b"\xff\xff\xff\xff", ErrorCode.TOO_LARGE),
    "reserved byte 0xc1": (frame(b"\xc1"), ErrorCode.PROTOCOL),
    "garbage": (frame(b"\x92\xc1\xc1\xc1"), ErrorCode.PROTOCOL),
    "truncated msgpack": (frame(msgpack.packb([2, 1, "op", {}])[:-1]), ErrorCode.PROTOCOL),
    "trailing bytes in the frame": (
        frame(msgpack.packb([2, 1, "op", {}]) + b"\xc0"),
        ErrorCode.PROTOCOL,
    ),
    "two objects in one frame": (frame(msgpack.packb([2, 1, "op", {}]) * 2), ErrorCode.PROTOCOL),
    "str32 longer than the frame": (frame(b"\xdb\xff\xff\xff\xff"), ErrorCode.PROTOCOL),
    "array32 of 4e9": (frame(b"\xdd\xff\xff\xff\xff"), ErrorCode.PROTOCOL),
    "array over max_container_len": (
        packed([2, 1, "op", {"a": list(range(11))}]),
        ErrorCode.PROTOCOL,
    ),
    "map over max_container_len": (
        packed([2, 1, "op", {str(i): i for i in range(11)}]),
        ErrorCode.PROTOCOL,
    ),
    "nesting over max_depth": (packed([2, 1, "op", {"a": nested(5)}]), ErrorCode.PROTOCOL),
    "nesting far over the decoder stack": (
        frame(b"\x94\x02\x01\xa2op\x81\xa1a" + b"\x91" * 3000 + b"\xc0"),
        ErrorCode.PROTOCOL,
    ),
    "str over max_str_len": (packed([2, 1, "op", {"a": "x" * 201}]), ErrorCode.PROTOCOL),
    "bin over max_bin_len": (packed([2, 1, "op", {"a": b"x" * 201}]), ErrorCode.PROTOCOL),
    "ext type": (frame(b"\x94\x02\x01\xa2op\x81\xa1a" + b"\xd4\x05\x00"), ErrorCode.PROTOCOL),
    "empty ext": (frame(b"\x94\x02\x01\xa2op\x81\xa1a" + b"\xc7\x00\x05"), ErrorCode.PROTOCOL),
    "timestamp": (
        frame(
            b"\x94\x02\x01\xa2op\x81\xa1a" + msgpack.packb(msgpack.Timestamp(1, 0), datetime=False)
        ),
        ErrorCode.PROTOCOL,
    ),
    "invalid utf-8 in a str": (frame(b"\x94\x02\x01\xa2\xff\xfe\x80"), ErrorCode.PROTOCOL),
    "invalid utf-8 in a map key": (
        frame(b"\x94\x02\x01\xa2op\x81\xa1\xff\xc0"),
        ErrorCode.PROTOCOL,
    ),
    "int map key": (packed([2, 1, "op", {1: 2}]), ErrorCode.PROTOCOL),
    "bytes map key": (packed([2, 1, "op", {b"k": 2}]), ErrorCode.PROTOCOL),
    "nested bytes map key": (packed([2, 1, "op", {"a": [{b"k": 2}]}]), ErrorCode.PROTOCOL),
    "not an array": (packed({"kind": 2}), ErrorCode.PROTOCOL),
    "a bare int": (packed(2), ErrorCode.PROTOCOL),
    "empty array": (packed([]), ErrorCode.PROTOCOL),
    "unknown kind 6": (packed([6, 1, "op", {}]), ErrorCode.PROTOCOL),
    "negative kind": (packed([-1, 1, "op", {}]), ErrorCode.PROTOCOL),
    "kind as str": (packed(["2", 1, "op", {}]), ErrorCode.PROTOCOL),
    "kind as bool": (packed([True, {"code": None, "message": ""}]), ErrorCode.PROTOCOL),
    "kind as float": (packed([2.0, 1, "op", {}]), ErrorCode.PROTOCOL),
    "request too short": (packed([2, 1, "op"]), ErrorCode.PROTOCOL),
    "request too long": (packed([2, 1, "op", {}, None]), ErrorCode.PROTOCOL),
    "goodbye too long": (packed([5, {"code": None, "message": ""}, 1]), ErrorCode.PROTOCOL),
    "request id str": (packed([2, "1", "op", {}]), ErrorCode.PROTOCOL),
    "request id negative": (packed([2, -1, "op", {}]), ErrorCode.PROTOCOL),
    "request id bool": (packed([2, True, "op", {}]), ErrorCode.PROTOCOL),
    "request id float": (packed([2, 1.0, "op", {}]), ErrorCode.PROTOCOL),
    "request id nil": (packed([2, None, "op", {}]), ErrorCode.PROTOCOL),
    "request op empty": (packed([2, 1, "", {}]), ErrorCode.PROTOCOL),
    "request op bytes": (packed([2, 1, b"op", {}]), ErrorCode.PROTOCOL),
    "request args array": (packed([2, 1, "op", []]), ErrorCode.PROTOCOL),
    "request args nil": (packed([2, 1, "op", None]), ErrorCode.PROTOCOL),
    "goodbye without message": (packed([5, {"code": None}]), ErrorCode.PROTOCOL),
    "goodbye without code": (packed([5, {"message": "m"}]), ErrorCode.PROTOCOL),
    "goodbye code int": (packed([5, {"code": 3, "message": "m"}]), ErrorCode.PROTOCOL),
    "goodbye body array": (packed([5, [None, "m"]]), ErrorCode.PROTOCOL),
    # Order: a server receives Hello once, then Requests and Goodbye only.
    "second hello": (frame(HELLO_BODY), ErrorCode.PROTOCOL),
    "welcome from a client": (frame(WELCOME_BODY), ErrorCode.PROTOCOL),
    "response from a client": (packed([3, 1, None, 1]), ErrorCode.PROTOCOL),
    "push from a client": (packed([4, 1, {}]), ErrorCode.PROTOCOL),
    "duplicate request id in flight": (
        packed([2, 9, "op", {}]) + packed([2, 9, "op", {}]),
        ErrorCode.PROTOCOL,
    ),
    "request after goodbye": (
        packed([5, {"code": None, "message": "bye"}]) + packed([2, 1, "op", {}]),
        ErrorCode.PROTOCOL,
    ),
}

# Byte strings a fresh server must refuse: the first message must be Hello (or Goodbye).
FRESH_SERVER_BAD_INPUT: dict[str, bytes] = {
    "request before hello": packed([2, 1, "op", {}]),
    "hello without user": packed([0, {"version": 1, "client": "c"}]),
    "hello without version": packed([0, {"client": "c", "user": "u"}]),
    "hello client int": packed([0, {"version": 1, "client": 1, "user": "u"}]),
    "hello token int": packed([0, {"version": 1, "client": "c", "user": "u", "token": 1}]),
    "hello user_default int": packed(
        [0, {"version": 1, "client": "c", "user": "u", "user_default": 1}]
    ),
    "hello version str": packed([0, {"version": "1", "client": "c", "user": "u"}]),
    "hello version negative": packed([0, {"version": -1, "client": "c", "user": "u"}]),
    "hello body nil": packed([0, None]),
}

# Byte strings a client (after Welcome, request 1 in flight) must refuse.
CLIENT_BAD_INPUT: dict[str, bytes] = {
    "second welcome": frame(WELCOME_BODY),
    "hello from a server": frame(HELLO_BODY),
    "request from a server": packed([2, 1, "op", {}]),
    "response to an id not in flight": packed([3, 2, None, 1]),
    "response answered twice": packed([3, 1, None, 1]) + packed([3, 1, None, 1]),
    "response error not a map": packed([3, 1, "boom", None]),
    "response error without code": packed([3, 1, {"message": "m"}, None]),
    "response error code int": packed([3, 1, {"code": 1, "message": "m"}, None]),
    "response error without message": packed([3, 1, {"code": "internal"}, None]),
    "response with error and result": packed([3, 1, {"code": "internal", "message": "m"}, 5]),
    "response id too big for 64 bits": frame(b"\x94\x03\xd3\x80" + b"\x00" * 7 + b"\xc0\xc0"),
    "push stream str": packed([4, "1", {}]),
    "push event array": packed([4, 1, []]),
    "push after goodbye": packed([5, {"code": None, "message": "m"}]) + packed([4, 1, {}]),
}

# Byte strings a client that has sent Hello but not yet received Welcome must refuse.
EARLY_CLIENT_BAD_INPUT: dict[str, bytes] = {
    "welcome user int": packed(
        [1, {"version": 1, "server": "s", "session": 1, "limits": {}, "user": 1}]
    ),
    "response before welcome": packed([3, 1, None, None]),
    "push before welcome": packed([4, 1, {}]),
    "welcome without limits": packed([1, {"version": 1, "server": "s", "session": 1}]),
    "welcome limits not a map": packed(
        [1, {"version": 1, "server": "s", "session": 1, "limits": []}]
    ),
    "welcome limit not an int": packed(
        [1, {"version": 1, "server": "s", "session": 1, "limits": {"max_depth": "32"}}]
    ),
    "welcome session negative": packed(
        [1, {"version": 1, "server": "s", "session": -5, "limits": {}}]
    ),
}


@pytest.mark.parametrize(("data", "code"), SERVER_BAD_INPUT.values(), ids=SERVER_BAD_INPUT.keys())
def test_server_refuses(data: bytes, code: ErrorCode) -> None:
    server = server_after_hello()
    error = expect_remote_error(server, data, code)
    # Dead: the same error again, whatever happens next; only a Goodbye may still be sent.
    with pytest.raises(RemoteProtocolError) as again:
        server.next_event()
    assert again.value is error
    with pytest.raises(RemoteProtocolError):
        server.receive_data(frame(b"\xc0"))
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        server.send(Welcome("s", 1, {}))
    assert server.send(Goodbye.from_error(error))
    with pytest.raises(LocalProtocolError):
        server.send(Goodbye(None, "twice"))


@pytest.mark.parametrize("data", FRESH_SERVER_BAD_INPUT.values(), ids=FRESH_SERVER_BAD_INPUT.keys())
def test_fresh_server_refuses(data: bytes) -> None:
    expect_remote_error(Connection(Role.SERVER), data, ErrorCode.PROTOCOL)


@pytest.mark.parametrize("data", CLIENT_BAD_INPUT.values(), ids=CLIENT_BAD_INPUT.keys())
def test_client_refuses(data: bytes) -> None:
    client = client_after_welcome()
    error = expect_remote_error(client, data, ErrorCode.PROTOCOL)
    with pytest.raises(LocalProtocolError):
        client.send(Request(2, "op", {}))
    with pytest.raises(RemoteProtocolError) as again:
        client.next_event()
    assert again.value is error


@pytest.mark.parametrize("data", EARLY_CLIENT_BAD_INPUT.values(), ids=EARLY_CLIENT_BAD_INPUT.keys())
def test_client_refuses_before_welcome(data: bytes) -> None:
    client = Connection(Role.CLIENT)
    client.send(Hello("c", "u"))
    client.send(Request(1, "op", {}))
    expect_remote_error(client, data, ErrorCode.PROTOCOL)


def test_client_refuses_welcome_before_sending_hello() -> None:
    expect_remote_error(Connection(Role.CLIENT), frame(WELCOME_BODY), ErrorCode.PROTOCOL)


def test_too_large_is_refused_before_the_body_arrives() -> None:
    server = Connection(Role.SERVER)
    header = struct.pack(">I", Limits().max_frame_size + 1)
    server.receive_data(header[:3])
    assert server.next_event() is NEED_DATA
    error = expect_remote_error(server, header[3:], ErrorCode.TOO_LARGE)
    assert "exceeds max_frame_size" in error.message


def test_exactly_at_the_limits_is_accepted() -> None:
    server = server_after_hello()
    args = {"a": nested(4), "s": "x" * 200, "b": b"y" * 200, "l": list(range(10))}
    server.receive_data(packed([2, 1, "op", args]))
    assert server.next_event() == Request(1, "op", args)


@pytest.mark.parametrize("limit", [1, 3, Limits().max_in_flight])
def test_server_accepts_max_in_flight_requests_and_refuses_one_more(limit: int) -> None:
    server = server_after_hello(Limits(max_in_flight=limit))
    server.receive_data(b"".join(packed([2, i, "op", {}]) for i in range(1, limit + 1)))
    for i in range(1, limit + 1):
        assert server.next_event() == Request(i, "op", {})
    assert server.next_event() is NEED_DATA
    assert server.statistics().in_flight == limit
    error = expect_remote_error(server, packed([2, limit + 1, "op", {}]), ErrorCode.TOO_LARGE)
    assert f"max_in_flight ({limit})" in error.message
    assert server.statistics().in_flight == limit
    # Dead, as for every RemoteProtocolError: the same error again; only a Goodbye may be sent.
    with pytest.raises(RemoteProtocolError) as again:
        server.next_event()
    assert again.value is error
    with pytest.raises(LocalProtocolError):
        server.send(Welcome("s", 1, {}))
    assert server.send(Goodbye.from_error(error))


def test_a_response_frees_a_server_slot() -> None:
    server = server_after_hello(Limits(max_in_flight=2))
    server.receive_data(packed([2, 1, "op", {}]) + packed([2, 2, "op", {}]))
    assert server.next_event() == Request(1, "op", {})
    assert server.next_event() == Request(2, "op", {})
    server.send(Welcome("s", 1, Limits(max_in_flight=2).as_dict()))
    server.send(Response(2, None, None))
    assert server.statistics().in_flight == 1
    server.receive_data(packed([2, 3, "op", {}]))
    assert server.next_event() == Request(3, "op", {})
    expect_remote_error(server, packed([2, 4, "op", {}]), ErrorCode.TOO_LARGE)


def test_goodbye_first_is_accepted_either_way() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(packed([5, {"code": None, "message": "never mind"}]) + b"")
    assert server.next_event() == Goodbye(None, "never mind")
    client = Connection(Role.CLIENT)
    client.receive_data(packed([5, {"code": "unavailable", "message": "full"}]))
    assert client.next_event() == Goodbye(ErrorCode.UNAVAILABLE, "full")
    client.receive_data(b"")
    assert client.next_event() == ConnectionClosed()


def drain(conn: Connection, chunks: list[bytes]) -> None:
    """Feed chunks then EOF; anything but NEED_DATA, an event or RemoteProtocolError fails."""
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, ConnectionClosed):
                    return
    except RemoteProtocolError as exc:
        assert exc.code in (ErrorCode.PROTOCOL, ErrorCode.TOO_LARGE)
        with pytest.raises(RemoteProtocolError):
            conn.next_event()
    else:
        raise AssertionError("EOF gave neither ConnectionClosed nor an error")


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def fresh(role: Role, ready: bool) -> Connection:
    if role is Role.SERVER:
        return server_after_hello() if ready else Connection(Role.SERVER, SMALL)
    return client_after_welcome() if ready else Connection(Role.CLIENT, SMALL)


@given(
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0), max_size=5),
    role=st.sampled_from(Role),
    ready=st.booleans(),
)
def test_arbitrary_bytes(data: bytes, cuts: list[int], role: Role, ready: bool) -> None:
    drain(fresh(role, ready), chunked(data, cuts))


@given(
    bodies=st.lists(st.binary(min_size=1, max_size=60), min_size=1, max_size=4),
    role=st.sampled_from(Role),
    ready=st.booleans(),
)
def test_arbitrary_frame_bodies(bodies: list[bytes], role: Role, ready: bool) -> None:
    drain(fresh(role, ready), [frame(body) for body in bodies])


wire_objects = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.dictionaries(
            st.text(max_size=5) | st.integers(0, 3) | st.binary(max_size=3), kids, max_size=4
        )
    ),
    max_leaves=25,
)


@given(
    kind=st.integers(-1, 7),
    rest=st.lists(wire_objects, max_size=4),
    role=st.sampled_from(Role),
    ready=st.booleans(),
)
def test_arbitrary_msgpack_arrays(kind: int, rest: list[Any], role: Role, ready: bool) -> None:
    drain(fresh(role, ready), [packed([kind, *rest])])


@given(position=st.integers(min_value=0), byte=st.integers(0, 255), role=st.sampled_from(Role))
def test_one_byte_changed_in_valid_traffic(position: int, byte: int, role: Role) -> None:
    data = bytearray(frame(WELCOME_BODY) + packed([3, 1, None, [1, "two", {"3": b"4"}]]))
    if role is Role.SERVER:
        data = bytearray(frame(HELLO_BODY) + packed([2, 1, "op", {"k": [1.5, None, "v"]}]))
    data[position % len(data)] = byte
    conn = Connection(role, SMALL)
    if role is Role.CLIENT:
        conn.send(Hello("c", "u"))
        conn.send(Request(1, "op", {}))
    drain(conn, [bytes(data)])


def test_an_error_quoting_the_peers_bytes_stays_short() -> None:
    # An unknown message kind is quoted in the error, which the broker logs and sends back in
    # its Goodbye: a megabyte of it must not become a megabyte-long line.
    server = Connection(Role.SERVER, Limits())
    error = expect_remote_error(server, packed(["k" * 1_000_000, {}]), ErrorCode.PROTOCOL)
    assert "unknown message kind 'kkk" in error.message
    assert len(error.message) <= 300


def test_each_code_has_its_own_error_class() -> None:
    import pickle

    from prontodb.protocol import ERROR_CLASSES, CompareFailed, NotFound, ProntoError

    assert len(ERROR_CLASSES) == len(ErrorCode)
    for code in ErrorCode:
        made = ProntoError(code, "it failed", {"n": 1})
        assert isinstance(made, ProntoError)
        assert type(made) in ERROR_CLASSES
        assert made.code is code
        again = ProntoError.from_wire(made.to_wire())
        assert type(again) is type(made)
        assert (again.code, again.message, again.details) == (code, "it failed", {"n": 1})
        copied = pickle.loads(pickle.dumps(made))
        assert (type(copied), copied.message, copied.details) == (type(made), "it failed", {"n": 1})
    assert type(ProntoError(ErrorCode.COMPARE_FAILED)) is CompareFailed
    assert type(ProntoError.from_wire({"code": "not_found", "message": "m"})) is NotFound
    assert not isinstance(ProntoError(ErrorCode.NOT_FOUND), CompareFailed)
