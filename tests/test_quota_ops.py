"""Quotas over the wire: keys and bytes refused with quota_exceeded naming the limit, under
concurrent writers too; claims held, a waiting claimer at its quota passed over; requests per
second; connections. In-process broker, the broker's clock following trio's mock clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from inprocess import FakeClock, Running, running_broker

from prontodb.broker.server import ServerConfig
from prontodb.broker.storage import FsyncPolicy
from prontodb.clients import AsyncClient, ErrorCode, ProntoError, QuotaExceeded


@pytest.fixture
async def server(short_dir: Path) -> AsyncIterator[Running]:
    config = ServerConfig(
        data_dir=short_dir / "data", socket_path=short_dir / "s.sock", fsync=FsyncPolicy.NEVER
    )
    async with running_broker(config, FakeClock()) as running:
        async with await AsyncClient.connect(running.url, user="ops") as client:
            await client.set("warm-up", 1)
            await client.delete("warm-up")
        yield running


async def test_concurrent_writers_never_pass_a_quota(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as admin:
        assert await admin.quota_set("ann", max_keys=10, max_bytes=1000) == {
            "max_keys": 10,
            "max_bytes": 1000,
        }
        refusals: list[ProntoError] = []

        async def writer(n: int) -> None:
            async with await AsyncClient.connect(server.url, user="ann") as ann:
                for i in range(5):
                    try:
                        await ann.set(f"w{n}.k{i}", "x" * 20)
                    except QuotaExceeded as err:
                        refusals.append(err)

        async with trio.open_nursery() as nursery:
            for n in range(8):
                nursery.start_soon(writer, n)
        shown = await admin.quota_show("ann")
        assert shown["ann"]["use"]["keys"] == 10  # exactly: 40 tried, 30 refused
        assert len(refusals) == 30
        assert refusals[0].details == {"user": "ann", "limit": "max_keys", "value": 10}
        await admin.quota_set("ann")  # no limit: no quota
        assert await admin.quota_show() == {}


async def test_claims_held_and_a_waiting_claimer_at_its_quota(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as admin:
        await admin.quota_set("w", max_claims=1)
        await admin.set("jobs.a", 1)
        async with await AsyncClient.connect(server.url, user="w") as w:
            first = await w.claim("jobs")
            assert first is not None
            with pytest.raises(QuotaExceeded):
                await w.claim("jobs")
            other_got: list[str] = []

            async def other() -> None:
                task = await admin.claim("jobs", wait=600)
                assert task is not None
                other_got.append(task.key)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(other)
                await trio.testing.wait_all_tasks_blocked()
                await admin.set("jobs.b", 1)  # admin's waiting claim is served
            assert other_got == ["jobs.b"]


async def test_rate_and_connections(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as admin:
        limits = await admin.user_limits("bot", rate=5, max_connections=1)
        assert limits == {
            "user": "bot",
            "limits": {"rate": 5.0, "max_connections": 1},
            "connections": 0,
        }
        async with await AsyncClient.connect(server.url, user="bot") as bot:
            answers = []
            for _ in range(8):  # no time passes between them (mock clock)
                try:
                    answers.append(await bot.get("x"))
                except QuotaExceeded as err:
                    answers.append(err.details["limit"])
            assert answers == [None] * 5 + ["rate"] * 3
            await trio.sleep(1)  # a second's worth of tokens again
            assert await bot.get("x") is None
            with pytest.raises(ProntoError) as second:
                await AsyncClient.connect(server.url, user="bot")
            assert second.value.code is ErrorCode.QUOTA_EXCEEDED
            assert (await admin.user_limits("bot"))["connections"] == 1
        await admin.user_limits("bot", clear=True)
        assert (await admin.user_limits("bot"))["limits"] == {}
