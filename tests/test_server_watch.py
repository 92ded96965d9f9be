"""``watch`` on the wire: replay from a revision, live changes, the end of a stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from inprocess import FakeClock, Running, running_broker
from wire import Wire

from prontodb.broker.engine import Batch, Change, HistoryLimits
from prontodb.broker.server import ServerConfig
from prontodb.broker.server import _watches as watches
from prontodb.broker.storage import StorageOptions
from prontodb.protocol import ErrorCode, Push, Request, Response


def config(short_dir: Path, **extra: Any) -> ServerConfig:
    return ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "s.sock", **extra)


async def open_watch(wire: Wire, **args: Any) -> tuple[Request, int]:
    """Send a watch and read its first push: the revision it starts at."""
    request = wire.request("watch", **args)
    await wire.send(request)
    first = await wire.next()
    assert isinstance(first, Push), first
    assert first.stream == request.id
    assert first.event["events"] == []
    return request, first.event["next_rev"]


async def events(wire: Wire, stream: int, count: int) -> list[dict[str, Any]]:
    """The next ``count`` events of ``stream`` (other messages on the wire fail the test)."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        push = await wire.next()
        assert isinstance(push, Push), push
        assert push.stream == stream, push
        found += push.event["events"]
    assert len(found) == count, found
    return found


async def unwatched(wire: Wire, stream: int) -> tuple[Any, Any]:
    """Unwatch ``stream``: the stream's last answer and unwatch's own, which come in either
    order."""
    unwatch = wire.request("unwatch", stream=stream)
    await wire.send(unwatch)
    answers: dict[int, Any] = {}
    while len(answers) < 2:
        message = await wire.next()
        assert isinstance(message, Response)
        answers[message.id] = message.raise_for_error()
    return answers[stream], answers[unwatch.id]


def brief(found: list[dict[str, Any]]) -> list[tuple[int, str, str, Any]]:
    return [(e["rev"], e["type"], e["key"], e.get("value")) for e in found]


async def test_live_changes_under_the_prefix_arrive_in_order(short_dir: Path) -> None:
    async with running_broker(config(short_dir)) as server:
        watcher = await server.wire()
        writer = await server.wire("w1")
        request, start = await open_watch(watcher, prefix="jobs")
        assert start == 1
        await writer.result("set", key="jobs.a", value="new")
        await writer.result("set", key="jobsx", value="not under jobs")
        await writer.result("set", key="jobs", value="the prefix itself")
        await writer.result("del", key="jobs.a")
        await writer.result(
            "txn", ops=[{"op": "set", "key": "jobs.b", "value": 1}, {"op": "incr", "key": "jobs.c"}]
        )
        found = await events(watcher, request.id, 5)
        assert brief(found) == [
            (1, "put", "jobs.a", "new"),
            (3, "put", "jobs", "the prefix itself"),
            (4, "delete", "jobs.a", None),
            (5, "put", "jobs.b", 1),
            (5, "put", "jobs.c", 1),
        ]
        assert found[0]["by"] == "w1"
        assert found[0]["version"] == 1


async def test_from_rev_replays_then_goes_live_without_gap_or_duplicate(short_dir: Path) -> None:
    async with running_broker(config(short_dir)) as server:
        w = await server.wire()
        for i in range(10):
            await w.result("set", key=f"k.{i}", value=i)
        watcher = await server.wire()
        request, start = await open_watch(watcher, from_rev=4)
        assert start == 4
        await w.result("set", key="k.10", value=10)
        found = await events(watcher, request.id, 8)
        assert [e["rev"] for e in found] == list(range(4, 12))
        assert [e["value"] for e in found] == list(range(3, 11))


async def test_a_revision_past_the_history_is_compacted_naming_the_oldest(
    short_dir: Path,
) -> None:
    async with running_broker(config(short_dir, history=HistoryLimits(revisions=5))) as server:
        w = await server.wire()
        for i in range(20):
            await w.result("set", key="k", value=i)
        response = await w.call("watch", from_rev=3)
        assert response.error is not None
        assert response.error["code"] == ErrorCode.COMPACTED
        assert response.error["oldest_rev"] == 16
        _, start = await open_watch(w, from_rev=16)  # the oldest kept revision is fine
        assert start == 16


async def test_unwatch_ends_the_stream_with_where_to_resume(short_dir: Path) -> None:
    async with running_broker(config(short_dir)) as server:
        w = await server.wire()
        request, start = await open_watch(w)
        await (await server.wire()).result("set", key="k", value=1)
        await events(w, request.id, 1)
        assert await unwatched(w, request.id) == ({"next_rev": start + 1}, True)
        assert await w.result("unwatch", stream=request.id) is False


async def test_expiry_and_claim_events_reach_watchers(
    short_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running_broker(config(short_dir), FakeClock()) as server:
        watcher = await server.wire()
        w = await server.wire("worker")
        request, _ = await open_watch(watcher)
        await w.result("set", key="session.s1", value="on", ttl=5)
        await w.result("set", key="jobs.j1", value="work")
        claimed = await w.result("claim", prefix="jobs", lease=10)
        await w.result("release", key="jobs.j1", token=claimed["token"])
        again = await w.result("claim", prefix="jobs", lease=10)
        await w.result("ack", key="jobs.j1", token=again["token"])
        await w.result("set", key="jobs.j2", value="more")
        lost = await w.result("claim", prefix="jobs", lease=10)
        assert lost["key"] == "jobs.j2"
        await trio.sleep(30)  # the session's deadline and the lease both pass; nobody asks
        found = await events(watcher, request.id, 10)
        assert [(e["type"], e["key"], e["by"]) for e in found] == [
            ("put", "session.s1", "worker"),
            ("put", "jobs.j1", "worker"),
            ("claim", "jobs.j1", "worker"),
            ("release", "jobs.j1", "worker"),
            ("claim", "jobs.j1", "worker"),
            ("ack", "jobs.j1", "worker"),
            ("put", "jobs.j2", "worker"),
            ("claim", "jobs.j2", "worker"),
            ("expire", "session.s1", ""),
            ("release", "jobs.j2", ""),  # the lease ran out
        ]


async def test_a_slow_watcher_is_cut_off_while_50_clients_carry_on(short_dir: Path) -> None:
    async with running_broker(config(short_dir, history=HistoryLimits(revisions=50))) as server:
        slow = await server.wire()
        request, _ = await open_watch(slow)
        value = "x" * 4000  # the slow watcher's socket fills after a few dozen of these

        async def client(n: int) -> None:
            w = await server.wire(f"c{n}")
            for _ in range(8):
                await w.result("set", key=f"k.{n}", value=value)
                assert await w.result("get", key=f"k.{n}") == value

        # 50 clients write and read while the watcher reads nothing: none of them waits for it.
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for n in range(50):
                    nursery.start_soon(client, n)
        # Now it reads: what was sent already, then the end of its stream.
        seen: list[int] = []
        while True:
            message = await slow.next()
            if isinstance(message, Response):
                break
            assert isinstance(message, Push)
            seen += [e["rev"] for e in message.event["events"]]
        assert message.id == request.id
        assert message.error is not None
        assert message.error["code"] == ErrorCode.OVERFLOW
        assert message.error["oldest_rev"] == 351
        resume = message.error["next_rev"]
        assert resume < 351
        assert seen == list(range(1, resume))
        # It can catch up from the oldest revision kept.
        again, _start = await open_watch(slow, from_rev=351)
        rest = await events(slow, again.id, 50)
        assert [e["rev"] for e in rest] == list(range(351, 401))


async def test_watchers_resume_across_a_restart(short_dir: Path) -> None:
    cfg = config(short_dir)
    async with running_broker(cfg) as server:
        w = await server.wire()
        for i in range(5):
            await w.result("set", key="k", value=i)
    async with running_broker(cfg) as server:
        w = await server.wire()
        await w.result("del", key="k")
        request, _ = await open_watch(w, from_rev=3)  # then nothing else on this wire
        found = await events(w, request.id, 4)
        assert brief(found) == [
            (3, "put", "k", 2),
            (4, "put", "k", 3),
            (5, "put", "k", 4),
            (6, "delete", "k", None),
        ]


async def test_the_history_outlives_compaction_and_restart(short_dir: Path) -> None:
    cfg = config(short_dir, history=HistoryLimits(revisions=100))
    options = StorageOptions(compact_min_bytes=4096, compact_garbage_ratio=0.5)
    async with running_broker(cfg, options=options) as server:
        w = await server.wire()
        for i in range(600):  # five keys over and over: mostly garbage, so it compacts
            await w.result("set", key=f"k.{i % 5}", value=i)
        with trio.fail_after(30):
            while not list((short_dir / "data" / "default.db").glob("snap-*")):
                await w.result("set", key="k.0", value="nudge")  # each write may start one
        head = await w.result("set", key="k.0", value="last")
    async with running_broker(cfg) as server:  # the snapshot, then the log after it
        w = await server.wire()
        request, _ = await open_watch(w, from_rev=head - 99)
        found = await events(w, request.id, 100)
        assert [e["rev"] for e in found] == list(range(head - 99, head + 1))
        assert found[-1]["value"] == "last"
        refused = await w.call("watch", from_rev=head - 100)
        assert refused.error is not None
        assert refused.error["oldest_rev"] == head - 99


@pytest.mark.parametrize("args", [{"prefix": "bad key"}, {"from_rev": -1}, {"cursor": "a/b"}])
async def test_bad_watch_arguments_are_refused(short_dir: Path, args: dict[str, Any]) -> None:
    async with running_broker(config(short_dir)) as server:
        w: Running | Wire = await server.wire()
        assert isinstance(w, Wire)
        response = await w.call("watch", **args)
        assert response.error is not None
        assert response.error["code"] in (ErrorCode.BAD_KEY, ErrorCode.BAD_REQUEST)


def test_a_revision_too_big_for_one_push_is_split_with_more() -> None:
    big = Batch(7, 1.0, tuple(Change(7, "expire", f"s.{i}", None) for i in range(2500)))
    small = Batch(8, 2.0, (Change(8, "delete", "x", None),))
    sent = list(watches.pushes([big, small], 9))
    assert [(len(p["events"]), p["next_rev"], p.get("more")) for p in sent] == [
        (watches.PUSH_EVENTS, 7, True),
        (watches.PUSH_EVENTS, 7, True),
        (501, 9, None),
    ]
    assert [e["key"] for p in sent for e in p["events"]][-2:] == ["s.2499", "x"]


async def test_a_watch_creates_no_database_and_waits_for_its_first_write(
    short_dir: Path,
) -> None:
    async with running_broker(config(short_dir)) as server:
        directory = server.broker.databases.directory("later")
        watcher = await server.wire("reader")
        request, start = await open_watch(watcher, cursor="later", prefix="jobs")
        assert start == 1
        idle = await server.wire("reader")
        idle_request, _ = await open_watch(idle, cursor="later")
        assert not directory.exists()  # a read creates no state
        # Ended while it waited for the database: it resumes at revision 1.
        assert await unwatched(idle, idle_request.id) == ({"next_rev": 1}, True)
        writer = await server.wire("w1")
        await writer.result("set", key="jobs.a", value=1, cursor="later")
        assert brief(await events(watcher, request.id, 1)) == [(1, "put", "jobs.a", 1)]
        assert directory.exists()


async def test_a_watch_waiting_for_its_database_hears_when_a_restore_makes_it(
    short_dir: Path,
) -> None:
    async with running_broker(config(short_dir)) as server:
        w = await server.wire()
        await w.result("set", key="jobs.a", value=1, cursor="later")
        made = await w.result("backup", output=str(short_dir / "b"), cursor="later")
        await w.result("cursor_delete", name="later", purge=True)
        watcher = await server.wire()
        request, start = await open_watch(watcher, cursor="later", prefix="jobs")
        assert start == 1
        await w.result("backup_restore", path=made["path"], cursor="later")
        # Its revisions are the backup's, not a history from 1: re-read, as after any restore.
        ended = await watcher.next()
        assert isinstance(ended, Response)
        assert ended.id == request.id
        assert ended.error is not None
        assert ended.error["code"] == ErrorCode.COMPACTED
        assert ended.error["restored"] is True
