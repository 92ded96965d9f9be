"""``serve --idle-exit``: a broker with no connection for that long stops by itself, cleanly; a
connection, however quiet (a watch, a claim waiting for an item), keeps it up. In the test's trio
run with trio's autojump clock, so ten idle minutes pass at once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
import trio.testing
from wire import Wire

from prontodb.broker.server import Broker, BrokerInfo, ServerConfig
from prontodb.protocol import ErrorCode, Goodbye, Hello, Push, Response, Welcome

IDLE = 600.0


def idle_config(short_dir: Path, idle_exit: float | None = IDLE) -> ServerConfig:
    return ServerConfig(
        data_dir=short_dir / "data", socket_path=short_dir / "s.sock", idle_exit=idle_exit
    )


class WatchedBroker(Broker):
    """A broker that notes when its stop began, by the test's clock."""

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(config)
        self.stop_began: float | None = None
        self.stopping = trio.Event()

    def request_stop(self) -> None:
        if self.stop_began is None:
            self.stop_began = trio.current_time()
        self.stopping.set()
        super().request_stop()


class Served:
    """A broker serving in the test's nursery, and when it began."""

    def __init__(self, broker: WatchedBroker) -> None:
        self.broker = broker
        self.began = trio.current_time()
        self.done = trio.Event()

    @property
    def socket(self) -> str:
        return str(self.broker.config.socket_path)

    async def run(
        self, task_status: trio.TaskStatus[BrokerInfo] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self.broker.serve(task_status=task_status)
        finally:
            self.done.set()

    async def stops_by_itself(self) -> float:
        """When it began to stop (two idle times at most); returns once it has stopped."""
        with trio.fail_after(2 * IDLE):
            await self.broker.stopping.wait()
        # Closing its databases runs in threads, during which the autojump clock would race to
        # any deadline: the close is bounded by the disk, not by the test's clock.
        await self.done.wait()
        assert self.broker.stop_began is not None
        return self.broker.stop_began


async def start(nursery: trio.Nursery, config: ServerConfig) -> Served:
    served = Served(WatchedBroker(config))
    await nursery.start(served.run)
    served.began = trio.current_time()
    return served


async def test_a_broker_nobody_connects_to_stops_after_its_idle_time(
    short_dir: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "prontodb.server")
    async with trio.open_nursery() as nursery:
        served = await start(nursery, idle_config(short_dir))
        assert await served.stops_by_itself() - served.began == pytest.approx(IDLE)
    # A clean stop: said so, socket gone, the data directory free for the next broker.
    assert "no connection for 600 s: stopping (--idle-exit)" in caplog.text
    assert "stopped" in caplog.text
    assert not (short_dir / "s.sock").exists()
    async with trio.open_nursery() as nursery:
        again = await start(nursery, idle_config(short_dir))
        assert await again.stops_by_itself() - again.began == pytest.approx(IDLE)


async def test_the_idle_time_counts_from_the_last_connection_and_writes_are_kept(
    short_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery, idle_config(short_dir))
        await trio.sleep(IDLE - 1)
        wire = await Wire.open(served.socket)
        await wire.result("set", key="kept", value="yes", cursor="main")
        await trio.sleep(IDLE * 10)  # a connection, doing nothing at all, keeps it up
        assert not served.done.is_set()
        await wire.aclose()
        closed = trio.current_time()
        assert await served.stops_by_itself() - closed == pytest.approx(IDLE)
    async with trio.open_nursery() as nursery:
        served = await start(nursery, idle_config(short_dir))
        wire = await Wire.open(served.socket)
        assert await wire.result("get", key="kept", cursor="main") == "yes"
        await wire.aclose()


async def test_a_watch_and_a_waiting_claim_keep_the_broker_up(
    short_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery, idle_config(short_dir))
        watcher = await Wire.open(served.socket)
        await watcher.send(watcher.request("watch", prefix="jobs"))
        claimer = await Wire.open(served.socket)
        await claimer.send(claimer.request("claim", prefix="jobs", wait=IDLE * 100))
        await trio.sleep(IDLE * 3)
        assert not served.done.is_set()
        # Both are still served: the item the claimer waited for, and its change to the watcher.
        writer = await Wire.open(served.socket)
        await writer.result("set", key="jobs.one", value="task")
        await writer.aclose()
        claimed = await claimer.next()
        assert isinstance(claimed, Response)
        assert claimed.result["key"] == "jobs.one"
        await claimer.aclose()
        await trio.sleep(IDLE * 3)
        assert not served.done.is_set()  # the watcher is still connected, and still served
        while not isinstance(pushed := await watcher.next(), Push) or not pushed.event["events"]:
            pass
        assert pushed.event["events"][0]["key"] == "jobs.one"
        await watcher.aclose()
        closed = trio.current_time()
        assert await served.stops_by_itself() - closed == pytest.approx(IDLE)


async def test_without_an_idle_time_a_broker_never_stops_by_itself(
    short_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery, idle_config(short_dir, None))
        await trio.sleep(IDLE * 1000)
        assert not served.done.is_set()
        wire = await Wire.open(served.socket)
        status = await wire.result("status")
        assert (status["idle_exit"], status["auto_started"]) == (None, False)
        await wire.aclose()
        served.broker.request_stop()


async def test_status_says_the_idle_time_and_whether_it_was_auto_started(
    short_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = ServerConfig(
        data_dir=short_dir / "data",
        socket_path=short_dir / "s.sock",
        idle_exit=IDLE,
        auto_started=True,
    )
    async with trio.open_nursery() as nursery:
        served = await start(nursery, config)
        wire = await Wire.open(served.socket)
        status = await wire.result("status")
        assert (status["idle_exit"], status["auto_started"]) == (IDLE, True)
        await wire.aclose()
        served.broker.request_stop()


async def test_a_greeting_that_comes_once_the_stop_began_gets_no_welcome(
    short_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery, idle_config(short_dir))
        late = Wire(await trio.open_unix_socket(served.socket))  # connected, not greeted yet
        await trio.testing.wait_all_tasks_blocked()  # its session is there, waiting for Hello
        served.broker.request_stop()
        await late.send(Hello(client="late", user="u"))
        answer = await late.next()
        # Told before any request that this broker is going: a CLI starts the next one.
        assert not isinstance(answer, Welcome)
        assert isinstance(answer, Goodbye)
        assert answer.code == ErrorCode.UNAVAILABLE
        await late.aclose()
