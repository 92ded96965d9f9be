"""A slow disk under one database: its fsync takes 50 ms (storage's fault hook sleeps, as a slow
disk would), while another database of the same broker is busy. The other database's requests
go on meanwhile: the slow one's writes move to a worker thread after its first slow write
(docs/FORMAT.md, "Fsync policies"). The figures compare with every write kept on the event loop,
as before that rule: then each request of the fast database waits for the slow one's fsync.

The broker runs in-process (the fault hook is a Python function); latencies are figures, not
assertions (speed is for bench/), what is asserted is that the fast database was served.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import trio
from inprocess import Running, running_broker
from reliability_kit import Figures, Scale

from prontodb.broker.server import ServerConfig
from prontodb.broker.storage import FaultPoints

FSYNC_DELAY = 0.050  # seconds, each fsync of the slow database's segments


async def run(server: Running, slow_writes: int, offload: bool) -> list[float]:
    """The latencies (s) of the fast database's requests while the slow one writes."""
    slow_wire, fast_wire = await server.wire(), await server.wire()
    databases = server.broker.databases
    await slow_wire.result("set", key="k", value=0, cursor="slow")
    slow = databases.open_at(databases.directory("slow"))
    assert slow is not None
    if not offload:
        slow.slow_write = math.inf  # every write on the event loop, as before
    latencies: list[float] = []
    done = trio.Event()

    async def slow_writer() -> None:
        for n in range(slow_writes):
            await slow_wire.result("set", key="k", value=n, cursor="slow")
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_writer)
        n = 0
        while not done.is_set():
            began = time.perf_counter()
            await fast_wire.result("set", key="k", value=n, cursor="fast")
            latencies.append(time.perf_counter() - began)
            n += 1
    return latencies


async def test_a_slow_disk_holds_up_its_own_database_only(
    short_dir: Path, faults: FaultPoints, figures: Figures, scale: Scale
) -> None:
    figures.scenario = "a slow disk under one database"
    slow_writes = scale.pick(20, 100)
    figures["slow writes (50 ms fsync each)"] = slow_writes

    def fsync(path: Path) -> None:
        if path.parent.name == "slow.db":
            time.sleep(FSYNC_DELAY)  # the slow disk itself

    faults.fsync = fsync
    for offload, label in ((True, "as built"), (False, "all writes on the event loop")):
        data = short_dir / f"data-{offload}"
        config = ServerConfig(data_dir=data, socket_path=short_dir / f"{offload}.sock")
        async with running_broker(config) as server:
            latencies = await run(server, slow_writes, offload)
        figures[f"fast requests served, {label}"] = len(latencies)
        figures[f"fast p50 ms, {label}"] = statistics.median(latencies) * 1000
        figures[f"fast max ms, {label}"] = max(latencies) * 1000
        if offload:
            # Served all along, not once per slow fsync: many more requests than slow writes.
            assert len(latencies) > 3 * slow_writes, len(latencies)
