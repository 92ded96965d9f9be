"""``cancel``: a client that gives up on a claim tells the broker, which stops waiting for it or
gives back the item claimed for it, whether its answer is still waiting, queued, or already sent."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from inprocess import Running, running_broker
from wire import Wire

from prontodb.broker.server import ServerConfig
from prontodb.protocol import Goodbye, Request, Response


@pytest.fixture
async def server(short_dir: Path) -> AsyncIterator[Running]:
    config = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "s.sock")
    async with running_broker(config) as running:
        yield running


async def answers(wire: Wire, *requests: Request) -> dict[int, Any]:
    """The results of ``requests`` (sent already), whatever order they come in."""
    got: dict[int, Any] = {}
    while len(got) < len(requests):
        message = await wire.next()
        assert isinstance(message, Response), message
        assert message.error is None, message.error
        got[message.id] = message.result
    return {request.id: got[request.id] for request in requests}


async def park(wire: Wire, prefix: str = "q") -> Request:
    claim = wire.request("claim", prefix=prefix, wait=300)
    await wire.send(claim)
    await trio.testing.wait_all_tasks_blocked()
    return claim


async def test_a_cancelled_waiting_claim_stops_waiting_and_loses_its_turn(server: Running) -> None:
    first, second = await server.wire("first"), await server.wire("second")
    abandoned = await park(first)
    waiting = await park(second)  # served after the first: first come, first served
    cancel = first.request("cancel", id=abandoned.id)
    await first.send(cancel)
    assert await answers(first, abandoned, cancel) == {abandoned.id: None, cancel.id: True}

    writer = await server.wire()
    await writer.result("set", key="q.1", value="task")
    (item,) = (await answers(second, waiting)).values()
    assert (item["key"], item["deliveries"]) == ("q.1", 1)
    # Cancelling again, or what was never asked, undoes nothing.
    assert await first.result("cancel", id=abandoned.id) is False
    assert await first.result("cancel", id=12345) is False


async def test_an_item_claimed_for_a_cancelled_claim_whose_answer_had_not_gone_goes_back(
    server: Running,
) -> None:
    wire = await server.wire()
    abandoned = await park(wire)
    # One read holds both: the set serves the waiting claim (its answer waits for the fsync),
    # then the cancel finds that answer still queued.
    put = wire.request("set", key="q.1", value="task")
    cancel = wire.request("cancel", id=abandoned.id)
    await wire.send(put, cancel)
    got = await answers(wire, put, abandoned, cancel)
    assert (got[abandoned.id], got[cancel.id]) == (None, True)

    other = await server.wire("other")
    item = await other.result("claim", prefix="q")
    assert (item["key"], item["deliveries"]) == ("q.1", 2)  # the hand-out still counts


async def test_a_cancel_that_crosses_its_answer_gives_the_item_back(server: Running) -> None:
    wire = await server.wire()
    abandoned = await park(wire)
    writer = await server.wire("writer")
    await writer.result("set", key="q.1", value="task")
    (item,) = (await answers(wire, abandoned)).values()  # sent: a client could still give up

    assert await wire.result("cancel", id=abandoned.id) is True
    stale = await wire.call("ack", key="q.1", token=item["token"])
    assert stale.error is not None
    assert stale.error["code"] == "compare_failed"
    again = await writer.result("claim", prefix="q")
    assert (again["key"], again["deliveries"]) == ("q.1", 2)
    assert await wire.result("cancel", id=abandoned.id) is False  # given back once


async def test_a_cancel_after_a_nil_answer_undoes_nothing(server: Running) -> None:
    wire = await server.wire()
    assert await wire.result("claim", prefix="q") is None
    nothing = wire.request("claim", prefix="q")
    await wire.send(nothing)
    assert await answers(wire, nothing) == {nothing.id: None}
    assert await wire.result("cancel", id=nothing.id) is False


async def test_a_cancel_in_the_same_read_as_its_claim_gives_the_item_back(server: Running) -> None:
    wire = await server.wire()
    await wire.result("set", key="q.1", value="task")
    # The claim finds the item at once; its answer is not even queued when the cancel is read.
    claim = wire.request("claim", prefix="q", wait=5)
    cancel = wire.request("cancel", id=claim.id)
    await wire.send(claim, cancel)
    assert await answers(wire, claim, cancel) == {claim.id: None, cancel.id: True}
    item = await wire.result("claim", prefix="q")
    assert (item["key"], item["deliveries"]) == ("q.1", 2)


async def test_a_reused_id_names_the_new_request_only(server: Running) -> None:
    # Ids may be reused once answered: a cancel of a reused id must not give back the item the
    # first request with that id handed out, which its worker still holds.
    writer = await server.wire("writer")
    await writer.result("set", key="q.a", value="A")
    wire = await server.wire("worker")
    await wire.send(Request(1, "claim", {"prefix": "q"}))
    (first,) = (await answers(wire, Request(1, "claim", {}))).values()
    assert first["key"] == "q.a"
    await wire.send(Request(1, "claim", {"prefix": "q"}))  # again: nothing left, nil
    assert await answers(wire, Request(1, "claim", {})) == {1: None}
    await wire.send(Request(2, "cancel", {"id": 1}))
    assert await answers(wire, Request(2, "cancel", {})) == {2: False}
    # The same while the reused id's nil answer is still queued behind a write's fsync.
    await wire.send(
        Request(3, "set", {"key": "other", "value": 1}),
        Request(1, "claim", {"prefix": "q"}),
        Request(4, "cancel", {"id": 1}),
    )
    got = await answers(wire, Request(3, "set", {}), Request(1, "claim", {}), Request(4, "c", {}))
    assert (got[1], got[4]) == (None, False)
    assert await writer.result("claim", prefix="q") is None  # q.a is still the worker's
    await wire.send(Request(5, "ack", {"key": "q.a", "token": first["token"]}))
    assert await answers(wire, Request(5, "ack", {})) == {5: None}


async def test_a_cancel_after_the_item_was_acked_undoes_nothing(server: Running) -> None:
    wire = await server.wire()
    await wire.result("set", key="q.a", value="A")
    claim = wire.request("claim", prefix="q")
    await wire.send(claim)
    (item,) = (await answers(wire, claim)).values()
    await wire.result("ack", key="q.a", token=item["token"])
    assert await wire.result("cancel", id=claim.id) is False
    missing = await wire.call("cancel")
    assert missing.error is not None
    assert missing.error["code"] == "bad_request"


async def test_an_item_whose_answer_a_protocol_error_stopped_goes_back(server: Running) -> None:
    wire = await server.wire("worker")
    await park(wire)
    # The write that serves the claim, then a frame that breaks the protocol, in one read: the
    # claim's answer never goes (only the Goodbye may), so its item must not stay held.
    put = wire.request("set", key="q.1", value="task")
    await wire.stream.send_all(wire.conn.send(put) + struct.pack(">I", 1) + b"\xc1")
    while not isinstance(await wire.next(), Goodbye):
        pass
    other = await server.wire("other")
    item = await other.result("claim", prefix="q")
    assert (item["key"], item["deliveries"]) == ("q.1", 2)
