"""The ``stats`` op: the broker's figures move with what clients do (requests by op and code,
claims, redeliveries, dead letters, expired leases, watch overflows, fsyncs, group commits, queue
depths by state). In-process brokers and clients in one trio run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from inprocess import FakeClock, Running, running_broker, until

from prontodb.broker.engine import HistoryLimits
from prontodb.broker.server import ServerConfig
from prontodb.broker.storage import FsyncPolicy
from prontodb.clients import AsyncClient, ErrorCode, ProntoError
from prontodb.protocol import Push, Response


def config(directory: Path, **extra: Any) -> ServerConfig:
    return ServerConfig(data_dir=directory / "data", socket_path=directory / "s.sock", **extra)


@pytest.fixture
async def server(short_dir: Path) -> AsyncIterator[tuple[Running, FakeClock]]:
    # No fsync, and the database opened before the mock clock runs: both would be threads.
    clock = FakeClock()
    async with running_broker(config(short_dir, fsync=FsyncPolicy.NEVER), clock) as running:
        async with await AsyncClient.connect(running.url, user="ops") as client:
            await client.set("warm-up", 1)
        yield running, clock


async def test_stats_count_requests_claims_redeliveries_and_dead_letters(
    server: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    running, clock = server
    async with await AsyncClient.connect(running.url, user="ops") as client:
        for n in range(3):
            await client.set(f"jobs.j{n}", n)
        await client.set("jobs.later", "x", delay=60)
        first = await client.claim("jobs", lease=5)
        assert first is not None
        await client.release(first.key, first.token)
        again = await client.claim("jobs", lease=5)  # the same item, its second delivery
        assert again is not None
        assert (again.key, again.deliveries) == (first.key, 2)
        await client.release(again.key, again.token)
        # A third hand-out is over max_deliveries: the item goes to dead.jobs.j0 instead.
        third = await client.claim("jobs", lease=5, max_deliveries=2)
        assert third is not None
        assert third.key == "jobs.j1"
        clock.jump += 10  # its lease runs out: the sweeper gives it back
        await trio.sleep(1)
        with pytest.raises(ProntoError):
            await client.ack("jobs.nothing", 1)
        stats = await client.stats()

    assert stats["requests"]["set"]["ok"] == 5  # the warm-up's too
    assert stats["requests"]["ack"][ErrorCode.COMPARE_FAILED.value] == 1
    assert stats["request_seconds"]["set"]["count"] == 5
    db = stats["databases"]["default"]
    assert (db["claims"], db["redeliveries"], db["dead_letters"]) == (3, 1, 1)
    assert db["expired_leases"] == 1
    assert db["claims_in_flight"] == 0
    assert db["revision"] >= 10
    assert db["first_revision"] == 1
    assert db["disk_bytes"]["segments"] > 0
    jobs = db["queues"]["jobs"]
    assert (jobs["ready"], jobs["delayed"], jobs["claimed"], jobs["dead"]) == (2, 1, 0, 1)
    assert jobs["oldest_ready_age"] >= 10
    assert stats["connections"] == [
        {"transport": "unix", "user": "ops", "connections": 1, "watchers": 0}
    ]
    assert stats["caps"]["queues"] == 100
    process = stats["process"]
    assert process["rss_bytes"] > 1024 * 1024  # this test's own process: it holds the broker
    assert process["cpu_seconds"] > 0
    assert (db["watchers"], db["watch_lag"], db["watches"]) == (0, 0, [])


async def test_queue_depth_is_capped_to_the_deepest_queues(
    server: tuple[Running, FakeClock],
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prontodb.broker.server import _snapshot

    monkeypatch.setattr(_snapshot, "QUEUES_TRACKED", 2)
    running, _clock = server
    async with await AsyncClient.connect(running.url, user="ops") as client:
        for queue, items in (("a", 1), ("b", 3), ("c", 2)):
            for n in range(items):
                await client.set(f"{queue}.{n}", n)
            await client.claim(queue)
        stats = await client.stats()
    db = stats["databases"]["default"]
    assert sorted(db["queues"]) == ["b", "c"]
    assert db["queues_untracked"] == 1


async def test_a_watch_overflow_is_counted(short_dir: Path) -> None:
    cfg = config(short_dir, history=HistoryLimits(revisions=20))
    async with running_broker(cfg) as running:
        slow = await running.wire()
        request = slow.request("watch", prefix="k")
        await slow.send(request)
        value = "x" * 8000  # its socket fills after a few of these; it reads none
        async with await AsyncClient.connect(running.url, user="writer") as client:
            for n in range(200):
                await client.set(f"k.{n % 10}", value)
            with trio.fail_after(30):
                while True:
                    message = await slow.next()
                    if isinstance(message, Response):
                        break
                    assert isinstance(message, Push)
            assert message.error is not None
            assert message.error["code"] == ErrorCode.OVERFLOW
            stats = await client.stats()
    assert stats["databases"]["default"]["watch_overflows"] == 1
    assert stats["requests"]["watch"] == {ErrorCode.OVERFLOW.value: 1}


async def test_a_watcher_that_does_not_read_is_seen_falling_behind(short_dir: Path) -> None:
    async with running_broker(config(short_dir, fsync=FsyncPolicy.NEVER)) as running:
        slow = await running.wire(user="slow")
        await slow.send(slow.request("watch", prefix="k"))
        assert isinstance(await slow.next(), Push)  # in place; it reads nothing more
        async with (
            await AsyncClient.connect(running.url, user="writer") as client,
            client.watch("k") as keeping_up,
        ):
            value = "x" * 8000  # the slow watcher's socket fills after a few of these
            for n in range(100):
                await client.set(f"k.{n % 10}", value)
            async for event in keeping_up:
                if event.rev == 100:  # the last set's: this watcher has had them all
                    break
            # Its position moves once the broker's side of its push is written.
            (db,) = running.broker.databases.opened()
            await until(lambda: any(w.next_rev == 101 for w in db.watching))
            stats = await client.stats()
    figures = stats["databases"]["default"]
    assert figures["watchers"] == 2
    lagging, current = figures["watches"]
    assert (lagging["user"], lagging["prefix"]) == ("slow", "k")
    assert lagging["lag"] > 0
    assert lagging["lag"] == figures["revision"] + 1 - lagging["next_rev"]
    assert figures["watch_lag"] == lagging["lag"]
    assert (current["user"], current["lag"], current["next_rev"]) == ("writer", 0, 101)


async def test_fsyncs_and_group_commits_are_measured(short_dir: Path) -> None:
    async with (
        running_broker(config(short_dir)) as running,  # fsync always
        await AsyncClient.connect(running.url, user="ops") as client,
    ):
        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(client.set, f"k{n}", n)
        stats = await client.stats()
    assert stats["fsync_seconds"]["count"] >= 1
    commits = stats["commit_records"]
    assert commits["sum"] == 20
    assert commits["count"] == stats["fsync_seconds"]["count"]  # one fsync per group commit
    assert len(commits["counts"]) == len(commits["bounds"]) + 1
