"""Queue items over the wire: priorities, delays that wake a waiting claimer exactly when they end,
dependencies that wake it when they go, a queue's config and backoff, and the statistics.

In-process broker and clients in one trio loop, the broker's clock following trio's mock clock:
delays and leases pass without real time passing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from inprocess import FakeClock, Running, running_broker

from prontodb.broker.server import ServerConfig
from prontodb.broker.storage import FsyncPolicy
from prontodb.clients import AsyncClient, ErrorCode, ProntoError


@pytest.fixture
async def server(short_dir: Path) -> AsyncIterator[tuple[Running, FakeClock]]:
    # No fsync and the database opened first: both would run in threads, and the mock clock
    # jumps while they do.
    config = ServerConfig(
        data_dir=short_dir / "data", socket_path=short_dir / "s.sock", fsync=FsyncPolicy.NEVER
    )
    clock = FakeClock()
    async with running_broker(config, clock) as running:
        async with await AsyncClient.connect(running.url, user="ops") as client:
            await client.set("warm-up", 1)
            await client.delete("warm-up")
        yield running, clock


async def test_priorities_then_age(
    server: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    running, _clock = server
    async with await AsyncClient.connect(running.url, user="ops") as client:
        await client.set("jobs.report", 1, priority=200)
        await client.set("jobs.a", 1)
        await client.set("jobs.page", 1, priority=0)
        await client.set("jobs.b", 1)
        order = []
        while (task := await client.claim("jobs")) is not None:
            order.append(task.key)
        assert order == ["jobs.page", "jobs.a", "jobs.b", "jobs.report"]
        info = await client.get_info("jobs.page")
        assert info is not None
        assert (info.priority, info.ready_at, info.after) == (0, None, [])
        await client.set("jobs.x", 1)
        task = await client.claim("jobs")
        assert task is not None
        await client.release(task.key, task.token, priority=7)
        again = await client.get_info("jobs.x")
        assert again is not None
        assert again.priority == 7
        with pytest.raises(ProntoError):
            await client.set("jobs.c", 1, priority=-1)


async def test_a_waiting_claimer_gets_a_delayed_item_when_its_time_comes(
    server: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    running, clock = server
    async with await AsyncClient.connect(running.url, user="ops") as client:
        start = clock()
        await client.set("jobs.later", "x", delay=30)
        info = await client.get_info("jobs.later")
        assert info is not None
        assert info.ready_at == pytest.approx(start + 30)
        assert await client.claim("jobs") is None
        task = await client.claim("jobs", wait=600)  # one timer: no polling
        assert task is not None
        assert task.key == "jobs.later"
        assert clock() - start == pytest.approx(30, abs=0.5)
        await client.set("jobs.sched", "y", at=clock() + 10)
        got = await client.claim("jobs", wait=600)
        assert got is not None
        assert got.key == "jobs.sched"
        with pytest.raises(ProntoError) as both:
            await client.set("jobs.z", 1, delay=1, at=clock())
        assert both.value.code is ErrorCode.BAD_REQUEST


async def test_a_dependency_that_goes_wakes_the_waiting_claimer(
    server: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    running, _clock = server
    async with await AsyncClient.connect(running.url, user="ops") as client:
        await client.set("extract.a", 1)
        await client.set("load.a", 1, after=["extract.a"])
        got: list[str] = []

        async def loader() -> None:
            task = await client.claim("load", wait=600)
            assert task is not None
            got.append(task.key)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(loader)
            await trio.testing.wait_all_tasks_blocked()
            stats = await client.queue_show("load")
            assert (stats.ready, stats.waiting) == (0, 1)
            extract = await client.claim("extract")
            assert extract is not None
            await client.ack(extract.key, extract.token)
        assert got == ["load.a"]


async def test_a_queue_config_backs_off_and_buries(
    server: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    running, clock = server
    async with await AsyncClient.connect(running.url, user="ops") as client:
        config = await client.queue_config("jobs", lease=5, max_deliveries=2, backoff=(10, 60))
        assert config == {"lease": 5.0, "max_deliveries": 2, "backoff": [10.0, 60.0]}
        await client.set("jobs.flaky", "x")
        first = await client.claim("jobs")
        assert first is not None
        assert first.lease == pytest.approx(clock() + 5)  # the queue's lease
        again = await client.claim("jobs", wait=600)  # the lease runs out, then the backoff
        assert again is not None
        assert again.deliveries == 2
        assert again.token > first.token
        waited = clock() - first.lease
        assert 5 <= waited <= 10.5  # the first backoff: 10 s, jittered down by up to half
        await client.release(again.key, again.token)  # no delay: the backoff again
        info = await client.get_info("jobs.flaky")
        assert info is not None
        assert info.ready_at is not None
        assert await client.claim("jobs", wait=600) is None  # due, then buried (2 deliveries)
        stats = await client.queue_show("jobs")
        assert (stats.dead, stats.ready, stats.config["max_deliveries"]) == (1, 0, 2)
        assert [q.prefix for q in await client.queues()] == ["jobs"]
        assert await client.queue_config("jobs") == {}
        assert (await client.queue_show("jobs")).config == {}
