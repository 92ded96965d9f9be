"""A worker of the cookbook's task workflow, on the async client under asyncio.

Seed patterns: §1 worker registration (``agents.NAME.*`` in ``main``) and task claiming, §2 the
completion counter (``incr``), §7 a session key with a TTL kept alive from a background task (if the
worker dies, ``sessions.active.NAME`` expires by itself), §9 per-worker metrics and §10 an audit
entry per task (both in ``logs``).

``--concurrency K`` claim loops run as tasks of one event loop sharing one client connection (the
client pipelines their calls). Each takes a task with ``claiming()``, which acks it when the block
ends and releases it when the block raises or is cancelled. The worker exits once no task came for
``--idle-exit`` seconds, and stops cleanly on SIGINT or SIGTERM.

    python examples/python/worker_asyncio.py --name worker1 --concurrency 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from typing import Any

from prontodb.clients import AsyncClient, Claimed, ErrorCode, ProntoError


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class Worker:
    def __init__(self, client: AsyncClient, args: argparse.Namespace) -> None:
        self.client, self.args, self.name = client, args, args.name
        self.loops: list[asyncio.Task[None]] = []
        self.recording: set[asyncio.Task[Any]] = set()  # loops writing down a finished task
        self.stopped_by: str | None = None
        self.done = self.duplicates = 0
        self.busy = 0.0  # seconds spent on the tasks done

    def say(self, text: str) -> None:
        print(f"{self.name}: {text}", flush=True)

    def stop(self, signame: str) -> None:
        """SIGINT/SIGTERM: cancel every loop but those recording a finished task; those stop next.

        A cancel between the done mark and the counter would leave a task marked but not counted
        (its redelivery would then be taken for a duplicate), so recording is not interrupted.
        A second signal is ignored: under asyncio a second cancel cuts claiming()'s release short."""
        if self.stopped_by is not None:
            return
        self.say(f"{signame}: stopping")
        self.stopped_by = signame
        for loop in self.loops:
            if loop not in self.recording:
                loop.cancel()

    async def heartbeat(self) -> None:
        """§7: ``set`` restarts a key's TTL, so setting it every third of the TTL keeps it alive."""
        while True:
            ttl = self.args.session_ttl
            session = f"sessions.active.{self.name}"
            await self.client.set(session, f"active:{now()}", ttl=ttl, cursor="main")
            await self.client.set(f"agents.{self.name}.last_seen", now(), cursor="main")
            await asyncio.sleep(ttl / 3)  # the agent's own pace, not a wait for someone else

    async def claim_loop(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        while self.stopped_by is None:
            key = None
            try:
                # Why bind=True as well as claiming()'s release: see main().
                async with self.client.claiming(
                    "queue", wait=self.args.idle_exit, lease=self.args.lease, bind=True
                ) as task:
                    key, started = task.key, time.monotonic()
                    self.say(f"working on {key} (delivery {task.deliveries})")
                    await asyncio.sleep(self.args.work)  # stands in for the real work
                    self.recording.add(me)
                    await self.record(task, time.monotonic() - started)
            except ProntoError as exc:
                if exc.code is not ErrorCode.TIMED_OUT or key is not None:
                    raise
                return  # nothing to claim for --idle-exit seconds
            except asyncio.CancelledError:
                if key is not None:
                    self.say(f"released {key}")  # by claiming(), on its way out
                raise
            finally:
                self.recording.discard(me)

    async def record(self, task: Claimed, seconds: float) -> None:
        name = task.key.removeprefix("queue.")
        try:
            await self.client.set(f"done.{name}", self.name, if_absent=True)
        except ProntoError as exc:
            if exc.code is not ErrorCode.COMPARE_FAILED:
                raise
            self.duplicates += 1
            by = await self.client.get(f"done.{name}")
            self.say(f"duplicate: {name} was done already by {by}; not counted again")
            return
        # The usual recipe counts with get, add, set: two workers that read the same value both write
        # value+1 and one completion is lost. incr adds on the broker, atomically.
        completed = await self.client.incr("workflow.completed", cursor="main")
        self.done += 1
        self.busy += seconds
        mine, average = f"metrics.{self.name}", round(self.busy / self.done, 4)
        entry = f"{now()}:{self.name}:task_completed:{name}:success"
        ops: list[dict[str, Any]] = [  # §9 and §10 in one transaction: one write, not three
            {"op": "incr", "key": f"{mine}.tasks_completed"},
            {"op": "set", "key": f"{mine}.avg_task_time", "value": average},
            {"op": "set", "key": f"audit.{time.time_ns()}_{self.name}", "value": entry},
        ]
        await self.client.txn([], ops, cursor="logs")
        self.say(f"done {name} ({completed} completed in all)")


async def main(args: argparse.Namespace) -> int:
    async with AsyncClient.connect(args.url, user=args.name, cursor="tasks") as client:
        worker = Worker(client, args)
        await client.set(f"agents.{args.name}.status", "active", cursor="main")
        await client.set(f"agents.{args.name}.capabilities", "processing", cursor="main")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop, sig.name)
        # Stopping: a cancelled loop that holds a task gives it back at once through claiming()'s
        # release. bind=True covers the rest: a loop cancelled while its claim waits abandons the
        # request, and an item the broker hands to it after that would stay claimed until its
        # lease ran out; bound to this connection it comes back when the connection closes, as do
        # the tasks of a worker killed outright (SIGKILL), instead of --lease seconds later.
        beat = asyncio.create_task(worker.heartbeat())
        try:
            async with asyncio.TaskGroup() as group:
                loops = range(args.concurrency)
                worker.loops = [group.create_task(worker.claim_loop()) for _ in loops]
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        await client.set(f"agents.{args.name}.status", "stopped", cursor="main")
        await client.delete(f"sessions.active.{args.name}", cursor="main")
        why = f"stopped by {worker.stopped_by}" if worker.stopped_by else "idle"
        worker.say(f"exiting ({why}): {worker.done} done, {worker.duplicates} duplicates")
        return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--name", default=f"worker{os.getpid()}", help="user and agent name (worker<pid>)")
    add("--url", help="the broker (default: $PRONTODB_URL, else the local socket)")
    add("--concurrency", type=int, default=2, metavar="K", help="claim loops (2)")
    add("--idle-exit", type=float, default=5.0, metavar="S", help="exit after S idle seconds (5)")
    add("--lease", type=float, default=30.0, metavar="S", help="claim lease, above --work (30)")
    add("--work", type=float, default=0.05, metavar="S", help="seconds of work per task (0.05)")
    add("--session-ttl", type=float, default=15.0, metavar="S", help="session key TTL (15)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
