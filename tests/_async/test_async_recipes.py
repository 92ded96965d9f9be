"""The clients' locks, semaphores, elections and barriers against a real broker process.

Written for the async client (trio and asyncio); scripts/unasync.py makes the sync client's copy,
with threads for tasks. Waiting happens at the broker: a test waits for a party to be in line by
watching the recipe's keys, never for time to pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from brokers import BrokerProcess, running_broker

from _async.support import anyio_test, create_task_group, expect_error
from prontodb.clients import AsyncClient, ErrorCode, Member


@pytest.fixture
def broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path / "data", short_dir / "b.sock") as process:
        yield process


async def in_line(client: AsyncClient, name: str, count: int) -> None:
    """Return once recipe ``name`` has ``count`` members."""
    async with client.watch(name) as changes:
        while True:
            state = await client.holders(name)
            if (0 if state is None else len(state.members)) == count:
                return
            assert await changes.next_event(30) is not None, f"{name} never had {count} members"


@anyio_test
async def test_a_lock_passes_to_the_next_in_line(broker: BrokerProcess) -> None:
    async with (
        await AsyncClient.connect(broker.url, cursor="locks") as first,
        await AsyncClient.connect(broker.url, cursor="locks") as second,
    ):
        mine = await first.session_grant(60, bound=True)
        held = await first.acquire("deploy", "lock", mine)
        assert held is not None
        assert held.holding
        got: list[Member | None] = []

        async def wait_for_it() -> None:
            theirs = await second.session_grant(60, bound=True)
            got.append(await second.acquire("deploy", "lock", theirs, wait=60))

        async with create_task_group() as tasks:
            tasks.start_soon(wait_for_it)
            await in_line(first, "deploy", 2)
            assert got == []
            await first.set("config", 1, fence=("deploy", held.token))
            assert await first.unlock("deploy", held.token)
        assert got[0] is not None
        assert got[0].holding
        assert got[0].token > held.token
        await expect_error(
            ErrorCode.COMPARE_FAILED, lambda: first.set("config", 2, fence=("deploy", held.token))
        )
        assert await first.get("config") == 1


@anyio_test
async def test_lock_and_semaphore_blocks_release_on_the_way_out(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url, cursor="blocks") as client:
        async with client.lock("deploy", ttl=30) as held:
            assert await client.leader("deploy") == held  # the first member, whatever its kind
            await client.incr("deploys", fence=("deploy", held.token))
        assert await client.holders("deploy") is None
        assert await client.sessions() == []
        async with client.semaphore("gpus", 2, ttl=30), client.semaphore("gpus", 2, ttl=30):
            state = await client.holders("gpus")
            assert state is not None
            assert (state.recipe, state.limit, len(state.holders)) == ("semaphore", 2, 2)
            await expect_error(ErrorCode.TIMED_OUT, lambda: _try_semaphore(client))
            other = await client.session_grant(30)
            await expect_error(
                ErrorCode.COMPARE_FAILED,
                lambda: client.acquire("gpus", "semaphore", other, limit=5),
            )
        assert [r.name for r in await client.locks()] == []


async def _try_semaphore(client: AsyncClient) -> None:
    async with client.semaphore("gpus", 2, ttl=30, wait=0):
        raise AssertionError("a third holder got in")


@anyio_test
async def test_a_barrier_lets_every_party_through_together(broker: BrokerProcess) -> None:
    clients = [await AsyncClient.connect(broker.url, cursor="barriers") for _ in range(3)]
    try:
        passed: list[int] = []

        async def party(n: int) -> None:
            async with clients[n].barrier("start", 3, ttl=30, wait=60):
                passed.append(n)

        async with create_task_group() as tasks:
            tasks.start_soon(party, 0)
            tasks.start_soon(party, 1)
            await in_line(clients[2], "start", 2)
            assert passed == []
            tasks.start_soon(party, 2)
        assert sorted(passed) == [0, 1, 2]
        assert await clients[0].holders("start") is None
    finally:
        for client in clients:
            await client.aclose()


@anyio_test
async def test_observers_see_the_leader_change(broker: BrokerProcess) -> None:
    async with (
        await AsyncClient.connect(broker.url, cursor="elections") as watcher,
        await AsyncClient.connect(broker.url, cursor="elections") as candidate,
        watcher.observe("primary") as leaders,
    ):
        assert await leaders.__anext__() is None
        async with candidate.elect("primary", "host-a", ttl=30) as term:
            leader = await leaders.__anext__()
            assert leader is not None
            assert (leader.value, leader.token) == ("host-a", term.token)
            await candidate.proclaim("primary", term.token, "host-a:2")
            leader = await leaders.__anext__()
            assert leader is not None
            assert leader.value == "host-a:2"
        assert await leaders.__anext__() is None  # resigned at the block's end
