"""Locks, semaphores, elections and barriers over the wire: waiters served in arrival order and
only the next one woken, a wait that runs out or is cancelled leaves the line, a holder whose
session ends hands over, fenced writes, proclaim and observe, barriers that open for everyone.

In-process broker and clients in one trio loop, the broker's clock following trio's mock clock:
TTLs and waits pass without real time passing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from inprocess import FakeClock, Running, running_broker, until

from prontodb.broker.server import ServerConfig
from prontodb.broker.storage import FsyncPolicy
from prontodb.clients import AsyncClient, ErrorCode, Member, ProntoError, SessionLost


@pytest.fixture
async def server(short_dir: Path) -> AsyncIterator[Running]:
    # No fsync and the database opened first: a slow fsync and the opening run in threads,
    # and the mock clock would jump past the sessions' keep-alives while they do.
    config = ServerConfig(
        data_dir=short_dir / "data", socket_path=short_dir / "s.sock", fsync=FsyncPolicy.NEVER
    )
    async with running_broker(config, FakeClock()) as running:
        async with await AsyncClient.connect(running.url, user="ops") as client:
            await client.set("warm-up", 1)
            await client.delete("warm-up")
        yield running


async def in_line(client: AsyncClient, name: str, count: int) -> None:
    """Return once ``name`` has ``count`` members (waiting on a watch, not on time)."""
    with trio.fail_after(30):
        async with client.watch(name) as changes:
            while True:
                state = await client.holders(name)
                if (0 if state is None else len(state.members)) == count:
                    return
                await changes.next_event()


async def refused(code: ErrorCode, call: object) -> ProntoError:
    with pytest.raises(ProntoError) as info:
        await call()  # type: ignore[operator]
    assert info.value.code is code, info.value
    return info.value


async def test_a_lock_passes_to_waiters_in_arrival_order(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as client:
        order: list[str] = []
        first_held = trio.Event()
        release_first = trio.Event()

        async def worker(name: str, done: trio.Event | None = None) -> None:
            async with client.lock("deploy", ttl=9) as held:
                order.append(name)
                assert held.holding
                await client.set("deploy-log", name, fence=("deploy", held.token))
                if done is not None:
                    done.set()
                    await release_first.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, "a", first_held)
            await first_held.wait()
            for count, name in ((2, "b"), (3, "c"), (4, "d")):
                nursery.start_soon(worker, name)
                await in_line(client, "deploy", count)
            state = await client.holders("deploy")
            assert state is not None
            assert [m.holding for m in state.members] == [True, False, False, False]
            tokens = [m.token for m in state.members]
            assert tokens == sorted(tokens)
            release_first.set()
        assert order == ["a", "b", "c", "d"]
        assert await client.holders("deploy") is None
        assert await client.sessions() == []


async def test_only_the_next_waiter_is_woken(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    # The broker wakes a waiter only when it holds: with two waiting, a release answers one
    # request, and the other is still waiting at the broker.
    async with await AsyncClient.connect(server.url, user="ops") as client:
        holder = await client.session_grant(60)
        held = await client.acquire("deploy", "lock", holder)
        assert held is not None
        sessions = [await client.session_grant(60) for _ in range(2)]
        got: list[Member | None] = []

        async def wait(session: int) -> None:
            got.append(await client.acquire("deploy", "lock", session, wait=600))

        async with trio.open_nursery() as nursery:
            for count, session in enumerate(sessions, start=2):
                nursery.start_soon(wait, session)
                await in_line(client, "deploy", count)
            assert await client.unlock("deploy", held.token)
            await until(lambda: len(got) == 1)
            await trio.testing.wait_all_tasks_blocked()
            db = server.broker.databases.opened()[0]
            assert len(db.recipe_waiters) == 1
            assert got[0] is not None
            assert got[0].session == sessions[0]
            assert await client.unlock("deploy", got[0].token)
        assert [m.session if m else None for m in got] == sessions


async def test_a_try_writes_nothing_and_a_wait_that_runs_out_leaves_the_line(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as client:
        a, b = await client.session_grant(600), await client.session_grant(600)
        held = await client.acquire("deploy", "lock", a)
        assert held is not None
        assert held.holding
        assert await client.acquire("deploy", "lock", b) is None  # try once
        assert await client.acquire("deploy", "lock", b, wait=5) is None  # 5 s of mock time
        state = await client.holders("deploy")
        assert state is not None
        assert [m.session for m in state.members] == [a]  # the waiter left its line
        with pytest.raises(ProntoError) as timed_out:
            async with client.lock("deploy", wait=2):
                pass
        assert timed_out.value.code is ErrorCode.TIMED_OUT
        assert [s.id for s in await client.sessions()] == [a, b]


async def test_a_cancelled_wait_leaves_the_line(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as client:
        a, b = await client.session_grant(600), await client.session_grant(600)
        held = await client.acquire("deploy", "lock", a)
        assert held is not None
        with trio.move_on_after(5):
            await client.acquire("deploy", "lock", b, wait=600)
        await until(lambda: len(server.broker.databases.opened()[0].recipe_waiters) == 0)
        state = await client.holders("deploy")
        assert state is not None
        assert [m.session for m in state.members] == [a]


async def test_a_holder_whose_session_runs_out_hands_over_and_its_fence_fails(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as client:
        stalled = await client.session_grant(5)  # nobody keeps it alive
        held = await client.acquire("deploy", "lock", stalled)
        assert held is not None
        await client.set("config", "v1", fence=("deploy", held.token))
        waiting = await client.session_grant(600)
        nxt = await client.acquire("deploy", "lock", waiting, wait=600)  # waits 5 s of mock time
        assert nxt is not None
        assert nxt.holding
        assert nxt.token > held.token
        for write in (
            lambda: client.set("config", "v2", fence=("deploy", held.token)),
            lambda: client.delete("config", fence=("deploy", held.token)),
            lambda: client.incr("n", fence=("deploy", held.token)),
            lambda: client.mset({"a": 1}, fence=("deploy", held.token)),
            lambda: client.txn(
                [], [{"op": "set", "key": "a", "value": 1}], fence=("deploy", held.token)
            ),
        ):
            err = await refused(ErrorCode.COMPARE_FAILED, write)
            assert "not there" in str(err)
        assert await client.get("config") == "v1"
        assert await client.get("a") is None
        await client.set("config", "v2", fence=("deploy", nxt.token))
        await refused(
            ErrorCode.BAD_REQUEST,
            lambda: client.call("set", {"key": "k", "value": 1, "fence": {"name": "deploy"}}),
        )


async def test_a_waiter_whose_session_ends_is_told(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as client:
        holder = await client.session_grant(600)
        await client.acquire("deploy", "lock", holder)
        short = await client.session_grant(5)
        err = await refused(
            ErrorCode.NOT_FOUND, lambda: client.acquire("deploy", "lock", short, wait=600)
        )
        assert "session ended" in str(err)


async def test_a_semaphore_admits_its_limit_and_refuses_another(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as client:
        inside = 0
        most = 0
        go = trio.Event()
        async with trio.open_nursery() as nursery:

            async def worker() -> None:
                nonlocal inside, most
                async with client.semaphore("gpus", 3, ttl=9):
                    inside += 1
                    most = max(most, inside)
                    await go.wait()
                    await trio.sleep(1)  # mock time: the next ones come in meanwhile
                    inside -= 1

            for _ in range(10):
                nursery.start_soon(worker)
            await in_line(client, "gpus", 10)
            state = await client.holders("gpus")
            assert state is not None
            assert (state.recipe, state.limit, len(state.holders)) == ("semaphore", 3, 3)
            other = await client.session_grant(60)
            err = await refused(
                ErrorCode.COMPARE_FAILED,
                lambda: client.acquire("gpus", "semaphore", other, limit=4),
            )
            assert "semaphore of 3" in str(err)
            await client.session_revoke(other)
            go.set()
        assert most == 3


async def test_an_election_leader_proclaims_and_observers_see_each_change(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as client:
        seen: list[tuple[object, int] | None] = []
        a = await client.session_grant(600)
        b = await client.session_grant(600)

        async def observe(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with client.observe("primary") as leaders:
                async for leader in leaders:
                    seen.append(None if leader is None else (leader.value, leader.token))
                    if len(seen) == 1:
                        task_status.started()
                    if len(seen) == 4:
                        return

        async with trio.open_nursery() as nursery:
            await nursery.start(observe)
            first = await client.acquire("primary", "election", a, value="host-a")
            assert first is not None
            await until(lambda: len(seen) == 2)
            await client.proclaim("primary", first.token, "host-a:2")
            await until(lambda: len(seen) == 3)
            second_task = await client.acquire("primary", "election", b, value="host-b")
            assert second_task is None  # not leader, try only
            wait_for_b = partial(client.acquire, "primary", "election", b, value="host-b", wait=600)
            nursery.start_soon(wait_for_b)
            await in_line(client, "primary", 2)
            await client.session_revoke(a)
        assert seen[0] is None
        assert seen[1] == ("host-a", first.token)
        assert seen[2] == ("host-a:2", first.token)
        assert seen[3] is not None
        assert seen[3][0] == "host-b"
        assert seen[3][1] > first.token
        leader = await client.leader("primary")
        assert leader is not None
        assert leader.value == "host-b"
        await refused(
            ErrorCode.COMPARE_FAILED, lambda: client.proclaim("primary", first.token, "x")
        )


async def test_a_barrier_opens_for_every_party_at_once_and_a_dead_one_drops_out(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as client:
        crashed = await AsyncClient.connect(server.url, user="ops")
        gone = await crashed.session_grant(600, bound=True)

        async def doomed() -> None:
            with pytest.raises(ProntoError):  # its connection closes under it
                await crashed.acquire("start", "barrier", gone, limit=3, wait=600)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(doomed)
            await in_line(client, "start", 1)
            await crashed.aclose()  # its bound session ends: it no longer counts
        await in_line(client, "start", 0)
        passed: list[int] = []

        async def party(n: int) -> None:
            async with client.barrier("start", 3, ttl=9):
                passed.append(n)
                await until(lambda: len(passed) == 3)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(party, 1)
            nursery.start_soon(party, 2)
            await in_line(client, "start", 2)
            assert passed == []
            nursery.start_soon(party, 3)
        assert sorted(passed) == [1, 2, 3]
        assert await client.holders("start") is None


async def test_listings_show_every_recipe(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as client:
        s = await client.session_grant(600)
        await client.acquire("jobs.deploy", "lock", s)
        await client.acquire("jobs.gpus", "semaphore", s, limit=2)
        await client.acquire("leader", "election", s, value="me")
        assert [r.name for r in await client.locks()] == ["jobs.deploy", "jobs.gpus", "leader"]
        assert [r.name for r in await client.locks("jobs")] == ["jobs.deploy", "jobs.gpus"]
        info = await client.get_info(f"leader.{s}")
        assert info is not None
        assert info.value == {"recipe": "election", "limit": 1, "value": "me"}
        assert info.session == s
        with trio.fail_after(30):  # a watch sees the join, with its session
            async with client.watch("leader", from_rev=1) as changes:
                joined = await changes.next_event()
        assert joined is not None
        assert (joined.type, joined.key, joined.session) == ("put", f"leader.{s}", s)


async def test_a_lost_lock_cancels_its_block(
    server: Running, autojump_clock: trio.testing.MockClock
) -> None:
    async with await AsyncClient.connect(server.url, user="ops") as client:
        other = await AsyncClient.connect(server.url, user="ops")
        reached: list[str] = []

        async def hold() -> None:
            async with client.lock("deploy", ttl=9) as held:
                await other.session_revoke(held.session)
                reached.append("revoked")
                await trio.sleep(100)  # cancelled at the next keep-alive
                reached.append("slept")

        with pytest.raises(SessionLost) as lost:
            await hold()
        assert lost.value.code is ErrorCode.NOT_FOUND
        assert reached == ["revoked"]
        assert await client.get("x") is None  # the client works again after the block
        await other.aclose()
