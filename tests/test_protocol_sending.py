"""send(): order rules per role, bad fields and limits are LocalProtocolErrors that change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from prontodb.protocol import (
    NEED_DATA,
    Connection,
    ErrorCode,
    Goodbye,
    Hello,
    Limits,
    LocalProtocolError,
    Message,
    Push,
    Request,
    Response,
    Role,
    Welcome,
)

HELLO = Hello("c", "u")
WELCOME = Welcome("s", 1, {})


def client_sent_hello() -> Connection:
    client = Connection(Role.CLIENT)
    client.send(HELLO)
    return client


def server_got_hello() -> Connection:
    server = Connection(Role.SERVER)
    server.receive_data(Connection(Role.CLIENT).send(HELLO))
    assert server.next_event() == HELLO
    return server


def server_welcomed(*request_ids: int) -> Connection:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    data = client.send(HELLO) + b"".join(client.send(Request(i, "op", {})) for i in request_ids)
    server.receive_data(data)
    while server.next_event() is not NEED_DATA:
        pass
    server.send(WELCOME)
    return server


def refused(conn: Connection, message: Any, code: ErrorCode = ErrorCode.PROTOCOL) -> None:
    with pytest.raises(LocalProtocolError) as info:
        conn.send(message)
    assert info.value.code is code


@pytest.mark.parametrize(
    "message",
    [WELCOME, Response(1, None, None), Push(1, {}), Request(1, "op", {})],
    ids=["welcome", "response", "push", "request before hello"],
)
def test_client_cannot_send_out_of_turn(message: Message) -> None:
    refused(Connection(Role.CLIENT), message)


def test_client_sends_hello_once_then_pipelines_requests() -> None:
    client = client_sent_hello()
    refused(client, HELLO)
    assert client.send(Request(1, "op", {}))
    assert client.send(Request(2, "op", {}))
    refused(client, Request(1, "op", {}))  # still in flight
    assert client.statistics().in_flight == 2


@pytest.mark.parametrize(
    "message",
    [HELLO, Request(1, "op", {}), WELCOME, Response(1, None, None), Push(1, {})],
    ids=["hello", "request", "welcome before hello", "response", "push"],
)
def test_fresh_server_cannot_send(message: Message) -> None:
    refused(Connection(Role.SERVER), message)


def test_server_answers_only_after_welcome_and_only_ids_in_flight() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(client.send(HELLO) + client.send(Request(1, "op", {})))
    assert server.next_event() == HELLO
    assert server.next_event() == Request(1, "op", {})
    refused(server, Response(1, None, None))
    refused(server, Push(1, {}))
    server.send(WELCOME)
    refused(server, WELCOME)
    refused(server, Response(2, None, None))
    assert server.send(Push(1, {"n": 1}))
    assert server.send(Response(1, None, None))
    refused(server, Response(1, None, None))  # answered already


@pytest.mark.parametrize("role", list(Role))
def test_nothing_after_our_goodbye(role: Role) -> None:
    conn = client_sent_hello() if role is Role.CLIENT else server_welcomed(1)
    assert conn.send(Goodbye(None, "bye"))
    refused(conn, Goodbye(None, "again"))
    refused(conn, Request(1, "op", {}) if role is Role.CLIENT else Push(1, {}))


def test_goodbye_may_be_sent_first() -> None:
    assert Connection(Role.SERVER).send(Goodbye(ErrorCode.UNAVAILABLE, "starting"))
    assert Connection(Role.CLIENT).send(Goodbye(None, "changed my mind"))


BAD_CLIENT_SENDS: dict[str, Any] = {
    "not a message": {"op": "get"},
    "id negative": Request(-1, "op", {}),
    "id over 64 bits": Request(2**64, "op", {}),
    "id bool": Request(True, "op", {}),
    "id str": Request("1", "op", {}),  # type: ignore[arg-type]
    "op empty": Request(1, "", {}),
    "op bytes": Request(1, b"op", {}),  # type: ignore[arg-type]
    "args list": Request(1, "op", []),  # type: ignore[arg-type]
    "args None": Request(1, "op", None),  # type: ignore[arg-type]
    "set value": Request(1, "op", {"v": {1, 2}}),
    "object value": Request(1, "op", {"v": object()}),
    "int over 64 bits": Request(1, "op", {"v": 2**64}),
    "int under -2**63": Request(1, "op", {"v": -(2**63) - 1}),
    "lone surrogate": Request(1, "op", {"v": "\ud800"}),
    "bytes key": Request(1, "op", {"v": {b"k": 1}}),
    "int key": Request(1, "op", {"v": {1: 1}}),
    "goodbye unknown code": Goodbye("bogus", "m"),  # type: ignore[arg-type]
    "goodbye message None": Goodbye(None, None),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("message", BAD_CLIENT_SENDS.values(), ids=BAD_CLIENT_SENDS.keys())
def test_bad_fields_are_refused(message: Any) -> None:
    client = client_sent_hello()
    refused(client, message)
    assert client.send(Request(1, "op", {}))  # unchanged and usable


@pytest.mark.parametrize(
    "message",
    [
        Welcome("s", -1, {}),
        Welcome("s", 1, {"max_depth": "32"}),  # type: ignore[dict-item]
        Welcome(None, 1, {}),  # type: ignore[arg-type]
        Response(1, {"message": "no code"}, None),
        Response(1, {"code": "internal", "message": "m"}, "and a result"),
        Push(1, []),  # type: ignore[arg-type]
    ],
)
def test_bad_server_fields_are_refused(message: Message) -> None:
    server = server_welcomed(1) if not isinstance(message, Welcome) else server_got_hello()
    refused(server, message)


SMALL = Limits(max_frame_size=1000, max_container_len=10, max_depth=5)


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def cyclic() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


TOO_LARGE: dict[str, Any] = {
    "frame": {"v": b"x" * 1000},
    "str": {"v": "é" * 600},
    "array": {"v": list(range(11))},
    "tuple": {"v": tuple(range(11))},
    "map": {str(i): i for i in range(11)},
    "depth": {"v": nested(4)},
    "cycle": {"v": cyclic()},
}


@pytest.mark.parametrize("args", TOO_LARGE.values(), ids=TOO_LARGE.keys())
def test_over_a_limit_is_too_large_and_changes_nothing(args: dict[str, Any]) -> None:
    client, server = Connection(Role.CLIENT, SMALL), Connection(Role.SERVER, SMALL)
    data = client.send(HELLO)
    refused(client, Request(1, "op", args), ErrorCode.TOO_LARGE)
    assert client.statistics().in_flight == 0
    data += client.send(Request(1, "op", {"v": b"x" * 900}))  # the same id, just under the limit
    server.receive_data(data)
    assert server.next_event() == HELLO
    assert server.next_event() == Request(1, "op", {"v": b"x" * 900})


def test_just_within_the_limits_is_sent() -> None:
    client = Connection(Role.CLIENT, SMALL)
    client.send(HELLO)
    assert client.send(Request(1, "op", {"v": nested(3), "l": list(range(10)), "t": (1, 2)}))


@pytest.mark.parametrize("limit", [1, 3, Limits().max_in_flight])
def test_client_keeps_at_most_max_in_flight_and_a_response_frees_a_slot(limit: int) -> None:
    limits = Limits(max_in_flight=limit)
    client, server = Connection(Role.CLIENT, limits), Connection(Role.SERVER, limits)
    data = client.send(HELLO)
    data += b"".join(client.send(Request(i, "op", {})) for i in range(1, limit + 1))
    before = client.statistics()
    assert before.in_flight == limit
    with pytest.raises(LocalProtocolError) as info:
        client.send(Request(limit + 1, "op", {}))
    assert info.value.code is ErrorCode.TOO_LARGE
    assert f"max_in_flight ({limit})" in info.value.message
    assert client.statistics() == before  # nothing changed; the connection stays usable
    # The server, with the same limits, accepts all the client sent.
    server.receive_data(data)
    assert server.next_event() == HELLO
    for i in range(1, limit + 1):
        assert server.next_event() == Request(i, "op", {})
    client.receive_data(server.send(WELCOME) + server.send(Response(1, None, None)))
    assert client.next_event() == WELCOME
    assert client.next_event() == Response(1, None, None)
    assert client.statistics().in_flight == limit - 1
    server.receive_data(client.send(Request(limit + 1, "op", {})))  # the freed slot, used again
    assert server.next_event() == Request(limit + 1, "op", {})
    refused(client, Request(limit + 2, "op", {}), ErrorCode.TOO_LARGE)


def test_receive_data_after_eof_is_local_misuse() -> None:
    conn = Connection(Role.CLIENT)
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"\x00")


def test_a_push_packed_once_is_the_frame_send_makes() -> None:
    event = {"events": [{"rev": 7, "type": "put", "key": "k", "value": b"\x00v"}], "next_rev": 8}
    early = server_got_hello()
    with pytest.raises(LocalProtocolError):  # the order rules hold for the fast path too
        early.send_push(3, early.pack_event(event))
    server = server_welcomed()
    packed = server.pack_event(event)
    assert server.send_push(3, packed) == server.send(Push(3, event))
    assert server.send_push(2**64 - 1, packed)  # the largest stream id
    with pytest.raises(LocalProtocolError):
        server.send_push(-1, packed)
    with pytest.raises(LocalProtocolError):
        server.pack_event({"bad": object()})
    server.send(Goodbye(None, "done"))
    with pytest.raises(LocalProtocolError):
        server.send_push(3, packed)


def test_encode_changes_nothing_and_commit_checks_the_order_when_it_goes() -> None:
    server = server_welcomed(1, 2)
    answer = Response(1, None, {"key": "k"})
    data = server.encode(answer)
    assert server.statistics().in_flight == 2  # encoded, not sent: still awaiting its answer
    server.commit(answer)
    assert server.statistics().in_flight == 1
    assert data == server_welcomed(1).send(answer)  # the same bytes send makes
    with pytest.raises(LocalProtocolError):
        server.commit(answer)  # answered already: nothing changes
    assert server.statistics().messages_sent == 2  # Welcome and the one answer
    # Bytes encoded ahead may no longer go once our Goodbye went.
    late = server.encode(Response(2, None, None))
    server.send(Goodbye(None, "bye"))
    with pytest.raises(LocalProtocolError):
        server.commit(Response(2, None, None))
    assert late
    with pytest.raises(LocalProtocolError) as info:  # content checks come with the bytes
        server_welcomed(3).encode(Response(3, None, {"bad": object()}))
    assert info.value.code is ErrorCode.PROTOCOL
