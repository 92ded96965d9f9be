"""The async client where the sync one has no counterpart: callers cancelled mid-call, and a clock
that jumps. Run on trio and asyncio (``anyio_test``) against real brokers and a scripted peer.
Most use the session's broker, through the project's own pytest plugin (``prontodb_url`` and a
database of the test's own, ``prontodb_cursor``: docs/TESTING.md), as its users' tests would.

The rest of the async client's tests are written once for both clients: tests/_async/.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
import trio.testing
from _async.support import anyio_test, expect_error, scripted
from brokers import BrokerProcess, running_broker

from prontodb.clients import AsyncClient, BrokerUnavailable, ErrorCode, ProntoError


@pytest.fixture
def fast_broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    """A broker that skips fsync, for tests that write thousands of keys."""
    with running_broker(
        tmp_path / "data", short_dir / "b.sock", extra=("--fsync", "never")
    ) as process:
        yield process


# -- cancelled callers, against a real broker ------------------------------------------------


@anyio_test
async def test_cancelled_callers_do_not_break_the_next_ones(
    prontodb_url: str, prontodb_cursor: str
) -> None:
    async with await AsyncClient.connect(prontodb_url, cursor=prontodb_cursor) as client:
        finished = 0

        async def incr() -> None:
            nonlocal finished
            await client.incr("hits")
            finished += 1

        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(incr)
            # Once every request is sent, cancel the callers still waiting for an answer.
            # Nothing signals "sent", so yield to the callers until the counters say so.
            while client.statistics()["in_flight"] + finished < 50:
                await anyio.lowlevel.checkpoint()
            group.cancel_scope.cancel()
        applied = await client.incr("hits", 0)  # the abandoned answers are read and dropped
        assert 0 <= applied <= 50
        assert await client.get("hits") == applied
        stats = client.statistics()
        assert (stats["in_flight"], stats["abandoned"], stats["waiting"]) == (0, 0, 0)


@anyio_test
async def test_an_abandoned_large_answer_does_not_block_a_large_request(
    fast_broker: BrokerProcess,
) -> None:
    # Unread, a 1 MiB scan page fills the socket and the broker stops reading while it waits to
    # send it; a 900 kB request sent then would block for good unless the answer is read first.
    async with await AsyncClient.connect(fast_broker.url) as client:
        for start in range(0, 1000, 125):
            ops = [
                {"op": "set", "key": f"q.k{i:04}", "value": "v" * 2000}
                for i in range(start, start + 125)
            ]
            await client.txn([], ops)
        async with anyio.create_task_group() as group:
            group.start_soon(client.scan, "q")
            while client.statistics()["in_flight"] < 1:  # until its request is sent
                await anyio.lowlevel.checkpoint()
            group.cancel_scope.cancel()
        assert client.statistics()["abandoned"] == 1
        with anyio.fail_after(30):
            await client.set("big", "x" * 900_000)
        assert client.statistics()["abandoned"] == 0


@anyio_test
async def test_closing_the_client_ends_a_call_blocked_reading(
    prontodb_url: str, prontodb_cursor: str
) -> None:
    client = await AsyncClient.connect(prontodb_url, cursor=prontodb_cursor)
    ended = anyio.Event()

    async def blocked() -> None:
        await expect_error(ErrorCode.UNAVAILABLE, lambda: client.claim("nothing.here", wait=30))
        ended.set()

    async with anyio.create_task_group() as group:
        group.start_soon(blocked)
        await anyio.wait_all_tasks_blocked()  # the claim is sent; its caller waits to read
        await client.aclose()
        with anyio.fail_after(10):
            await ended.wait()
    # The closed socket's fd number may come back at once: a new client must work on it.
    async with await AsyncClient.connect(prontodb_url) as again:
        await again.ping()


def test_a_silent_broker_times_out_the_greeting(short_dir: Path) -> None:
    path = str(short_dir / "silent.sock")

    async def body() -> None:
        async with await anyio.create_unix_listener(path) as listener:
            accepted: list[anyio.abc.SocketStream] = []

            async def accept() -> None:
                accepted.append(await listener.accept())  # and never answer the Hello

            async with anyio.create_task_group() as group:
                group.start_soon(accept)
                err = await expect_error(
                    ErrorCode.UNAVAILABLE, lambda: AsyncClient.connect("unix://" + path, timeout=5)
                )
            for stream in accepted:
                await stream.aclose()
        assert "did not answer within 5 s" in err.message
        assert not isinstance(err, BrokerUnavailable)  # something is there: do not start another

    # The clock jumps whenever every task waits, so the 5 s pass at once.
    clock = trio.testing.MockClock(autojump_threshold=0)
    anyio.run(body, backend="trio", backend_options={"clock": clock})


# -- cancelled callers, against a scripted peer ------------------------------------------------


@anyio_test
async def test_a_caller_cancelled_after_sending_is_dropped_cleanly(short_dir: Path) -> None:
    async with scripted(short_dir) as (client, peer):
        cancelled = anyio.Event()
        results: list[Any] = []

        async def doomed(scope: anyio.CancelScope) -> None:
            with scope:
                await client.get("doomed")
            cancelled.set()

        async def patient() -> None:
            results.append(await client.get("patient"))

        async with anyio.create_task_group() as group:
            scope = anyio.CancelScope()
            group.start_soon(doomed, scope)
            first = await peer.request()
            group.start_soon(patient)
            second = await peer.request()
            scope.cancel()
            await cancelled.wait()
            assert client.statistics()["abandoned"] == 1
            await peer.answer(first, "for nobody")
            await peer.answer(second, "for patient")
        assert results == ["for patient"]

        async with anyio.create_task_group() as group:
            group.start_soon(patient)
            await peer.answer(await peer.request(), "again")
        assert results == ["for patient", "again"]
        assert client.statistics()["abandoned"] == 0


@anyio_test
async def test_abandoned_requests_holding_every_slot_are_drained(short_dir: Path) -> None:
    async with scripted(short_dir, max_in_flight=2) as (client, peer):
        async with anyio.create_task_group() as group:
            group.start_soon(client.get, "a")
            group.start_soon(client.get, "b")
            held = [await peer.request(), await peer.request()]
            group.cancel_scope.cancel()
        assert client.statistics()["abandoned"] == 2
        results: list[Any] = []

        async def late() -> None:
            results.append(await client.get("c"))

        async with anyio.create_task_group() as group:
            group.start_soon(late)
            await anyio.wait_all_tasks_blocked()
            # No slot is free until the abandoned answers are read, which only a waiting
            # caller can do.
            assert client.statistics()["queued"] == 1
            for request in held:
                await peer.answer(request, "stale")
            request = await peer.request()
            assert request.args["key"] == "c"
            await peer.answer(request, "fresh")
        assert results == ["fresh"]


# -- cancelled claims ----------------------------------------------------------------------------


async def give_up_a_waiting_claim(client: AsyncClient) -> None:
    """Start a claim that waits, and cancel its caller once its request is sent."""
    async with anyio.create_task_group() as group:
        group.start_soon(partial(client.claim, "jobs", wait=300))
        while client.statistics()["in_flight"] < 1:
            await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()


@anyio_test
async def test_a_cancelled_waiting_claim_does_not_hold_up_the_next_calls(
    prontodb_url: str, prontodb_cursor: str
) -> None:
    async with await AsyncClient.connect(prontodb_url, cursor=prontodb_cursor) as client:
        await give_up_a_waiting_claim(client)
        with anyio.fail_after(30):  # not the claim's 300 s
            assert await client.set("after", 1) > 0


@anyio_test
async def test_a_cancelled_waiting_claim_gives_up_its_place_at_the_broker(
    prontodb_url: str, prontodb_cursor: str
) -> None:
    async with await AsyncClient.connect(prontodb_url, cursor=prontodb_cursor) as client:
        await give_up_a_waiting_claim(client)
        # The cancel went out as the claim was given up, before this set on the same
        # connection: the broker no longer waits for that claim, so nothing is claimed for it
        # (else the item would be held for its 60 s lease, and this claim would time out).
        await client.set("jobs.a", 1)
        got = await client.claim("jobs", wait=30)
        assert got is not None
        assert (got.key, got.deliveries) == ("jobs.a", 1)


@anyio_test
async def test_a_claim_cancelled_as_the_connection_fails_still_ends_as_cancelled(
    prontodb_url: str, prontodb_cursor: str
) -> None:
    # The cancel is sent from the cancelled call's `finally`: if the connection fails while it
    # waits to send, that failure must not replace the cancellation (a move_on block around
    # the claim moves on).
    async with await AsyncClient.connect(prontodb_url, cursor=prontodb_cursor) as client:
        outcome: list[object] = []
        scope = anyio.CancelScope()

        async def claimer() -> None:
            with scope:
                await client.claim("jobs", wait=300)
            outcome.append("moved on")

        pipeline = client._pipeline
        async with anyio.create_task_group() as group:
            group.start_soon(claimer)
            while client.statistics()["in_flight"] < 1:  # until its request is sent
                await anyio.lowlevel.checkpoint()
            await pipeline._send_lock.acquire()  # another caller is writing a frame ...
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            pipeline._fail(ProntoError(ErrorCode.UNAVAILABLE, "lost"))  # ... and finds it dead
            pipeline._send_lock.release()
        assert outcome == ["moved on"]
