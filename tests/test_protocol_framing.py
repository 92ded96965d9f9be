"""Frames fed whole, byte by byte, split anywhere, pipelined, and cut short by EOF."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prontodb.protocol import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    ErrorCode,
    Event,
    Goodbye,
    Hello,
    Limits,
    LocalProtocolError,
    Message,
    Push,
    RemoteProtocolError,
    Request,
    Response,
    Role,
    Welcome,
)

HELLO = Hello(client="prontodb-cli/0.1", user="alice", token="s3cret")
WELCOME = Welcome(server="prontodb/0.1", session=42, limits=Limits().as_dict())
# What a client sends and what a server answers, pipelined: requests go out before the Welcome.
CLIENT_MESSAGES: list[Message] = [
    HELLO,
    Request(1, "get", {"key": "a.b"}),
    Request(2, "set", {"key": "a.b", "value": "x" * 300, "ttl": 1.5}),
    Request(3, "claim", {"prefix": "queue", "wait": None, "tags": [b"\x00\xff", True, -1]}),
    Goodbye(None, "done"),
]
SERVER_MESSAGES: list[Message] = [
    WELCOME,
    Response(2, None, {"rev": 7}),
    Push(3, {"type": "put", "key": "queue.t1", "rev": 8}),
    Response(1, {"code": "not_found", "message": "No such key."}, None),
    Response(3, None, None),
    Goodbye(ErrorCode.UNAVAILABLE, "shutting down"),
]


def encode_both() -> tuple[bytes, bytes]:
    """The client's bytes and the server's bytes for the whole conversation above."""
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    client_bytes = b"".join(client.send(m) for m in CLIENT_MESSAGES)
    server.receive_data(client_bytes)
    for expected in CLIENT_MESSAGES:
        assert server.next_event() == expected
    server_bytes = b"".join(server.send(m) for m in SERVER_MESSAGES)
    return client_bytes, server_bytes


def primed(role: Role) -> Connection:
    """A connection ready to receive the other side's half of the conversation."""
    conn = Connection(role)
    if role is Role.CLIENT:
        for message in CLIENT_MESSAGES[:-1]:  # its Hello and requests, not yet its Goodbye
            conn.send(message)
    return conn


def feed(conn: Connection, chunks: list[bytes]) -> list[Event]:
    """Feed chunks then EOF, pulling every event as soon as it is available."""
    events: list[Event] = []
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events
    raise AssertionError("no ConnectionClosed after EOF")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


CLIENT_BYTES, SERVER_BYTES = encode_both()
SIDES = [
    pytest.param(Role.SERVER, CLIENT_BYTES, CLIENT_MESSAGES, id="client-to-server"),
    pytest.param(Role.CLIENT, SERVER_BYTES, SERVER_MESSAGES, id="server-to-client"),
]


@pytest.mark.parametrize(("role", "data", "expected"), SIDES)
def test_all_frames_in_one_chunk(role: Role, data: bytes, expected: list[Message]) -> None:
    assert feed(primed(role), [data]) == [*expected, ConnectionClosed()]


@pytest.mark.parametrize(("role", "data", "expected"), SIDES)
def test_byte_by_byte(role: Role, data: bytes, expected: list[Message]) -> None:
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert feed(primed(role), chunks) == [*expected, ConnectionClosed()]


@pytest.mark.parametrize(("role", "data", "expected"), SIDES)
def test_each_frame_whole(role: Role, data: bytes, expected: list[Message]) -> None:
    chunks, offset = [], 0
    while offset < len(data):
        end = offset + 4 + int.from_bytes(data[offset : offset + 4], "big")
        chunks.append(data[offset:end])
        offset = end
    assert len(chunks) == len(expected)
    assert feed(primed(role), chunks) == [*expected, ConnectionClosed()]


@given(cuts=st.lists(st.integers(min_value=0), max_size=30), to_client=st.booleans())
def test_split_at_random_points(cuts: list[int], to_client: bool) -> None:
    role, data, expected = (
        (Role.CLIENT, SERVER_BYTES, SERVER_MESSAGES)
        if to_client
        else (Role.SERVER, CLIENT_BYTES, CLIENT_MESSAGES)
    )
    assert feed(primed(role), split(data, cuts)) == [*expected, ConnectionClosed()]


def test_trailing_partial_frame_then_the_rest() -> None:
    first = Connection(Role.CLIENT).send(HELLO)
    second = Connection(Role.CLIENT)
    second.send(HELLO)
    request = second.send(Request(1, "get", {"key": "k"}))
    server = Connection(Role.SERVER)
    server.receive_data(first + request[:5])
    assert server.next_event() == HELLO
    assert server.next_event() is NEED_DATA
    assert server.buffered_bytes == 5
    server.receive_data(request[5:])
    assert server.next_event() == Request(1, "get", {"key": "k"})
    assert server.next_event() is NEED_DATA
    assert server.statistics().in_flight == 1


def test_eof_at_a_frame_boundary_is_a_clean_close() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(b"")
    assert server.next_event() == ConnectionClosed()
    assert server.next_event() == ConnectionClosed()  # and stays so
    server.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"more")


@pytest.mark.parametrize("keep", [1, 3, 4, 10])
def test_eof_inside_a_frame_is_a_protocol_error(keep: int) -> None:
    server = Connection(Role.SERVER)
    server.receive_data(Connection(Role.CLIENT).send(HELLO)[:keep])
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code is ErrorCode.PROTOCOL


def test_a_one_mib_frame_fed_byte_by_byte() -> None:
    # Linear buffering: a quadratic buffer would take minutes here, this takes well under a second.
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    hello = client.send(HELLO)
    request = Request(1, "set", {"key": "k", "value": b"\x07" * (1 << 20)})
    data = hello + client.send(request)
    events = []
    for i in range(len(data)):
        server.receive_data(data[i : i + 1])
        if (event := server.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == [HELLO, request]
    assert server.buffered_bytes == 0


def test_memoryview_and_bytearray_are_accepted() -> None:
    data = Connection(Role.CLIENT).send(HELLO)
    server = Connection(Role.SERVER)
    server.receive_data(bytearray(data[:3]))
    server.receive_data(memoryview(data)[3:])
    assert server.next_event() == HELLO


def test_statistics_count_messages() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.send(HELLO) + client.send(Request(5, "op", {})))
    assert server.next_event() == HELLO
    assert server.next_event() == Request(5, "op", {})
    stats = server.statistics()
    assert (stats.messages_received, stats.messages_sent, stats.in_flight) == (2, 0, 1)
    server.send(WELCOME)
    server.send(Response(5, None, 1))
    assert server.statistics().in_flight == 0
    assert client.statistics().messages_sent == 2
