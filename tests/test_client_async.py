"""The async client against real brokers and against a scripted peer, under trio and asyncio.

Each test is a plain function that runs its body with ``anyio.run`` on the backend it is
parametrized with, so one body covers both event loops. The scripted peer (``FakePeer``) is the
broker's end of a real Unix socket driven by the test, for what a real broker does too fast to
observe: answers held back, answers out of order, a Goodbye or a hang-up in the middle.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
import trio.testing
from brokers import BrokerProcess, running_broker

from prontodb.clients import (
    MISSING,
    AsyncClient,
    BrokerUnavailable,
    ErrorCode,
    KeyInfo,
    ProntoError,
    TxnResult,
)
from prontodb.protocol import (
    NEED_DATA,
    Connection,
    Event,
    Goodbye,
    Hello,
    Limits,
    Message,
    Request,
    Response,
    Role,
    Welcome,
)

Body = Callable[[], Awaitable[None]]


@pytest.fixture(params=["trio", "asyncio"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


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


def run(backend: str, body: Body) -> None:
    anyio.run(body, backend=backend)


async def expect_error(code: ErrorCode, call: Awaitable[Any]) -> ProntoError:
    with pytest.raises(ProntoError) as info:
        await call
    assert info.value.code is code, info.value
    return info.value


# -- every operation, against a real broker ----------------------------------------------------


def test_every_method_round_trips(backend: str, broker: BrokerProcess) -> None:
    async def body() -> None:
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

    run(backend, body)


def test_cursor_selects_the_database(backend: str, broker: BrokerProcess) -> None:
    async def body() -> None:
        async with (
            await AsyncClient.connect(broker.url) as default,
            await AsyncClient.connect(broker.url, cursor="tasks") as tasks,
        ):
            await tasks.set("queue.a", 1)
            assert await default.get("queue.a") is None
            assert await default.get("queue.a", cursor="tasks") == 1
            await default.set("queue.b", 2, cursor="tasks")
            assert await tasks.keys("queue") == ["queue.a", "queue.b"]
            assert await default.count() == 0
            # The raw call adds no cursor: the broker's default database.
            assert await tasks.call("count", {}) == 0

    run(backend, body)


def test_conditional_writes(backend: str, broker: BrokerProcess) -> None:
    async def body() -> None:
        async with await AsyncClient.connect(broker.url) as client:
            rev = await client.set("lock.owner", "a", if_absent=True)
            err = await expect_error(
                ErrorCode.COMPARE_FAILED, client.set("lock.owner", "b", if_absent=True)
            )
            assert err.exit_status == 5
            assert err.details["mod_rev"] == rev
            await expect_error(ErrorCode.COMPARE_FAILED, client.set("lock.owner", "b", if_rev=0))
            rev = await client.set("lock.owner", "b", if_rev=rev)
            await expect_error(
                ErrorCode.COMPARE_FAILED, client.set("lock.owner", "c", if_value="a")
            )
            rev = await client.set("lock.owner", "c", if_value="b")
            # None is a value to compare with, not "no condition" (that is MISSING).
            await expect_error(
                ErrorCode.COMPARE_FAILED, client.set("lock.owner", "d", if_value=None)
            )
            await client.set("lock.owner", "d", if_value=MISSING)
            await expect_error(ErrorCode.COMPARE_FAILED, client.delete("lock.owner", if_rev=rev))
            await expect_error(ErrorCode.COMPARE_FAILED, client.delete("lock.owner", if_value="x"))
            assert await client.delete("lock.owner", if_value="d") is True

    run(backend, body)


def test_operation_errors_leave_the_connection_usable(backend: str, broker: BrokerProcess) -> None:
    async def body() -> None:
        async with await AsyncClient.connect(broker.url) as client:
            await client.set("app.name", "text")
            await expect_error(ErrorCode.WRONG_TYPE, client.incr("app.name"))
            await expect_error(ErrorCode.BAD_KEY, client.set("bad key!", 1))
            await expect_error(ErrorCode.BAD_KEY, client.get("a..b"))
            await expect_error(ErrorCode.UNKNOWN_OP, client.call("no-such-op", {}))
            await expect_error(ErrorCode.BAD_REQUEST, client.call("get", {}))
            await expect_error(ErrorCode.BAD_REQUEST, client.keys(limit=-1))
            # Refused before sending: a map key that is not a str, a value over the frame size.
            err = await expect_error(ErrorCode.BAD_REQUEST, client.set("app.x", {1: "one"}))
            assert "map keys" in err.message
            await expect_error(ErrorCode.TOO_LARGE, client.set("app.x", b"x" * (5 << 20)))
            # Over the broker's value limit (1 MiB) but within the frame: the broker says so.
            await expect_error(ErrorCode.TOO_LARGE, client.set("app.x", b"x" * (2 << 20)))
            assert await client.get("app.name") == "text"
            assert client.statistics()["in_flight"] == 0

    run(backend, body)


def test_pages_of_keys_and_scan(backend: str, fast_broker: BrokerProcess) -> None:
    total = 10_050  # more than one page of 10 000
    names = sorted(f"big.k{i:05}" for i in range(total))

    async def body() -> None:
        async with await AsyncClient.connect(fast_broker.url) as client:

            async def fill(start: int) -> None:
                batch = [{"op": "set", "key": k, "value": k} for k in names[start : start + 128]]
                assert (await client.txn([], batch)).succeeded

            async with anyio.create_task_group() as group:
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

    run(backend, body)


# -- concurrency against a real broker ---------------------------------------------------------


def test_two_hundred_tasks_share_one_client(backend: str, broker: BrokerProcess) -> None:
    async def body() -> None:
        async with await AsyncClient.connect(broker.url) as client:
            answers: dict[int, Any] = {}

            async def one(i: int) -> None:
                await client.set(f"task.k{i}", i)
                answers[i] = (await client.get(f"task.k{i}"), await client.incr("task.count"))

            async with anyio.create_task_group() as group:
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

    run(backend, body)


def test_cancelled_callers_do_not_break_the_next_ones(backend: str, broker: BrokerProcess) -> None:
    async def body() -> None:
        async with await AsyncClient.connect(broker.url) as client:
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

    run(backend, body)


def test_an_abandoned_large_answer_does_not_block_a_large_request(
    backend: str, fast_broker: BrokerProcess
) -> None:
    # Unread, a 1 MiB scan page fills the socket and the broker stops reading while it waits to
    # send it; a 900 kB request sent then would block for good unless the answer is read first.
    async def body() -> None:
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

    run(backend, body)


def test_tcp_url(backend: str, tcp_broker: BrokerProcess) -> None:
    async def body() -> None:
        async with await AsyncClient.connect(tcp_broker.tcp_url) as client:
            assert client.url.startswith("tcp://127.0.0.1:")
            await client.set("net.key", "over tcp")
            assert await client.get("net.key") == "over tcp"
        async with await AsyncClient.connect(tcp_broker.url) as local:
            assert await local.get("net.key") == "over tcp"

    run(backend, body)


def test_stopped_broker_fails_later_calls(backend: str, broker: BrokerProcess) -> None:
    async def body() -> None:
        async with (
            await AsyncClient.connect(broker.url) as client,
            await AsyncClient.connect(broker.url) as other,
        ):
            await client.set("app.key", 1)
            await client.stop()
            assert await anyio.to_thread.run_sync(broker.process.wait) == 0
            err = await expect_error(ErrorCode.UNAVAILABLE, client.get("app.key"))
            assert err.exit_status == 1
            await expect_error(ErrorCode.UNAVAILABLE, other.ping())
            await expect_error(ErrorCode.UNAVAILABLE, other.ping())  # and stays so
        with pytest.raises(BrokerUnavailable):
            await AsyncClient.connect(broker.url)

    run(backend, body)


def test_closing_the_client_ends_a_call_blocked_reading(
    backend: str, broker: BrokerProcess
) -> None:
    async def body() -> None:
        client = await AsyncClient.connect(broker.url)
        ended = anyio.Event()

        async def blocked() -> None:
            await expect_error(ErrorCode.UNAVAILABLE, client.claim("nothing.here", wait=30))
            ended.set()

        async with anyio.create_task_group() as group:
            group.start_soon(blocked)
            await anyio.wait_all_tasks_blocked()  # the claim is sent; its caller waits to read
            await client.aclose()
            with anyio.fail_after(10):
                await ended.wait()
        # The closed socket's fd number may come back at once: a new client must work on it.
        async with await AsyncClient.connect(broker.url) as again:
            await again.ping()

    run(backend, body)


def test_closed_client_refuses_calls(backend: str, broker: BrokerProcess) -> None:
    async def body() -> None:
        client = await AsyncClient.connect(broker.url)
        await client.aclose()
        await client.aclose()  # twice is fine
        err = await expect_error(ErrorCode.UNAVAILABLE, client.ping())
        assert "closed" in err.message

    run(backend, body)


# -- connecting ------------------------------------------------------------------------------


def test_nothing_listening_is_broker_unavailable(short_dir: Path, backend: str) -> None:
    stale = short_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))  # a socket file nobody listens on: connection refused

    async def body() -> None:
        for url in (f"unix://{short_dir}/none.sock", f"unix://{stale}"):
            with pytest.raises(BrokerUnavailable) as info:
                await AsyncClient.connect(url)
            assert info.value.code is ErrorCode.UNAVAILABLE
            assert url in info.value.message
            assert "prontodb serve" in info.value.message
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))  # bound, not listening: refused
            port = sock.getsockname()[1]
            with pytest.raises(BrokerUnavailable):
                await AsyncClient.connect(f"tcp://127.0.0.1:{port}")
        err = await expect_error(ErrorCode.BAD_REQUEST, AsyncClient.connect("http://x"))
        assert "unix://" in err.message

    run(backend, body)


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
                    ErrorCode.UNAVAILABLE, AsyncClient.connect("unix://" + path, timeout=5)
                )
            for stream in accepted:
                await stream.aclose()
        assert "did not answer within 5 s" in err.message
        assert not isinstance(err, BrokerUnavailable)  # something is there: do not start another

    # The clock jumps whenever every task waits, so the 5 s pass at once.
    clock = trio.testing.MockClock(autojump_threshold=0)
    anyio.run(body, backend="trio", backend_options={"clock": clock})


def test_default_url_and_user_come_from_the_environment(
    backend: str, broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRONTODB_URL", broker.url)
    monkeypatch.setenv("PRONTODB_USER", "carol")

    async def body() -> None:
        async with await AsyncClient.connect() as client:
            assert (client.url, client.user) == (broker.url, "carol")
            await client.set("who", 1)
            info = await client.get_info("who")
            assert info is not None
            assert info.writer == "carol"

    run(backend, body)


# -- a scripted peer ---------------------------------------------------------------------------


class FakePeer:
    """The broker's end of one connection, driven step by step by a test."""

    def __init__(self, stream: anyio.abc.SocketStream, max_in_flight: int) -> None:
        self.stream = stream
        # Its Connection enforces max_in_flight: a client that sent more would fail the test.
        self.conn = Connection(Role.SERVER, Limits(max_in_flight=max_in_flight))
        self.max_in_flight = max_in_flight

    async def next_message(self) -> Event:
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            try:
                data = await self.stream.receive(65536)
            except anyio.EndOfStream:
                data = b""
            self.conn.receive_data(data)

    async def request(self) -> Request:
        message = await self.next_message()
        assert isinstance(message, Request), message
        return message

    async def send(self, message: Message) -> None:
        await self.stream.send(self.conn.send(message))

    async def answer(self, request: Request, result: Any = None) -> None:
        await self.send(Response(request.id, None, result))


@asynccontextmanager
async def scripted(
    short_dir: Path, *, max_in_flight: int = 1024, hello: Goodbye | None = None
) -> AsyncIterator[tuple[AsyncClient, FakePeer]]:
    """A client connected to a FakePeer, which answers the Hello with a Welcome (or ``hello``)."""
    path = str(short_dir / "fake.sock")
    peers: list[FakePeer] = []
    refused: ProntoError | None = None
    async with await anyio.create_unix_listener(path) as listener:

        async def accept() -> None:
            peer = FakePeer(await listener.accept(), max_in_flight)
            peers.append(peer)
            assert isinstance(await peer.next_message(), Hello)
            limits = {"max_in_flight": max_in_flight}
            await peer.send(hello or Welcome("fake/1", 7, limits))

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(accept)
                try:
                    client = await AsyncClient.connect("unix://" + path, user="tester")
                except ProntoError as exc:
                    refused = exc  # raised below, outside the task group's exception group
            if refused is not None:
                raise refused
            async with client:
                yield client, peers[0]
        finally:
            for peer in peers:
                await peer.stream.aclose()


def test_answers_out_of_order_reach_their_callers(short_dir: Path, backend: str) -> None:
    async def body() -> None:
        async with scripted(short_dir) as (client, peer):
            assert (client.session, client.server) == (7, "fake/1")
            results: dict[str, Any] = {}

            async def get(key: str) -> None:
                results[key] = await client.get(key)

            async with anyio.create_task_group() as group:
                for key in ("a", "b", "c"):
                    group.start_soon(get, key)
                requests = [await peer.request() for _ in range(3)]
                assert all(r.args["cursor"] == "default" for r in requests)
                for request in reversed(requests):
                    await peer.answer(request, request.args["key"].upper())
            assert results == {"a": "A", "b": "B", "c": "C"}

    run(backend, body)


def test_a_caller_cancelled_after_sending_is_dropped_cleanly(short_dir: Path, backend: str) -> None:
    async def body() -> None:
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

    run(backend, body)


def test_max_in_flight_from_the_welcome_is_respected(short_dir: Path, backend: str) -> None:
    async def body() -> None:
        async with scripted(short_dir, max_in_flight=2) as (client, peer):
            assert client.statistics()["max_in_flight"] == 2
            results: dict[int, Any] = {}

            async def incr(i: int) -> None:
                results[i] = await client.incr(f"k{i}", i)

            async with anyio.create_task_group() as group:
                for i in range(7):
                    group.start_soon(incr, i)
                # Answer two at a time, the later first: the peer's Connection would fail on a
                # third request in flight.
                for _ in range(3):
                    first, second = await peer.request(), await peer.request()
                    await anyio.wait_all_tasks_blocked()
                    assert client.statistics()["in_flight"] == 2
                    await peer.answer(second, second.args["by"])
                    await peer.answer(first, first.args["by"])
                last = await peer.request()
                await peer.answer(last, last.args["by"])
            assert results == {i: i for i in range(7)}

    run(backend, body)


def test_abandoned_requests_holding_every_slot_are_drained(short_dir: Path, backend: str) -> None:
    async def body() -> None:
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

    run(backend, body)


def test_goodbye_fails_every_waiting_caller(short_dir: Path, backend: str) -> None:
    async def body() -> None:
        async with scripted(short_dir) as (client, peer):
            errors: list[ProntoError] = []

            async def call(key: str) -> None:
                with pytest.raises(ProntoError) as info:
                    await client.get(key)
                errors.append(info.value)

            async with anyio.create_task_group() as group:
                for key in ("a", "b", "c"):
                    group.start_soon(call, key)
                for _ in range(3):
                    await peer.request()
                await peer.send(Goodbye(ErrorCode.UNAVAILABLE, "The broker is stopping."))
            assert [(e.code, e.message) for e in errors] == [
                (ErrorCode.UNAVAILABLE, "The broker is stopping.")
            ] * 3
            await expect_error(ErrorCode.UNAVAILABLE, client.ping())

    run(backend, body)


@pytest.mark.parametrize("how", ["eof", "eof-inside-a-frame", "garbage"])
def test_a_broken_connection_fails_the_caller(short_dir: Path, backend: str, how: str) -> None:
    async def peer_side(peer: FakePeer) -> None:
        await peer.request()
        if how == "eof-inside-a-frame":
            await peer.stream.send(b"\x00\x00\x00\x10\x94")
        elif how == "garbage":
            await peer.stream.send(b"\x00\x00\x00\x01\xc1")  # 0xc1: never valid msgpack
        await peer.stream.send_eof()

    async def body() -> None:
        async with scripted(short_dir) as (client, peer):
            async with anyio.create_task_group() as group:
                group.start_soon(peer_side, peer)
                err = await expect_error(
                    ErrorCode.PROTOCOL if how == "garbage" else ErrorCode.UNAVAILABLE,
                    client.get("a"),
                )
            if how != "garbage":
                assert "connection to the broker was lost" in err.message
            await expect_error(err.code, client.get("b"))

    run(backend, body)


def test_a_goodbye_instead_of_welcome_is_raised_by_connect(short_dir: Path, backend: str) -> None:
    async def body() -> None:
        refusal = Goodbye(ErrorCode.UNAUTHENTICATED, "Pass a token.")
        with pytest.raises(ProntoError) as info:
            async with scripted(short_dir, hello=refusal):
                pass
        assert (info.value.code, info.value.message) == (ErrorCode.UNAUTHENTICATED, "Pass a token.")
        assert not isinstance(info.value, BrokerUnavailable)

    run(backend, body)


def test_claiming_acks_or_releases(backend: str, broker: BrokerProcess) -> None:
    async def body() -> None:
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

    run(backend, body)


async def give_up_a_waiting_claim(client: AsyncClient) -> None:
    """Start a claim that waits, and cancel its caller once its request is sent."""
    async with anyio.create_task_group() as group:
        group.start_soon(partial(client.claim, "jobs", wait=300))
        while client.statistics()["in_flight"] < 1:
            await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()


def test_a_cancelled_waiting_claim_does_not_hold_up_the_next_calls(
    backend: str, broker: BrokerProcess
) -> None:
    async def body() -> None:
        async with await AsyncClient.connect(broker.url, cursor="waits") as client:
            await give_up_a_waiting_claim(client)
            with anyio.fail_after(30):  # not the claim's 300 s
                assert await client.set("after", 1) > 0

    run(backend, body)


def test_a_cancelled_waiting_claim_gives_up_its_place_at_the_broker(
    backend: str, broker: BrokerProcess
) -> None:
    async def body() -> None:
        async with await AsyncClient.connect(broker.url, cursor="cancels") as client:
            await give_up_a_waiting_claim(client)
            # The cancel went out as the claim was given up, before this set on the same
            # connection: the broker no longer waits for that claim, so nothing is claimed for it
            # (else the item would be held for its 60 s lease, and this claim would time out).
            await client.set("jobs.a", 1)
            got = await client.claim("jobs", wait=30)
            assert got is not None
            assert (got.key, got.deliveries) == ("jobs.a", 1)

    run(backend, body)


def test_a_claim_cancelled_as_the_connection_fails_still_ends_as_cancelled(
    backend: str, broker: BrokerProcess
) -> None:
    # The cancel is sent from the cancelled call's `finally`: if the connection fails while it
    # waits to send, that failure must not replace the cancellation (a move_on block around
    # the claim moves on).
    async def body() -> None:
        async with await AsyncClient.connect(broker.url, cursor="cancels") as client:
            outcome: list[object] = []
            scope = anyio.CancelScope()

            async def claimer() -> None:
                with scope:
                    await client.claim("jobs", wait=300)
                outcome.append("moved on")

            async with anyio.create_task_group() as group:
                group.start_soon(claimer)
                while client.statistics()["in_flight"] < 1:  # until its request is sent
                    await anyio.lowlevel.checkpoint()
                await client._pipeline._send_lock.acquire()  # another caller is writing a frame ...
                scope.cancel()
                await anyio.wait_all_tasks_blocked()
                client._pipeline._fail(
                    ProntoError(ErrorCode.UNAVAILABLE, "lost")
                )  # ... and finds it dead
                client._pipeline._send_lock.release()
            assert outcome == ["moved on"]

    run(backend, body)
