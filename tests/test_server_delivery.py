"""How the broker's answers leave it: straight from the flush that made them durable, in request
order, and with a bounded buffer for a client that does not read."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from inprocess import Running, running_broker

from prontodb.broker.server import ServerConfig
from prontodb.broker.server._outbox import SEND_CHUNK
from prontodb.broker.server._pending_input import PendingInput
from prontodb.protocol import ConnectionClosed, Goodbye, Push, Response


@pytest.fixture
async def server(short_dir: Path) -> AsyncIterator[Running]:
    config = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "s.sock")
    async with running_broker(config) as running:
        yield running


def test_pending_input_sees_bytes_not_yet_read() -> None:
    pending = PendingInput()
    a, b = socket.socketpair()
    try:
        pending.add(a.fileno())
        assert not pending.waiting()
        b.send(b"x")
        assert pending.waiting()
        a.recv(1)
        assert not pending.waiting()
        pending.remove(a.fileno())
        b.send(b"y")
        assert not pending.waiting()  # no longer watched
        pending.remove(a.fileno())  # twice is harmless
    finally:
        pending.close()
        a.close()
        b.close()
    assert pending.waiting()  # closed: it knows nothing, so input may be waiting


async def test_a_client_that_does_not_read_holds_back_only_itself(server: Running) -> None:
    value = "v" * (512 * 1024)
    reader = await server.wire("reader")
    assert (await reader.call("set", key="big", value=value)).error is None
    # 64 answers of half a MiB each, 32 MiB in all: far more than the socket holds.
    requests = [reader.request("get", key="big") for _ in range(64)]
    await reader.send(*requests)
    await trio.testing.wait_all_tasks_blocked()

    other = await server.wire("other")
    for i in range(20):  # everyone else is served meanwhile
        assert (await other.call("set", key=f"k{i}", value=i)).error is None
        assert (await other.call("get", key=f"k{i}")).result == i
    # The broker encoded one piece of about SEND_CHUNK (two answers) for the reader and stopped:
    # the rest waits as requests in flight (which the protocol bounds), not as 32 MiB of bytes.
    (session,) = [s for s in server.broker.sessions.live() if s.user == "reader"]
    assert len(session.outbox.queue) >= len(requests) - 2 * SEND_CHUNK // len(value)

    answers = [await reader.next() for _ in requests]
    assert [a.id for a in answers if isinstance(a, Response)] == [r.id for r in requests]
    assert all(isinstance(a, Response) and a.result == value for a in answers)


async def test_answers_to_writes_and_reads_keep_request_order_across_flushes(
    server: Running,
) -> None:
    w = await server.wire()
    waiter = await server.wire("waiter")
    claim = waiter.request("claim", prefix="q", wait=30)
    await waiter.send(claim)
    await trio.testing.wait_all_tasks_blocked()
    # Writes (each durable only after a flush), reads of what they wrote, and a write that
    # serves the blocked claimer, pipelined in one send.
    requests = []
    for i in range(50):
        requests.append(w.request("set", key=f"k{i}", value=i))
        requests.append(w.request("get", key=f"k{i}"))
    requests.append(w.request("set", key="q.item", value="job"))
    requests.append(w.request("ping"))
    await w.send(*requests)
    answers = [await w.next() for _ in requests]
    assert [a.id for a in answers if isinstance(a, Response)] == [r.id for r in requests]
    gets = [a.result for a in answers[1:100:2] if isinstance(a, Response)]
    assert gets == list(range(50))
    served = await waiter.next()
    assert isinstance(served, Response)
    assert served.id == claim.id
    assert served.result["key"] == "q.item"
    # The claim's answer went out only once the claim was durable.
    db = server.broker.databases.opened()[0]
    assert db.is_durable(db.database.last_ticket)


async def test_a_protocol_error_behind_a_pending_write_still_gets_its_goodbye(
    server: Running,
) -> None:
    w = await server.wire()
    request = w.request("set", key="a", value=1)
    # The write and garbage in one read: the write's answer waits for the disk, the garbage
    # breaks the protocol meanwhile. Only the Goodbye may go; then the connection closes.
    await w.stream.send_all(w.conn.send(request) + b"\xff" * 16)
    with trio.fail_after(10):
        goodbye = await w.next()
        assert isinstance(goodbye, Goodbye)
        assert isinstance(await w.next(), ConnectionClosed)
    await trio.testing.wait_all_tasks_blocked()
    assert not server.broker.sessions  # the session ended, and nothing of it hangs


async def test_answers_that_come_one_by_one_do_not_pile_up_for_a_client_that_does_not_read(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    reader = await server.wire("reader")
    value = "v" * (512 * 1024)
    assert (await reader.call("set", key="big", value=value)).error is None
    # Claims that run out one by one, each a new answer behind 100 MiB of gets nobody reads.
    await reader.send(*[reader.request("claim", prefix=f"q{i}", wait=0.5) for i in range(100)])
    await trio.testing.wait_all_tasks_blocked()
    await reader.send(*[reader.request("get", key="big") for _ in range(200)])
    await trio.sleep(1)  # every claim has run out (the mock clock jumps there)
    (session,) = [s for s in server.broker.sessions.live() if s.user == "reader"]
    assert len(session.outbox.pending) <= SEND_CHUNK + len(value) + 1024
    await reader.aclose()
    server.wires.remove(reader)


async def test_an_unwatch_while_its_pushes_wait_for_a_full_socket_cuts_no_frame(
    server: Running,
) -> None:
    w = await server.wire("watcher")
    writer = await server.wire("writer")
    watch = w.request("watch", prefix="p")
    await w.send(watch)
    assert isinstance(await w.next(), Push)
    value = "v" * (200 * 1024)
    for i in range(60):  # 12 MiB of pushes: far more than the socket holds
        assert (await writer.call("set", key=f"p.{i}", value=value)).error is None
    unwatch = w.request("unwatch", stream=watch.id)
    await w.send(unwatch)
    ends: dict[int, Any] = {}
    with trio.fail_after(30):
        while len(ends) < 2:  # every push whole, then both answers
            message = await w.next()
            if isinstance(message, Response):
                ends[message.id] = message.raise_for_error()
            else:
                assert isinstance(message, Push)
    assert ends[unwatch.id] is True
    assert "next_rev" in ends[watch.id]


async def test_an_answer_encoded_ahead_goes_as_unavailable_when_its_write_fails(
    server: Running,
) -> None:
    # The broker encodes an answer while its write waits for the disk; if the write then fails,
    # the client must hear `unavailable`, not the success that was encoded, and a claimer
    # served by that write must not get the item either.
    w = await server.wire()
    assert (await w.call("set", key="before", value=1)).error is None
    waiter = await server.wire("waiter")
    claim = waiter.request("claim", prefix="q", wait=30)
    await waiter.send(claim)
    await trio.testing.wait_all_tasks_blocked()
    (db,) = server.broker.databases._open.values()
    full = os.open("/dev/full", os.O_WRONLY)  # every write fails as on a full disk
    try:
        os.dup2(full, db.database.storage._fd)  # type: ignore[attr-defined]
    finally:
        os.close(full)
    answer = await w.call("set", key="q.1", value="task")
    assert answer.error is not None
    assert answer.error["code"] == "unavailable"
    served = await waiter.next()
    assert isinstance(served, Response)
    assert served.id == claim.id
    assert served.error is not None
    assert served.error["code"] == "unavailable"
    # The database is reopened from what was durable: the failed write never happened.
    assert (await w.call("get", key="q.1")).result is None
    assert (await w.call("get", key="before")).result == 1
