"""``cancel``: a client that gives up on a claim tells the broker, which stops waiting for it or
gives back the item claimed for it, whether its answer is still waiting, queued, or already sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from inprocess import Running, running_broker
from wire import Wire

from prontodb.broker.server import ServerConfig
from prontodb.protocol import Request, Response


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
