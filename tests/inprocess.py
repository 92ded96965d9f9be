"""A broker run inside the test's trio loop, on a Unix socket in a temp dir."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from wire import Wire

from prontodb.broker.server import Broker, BrokerInfo, ServerConfig
from prontodb.broker.storage import StorageOptions


class Running:
    def __init__(self, broker: Broker, info: BrokerInfo, stopped: trio.Event) -> None:
        self.broker = broker
        self.info = info
        self.stopped = stopped
        self.wires: list[Wire] = []

    @property
    def socket(self) -> str:
        assert self.info.socket is not None
        return str(self.info.socket)

    @property
    def url(self) -> str:
        return "unix://" + self.socket

    def admin_token(self) -> str:
        """The token of ``admin``, the user a new data directory gets."""
        return (self.broker.config.data_dir / "admin.token").read_text().strip()

    async def wire(self, user: str = "tester") -> Wire:
        wire = await Wire.open(self.socket, user)
        self.wires.append(wire)
        return wire


class FakeClock:
    """The broker's wall clock in tests: trio's (mock) clock plus a jump the test controls."""

    def __init__(self) -> None:
        self.jump = 0.0

    def __call__(self) -> float:
        return 1_000_000.0 + trio.current_time() + self.jump


@asynccontextmanager
async def running_broker(
    config: ServerConfig,
    clock: Callable[[], float] | None = None,
    options: StorageOptions | None = None,
) -> AsyncIterator[Running]:
    """Serve ``config`` until the block ends, then stop and close the test's connections;
    ``clock`` and storage ``options`` replace the broker's own."""
    broker = Broker(config)
    if clock is not None:
        broker.clock = clock
    if options is not None:
        broker.databases.options = options
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[BrokerInfo]) -> None:
        try:
            await broker.serve(task_status=task_status)
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        info = await nursery.start(run)
        running = Running(broker, info, stopped)
        yield running
        broker.request_stop()
        for wire in running.wires:
            await wire.aclose()


def guarded(directory: Path) -> ServerConfig:
    """A broker in ``directory`` whose Unix socket wants tokens too (``serve --require-auth``)."""
    return ServerConfig(
        data_dir=directory / "data", socket_path=directory / "s.sock", require_auth=True
    )


async def until(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds, checking at each pass of the event loop (every other
    task runs in between, the broker's included): state, not wall time, ends the wait (10 s at
    most, a hang fails the test)."""
    with trio.fail_after(10):
        while not condition():
            await trio.lowlevel.checkpoint()
