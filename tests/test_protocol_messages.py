"""Every message kind round-trips in the direction it travels; helpers and Limits behave."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from prontodb.protocol import (
    ERROR_TABLE,
    NEED_DATA,
    PROTOCOL_VERSION,
    Connection,
    ErrorCode,
    Event,
    Goodbye,
    Hello,
    Limits,
    LocalProtocolError,
    Message,
    ProntoError,
    Push,
    RemoteProtocolError,
    Request,
    Response,
    Role,
    Welcome,
)

UINT64_MAX = 2**64 - 1

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), UINT64_MAX)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
maps = st.dictionaries(st.text(max_size=8), values, max_size=5)
uint64 = st.integers(0, UINT64_MAX)


def pair() -> tuple[Connection, Connection]:
    """A client and a server past the Hello/Welcome exchange."""
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    assert deliver(client, server, Hello(client="t", user="u")) == Hello(client="t", user="u")
    welcome = Welcome(server="s", session=1, limits=Limits().as_dict())
    assert deliver(server, client, welcome) == welcome
    return client, server


def deliver(sender: Connection, receiver: Connection, message: Message) -> Event:
    receiver.receive_data(sender.send(message))
    event = receiver.next_event()
    assert event is not NEED_DATA
    assert receiver.next_event() is NEED_DATA
    assert receiver.buffered_bytes == 0
    return event


@given(
    client=st.text(),
    user=st.text(),
    token=st.none() | st.text(),
    version=uint64,
    user_default=st.booleans(),
)
def test_hello_round_trips(
    client: str, user: str, token: str | None, version: int, user_default: bool
) -> None:
    hello = Hello(client, user, token, version, user_default)
    assert deliver(Connection(Role.CLIENT), Connection(Role.SERVER), hello) == hello


def test_hello_omits_a_missing_token() -> None:
    assert Hello("c", "u").to_wire() == [
        0,
        {"version": PROTOCOL_VERSION, "client": "c", "user": "u"},
    ]
    assert Hello("c", "u", "t").to_wire()[1]["token"] == "t"
    assert Hello("c", "u", "t", user_default=True).to_wire()[1]["user_default"] is True


@given(
    server=st.text(),
    session=uint64,
    limits=st.dictionaries(st.text(), uint64),
    user=st.none() | st.text(),
)
def test_welcome_round_trips(
    server: str, session: int, limits: dict[str, int], user: str | None
) -> None:
    client, srv = Connection(Role.CLIENT), Connection(Role.SERVER)
    deliver(client, srv, Hello("c", "u"))
    welcome = Welcome(server=server, session=session, limits=limits, user=user)
    assert deliver(srv, client, welcome) == welcome


@given(request_id=uint64, op=st.text(min_size=1), args=maps)
def test_request_round_trips(request_id: int, op: str, args: dict[str, Any]) -> None:
    client, server = pair()
    request = Request(request_id, op, args)
    assert deliver(client, server, request) == request


@given(request_id=uint64, result=values)
def test_response_round_trips(request_id: int, result: Any) -> None:
    client, server = pair()
    deliver(client, server, Request(request_id, "op", {}))
    response = Response(request_id, None, result)
    got = deliver(server, client, response)
    assert got == response
    assert isinstance(got, Response)
    assert got.ok
    assert got.raise_for_error() == result


@given(stream=uint64, event=maps)
def test_push_round_trips(stream: int, event: dict[str, Any]) -> None:
    client, server = pair()
    push = Push(stream, event)
    assert deliver(server, client, push) == push


@pytest.mark.parametrize("code", [None, *ErrorCode])
@pytest.mark.parametrize("client_says", [True, False])
def test_goodbye_round_trips_both_ways(code: ErrorCode | None, client_says: bool) -> None:
    client, server = pair()
    goodbye = Goodbye(code, "bye")
    sender, receiver = (client, server) if client_says else (server, client)
    assert deliver(sender, receiver, goodbye) == goodbye


def test_goodbye_accepts_a_code_by_value_and_from_error() -> None:
    client, server = pair()
    got = deliver(server, client, Goodbye("unauthenticated", "no token"))  # type: ignore[arg-type]
    assert got == Goodbye(ErrorCode.UNAUTHENTICATED, "no token")
    err = RemoteProtocolError(ErrorCode.PROTOCOL, "bad frame")
    assert Goodbye.from_error(err) == Goodbye(ErrorCode.PROTOCOL, "bad frame")
    assert Goodbye.from_error(ProntoError(ErrorCode.DENIED)).code is ErrorCode.DENIED


def test_goodbye_with_an_unknown_code_reads_as_internal() -> None:
    client = Connection(Role.CLIENT)
    client.send(Hello("c", "u"))
    body = msgpack.packb([5, {"code": "from_the_future", "message": "m"}])
    client.receive_data(len(body).to_bytes(4, "big") + body)
    assert client.next_event() == Goodbye(ErrorCode.INTERNAL, "m")


def test_a_large_binary_value_round_trips() -> None:
    client, server = pair()
    request = Request(7, "set", {"key": "a.b", "value": bytes(range(256)) * 4096})  # 1 MiB
    data = client.send(request)
    for start in range(0, len(data), 65536):
        server.receive_data(data[start : start + 65536])
    assert server.next_event() == request


def test_unknown_map_fields_are_ignored() -> None:
    server = Connection(Role.SERVER)
    body = msgpack.packb([0, {"version": 1, "client": "c", "user": "u", "colour": [1, {}]}])
    server.receive_data(len(body).to_bytes(4, "big") + body)
    assert server.next_event() == Hello("c", "u")


def test_response_fail_and_raise_for_error() -> None:
    client, server = pair()
    deliver(client, server, Request(1, "get", {"key": "a"}))
    failure = Response.fail(1, ProntoError(ErrorCode.COMPACTED, details={"oldest_rev": 9}))
    got = deliver(server, client, failure)
    assert isinstance(got, Response)
    assert not got.ok
    message = ERROR_TABLE[ErrorCode.COMPACTED].message
    assert got.error == {"code": "compacted", "message": message, "oldest_rev": 9}
    with pytest.raises(ProntoError) as info:
        got.raise_for_error()
    assert info.value.code is ErrorCode.COMPACTED
    assert info.value.details == {"oldest_rev": 9}


def test_limits_defaults_clamps_and_dict() -> None:
    limits = Limits()
    assert limits.max_frame_size == 4 * 1024 * 1024
    assert limits.max_container_len == 100_000
    assert limits.max_depth == 32
    assert limits.max_in_flight == 1024
    assert limits.as_dict()["max_in_flight"] == 1024
    assert Limits.from_dict({**limits.as_dict(), "unknown": 5}) == limits
    assert Limits.from_dict({"max_in_flight": 7}) == Limits(max_in_flight=7)
    small = Limits(max_frame_size=1000)
    assert small.max_str_len == small.max_bin_len == 1000


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_frame_size": 0}, ValueError),
        ({"max_frame_size": 2**32}, ValueError),
        ({"max_container_len": 3}, ValueError),
        ({"max_depth": 1}, ValueError),
        ({"max_str_len": -1}, ValueError),
        ({"max_in_flight": 0}, ValueError),
        ({"max_in_flight": -1}, ValueError),
        ({"max_in_flight": 1.0}, TypeError),
        ({"max_depth": 2.5}, TypeError),
        ({"max_depth": True}, TypeError),
    ],
)
def test_limits_refuse_nonsense(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Limits(**kwargs)


def test_send_refuses_what_the_peer_would_refuse() -> None:
    client, _ = pair()
    with pytest.raises(LocalProtocolError):
        client.send(Request(1, "op", {"x": {1: 2}}))
