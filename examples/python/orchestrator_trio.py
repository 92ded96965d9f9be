"""The orchestrator of the cookbook's task workflow, on the async client under trio.

Seed patterns: §1 task distribution (``workflow.*`` in the ``main`` database, ``queue.task_N`` in
``tasks``), §2 the completion counter (the workers ``incr`` ``workflow.completed``; this script only
sets it to 0 and reads it), §10 the audit trail (``audit.*`` entries in ``logs``).

It fills the queue with transactions of ``--batch`` tasks (each one revision and one disk write,
instead of one per task), then waits for the workers by *watching* ``workflow.completed`` from the
revision that set it to 0 -- no polling, and no change can slip past between the set and the watch --
and marks the workflow completed. Start the workers and the monitor (the other scripts here) in any
order; ``--no-wait`` only fills the queue.

    python examples/python/orchestrator_trio.py --tasks 40    # $PRONTODB_URL, else the default socket
"""

from __future__ import annotations

import argparse
import sys
import time

import trio

from prontodb.clients import AsyncClient

USER = "orchestrator"


async def audit(client: AsyncClient, action: str) -> None:
    """§10: one entry per decision, ``audit.<ns>_<user>`` = ``time:user:action`` (keys sort by time)."""
    entry = f"{time.strftime('%Y-%m-%dT%H:%M:%S')}:{USER}:{action}"
    await client.set(f"audit.{time.time_ns()}_{USER}", entry, cursor="logs")


async def fill(client: AsyncClient, total: int, batch: int) -> int:
    """Reset the workflow and queue ``total`` tasks; the revision of ``main`` the reset made."""
    # Forget the done.* marks of an earlier run, or the workers would take every task for a repeat.
    old = await client.keys("done")
    for start in range(0, len(old), batch):
        await client.txn([], [{"op": "del", "key": key} for key in old[start : start + batch]])
    reset = await client.txn(
        [],
        [
            {"op": "set", "key": "workflow.status", "value": "initializing"},
            {"op": "set", "key": "workflow.total_tasks", "value": total},
            {"op": "set", "key": "workflow.completed", "value": 0},
            {"op": "set", "key": "workflow.progress_percent", "value": 0},
        ],
        cursor="main",
    )
    first = 0  # where this run starts in the history of tasks: a monitor's --from-rev
    for start in range(1, total + 1, batch):
        numbers = range(start, min(start + batch, total + 1))
        ops = [{"op": "set", "key": f"queue.task_{i}", "value": "pending"} for i in numbers]
        filled = await client.txn([], ops)
        first = first or filled.revision
    await client.set("workflow.status", "running", cursor="main")
    await audit(client, f"workflow_started:tasks={total}")
    print(f"orchestrator: queued {total} tasks from revision {first} of tasks", flush=True)
    return reset.revision


async def wait_for_completion(client: AsyncClient, total: int, from_rev: int) -> None:
    """Follow ``workflow.completed`` until it reaches ``total``, reporting each tenth of the way."""
    reported = 0
    async with client.watch("workflow.completed", from_rev=from_rev, cursor="main") as changes:
        async for change in changes:
            if change.type != "put" or not isinstance(change.value, int):
                continue
            percent = change.value * 100 // total
            if percent // 10 > reported // 10:
                reported = percent
                await client.set("workflow.progress_percent", percent, cursor="main")
                print(f"orchestrator: {change.value}/{total} done ({percent}%)", flush=True)
            if change.value >= total:
                return


async def run(args: argparse.Namespace) -> int:
    async with AsyncClient.connect(args.url, user=USER, cursor="tasks") as client:
        started = time.monotonic()
        from_rev = await fill(client, args.tasks, args.batch)
        if not args.wait:
            return 0
        with trio.move_on_after(args.timeout) as waiting:
            await wait_for_completion(client, args.tasks, from_rev)
        if waiting.cancelled_caught:
            done = await client.get("workflow.completed", cursor="main")
            await client.set("workflow.status", "timed_out", cursor="main")
            await audit(client, f"workflow_timed_out:completed={done}")
            print(f"orchestrator: timed out after {args.timeout:g} s, {done}/{args.tasks} done")
            return 1
        await client.set("workflow.status", "completed", cursor="main")
        elapsed = time.monotonic() - started
        await audit(client, f"workflow_completed:tasks={args.tasks}:seconds={elapsed:.2f}")
        marked = await client.count("done")
        print(f"orchestrator: workflow completed in {elapsed:.2f} s ({marked} done.* marks)")
        return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks", type=int, default=20, metavar="N", help="how many tasks (default 20)"
    )
    parser.add_argument("--url", help="the broker (default: $PRONTODB_URL, else the local socket)")
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until every task is done (default), or only fill the queue",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds to wait for completion (600)",
    )
    parser.add_argument(
        "--batch", type=int, default=100, metavar="N", help="tasks per transaction (100)"
    )
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.batch < 1:
        parser.error("--tasks and --batch must be at least 1")
    return args


if __name__ == "__main__":
    sys.exit(trio.run(run, parse_args()))
