"""Sessions over the wire: keys attached to a session go, as deletes or expiries a watch sees,
when it is revoked, when it runs out without a keep-alive, or when the connection a bound session
was granted on closes. In-process broker and clients in one trio loop, the broker's wall clock
following trio's mock clock: TTLs pass without real time passing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import inprocess
import pytest
import trio
import trio.testing
from inprocess import FakeClock, Running, running_broker, until

from prontodb.broker.server import ServerConfig
from prontodb.clients import AsyncClient, ErrorCode, ProntoError, WatchEvent


@pytest.fixture
async def clocked(short_dir: Path) -> AsyncIterator[tuple[Running, FakeClock]]:
    clock = FakeClock()
    config = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "s.sock")
    async with running_broker(config, clock) as running:
        yield running, clock


async def events(client: AsyncClient, count: int, prefix: str = "locks") -> list[WatchEvent]:
    """The first ``count`` changes under ``prefix`` since revision 1 (replayed from history)."""
    seen: list[WatchEvent] = []
    with trio.fail_after(10):
        async with client.watch(prefix, from_rev=1) as watch:
            async for event in watch:
                seen.append(event)
                if len(seen) == count:
                    break
    return seen


async def test_a_bound_sessions_keys_go_when_its_connection_closes(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, _clock = clocked
    async with await AsyncClient.connect(server.url, user="watcher") as watcher:
        holder = await AsyncClient.connect(server.url, user="holder")
        session = await holder.session_grant(60, bound=True)
        await holder.set("locks.a", "held", session=session)
        await holder.set("locks.b", "held", session=session)
        free = await holder.session_grant(60)  # not bound: outlives the connection
        await holder.set("locks.c", "held", session=free)
        info = await watcher.get_info("locks.a")
        assert info is not None
        assert info.session == session
        await holder.aclose()
        await until(lambda: not server.broker.databases.opened()[0].engine.get("locks.a"))
        assert await watcher.keys("locks") == ["locks.c"]
        assert [s.id for s in await watcher.sessions()] == [free]
        seen = await events(watcher, 5)
        assert [(e.type, e.key) for e in seen[3:]] == [("delete", "locks.a"), ("delete", "locks.b")]
        assert seen[3].rev == seen[4].rev  # one revision for the session's keys


async def test_an_unbound_session_expires_unless_kept_alive(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, clock = clocked
    async with await AsyncClient.connect(server.url, user="holder") as client:
        kept = await client.session_grant(10)
        lapsed = await client.session_grant(10)
        await client.set("locks.kept", 1, session=kept)
        await client.set("locks.lapsed", 1, session=lapsed)
        for _ in range(4):  # 20 s in all, each within the TTL
            await trio.sleep(5)
            assert await client.session_keepalive(kept) == clock() + 10
        assert await client.keys("locks") == ["locks.kept"]
        with pytest.raises(ProntoError) as gone:
            await client.session_keepalive(lapsed)
        assert gone.value.code is ErrorCode.NOT_FOUND
        seen = await events(client, 3)
        assert (seen[2].type, seen[2].key, seen[2].by) == ("expire", "locks.lapsed", "")
        await trio.sleep(11)  # no keep-alive: the sweeper ends it with nobody asking
        engine = server.broker.databases.opened()[0].engine
        assert engine.keys() == []
        assert engine.sessions() == []


async def test_revoke_deletes_the_keys_and_ends_the_session(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, clock = clocked
    async with await AsyncClient.connect(server.url, user="holder") as client:
        session = await client.session_grant(30)
        await client.set("locks.a", 1, session=session)
        await client.txn([], [{"op": "set", "key": "locks.b", "value": 2, "session": session}])
        await client.set("other", 1)
        listed = await client.sessions()
        assert [(s.id, s.owner, s.ttl, s.deadline, s.keys) for s in listed] == [
            (session, "holder", 30.0, clock() + 30, 2)
        ]
        status = await client.status()
        assert status["databases"][0]["sessions"] == 1
        assert await client.session_revoke(session) == ["locks.a", "locks.b"]
        assert await client.keys() == ["other"]
        assert await client.sessions() == []
        seen = await events(client, 4)
        assert [(e.type, e.by) for e in seen[2:]] == [("delete", "holder")] * 2
        with pytest.raises(ProntoError) as again:
            await client.session_revoke(session)
        assert again.value.code is ErrorCode.NOT_FOUND
        with pytest.raises(ProntoError) as ended:
            await client.set("locks.c", 1, session=session)
        assert ended.value.code is ErrorCode.NOT_FOUND


async def test_a_txn_session_goes_with_set_operations_only(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, _clock = clocked
    async with await AsyncClient.connect(server.url) as client:
        session = await client.session_grant(30)
        refusals = (
            {"op": "del", "key": "k", "session": session},
            {"op": "set", "key": "k", "value": 1, "session": "one"},
        )
        for op in refusals:
            with pytest.raises(ProntoError) as refused:
                await client.txn([], [op])
            assert refused.value.code is ErrorCode.BAD_REQUEST
        await client.txn([], [{"op": "set", "key": "k", "value": 1, "session": session}])
        assert await client.session_revoke(session) == ["k"]


@pytest.fixture
async def guarded(short_dir: Path) -> AsyncIterator[Running]:
    async with running_broker(inprocess.guarded(short_dir)) as running:
        yield running


async def test_sessions_need_write_somewhere_in_the_cursor(guarded: Running) -> None:
    async with await AsyncClient.connect(
        guarded.url, user="admin", token=guarded.admin_token()
    ) as admin:
        bob_token = await admin.user_add("bob")
        eve_token = await admin.user_add("eve")
        await admin.grant("bob", "write", cursor="default", prefix="locks")
        await admin.grant("eve", "read")
        await admin.grant("eve", "write", prefix="eve")
        bob = await AsyncClient.connect(guarded.url, user="bob", token=bob_token)
        eve = await AsyncClient.connect(guarded.url, user="eve", token=eve_token)
        async with bob, eve:
            session = await bob.session_grant(30)
            await bob.set("locks.a", 1, session=session)
            with pytest.raises(ProntoError) as outside:  # attaching is a write on the key
                await bob.set("other", 1, session=session)
            assert outside.value.code is ErrorCode.DENIED
            with pytest.raises(ProntoError) as other_cursor:
                await bob.session_grant(30, cursor="elsewhere")
            assert other_cursor.value.code is ErrorCode.DENIED
            assert other_cursor.value.details["cursor"] == "elsewhere"
            assert [s.id for s in await eve.sessions()] == [session]
            for attempt in (eve.session_keepalive, eve.session_revoke):
                with pytest.raises(ProntoError) as not_hers:  # only the owner's
                    await attempt(session)
                assert not_hers.value.code is ErrorCode.DENIED
            assert await eve.get("locks.a") == 1
            assert await admin.sessions() != []
            assert await bob.session_revoke(session) == ["locks.a"]


async def test_a_dropped_connection_ends_its_bound_sessions_in_every_database(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, _clock = clocked
    holder, other = await server.wire("holder"), await server.wire("other")
    for cursor in ("one", "two"):
        granted = await holder.result("session_grant", ttl=60, bound=True, cursor=cursor)
        await holder.result("set", key="locks.a", value=1, session=granted["id"], cursor=cursor)
    kept = await other.result("session_grant", ttl=60, bound=True, cursor="one")
    await other.result("set", key="locks.b", value=1, session=kept["id"], cursor="one")
    # A claim left waiting, then the socket dropped with no Goodbye.
    await holder.send(holder.request("claim", prefix="jobs", wait=100, cursor="one"))
    await holder.stream.aclose()
    databases = server.broker.databases
    await until(lambda: all(db.engine.get("locks.a") is None for db in databases.opened()))
    assert await other.result("keys", cursor="one") == {"keys": ["locks.b"], "more": False}
    assert await other.result("keys", cursor="two") == {"keys": [], "more": False}
    listed = await other.result("sessions", cursor="one")
    assert [s["id"] for s in listed] == [kept["id"]]
    await other.aclose()


async def test_keep_session_renews_in_the_background_and_revokes_at_the_end(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, _clock = clocked
    async with await AsyncClient.connect(server.url, user="holder") as client:
        async with client.keep_session(9) as session:
            await client.set("locks.a", 1, session=session)
            await trio.sleep(100)  # mock time: eleven TTLs, each renewed within
            assert await client.get("locks.a") == 1
        assert await client.get("locks.a") is None
        assert await client.sessions() == []


async def test_keep_session_cancels_the_block_when_the_session_is_lost(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, _clock = clocked
    async with await AsyncClient.connect(server.url, user="holder") as client:
        other = await AsyncClient.connect(server.url, user="holder")
        reached: list[str] = []

        async def lose_it() -> None:
            async with client.keep_session(9) as session:
                await client.set("locks.a", 1, session=session)
                assert await other.session_revoke(session) == ["locks.a"]
                reached.append("revoked")
                await trio.sleep(100)  # cancelled at the next keep-alive, 3 s from the grant
                reached.append("slept")

        with pytest.raises(ProntoError) as lost:
            await lose_it()
        assert lost.value.code is ErrorCode.NOT_FOUND
        assert reached == ["revoked"]
        await other.aclose()
