"""The trio server in-process: real Unix sockets in a temp dir, the bare protocol on the wire."""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from inprocess import FakeClock, Running, running_broker
from wire import Wire

from prontodb.broker.engine import HistoryLimits
from prontodb.broker.server import AlreadyServing, Broker, CannotListen, ServerConfig
from prontodb.broker.server import _database_ops as ops
from prontodb.broker.server._registry import REGISTRY
from prontodb.broker.storage import StorageOptions
from prontodb.protocol import ConnectionClosed, ErrorCode, Goodbye, Hello, Response


@pytest.fixture
async def server(short_dir: Path) -> AsyncIterator[Running]:
    config = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "s.sock")
    async with running_broker(config) as running:
        yield running


async def test_round_trip_of_every_kv_op(server: Running) -> None:
    w = await server.wire("alice")
    assert await w.result("ping") == "pong"
    assert await w.result("set", key="a.b", value="hi") == 1
    assert await w.result("get", key="a.b") == "hi"
    meta = await w.result("get", key="a.b", meta=True)
    assert meta["value"] == "hi"
    assert meta["writer"] == "alice"
    assert meta["mod_rev"] == 1
    assert await w.result("incr", key="n", by=5) == 5
    assert await w.result("decr", key="n") == 4
    assert await w.result("keys") == {"keys": ["a.b", "n"], "more": False}
    assert await w.result("scan", prefix="a") == {"items": [["a.b", "hi"]], "more": False}
    assert await w.result("count") == 2
    txn = await w.result(
        "txn",
        compares=[{"key": "n", "value": 4}],
        ops=[{"op": "incr", "key": "n", "by": 2}, {"op": "get", "key": "a.b"}],
    )
    assert txn["succeeded"]
    assert txn["results"][0] == 6
    assert txn["results"][1]["value"] == "hi"
    assert await w.result("del", key="a.b") is True
    assert await w.result("del", key="a.b") is False
    assert await w.result("get", key="a.b") is None


async def test_operation_errors_carry_codes_and_keep_the_connection(server: Running) -> None:
    w = await server.wire()
    cases: list[tuple[tuple[str, dict[str, Any]], ErrorCode]] = [
        (("set", {"key": "bad key", "value": 1}), ErrorCode.BAD_KEY),
        (("set", {"key": "k"}), ErrorCode.BAD_REQUEST),
        (("set", {"key": "k", "value": 1, "if_absent": "yes"}), ErrorCode.BAD_REQUEST),
        (("nonsense", {}), ErrorCode.UNKNOWN_OP),
        (("get", {"key": "k", "cursor": "../etc"}), ErrorCode.BAD_REQUEST),
        (("keys", {"limit": -1}), ErrorCode.BAD_REQUEST),
    ]
    for (op, args), code in cases:
        response = await w.call(op, **args)
        assert response.error is not None, (op, response)
        assert response.error["code"] == code, (op, response)
    await w.result("set", key="k", value="text")
    response = await w.call("incr", key="k")
    assert response.error is not None
    assert response.error["code"] == ErrorCode.WRONG_TYPE
    failed = await w.call("set", key="k", value=2, if_absent=True)
    assert failed.error is not None
    assert failed.error["code"] == ErrorCode.COMPARE_FAILED
    assert failed.error["mod_rev"] == 1
    assert await w.result("get", key="k") == "text"


async def test_status_counts_requests_by_operation(server: Running) -> None:
    w = await server.wire()
    await w.result("set", key="k", value=1)
    await w.result("get", key="k")
    await w.result("get", key="k")
    for name in ("nonsense", "more-nonsense"):
        response = await w.call(name)
        assert response.error is not None
        assert response.error["code"] == ErrorCode.UNKNOWN_OP
        assert repr(name) in response.error["message"]
    counted = (await w.result("status"))["requests"]
    # Unknown names share one count, so that a client cannot grow the table.
    assert counted == {"set": 1, "get": 2, "(unknown)": 2, "status": 1}


async def test_cursors_are_separate_databases_created_by_their_first_write(
    server: Running,
) -> None:
    w = await server.wire()
    data_dir = server.broker.config.data_dir
    assert await w.result("get", key="x", cursor="tasks") is None
    assert await w.result("keys", cursor="tasks") == {"keys": [], "more": False}
    assert await w.result("del", key="x", cursor="tasks") is False
    assert not (data_dir / "tasks.db").exists()  # reads, and deletes of nothing, create nothing
    await w.result("set", key="x", value=1, cursor="tasks")
    assert (data_dir / "tasks.db").is_dir()
    assert await w.result("get", key="x") is None  # the default database is another one
    assert await w.result("get", key="x", cursor="tasks") == 1
    names = {d["name"] for d in (await w.result("status"))["databases"]}
    assert names == {"tasks"}


async def test_pipelined_requests_are_answered_in_order(server: Running) -> None:
    w = await server.wire()
    requests = [w.request("incr", key="counter") for _ in range(500)]
    requests += [w.request("get", key="counter")]
    await w.send(*requests)
    answers = [await w.next() for _ in requests]
    assert [a.id for a in answers if isinstance(a, Response)] == [r.id for r in requests]
    assert [a.result for a in answers if isinstance(a, Response)] == [*range(1, 501), 500]


async def test_keys_and_scan_come_in_pages(server: Running) -> None:
    w = await server.wire()
    items = [{"op": "set", "key": f"q.k{i:05}", "value": i} for i in range(100)]
    await w.result("txn", compares=[], ops=items)
    page = await w.result("keys", prefix="q", limit=30)
    assert len(page["keys"]) == 30
    assert page["more"]
    rest = await w.result("keys", prefix="q", after=page["keys"][-1], limit=1000)
    assert len(rest["keys"]) == 70
    assert not rest["more"]
    big = "x" * 600_000  # two of these pass the 1 MiB page budget
    await w.result("set", key="big.a", value=big)
    await w.result("set", key="big.b", value=big)
    first = await w.result("scan", prefix="big")
    assert [k for k, _ in first["items"]] == ["big.a"]
    assert first["more"]


async def test_a_malformed_frame_ends_only_its_own_connection(server: Running) -> None:
    good = await server.wire()
    bad = await server.wire()
    await bad.stream.send_all(b"\x00\x00\x00\x03\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
    goodbye = await bad.next()
    assert isinstance(goodbye, Goodbye)
    assert goodbye.code == ErrorCode.PROTOCOL
    assert isinstance(await bad.next(), ConnectionClosed)
    assert await good.result("set", key="still.here", value=1) == 1
    huge = await server.wire()
    await huge.stream.send_all((1 << 30).to_bytes(4, "big"))
    goodbye = await huge.next()
    assert isinstance(goodbye, Goodbye)
    assert goodbye.code == ErrorCode.TOO_LARGE
    assert await good.result("get", key="still.here") == 1


async def test_a_handler_exception_is_answered_and_logged(
    server: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(engine: object, call: object) -> ops.Outcome:
        raise RuntimeError("a bug")

    monkeypatch.setitem(REGISTRY, "get", dataclasses.replace(REGISTRY["get"], handler=broken))
    w = await server.wire()
    response = await w.call("get", key="k")
    assert response.error is not None
    assert response.error["code"] == ErrorCode.INTERNAL
    assert "a bug" in caplog.text
    assert await w.result("set", key="k", value=1) == 1  # same connection, still serving


async def test_hello_with_another_version_gets_goodbye(server: Running) -> None:
    w = Wire(await trio.open_unix_socket(server.socket))
    server.wires.append(w)
    await w.send(Hello(client="old", user="u", version=99))
    goodbye = await w.next()
    assert isinstance(goodbye, Goodbye)
    assert goodbye.code == ErrorCode.PROTOCOL
    assert "version 1" in goodbye.message


async def test_concurrent_writers_share_fsyncs(server: Running) -> None:
    wires = [await server.wire(f"w{i}") for i in range(50)]

    async def writer(w: Wire, n: int) -> None:
        for i in range(20):
            assert await w.result("set", key=f"k{n}.i{i}", value=i) > 0

    async with trio.open_nursery() as nursery:
        for n, w in enumerate(wires):
            nursery.start_soon(writer, w, n)
    db = server.broker.databases.opened()[0].database
    stats = db.writer.statistics()
    assert db.engine.revision == 1000
    # Writers waiting at the same time share fsyncs. How many share one depends on the disk
    # (bench/ measures it); here it is enough that some did.
    assert stats.fsyncs < stats.records == 1000


async def test_stop_answers_then_closes_everything(server: Running) -> None:
    w = await server.wire()
    other = await server.wire()
    await w.result("set", key="k", value=1)
    assert await w.result("stop") is None
    goodbye = await other.next()
    assert isinstance(goodbye, Goodbye)
    assert goodbye.code == ErrorCode.UNAVAILABLE
    with trio.fail_after(10):
        await server.stopped.wait()
    with pytest.raises(FileNotFoundError):  # the socket file is gone
        await trio.open_unix_socket(server.socket)


async def test_a_second_broker_on_the_same_data_dir_is_refused(
    server: Running, short_dir: Path
) -> None:
    config = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "other.sock")
    with pytest.raises(AlreadyServing, match=f"pid {server.info.pid}"):
        await Broker(config).serve()
    second = ServerConfig(data_dir=short_dir / "data2", socket_path=Path(server.socket))
    with pytest.raises(AlreadyServing, match="already listens"):
        await Broker(second).serve()


async def test_a_port_in_use_is_named_and_the_broker_never_says_it_stopped(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as held:  # someone else's listener on the port
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        config = ServerConfig(
            data_dir=short_dir / "data", socket_path=short_dir / "s.sock", tcp=("127.0.0.1", port)
        )
        with (
            caplog.at_level(logging.INFO, "prontodb.server"),
            pytest.raises(CannotListen, match=f"TCP 127.0.0.1:{port}: the address is in use"),
        ):
            await Broker(config).serve()
    # It never served, so it says neither that it serves nor that it stopped; the Unix socket it
    # had bound is gone, and the data directory is free for the next one.
    assert "serving" not in caplog.text
    assert "stopped" not in caplog.text
    assert not (short_dir / "s.sock").exists()
    async with running_broker(ServerConfig(short_dir / "data", short_dir / "s.sock")) as running:
        assert await (await running.wire()).result("ping") == "pong"


async def test_a_unix_socket_that_cannot_be_made_is_named(short_dir: Path) -> None:
    (short_dir / "file").write_text("")
    inside_a_file = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "file" / "s")
    with pytest.raises(CannotListen, match=f"Unix socket {short_dir / 'file' / 's'}: "):
        await Broker(inside_a_file).serve()
    # A file that is not a socket is never taken for one a dead broker left (and removed).
    (short_dir / "notes.txt").write_text("kept")
    on_a_file = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "notes.txt")
    with pytest.raises(CannotListen, match=r"notes\.txt exists and is not a socket"):
        await Broker(on_a_file).serve()
    assert (short_dir / "notes.txt").read_text() == "kept"
    too_long = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / ("x" * 120))
    with pytest.raises(CannotListen, match="longer than the 107 bytes"):
        await Broker(too_long).serve()


async def test_compaction_runs_beside_the_writes(short_dir: Path) -> None:
    config = ServerConfig(
        data_dir=short_dir / "data",
        socket_path=short_dir / "s.sock",
        history=HistoryLimits(revisions=10),  # else the watch history keeps it all live
    )
    broker = Broker(config)
    broker.databases.options = StorageOptions(compact_min_bytes=4096, compact_garbage_ratio=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: broker.serve(task_status=task_status))
        wire = await Wire.open(str(short_dir / "s.sock"))
        for round_ in range(40):  # the same 20 keys over and over: mostly garbage
            await wire.send(*[wire.request("set", key=f"k.i{i}", value=round_) for i in range(20)])
            for _ in range(20):
                response = await wire.next()
                assert isinstance(response, Response)
                assert response.error is None
        with trio.fail_after(30):
            while not list((short_dir / "data" / "default.db").glob("snap-*")):
                await wire.result("set", key="nudge", value=1)  # each write may start one
        page = await wire.result("scan", prefix="k")
        assert dict(page["items"]) == {f"k.i{i}": 39 for i in range(20)}
        await wire.aclose()
        broker.request_stop()
    broker = Broker(config)  # reopen: the snapshot plus the log after it
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: broker.serve(task_status=task_status))
        wire = await Wire.open(str(short_dir / "s.sock"))
        assert await wire.result("get", key="k.i7") == 39
        await wire.aclose()
        broker.request_stop()


async def test_expired_keys_vanish_for_readers_before_any_sweep(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, clock = clocked
    broker = server.broker
    w = await server.wire()
    await w.result("set", key="session.w1", value="on", ttl=30)
    await w.result("set", key="kept", value="on")
    ttl = await w.result("ttl", key="session.w1")
    assert ttl == {"exists": True, "ttl": 30.0}
    assert await w.result("ttl", key="kept") == {"exists": True, "ttl": None}
    assert await w.result("ttl", key="nothing") == {"exists": False, "ttl": None}
    clock.jump = 31.0  # the wall clock moves; trio's does not, so the sweeper still sleeps
    assert await w.result("get", key="session.w1") is None
    assert await w.result("keys") == {"keys": ["kept"], "more": False}
    engine = broker.databases.opened()[0].engine
    assert engine.revision == 3  # the expiry took a revision of its own


async def test_the_sweeper_expires_keys_when_nobody_asks(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, _clock = clocked
    broker = server.broker
    w = await server.wire()
    await w.result("set", key="late", value=1, ttl=100)
    await w.result("set", key="soon", value=1, ttl=10)  # earlier: the sweeper reschedules
    engine = broker.databases.opened()[0].engine
    await trio.sleep(10.5)  # mock time: no real waiting
    assert engine.keys() == ["late"]
    await trio.sleep(100)
    assert engine.keys() == []
    assert engine.revision == 4


async def test_the_sweeper_ends_sessions_when_nobody_asks(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, clock = clocked
    w = await server.wire()
    await w.result("set", key="kept", value=1)
    granted = await w.result("session_grant", ttl=10)
    assert granted == {"id": 1, "ttl": 10.0, "deadline": clock() + 10}
    await w.result("set", key="locks.a", value="me", session=granted["id"])
    db = server.broker.databases.opened()[0]
    await trio.sleep(9.5)  # mock time: no real waiting
    assert db.engine.keys() == ["kept", "locks.a"]
    await trio.sleep(1)
    assert db.engine.keys() == ["kept"]
    assert db.engine.sessions() == []
    assert await w.result("keys") == {"keys": ["kept"], "more": False}


async def test_caches_expire_persist_over_the_wire(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, clock = clocked
    w = await server.wire()
    assert await w.result("create_cache", prefix="sessions.active", seconds=3600) is None
    assert await w.result("caches") == {"sessions.active": 3600.0}
    await w.result("set", key="sessions.active.worker1", value="active")
    assert (await w.result("ttl", key="sessions.active.worker1"))["ttl"] == 3600.0
    assert await w.result("persist", key="sessions.active.worker1") is True
    assert await w.result("expire", key="sessions.active.worker1", seconds=5) is True
    assert await w.result("expire", key="missing", seconds=5) is False
    meta = await w.result("get", key="sessions.active.worker1", meta=True)
    assert meta["expires"] == clock() + 5
    assert await w.result("drop_cache", prefix="sessions.active") is True
    assert await w.result("caches") == {}
    bad = await w.call("set", key="k", value=1, ttl=-1)
    assert bad.error is not None
    assert bad.error["code"] == ErrorCode.BAD_REQUEST


async def test_keys_that_expired_while_the_broker_was_down_are_gone(short_dir: Path) -> None:
    clock = FakeClock()
    config = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "s.sock")
    for jump, expect in ((0.0, "on"), (120.0, None)):
        clock.jump = jump
        broker = Broker(config)
        broker.clock = clock
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status, b=broker: b.serve(task_status=task_status))
            w = await Wire.open(str(short_dir / "s.sock"))
            if jump == 0.0:
                await w.result("set", key="session", value="on", ttl=60)
            assert await w.result("get", key="session") == expect
            await w.aclose()
            broker.request_stop()


@pytest.fixture
async def clocked(short_dir: Path) -> AsyncIterator[tuple[Running, FakeClock]]:
    """A broker whose wall clock follows trio's: with the test's autojump_clock, waits and
    leases pass without real time passing."""
    clock = FakeClock()
    config = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "s.sock")
    async with running_broker(config, clock) as running:
        yield running, clock


async def test_claims_hand_out_items_once_each_in_order(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, _ = clocked
    w = await server.wire("worker1")
    for n in (1, 2):
        await w.result("set", key=f"jobs.j{n}", value=f"task {n}")
    first = await w.result("claim", prefix="jobs", lease=30)
    second = await w.result("claim", prefix="jobs")
    assert (first["key"], first["value"], first["deliveries"]) == ("jobs.j1", "task 1", 1)
    assert second["key"] == "jobs.j2"
    assert second["token"] > first["token"]
    assert await w.result("claim", prefix="jobs") is None  # nothing left, no wait: nil at once
    meta = await w.result("get", key="jobs.j1", meta=True)
    assert meta["claim"]["holder"] == "worker1"
    assert meta["deliveries"] == 1
    held = await w.result("claims", prefix="jobs")
    assert [c["key"] for c in held] == ["jobs.j1", "jobs.j2"]
    assert await w.result("ack", key="jobs.j1", token=first["token"]) is None
    stale = await w.call("ack", key="jobs.j2", token=first["token"])
    assert stale.error is not None
    assert stale.error["code"] == ErrorCode.COMPARE_FAILED
    status = await w.result("status")
    assert status["databases"][0]["queues"] == {
        "jobs": {
            "ready": 0,
            "claimed": 1,
            "delayed": 0,
            "waiting": 0,
            "redeliveries": 0,
            "dead": 0,
            "oldest_ready_age": None,
        }
    }


async def test_blocked_claimers_are_served_first_come_first_served(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, _ = clocked
    a, b, producer = await server.wire("a"), await server.wire("b"), await server.wire("p")
    claim_a = a.request("claim", prefix="jobs", wait=100)
    await a.send(claim_a)
    await trio.sleep(1)  # mock time: a is surely queued before b
    claim_b = b.request("claim", prefix="jobs", wait=100)
    await b.send(claim_b, b.request("get", key="other"))
    answer = await b.next()  # b's later request is answered while its claim waits
    assert isinstance(answer, Response)
    assert answer.id != claim_b.id
    await producer.result("set", key="jobs.first", value=1)
    await producer.result("set", key="jobs.second", value=2)
    got_a, got_b = await a.next(), await b.next()
    assert isinstance(got_a, Response)
    assert isinstance(got_b, Response)
    assert (got_a.id, got_a.result["key"]) == (claim_a.id, "jobs.first")
    assert (got_b.id, got_b.result["key"]) == (claim_b.id, "jobs.second")


async def test_a_wait_that_runs_out_answers_nil(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, _ = clocked
    w = await server.wire()
    start = trio.current_time()
    assert await w.result("claim", prefix="jobs", wait=5) is None
    assert trio.current_time() - start == pytest.approx(5, abs=0.5)


async def test_an_expired_lease_goes_to_the_next_claimer_and_fences_the_first(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, _ = clocked
    slow, fast = await server.wire("slow"), await server.wire("fast")
    await slow.result("set", key="jobs.j1", value="x")
    mine = await slow.result("claim", prefix="jobs", lease=5)
    start = trio.current_time()
    theirs = await fast.result("claim", prefix="jobs", wait=60)  # served when the lease ends
    assert trio.current_time() - start == pytest.approx(5, abs=0.5)
    assert (theirs["key"], theirs["deliveries"]) == ("jobs.j1", 2)
    late = await slow.call("ack", key="jobs.j1", token=mine["token"])
    assert late.error is not None
    assert late.error["code"] == ErrorCode.COMPARE_FAILED
    assert await fast.result("ack", key="jobs.j1", token=theirs["token"]) is None


async def test_claims_bound_to_a_connection_return_when_it_closes(
    clocked: tuple[Running, FakeClock], autojump_clock: trio.testing.MockClock
) -> None:
    server, _ = clocked
    holder, other = await server.wire("holder"), await server.wire("other")
    await other.result("set", key="jobs.j1", value="x")
    claimed = await holder.result("claim", prefix="jobs", bind=True)
    assert claimed["key"] == "jobs.j1"
    assert await other.result("claim", prefix="jobs") is None
    waiting = other.request("claim", prefix="jobs", wait=60)
    await other.send(waiting)
    await holder.aclose()  # the connection goes: its bound claim comes back at once
    start = trio.current_time()
    again = await other.next()
    assert isinstance(again, Response)
    assert again.result["key"] == "jobs.j1"
    assert trio.current_time() - start < 1


async def test_claims_survive_a_restart_and_bound_ones_come_back(short_dir: Path) -> None:
    config = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "s.sock")

    async def session(body: Any) -> None:
        broker = Broker(config)
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: broker.serve(task_status=task_status))
            w = await Wire.open(str(short_dir / "s.sock"), "w1")
            await body(w)
            await w.aclose()
            broker.request_stop()

    held: dict[str, Any] = {}

    async def before(w: Wire) -> None:
        for n in (1, 2, 3):
            await w.result("set", key=f"jobs.j{n}", value=n)
        held["lease"] = await w.result("claim", prefix="jobs", lease=3600)
        held["bound"] = await w.result("claim", prefix="jobs", lease=3600, bind=True)
        delayed = await w.result("claim", prefix="jobs", lease=3600)
        await w.result("release", key=delayed["key"], token=delayed["token"], delay=3600)

    async def after(w: Wire) -> None:
        claims = await w.result("claims", prefix="jobs")
        assert [(c["key"], c["token"]) for c in claims] == [("jobs.j1", held["lease"]["token"])]
        again = await w.result("claim", prefix="jobs")  # the bound claim came back
        assert (again["key"], again["deliveries"]) == ("jobs.j2", 2)
        assert again["token"] > held["bound"]["token"]  # tokens keep growing across restarts
        assert await w.result("claim", prefix="jobs") is None  # j3 is still delayed
        await w.result("ack", key="jobs.j1", token=held["lease"]["token"])

    await session(before)
    await session(after)
