"""The client against real brokers and against a scripted peer: every operation, callers sharing
one client, connecting, and what the broker's end can do to it.

Written for the async client, whose tests run on trio and on asyncio (``anyio_test``);
scripts/unasync.py makes the sync client's copy, where threads take the place of tasks. Tests that
cancel a caller or move a clock have no sync meaning: tests/test_client_async.py has them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from brokers import BrokerProcess, running_broker

from _async.support import (
    FakePeer,
    anyio_test,
    create_task_group,
    expect_error,
    run_blocking,
    scripted,
    wait_all_tasks_blocked,
)
from prontodb.clients import (
    MISSING,
    AsyncClient,
    BrokerUnavailable,
    CompareFailed,
    ErrorCode,
    KeyInfo,
    NotFound,
    ProntoError,
    TxnResult,
)
from prontodb.protocol import VALUE_TYPES, Goodbye


@pytest.fixture
def broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path / "data", short_dir / "b.sock") as process:
        yield process


@pytest.fixture
def fast_broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    """A broker that skips fsync, for tests that write thousands of keys."""
    with running_broker(
        tmp_path / "data", short_dir / "b.sock", extra=("--fsync", "never")
    ) as process:
        yield process


@pytest.fixture
def tcp_broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    """A broker listening on a Unix socket and on a free TCP port of 127.0.0.1."""
    with running_broker(tmp_path / "data", short_dir / "b.sock", tcp=True) as process:
        yield process


# -- every operation, against a real broker ----------------------------------------------------


@anyio_test
async def test_every_method_round_trips(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url, user="alice") as client:
        assert (client.url, client.user, client.cursor) == (broker.url, "alice", "default")
        assert client.session >= 1
        assert client.server.startswith("prontodb/")
        await client.ping()

        assert await client.get("app.missing") is None
        assert await client.get_info("app.missing") is None
        rev = await client.set("app.name", "pronto")
        assert await client.get("app.name") == "pronto"
        value = {"list": [1, 2.5, None, True], "bytes": b"\x00\xff", "text": "é"}
        rev2 = await client.set("app.doc", value)
        assert rev2 == rev + 1
        assert await client.get("app.doc") == value

        info = await client.get_info("app.name")
        assert isinstance(info, KeyInfo)
        assert (info.key, info.value, info.writer) == ("app.name", "pronto", "alice")
        assert (info.create_rev, info.mod_rev, info.version) == (rev, rev, 1)
        assert info.size > 0
        assert info.time > 0

        assert await client.incr("app.hits") == 1
        assert await client.incr("app.hits", 10) == 11
        assert await client.decr("app.hits") == 10
        assert await client.decr("app.hits", 4) == 6

        assert await client.keys() == ["app.doc", "app.hits", "app.name"]
        assert await client.keys("app", limit=2) == ["app.doc", "app.hits"]
        assert await client.scan("app.hits") == [("app.hits", 6)]
        assert await client.count("app") == 3
        assert await client.count() == 3

        assert await client.delete("app.doc") is True
        assert await client.delete("app.doc") is False
        assert await client.get("app.doc") is None

        done = await client.txn(
            [{"key": "app.hits", "value": 6}],
            [
                {"op": "set", "key": "app.flag", "value": True},
                {"op": "incr", "key": "app.hits", "by": 2},
                {"op": "get", "key": "app.name"},
                {"op": "del", "key": "app.name"},
            ],
        )
        assert isinstance(done, TxnResult)
        assert done.succeeded
        assert done.failed == []
        assert done.results[:2] == [done.revision, 8]
        assert done.results[2]["value"] == "pronto"
        assert done.results[3] is True
        refused = await client.txn([{"key": "app.hits", "op": "<", "value": 0}], [])
        assert (refused.succeeded, refused.revision, refused.failed) == (
            False,
            done.revision,
            [0],
        )

        status = await client.status()
        assert status["pid"] == broker.pid
        assert await client.call("ping", {}) == "pong"


@anyio_test
async def test_connect_is_entered_directly_or_awaited_first(broker: BrokerProcess) -> None:
    async with AsyncClient.connect(broker.url) as client:  # no await: closed on leaving
        await client.set("entered", 1)
    await expect_error(ErrorCode.UNAVAILABLE, lambda: client.get("entered"))
    awaited = await AsyncClient.connect(broker.url)
    async with awaited:
        assert await awaited.get("entered") == 1


@anyio_test
async def test_values_refused_here_or_at_the_broker_are_described_alike(
    broker: BrokerProcess,
) -> None:
    async with AsyncClient.connect(broker.url) as client:
        at_broker = await expect_error(ErrorCode.BAD_REQUEST, lambda: client.set("k", None))
        assert at_broker.message == f"A NoneType cannot be stored: {VALUE_TYPES}."
        here = await expect_error(ErrorCode.BAD_REQUEST, lambda: client.set("k", datetime.now()))
        assert here.message.endswith(f"; {VALUE_TYPES}.")
        assert "datetime" in here.message
        await client.set("k", [None, {"a": None}])  # None inside a list or a map is a value
        assert await client.get("k") == [None, {"a": None}]


@anyio_test
async def test_cursor_selects_the_database(broker: BrokerProcess) -> None:
    async with (
        await AsyncClient.connect(broker.url) as default,
        await AsyncClient.connect(broker.url, cursor="tasks", user="ana") as tasks,
    ):
        assert repr(tasks) == f"<AsyncClient {broker.url} user='ana' cursor='tasks'>"
        await tasks.set("queue.a", 1)
        assert await default.get("queue.a") is None
        assert await default.get("queue.a", cursor="tasks") == 1
        await default.set("queue.b", 2, cursor="tasks")
        assert await tasks.keys("queue") == ["queue.a", "queue.b"]
        assert await default.count() == 0
        # The raw call adds no cursor: the broker's default database.
        assert await tasks.call("count", {}) == 0
        assert await default.call("get", {"key": "queue.a", "cursor": "tasks"}) == 1


@anyio_test
async def test_several_keys_in_one_round_trip(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url, cursor="tasks") as client:
        revision = await client.mset({"a.1": 1, "a.2": "two", "a.3": [3]})
        # One revision for all: each key's modify revision is it.
        infos = [await client.get_info(k) for k in ("a.1", "a.2", "a.3")]
        assert {info.mod_rev for info in infos if info is not None} == {revision}
        assert await client.mget(["a.3", "missing", "a.1"]) == [[3], None, 1]
        assert await client.exists("a.2") is True
        assert await client.exists("missing") is False
        # One refused key refuses them all: nothing is written.
        await expect_error(ErrorCode.BAD_KEY, lambda: client.mset({"b.1": 1, "bad key": 2}))
        assert await client.mget(["b.1"]) == [None]
        many = {f"c.{i}": i for i in range(129)}
        await expect_error(ErrorCode.TOO_LARGE, lambda: client.mset(many))
        assert await client.count("c") == 0


@anyio_test
async def test_conditional_writes(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url) as client:
        rev = await client.set("lock.owner", "a", if_absent=True)
        err = await expect_error(
            ErrorCode.COMPARE_FAILED, lambda: client.set("lock.owner", "b", if_absent=True)
        )
        assert err.exit_status == 5
        assert err.details["mod_rev"] == rev
        await expect_error(
            ErrorCode.COMPARE_FAILED, lambda: client.set("lock.owner", "b", if_rev=0)
        )
        with pytest.raises(CompareFailed):  # each code has its class, to catch it by name
            await client.set("lock.owner", "b", if_absent=True)
        with pytest.raises(NotFound):
            await client.user_token("nobody")
        rev = await client.set("lock.owner", "b", if_rev=rev)
        await expect_error(
            ErrorCode.COMPARE_FAILED, lambda: client.set("lock.owner", "c", if_value="a")
        )
        rev = await client.set("lock.owner", "c", if_value="b")
        # None is a value to compare with, not "no condition" (that is MISSING).
        await expect_error(
            ErrorCode.COMPARE_FAILED, lambda: client.set("lock.owner", "d", if_value=None)
        )
        await client.set("lock.owner", "d", if_value=MISSING)
        await expect_error(
            ErrorCode.COMPARE_FAILED, lambda: client.delete("lock.owner", if_rev=rev)
        )
        await expect_error(
            ErrorCode.COMPARE_FAILED, lambda: client.delete("lock.owner", if_value="x")
        )
        assert await client.delete("lock.owner", if_value="d") is True
        # A structured value compares whole.
        rev = await client.set("job.a", {"state": "new"})
        assert await client.set("job.a", "done", if_value={"state": "new"}) == rev + 1


@anyio_test
async def test_operation_errors_leave_the_connection_usable(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url) as client:
        await client.set("app.name", "text")
        await expect_error(ErrorCode.WRONG_TYPE, lambda: client.incr("app.name"))
        await expect_error(ErrorCode.BAD_KEY, lambda: client.set("bad key!", 1))
        await expect_error(ErrorCode.BAD_KEY, lambda: client.get("a..b"))
        await expect_error(ErrorCode.UNKNOWN_OP, lambda: client.call("no-such-op", {}))
        await expect_error(ErrorCode.BAD_REQUEST, lambda: client.call("get", {}))
        await expect_error(ErrorCode.BAD_REQUEST, lambda: client.keys(limit=-1))
        # Refused before sending: a map key that is not a str, a value over the frame size.
        err = await expect_error(ErrorCode.BAD_REQUEST, lambda: client.set("app.x", {1: "one"}))
        assert "map keys" in err.message
        await expect_error(ErrorCode.TOO_LARGE, lambda: client.set("app.x", b"x" * (5 << 20)))
        # Over the broker's value limit (1 MiB) but within the frame: the broker says so.
        await expect_error(ErrorCode.TOO_LARGE, lambda: client.set("app.x", b"x" * (2 << 20)))
        assert await client.get("app.name") == "text"
        assert client.statistics()["in_flight"] == 0


@anyio_test
async def test_pages_of_keys_and_scan(fast_broker: BrokerProcess) -> None:
    total = 10_050  # more than one page of 10 000
    names = sorted(f"big.k{i:05}" for i in range(total))

    async with await AsyncClient.connect(fast_broker.url) as client:

        async def fill(start: int) -> None:
            batch = [{"op": "set", "key": k, "value": k} for k in names[start : start + 128]]
            assert (await client.txn([], batch)).succeeded

        async with create_task_group() as group:
            for start in range(0, total, 128):
                group.start_soon(fill, start)
        await client.set("bigger", 1)  # a sibling the segment-aware prefix leaves out
        await client.set("big", 0)  # the prefix itself is listed

        assert await client.count("big") == total + 1
        assert await client.keys("big") == ["big", *names]
        assert await client.keys("big", limit=10_005) == ["big", *names[:10_004]]
        assert await client.keys("big", limit=0) == []
        assert await client.keys("big.k1") == []
        items = await client.scan("big")
        assert len(items) == total + 1
        assert items[-1] == (names[-1], names[-1])
        assert await client.scan("big", limit=2) == [("big", 0), (names[0], names[0])]
        assert len(await client.keys()) == total + 2


@anyio_test
async def test_scan_follows_pages_cut_by_size(broker: BrokerProcess) -> None:
    big = b"x" * 400_000  # a scan page stops after 1 MiB of values
    async with await AsyncClient.connect(broker.url) as client:
        for i in range(5):
            await client.set(f"blob.v{i}", big)
        assert (await client.call("scan", {"prefix": "blob"}))["more"] is True
        assert await client.scan("blob") == [(f"blob.v{i}", big) for i in range(5)]
        assert await client.scan("blob", limit=3) == [(f"blob.v{i}", big) for i in range(3)]


@anyio_test
async def test_ttls_and_caches(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url, cursor="ttl") as client:
        await client.create_cache("sessions", 3600)
        assert await client.caches() == {"sessions": 3600.0}
        await client.set("sessions.w1", "on")
        remaining = await client.ttl("sessions.w1")
        assert remaining is not None
        assert 3500 < remaining <= 3600
        await client.set("plain", 1)
        assert await client.ttl("plain") is None
        await expect_error(ErrorCode.NOT_FOUND, lambda: client.ttl("missing"))
        assert await client.expire("plain", 100) is True
        info = await client.get_info("plain")
        assert info is not None
        assert info.expires is not None
        assert await client.persist("plain") is True
        assert await client.persist("plain") is False
        assert await client.expire("missing", 5) is False
        assert await client.expire("plain", 0) is True  # now: gone
        assert await client.get("plain") is None
        await client.set("short", 1, ttl=0.5)
        assert await client.drop_cache("sessions") is True
        assert await client.caches() == {}
        await expect_error(ErrorCode.BAD_REQUEST, lambda: client.set("k", 1, ttl=-1))


@anyio_test
async def test_claims(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url, cursor="claims", user="w1") as client:
        for n in range(3):
            await client.set(f"jobs.j{n}", n)
        task = await client.claim("jobs", lease=30)
        assert task is not None
        assert (task.key, task.value, task.deliveries) == ("jobs.j0", 0, 1)
        info = await client.get_info("jobs.j0")
        assert info is not None
        assert info.claim is not None
        assert (info.claim.holder, info.claim.token, info.deliveries) == ("w1", task.token, 1)
        assert [c.key for c in await client.claims("jobs")] == ["jobs.j0"]
        assert await client.extend(task.key, task.token, 100) > task.lease
        await client.release(task.key, task.token)
        await expect_error(ErrorCode.COMPARE_FAILED, lambda: client.ack(task.key, task.token))
        async with client.claiming("jobs") as done:  # acked when the block ends
            assert done.key == "jobs.j0"
            assert done.deliveries == 2
        assert await client.get("jobs.j0") is None

        async def fail_the_work() -> None:
            async with client.claiming("jobs") as failed:
                assert failed.key == "jobs.j1"
                raise RuntimeError("the work failed")

        with pytest.raises(RuntimeError):
            await fail_the_work()
        again = await client.claim("jobs")  # released: it comes back first
        assert again is not None
        assert (again.key, again.deliveries) == ("jobs.j1", 2)
        await client.ack(again.key, again.token)
        last = await client.claim("jobs")
        assert last is not None
        await client.ack(last.key, last.token)
        assert await client.claim("jobs") is None
        await expect_error(ErrorCode.TIMED_OUT, lambda: client.claiming("jobs").__aenter__())


@anyio_test
async def test_sessions(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url, cursor="sessions", user="w1") as client:
        session = await client.session_grant(600)
        await client.set("locks.a", "w1", session=session)
        info = await client.get_info("locks.a")
        assert info is not None
        assert (info.session, info.expires) == (session, None)
        assert await client.session_keepalive(session) > info.time
        listed = await client.sessions()
        assert [(s.id, s.owner, s.ttl, s.keys) for s in listed] == [(session, "w1", 600.0, 1)]
        await expect_error(
            ErrorCode.BAD_REQUEST, lambda: client.set("locks.b", 1, ttl=5, session=session)
        )
        assert await client.session_revoke(session) == ["locks.a"]
        assert await client.get("locks.a") is None
        await expect_error(ErrorCode.NOT_FOUND, lambda: client.session_keepalive(session))
        await expect_error(ErrorCode.NOT_FOUND, lambda: client.set("k", 1, session=session))
        bound_client = await AsyncClient.connect(broker.url, cursor="sessions")
        bound = await bound_client.session_grant(600, bound=True)
        revision = await bound_client.set("locks.b", 1, session=bound)
        async with client.watch("locks", from_rev=revision + 1) as watch:
            await bound_client.aclose()  # the broker ends the session with the connection
            async for event in watch:
                assert (event.type, event.key) == ("delete", "locks.b")
                break
        assert await client.sessions() == []


@anyio_test
async def test_keep_session_holds_a_session_for_its_block(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url, cursor="kept") as client:
        async with client.keep_session(600, bound=True) as session:
            await client.set("locks.a", 1, session=session)
            assert [s.id for s in await client.sessions()] == [session]
        assert await client.get("locks.a") is None  # revoked at the end of the block
        assert await client.sessions() == []

        async def fail_in_the_block() -> None:
            async with client.keep_session(600) as failing:
                await client.set("locks.b", 1, session=failing)
                raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):  # as it was: not wrapped in a group
            await fail_in_the_block()
        assert await client.keys("locks") == []


@anyio_test
async def test_claiming_acks_or_releases(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url, cursor="claims") as client:
        await client.set("jobs.a", 1)
        async with client.claiming("jobs") as task:
            assert task.key == "jobs.a"
        assert await client.get("jobs.a") is None
        await client.set("jobs.b", 2)
        with pytest.raises(ValueError, match="boom"):
            async with client.claiming("jobs"):
                raise ValueError("boom")
        back = await client.claim("jobs", wait=1)
        assert back is not None
        assert (back.key, back.deliveries) == ("jobs.b", 2)


# -- concurrency against a real broker ---------------------------------------------------------


@anyio_test
async def test_two_hundred_tasks_share_one_client(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url) as client:
        answers: dict[int, Any] = {}

        async def one(i: int) -> None:
            await client.set(f"task.k{i}", i)
            answers[i] = (await client.get(f"task.k{i}"), await client.incr("task.count"))

        async with create_task_group() as group:
            for i in range(200):
                group.start_soon(one, i)
        assert {i: value for i, (value, _) in answers.items()} == {i: i for i in range(200)}
        assert sorted(n for _, n in answers.values()) == list(range(1, 201))
        assert client.statistics() == {
            "in_flight": 0,
            "abandoned": 0,
            "queued": 0,
            "waiting": 0,
            "max_in_flight": 1024,
        }


@anyio_test
async def test_tcp_url(tcp_broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(tcp_broker.tcp_url) as client:
        assert client.url.startswith("tcp://127.0.0.1:")
        await client.set("net.key", "over tcp")
        assert await client.get("net.key") == "over tcp"
    async with await AsyncClient.connect(tcp_broker.url) as local:
        assert await local.get("net.key") == "over tcp"


@anyio_test
async def test_stopped_broker_fails_later_calls(broker: BrokerProcess) -> None:
    async with (
        await AsyncClient.connect(broker.url) as client,
        await AsyncClient.connect(broker.url) as other,
    ):
        await client.set("app.key", 1)
        await client.stop()
        assert await run_blocking(broker.process.wait) == 0
        err = await expect_error(ErrorCode.UNAVAILABLE, lambda: client.get("app.key"))
        assert err.exit_status == 1
        await expect_error(ErrorCode.UNAVAILABLE, other.ping)
        await expect_error(ErrorCode.UNAVAILABLE, other.ping)  # and stays so
    with pytest.raises(BrokerUnavailable):
        await AsyncClient.connect(broker.url)


@anyio_test
async def test_closed_client_refuses_calls(broker: BrokerProcess) -> None:
    client = await AsyncClient.connect(broker.url)
    await client.aclose()
    await client.aclose()  # twice is fine
    err = await expect_error(ErrorCode.UNAVAILABLE, client.ping)
    assert "closed" in err.message


# -- connecting ------------------------------------------------------------------------------


@anyio_test
async def test_nothing_listening_is_broker_unavailable(short_dir: Path) -> None:
    stale = short_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))  # a socket file nobody listens on: connection refused

    for url in (f"unix://{short_dir}/none.sock", f"unix://{stale}"):
        with pytest.raises(BrokerUnavailable) as info:
            await AsyncClient.connect(url)
        assert info.value.code is ErrorCode.UNAVAILABLE
        assert url in info.value.message
        assert "start one with `prontodb serve`" in info.value.message
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: refused
        port = sock.getsockname()[1]
        with pytest.raises(BrokerUnavailable):
            await AsyncClient.connect(f"tcp://127.0.0.1:{port}")
    err = await expect_error(ErrorCode.BAD_REQUEST, lambda: AsyncClient.connect("http://x"))
    assert "unix://" in err.message


@anyio_test
async def test_default_url_and_user_come_from_the_environment(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRONTODB_URL", broker.url)
    monkeypatch.setenv("PRONTODB_USER", "carol")

    async with await AsyncClient.connect() as client:
        assert (client.url, client.user) == (broker.url, "carol")
        await client.set("who", 1)
        info = await client.get_info("who")
        assert info is not None
        assert info.writer == "carol"


# -- a scripted peer ---------------------------------------------------------------------------


@anyio_test
async def test_answers_out_of_order_reach_their_callers(short_dir: Path) -> None:
    async with scripted(short_dir) as (client, peer):
        assert (client.session, client.server) == (7, "fake/1")
        results: dict[str, Any] = {}

        async def get(key: str) -> None:
            results[key] = await client.get(key)

        async with create_task_group() as group:
            for key in ("a", "b", "c"):
                group.start_soon(get, key)
            requests = [await peer.request() for _ in range(3)]
            assert all(r.args["cursor"] == "default" for r in requests)
            for request in reversed(requests):
                await peer.answer(request, request.args["key"].upper())
        assert results == {"a": "A", "b": "B", "c": "C"}


@anyio_test
async def test_max_in_flight_from_the_welcome_is_respected(short_dir: Path) -> None:
    async with scripted(short_dir, max_in_flight=2) as (client, peer):
        assert client.statistics()["max_in_flight"] == 2
        results: dict[int, Any] = {}

        async def incr(i: int) -> None:
            results[i] = await client.incr(f"k{i}", i)

        async with create_task_group() as group:
            for i in range(7):
                group.start_soon(incr, i)
            # Answer two at a time, the later first: the peer's Connection would fail on a
            # third request in flight.
            for _ in range(3):
                first, second = await peer.request(), await peer.request()
                await wait_all_tasks_blocked()
                assert client.statistics()["in_flight"] == 2
                await peer.answer(second, second.args["by"])
                await peer.answer(first, first.args["by"])
            last = await peer.request()
            await peer.answer(last, last.args["by"])
        assert results == {i: i for i in range(7)}


@anyio_test
async def test_goodbye_fails_every_waiting_caller(short_dir: Path) -> None:
    async with scripted(short_dir) as (client, peer):
        errors: list[ProntoError] = []

        async def call(key: str) -> None:
            with pytest.raises(ProntoError) as info:
                await client.get(key)
            errors.append(info.value)

        async with create_task_group() as group:
            for key in ("a", "b", "c"):
                group.start_soon(call, key)
            for _ in range(3):
                await peer.request()
            await peer.send(Goodbye(ErrorCode.UNAVAILABLE, "The broker is stopping."))
        assert [(e.code, e.message) for e in errors] == [
            (ErrorCode.UNAVAILABLE, "The broker is stopping.")
        ] * 3
        await expect_error(ErrorCode.UNAVAILABLE, client.ping)


@anyio_test
async def test_closing_the_client_fails_a_call_waiting_for_its_answer(short_dir: Path) -> None:
    async with scripted(short_dir) as (client, peer):
        errors: list[ProntoError] = []

        async def waiting() -> None:
            errors.append(
                await expect_error(ErrorCode.UNAVAILABLE, lambda: client.get("never.answered"))
            )

        async with create_task_group() as group:
            group.start_soon(waiting)
            await peer.request()  # sent: its caller now reads, and no answer will come
            await client.aclose()
        assert "closed" in errors[0].message


@pytest.mark.parametrize("how", ["eof", "eof-inside-a-frame", "garbage"])
@anyio_test
async def test_a_broken_connection_fails_the_caller(short_dir: Path, how: str) -> None:
    async def peer_side(peer: FakePeer) -> None:
        await peer.request()
        if how == "eof-inside-a-frame":
            await peer.send_bytes(b"\x00\x00\x00\x10\x94")
        elif how == "garbage":
            await peer.send_bytes(b"\x00\x00\x00\x01\xc1")  # 0xc1: never valid msgpack
        await peer.send_eof()

    async with scripted(short_dir) as (client, peer):
        async with create_task_group() as group:
            group.start_soon(peer_side, peer)
            err = await expect_error(
                ErrorCode.PROTOCOL if how == "garbage" else ErrorCode.UNAVAILABLE,
                lambda: client.get("a"),
            )
        if how != "garbage":
            assert "connection to the broker was lost" in err.message
        await expect_error(err.code, lambda: client.get("b"))


@anyio_test
async def test_a_goodbye_instead_of_welcome_is_raised_by_connect(short_dir: Path) -> None:
    refusal = Goodbye(ErrorCode.UNAUTHENTICATED, "Pass a token.")
    with pytest.raises(ProntoError) as info:
        async with scripted(short_dir, hello=refusal):
            pass
    assert (info.value.code, info.value.message) == (ErrorCode.UNAUTHENTICATED, "Pass a token.")
    assert not isinstance(info.value, BrokerUnavailable)


@anyio_test
async def test_a_broker_stopping_as_we_greet_it_is_as_good_as_none(short_dir: Path) -> None:
    # Its stop began as we connected (an idle exit): nothing was done here, and a caller that
    # starts brokers (the CLI) starts the next one.
    stopping = Goodbye(ErrorCode.UNAVAILABLE, "The broker is stopping.")
    with pytest.raises(BrokerUnavailable) as info:
        async with scripted(short_dir, hello=stopping):
            pass
    assert info.value.reason == "it is stopping"


@anyio_test
async def test_call_many_pipelines_in_windows_and_keeps_order(broker: BrokerProcess) -> None:
    async with await AsyncClient.connect(broker.url, cursor="many") as client:
        requests: list[tuple[str, dict[str, Any]]] = [
            ("set", {"cursor": "many", "key": f"k{i}", "value": i})
            for i in range(1500)  # three windows
        ]
        requests.append(("incr", {"cursor": "many", "key": "k7", "by": "x"}))  # refused in place
        requests.append(("get", {"cursor": "many", "key": "k1499"}))
        results = await client.call_many(requests)
        assert len(results) == 1502
        assert results[:3] == [1, 2, 3]  # each set's revision
        assert isinstance(results[1500], ProntoError)
        assert results[1500].code is ErrorCode.BAD_REQUEST
        assert results[1501] == 1499
        assert await client.call_many([]) == []
