"""The order rules, each broken once in each direction it can be: the exact words of every refusal,
received (RemoteProtocolError) and sent (LocalProtocolError)."""

from __future__ import annotations

import struct

import msgpack
import pytest

from prontodb.protocol import (
    Connection,
    ErrorCode,
    Goodbye,
    Hello,
    LocalProtocolError,
    Message,
    ProtocolError,
    Push,
    RemoteProtocolError,
    Request,
    Response,
    Role,
    Welcome,
)

HELLO = Hello("c", "u")
WELCOME = Welcome("s", 1, {})
GOODBYE = Goodbye(None, "bye")


def request(request_id: int) -> Request:
    return Request(request_id, "op", {})


def response(request_id: int) -> Response:
    return Response(request_id, None, None)


PUSH = Push(1, {})


def framed(message: Message) -> bytes:
    """The bytes of ``message`` as a peer that keeps no order rules would send them."""
    body: bytes = msgpack.packb(message.to_wire(), use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def receive(conn: Connection, message: Message) -> None:
    conn.receive_data(framed(message))
    assert conn.next_event() == message


Step = tuple[str, Message]  # ("send" | "receive", message)


def take(conn: Connection, step: Step) -> None:
    way, message = step
    if way == "send":
        conn.send(message)
    else:
        receive(conn, message)


# (role, steps that are fine, the step that breaks a rule, what the refusal says)
CASES: dict[str, tuple[Role, list[Step], Step, str]] = {
    "server receives a Request before Hello": (
        Role.SERVER,
        [],
        ("receive", request(1)),
        "Request before Hello",
    ),
    "server receives a second Hello": (
        Role.SERVER,
        [("receive", HELLO)],
        ("receive", HELLO),
        "a second Hello",
    ),
    "server receives a Request id in flight": (
        Role.SERVER,
        [("receive", HELLO), ("receive", request(1))],
        ("receive", request(1)),
        "Request id 1 is already in flight",
    ),
    "server receives a Welcome": (
        Role.SERVER,
        [("receive", HELLO)],
        ("receive", WELCOME),
        "a server cannot receive Welcome",
    ),
    "server receives after the peer's Goodbye": (
        Role.SERVER,
        [("receive", HELLO), ("receive", GOODBYE)],
        ("receive", request(1)),
        "Request received after the peer's Goodbye",
    ),
    "client receives Welcome before sending Hello": (
        Role.CLIENT,
        [],
        ("receive", WELCOME),
        "Welcome before the client sent Hello",
    ),
    "client receives a second Welcome": (
        Role.CLIENT,
        [("send", HELLO), ("receive", WELCOME)],
        ("receive", WELCOME),
        "a second Welcome",
    ),
    "client receives a Response before Welcome": (
        Role.CLIENT,
        [("send", HELLO), ("send", request(1))],
        ("receive", response(1)),
        "Response before Welcome",
    ),
    "client receives a Response to no Request": (
        Role.CLIENT,
        [("send", HELLO), ("send", request(1)), ("receive", WELCOME)],
        ("receive", response(2)),
        "Response to id 2, which is not in flight",
    ),
    "client receives a Push before Welcome": (
        Role.CLIENT,
        [("send", HELLO)],
        ("receive", PUSH),
        "Push before Welcome",
    ),
    "client sends a Request before Hello": (
        Role.CLIENT,
        [],
        ("send", request(1)),
        "the first message must be Hello",
    ),
    "client sends a second Hello": (
        Role.CLIENT,
        [("send", HELLO)],
        ("send", HELLO),
        "Hello was already sent",
    ),
    "client sends a Request id in flight": (
        Role.CLIENT,
        [("send", HELLO), ("send", request(1))],
        ("send", request(1)),
        "Request id 1 is already in flight",
    ),
    "client sends a Welcome": (
        Role.CLIENT,
        [("send", HELLO)],
        ("send", WELCOME),
        "a client cannot send Welcome",
    ),
    "client sends after its Goodbye": (
        Role.CLIENT,
        [("send", HELLO), ("send", GOODBYE)],
        ("send", request(1)),
        "cannot send Request after our Goodbye",
    ),
    "server sends Welcome before Hello": (
        Role.SERVER,
        [],
        ("send", WELCOME),
        "Welcome before receiving Hello",
    ),
    "server sends a second Welcome": (
        Role.SERVER,
        [("receive", HELLO), ("send", WELCOME)],
        ("send", WELCOME),
        "Welcome was already sent",
    ),
    "server sends a Response before Welcome": (
        Role.SERVER,
        [("receive", HELLO), ("receive", request(1))],
        ("send", response(1)),
        "Response before Welcome",
    ),
    "server sends a Response to no Request": (
        Role.SERVER,
        [("receive", HELLO), ("receive", request(1)), ("send", WELCOME)],
        ("send", response(2)),
        "no Request with id 2 is in flight",
    ),
    "server sends a Push before Welcome": (
        Role.SERVER,
        [("receive", HELLO)],
        ("send", PUSH),
        "Push before Welcome",
    ),
}


@pytest.mark.parametrize(("role", "steps", "last", "words"), CASES.values(), ids=CASES.keys())
def test_each_refusal_says_which_rule(
    role: Role, steps: list[Step], last: Step, words: str
) -> None:
    conn = Connection(role)
    for step in steps:
        take(conn, step)
    error: type[ProtocolError] = LocalProtocolError if last[0] == "send" else RemoteProtocolError
    with pytest.raises(error) as info:
        take(conn, last)
    assert (info.value.code, info.value.message) == (ErrorCode.PROTOCOL, words)


def test_after_the_peer_broke_the_protocol_only_goodbye_may_be_sent() -> None:
    server = Connection(Role.SERVER)
    with pytest.raises(RemoteProtocolError):
        receive(server, request(1))
    with pytest.raises(LocalProtocolError) as info:
        server.send(WELCOME)
    assert info.value.message == "cannot send Welcome: the peer broke the protocol, only Goodbye"
    server.send(GOODBYE)


def test_a_push_sent_from_a_packed_event_keeps_the_order_rules() -> None:
    server = Connection(Role.SERVER)
    receive(server, HELLO)
    event = server.pack_event({})
    with pytest.raises(LocalProtocolError) as info:
        server.send_push(1, event)
    assert info.value.message == "Push before Welcome"
    server.send(WELCOME)
    assert server.send_push(1, event) == server.send(Push(1, {}))
