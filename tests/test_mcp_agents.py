"""Agents coordinating through one broker, each through its own `prontodb mcp` as its own user, as
agent hosts run them: a producer sets 200 tasks, three workers claim and finish them concurrently,
and a worker whose server is killed while it holds a task loses it to another after the lease."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from brokers import BrokerProcess
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from test_mcp import admin, broker, mcp_env

TASKS = 200
WORKERS = ("worker1", "worker2", "worker3")
__all__ = ["broker"]  # the fixture, shared with tests/test_mcp.py

VICTIM = "worker3"  # its server is killed while it holds a task ...
VICTIM_AFTER = 10  # ... the one it claims after finishing this many
SHORT_LEASE = 2.0  # the held task's lease: another worker gets it after this
LEASE = 60.0  # every other claim's: far longer than the run, so no other task is redelivered
DEADLINE = 50.0  # the whole run, producer to the last ack


def make_user(broker: BrokerProcess, name: str, *prefixes: str) -> str:
    """A user who may write under each of ``prefixes`` (and nowhere else); its token."""
    with admin(broker) as client:
        token = client.user_add(name)
        for prefix in prefixes:
            client.grant(name, "write", cursor="default", prefix=prefix)
        return token


@dataclass
class Agent:
    """An MCP session with its own `prontodb mcp` process, run as ``user``."""

    user: str
    session: ClientSession
    pid: int

    async def ok(self, tool: str, **arguments: Any) -> Any:
        result = await self.session.call_tool(tool, arguments)
        assert not result.is_error, (self.user, tool, result.content)
        return result.structured_content

    async def refused(self, tool: str, **arguments: Any) -> str:
        result = await self.session.call_tool(tool, arguments)
        assert result.is_error, (self.user, tool, result.structured_content)
        text = result.content[0]
        assert text.type == "text"
        return text.text


@asynccontextmanager
async def agent(
    broker: BrokerProcess, user: str, token: str, tmp_path: Path
) -> AsyncIterator[Agent]:
    """`prontodb mcp` run as ``user`` by the SDK's stdio client (which starts the process and
    stops it on the way out). The server starts through `sh -c 'echo $$ > PIDFILE; exec ...'`, so
    its pid (the shell's, kept across exec) is known, to kill it by."""
    env = mcp_env(token)
    pidfile = tmp_path / f"mcp-{user}.pid"
    argv = [sys.executable, "-m", "prontodb.clients.cli", "--url", broker.url, "--user", user]
    script = 'echo $$ > "$0"; exec "$@"'
    params = StdioServerParameters(
        command="/bin/sh", args=["-c", script, str(pidfile), *argv, "mcp"], env=env
    )
    with (tmp_path / f"mcp-{user}.log").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield Agent(user, session, int(pidfile.read_text()))


@dataclass
class Ledger:
    """What the workers did, as they saw it."""

    acked: list[tuple[str, int, str]] = field(default_factory=list)  # key, token, worker
    victim: dict[str, Any] | None = None  # the claim the killed server held
    killed_at: float = 0.0
    redelivered: dict[str, Any] | None = None  # the same task, claimed again
    redelivered_to: str = ""
    redelivered_at: float = 0.0


async def work(me: Agent, ledger: Ledger) -> None:
    """Claim, do (write the result, once: if_absent) and ack, until no task is left under
    `tasks`. The victim, after VICTIM_AFTER tasks, claims one more with a short lease and has its
    server killed while it holds it."""
    done = 0
    while True:
        if me.user == VICTIM and done == VICTIM_AFTER:
            ledger.victim = await me.ok("claim", prefix="tasks", wait=5, lease=SHORT_LEASE)
            os.kill(me.pid, signal.SIGKILL)
            ledger.killed_at = time.time()
            return
        result = await me.session.call_tool(
            "claim", {"prefix": "tasks", "wait": 0.5, "lease": LEASE}
        )
        if result.is_error:
            text = result.content[0]
            assert text.type == "text"
            assert text.text.startswith("timed_out:"), text.text
            # Nothing ready: done if nothing is left at all (a task held by a dead worker's
            # lease is still there, and comes back when the lease runs out).
            if (await me.ok("keys", prefix="tasks"))["keys"] == []:
                return
            continue
        task = result.structured_content
        assert task is not None
        if ledger.victim is not None and task["key"] == ledger.victim["key"]:
            ledger.redelivered, ledger.redelivered_to = task, me.user
            ledger.redelivered_at = time.time()
        n = task["value"]["n"]
        await me.ok("set", key=f"results.{task['key']}", value={"square": n * n}, if_absent=True)
        await me.ok("ack", key=task["key"], token=task["token"])
        ledger.acked.append((task["key"], task["token"], me.user))
        done += 1


async def test_three_workers_finish_200_tasks_once_each_and_a_killed_ones_task_moves_on(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    producer_token = make_user(broker, "producer", "tasks")
    tokens = {w: make_user(broker, w, "tasks", "results") for w in WORKERS}
    keys = [f"tasks.t{i:03}" for i in range(TASKS)]
    ledger = Ledger()
    began = time.monotonic()

    with anyio.fail_after(DEADLINE):
        async with agent(broker, "producer", producer_token, tmp_path) as producer:
            for i, key in enumerate(keys):
                assert (await producer.ok("set", key=key, value={"n": i}))["key"] == key
            # the producer may not touch the results: its grants are its own
            assert (await producer.refused("set", key="results.x", value=1)).startswith("denied:")

            async def run(worker: str) -> None:
                async with agent(broker, worker, tokens[worker], tmp_path) as me:
                    await work(me, ledger)

            async with anyio.create_task_group() as group:
                for worker in WORKERS:
                    group.start_soon(run, worker)

            # the killed worker's token is no good any more: its task was done by another
            victim = ledger.victim
            assert victim is not None
            assert ledger.redelivered is not None
            gone = await producer.refused("ack", key=victim["key"], token=victim["token"])
            assert gone.split(":")[0] in ("compare_failed", "not_found"), gone

    # Each task done exactly once, by the workers' tokens ...
    acked_keys = [key for key, _, _ in ledger.acked]
    assert sorted(acked_keys) == keys
    assert len({token for _, token, _ in ledger.acked}) == TASKS
    by_worker = {w: sum(1 for *_, who in ledger.acked if who == w) for w in WORKERS}
    assert by_worker[VICTIM] == VICTIM_AFTER
    assert all(by_worker[w] > 0 for w in WORKERS), by_worker
    # ... the killed worker's task went to another, after its lease, as a second delivery.
    assert victim["deliveries"] == 1
    assert ledger.redelivered["key"] == victim["key"]
    assert ledger.redelivered["deliveries"] == 2
    assert ledger.redelivered["token"] != victim["token"]
    assert ledger.redelivered_to != VICTIM
    assert ledger.redelivered_at >= victim["lease"] - 0.05  # not before the lease ran out
    assert ledger.redelivered_at - ledger.killed_at < SHORT_LEASE + 5

    # ... and by the broker's state: no task left, nothing held, one result each, by a worker.
    with admin(broker) as client:
        assert client.keys("tasks") == []
        assert client.claims("tasks") == []
        assert client.keys("results") == [f"results.{key}" for key in keys]
        writers = dict.fromkeys(WORKERS, 0)
        for i, key in enumerate(keys):
            info = client.get_info(f"results.{key}")
            assert info is not None
            assert info.value == {"square": i * i}
            assert info.version == 1  # written once: if_absent would have refused a second
            writers[info.writer] += 1
        assert writers == by_worker
    assert time.monotonic() - began < DEADLINE
