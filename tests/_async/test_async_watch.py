"""Watches through the client, against real broker processes: what a watch sees, where it starts,
and how it rides out a broker restart or gives up.

Written for the async client, on trio and asyncio (``anyio_test``); scripts/unasync.py makes the
sync client's copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from brokers import BrokerProcess, running_broker, start_broker

from _async.support import anyio_test, run_blocking
from prontodb.clients import AsyncClient, ErrorCode, ProntoError, WatchEvent
from prontodb.clients._async._pipeline import Pipeline
from prontodb.clients._async.watch import Watch


@pytest.fixture
def broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path / "data", short_dir / "b.sock") as process:
        yield process


@pytest.fixture
def short_history_broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    """A broker that keeps the changes of its last 3 revisions only."""
    extra = ["--history-revisions", "3"]
    with running_broker(tmp_path / "data", short_dir / "b.sock", extra=extra) as process:
        yield process


def brief(events: list[WatchEvent]) -> list[tuple[int, str, str, object]]:
    return [(e.rev, e.type, e.key, e.value) for e in events]


@anyio_test
async def test_a_watch_from_a_future_revision_knows_it_waits(broker: BrokerProcess) -> None:
    async with AsyncClient.connect(broker.url, cursor="future") as client:
        async with client.watch("", from_rev=5) as early:  # the database is not made yet
            assert (early.start_rev, early.head_rev) == (5, 0)
        await client.set("k", 1)
        async with client.watch("", from_rev=5) as watch:
            assert (watch.start_rev, watch.head_rev) == (5, 1)
            for n in range(2, 6):
                await client.set("k", n)
            event = await watch.next_event(timeout=10)
            assert event is not None
            assert (event.rev, event.value) == (5, 5)


@anyio_test
async def test_a_watch_sees_writes_made_after_it_opened(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url, user="w1") as client:
        await client.set("other", 0)
        async with client.watch("jobs") as watch:
            assert (watch.start_rev, watch.head_rev) == (2, 1)
            await client.set("jobs.a", "new")
            await client.set("jobsx", "outside")
            await client.delete("jobs.a")
            first = await watch.__anext__()
            second = await watch.next_event(timeout=10)
            assert second is not None
            assert brief([first, second]) == [
                (2, "put", "jobs.a", "new"),
                (4, "delete", "jobs.a", None),
            ]
            assert (first.by, first.version, first.create_rev) == ("w1", 1, 2)
            assert await watch.next_event(timeout=0.05) is None  # nothing more came
            assert watch.next_rev == 5


@anyio_test
async def test_a_watch_replays_from_a_revision(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url) as client:
        for i in range(6):
            await client.set("k", i)
        seen = []
        async with client.watch(from_rev=3) as watch:
            await client.incr("n")
            async for event in watch:
                seen.append(event)
                if len(seen) == 5:
                    break
        assert [(e.rev, e.value) for e in seen] == [(3, 2), (4, 3), (5, 4), (6, 5), (7, 1)]


@anyio_test
async def test_a_start_older_than_the_history_raises_compacted(
    short_history_broker: BrokerProcess,
) -> None:
    async with await AsyncClient.connect(short_history_broker.url) as client:
        for i in range(10):
            await client.set("k", i)
        watch = client.watch(from_rev=2)
        with pytest.raises(ProntoError) as caught:
            await watch.open()
    assert caught.value.code is ErrorCode.COMPACTED
    assert caught.value.details["oldest_rev"] == 8


@anyio_test
async def test_a_watch_resumes_across_a_broker_restart_without_loss_or_repeat(
    tmp_path: Path, short_dir: Path
) -> None:
    data, sock = tmp_path / "data", short_dir / "b.sock"
    broker = await run_blocking(partial(start_broker, data, sock))
    try:
        async with await AsyncClient.connect(broker.url) as client:
            watch = client.watch("q")
            await watch.open()
            for i in range(5):
                await client.set(f"q.{i}", i)
            seen = [await watch.next_event(timeout=10) for _ in range(3)]
        # The watch has two more events in its socket, and then a Goodbye.
        await run_blocking(broker.terminate)
        broker = await run_blocking(partial(start_broker, data, sock))
        async with await AsyncClient.connect(broker.url) as client:
            for i in range(5, 8):
                await client.set(f"q.{i}", i)
            seen += [await watch.next_event(timeout=10) for _ in range(5)]
            assert await watch.next_event(timeout=0.05) is None
            await watch.aclose()
        assert [e.value if e is not None else None for e in seen] == list(range(8))
        assert [e.rev for e in seen if e is not None] == list(range(1, 9))
    finally:
        broker.kill()


@anyio_test
async def test_a_watch_gives_up_once_the_broker_stays_away(tmp_path: Path, short_dir: Path) -> None:
    broker = await run_blocking(partial(start_broker, tmp_path / "data", short_dir / "b.sock"))
    try:
        async with await AsyncClient.connect(broker.url) as client:
            watch = client.watch(reconnect=0.3)
            await watch.open()
            await client.set("k", 1)
            assert await watch.next_event(timeout=10) is not None
        await run_blocking(broker.terminate)
        with pytest.raises(ProntoError) as caught:
            await watch.next_event(timeout=30)
        assert caught.value.code is ErrorCode.UNAVAILABLE
        assert caught.value.details["next_rev"] == 2
    finally:
        broker.kill()


def test_resuming_inside_a_split_revision_skips_what_was_already_had() -> None:
    async def never() -> Pipeline:
        raise AssertionError("not connected in this test")

    watch = Watch(never, "", from_rev=None, cursor="default", reconnect=1.0)
    events = [{"rev": 7, "type": "expire", "key": f"s.{i}"} for i in range(5)]
    watch._take({"events": events[:3], "next_rev": 7, "more": True})
    # The connection is lost and the watch resumes from 7: the broker sends 7 again, whole.
    watch._arrived_rev = watch._arrived = 0
    watch._take({"events": events[:2], "next_rev": 7, "more": True})
    watch._take({"events": [*events[2:], {"rev": 8, "type": "delete", "key": "x"}], "next_rev": 9})
    assert [(e.rev, e.key) for e in watch._events] == [
        *[(7, f"s.{i}") for i in range(5)],
        (8, "x"),
    ]
    assert watch.next_rev == 9
