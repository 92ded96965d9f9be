"""The monitor of the cookbook's task workflow, on the sync (blocking) client.

Seed patterns: §9 metrics (at the end it writes ``metrics.system.*`` to ``logs``) and the health
dashboard, with a watch instead of the cookbook's polling loop. It follows every change in the ``tasks``
database from ``--from-rev`` (1: the start of history), so a monitor started late still sees the
whole run, each change exactly once and in order. A put under ``done`` is a completion (the worker's
``done.<task>`` mark); a claim of a ``queue`` key is a delivery, so its second claim is a
redelivery (the task came back: released, or its lease ran out). On a database that held an earlier
run, start at the revision the orchestrator printed, or that run is counted too.

    python examples/python/monitor_sync.py --expect 40    # $PRONTODB_URL, else the default socket
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

from prontodb.clients import Client


def follow(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    """Print each completion, redelivery and release until ``--expect`` completions or the
    timeout; what was seen."""
    started = time.monotonic()
    done: Counter[str] = Counter()  # completions seen per task: 1 each, if all is well
    workers: Counter[str] = Counter()
    claims: Counter[str] = Counter()
    expect = args.expect or None
    with client.watch("", from_rev=args.from_rev) as changes:
        print(f"monitor: watching {args.cursor} from revision {args.from_rev}", flush=True)
        try:
            while expect is None or done.total() < expect:
                left = started + args.timeout - time.monotonic()
                change = changes.next_event(max(left, 0.0))
                if change is None:
                    break  # timed out
                if change.type == "claim" and change.key.startswith("queue."):
                    claims[change.key] += 1
                    if claims[change.key] > 1:
                        print(f"monitor: redelivery {claims[change.key]} of {change.key}")
                elif change.type == "release":
                    print(f"monitor: {change.key} released by {change.by or 'its lease'}")
                elif change.type == "put" and change.key.startswith("done."):
                    task = change.key.removeprefix("done.")
                    done[task] += 1
                    workers[str(change.value)] += 1
                    again = " AGAIN" if done[task] > 1 else ""
                    of = f"/{expect}" if expect else ""
                    print(f"monitor: {done.total()}{of} {task} done by {change.value}{again}")
                sys.stdout.flush()
        except KeyboardInterrupt:
            print("monitor: interrupted")
    elapsed = time.monotonic() - started
    return {
        "completions": done.total(),
        "tasks": len(done),
        "repeated": sorted(task for task, n in done.items() if n > 1),
        "by_worker": dict(sorted(workers.items())),
        "redelivered": {key: n - 1 for key, n in sorted(claims.items()) if n > 1},
        "elapsed": round(elapsed, 3),
        "expected": expect,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with Client.connect(args.url, user="monitor", cursor=args.cursor) as client:
        seen = follow(client, args)
        throughput = seen["completions"] / seen["elapsed"] if seen["elapsed"] else 0.0
        for name, value in [
            ("completed", seen["completions"]),
            ("redeliveries", sum(seen["redelivered"].values())),
            ("total_throughput", round(throughput, 2)),
        ]:
            client.set(f"metrics.system.{name}", value, cursor="logs")
    if args.json:
        print(json.dumps(seen))
    else:
        workers = ", ".join(f"{w} {n}" for w, n in seen["by_worker"].items()) or "none"
        print(
            f"monitor: summary: {seen['completions']} completions of {seen['tasks']} tasks in "
            f"{seen['elapsed']:.2f} s ({throughput:.1f}/s); by worker: {workers}; "
            f"redeliveries: {sum(seen['redelivered'].values())}; repeated: {len(seen['repeated'])}"
        )
    reached = args.expect == 0 or seen["completions"] >= args.expect
    return 0 if reached and not seen["repeated"] else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="the broker (default: $PRONTODB_URL, else the local socket)")
    parser.add_argument("--cursor", default="tasks", help="the database to watch (tasks)")
    parser.add_argument(
        "--from-rev", type=int, default=1, metavar="REV", help="first revision to show (1)"
    )
    parser.add_argument(
        "--expect",
        type=int,
        default=0,
        metavar="N",
        help="exit after this many completions (0: at --timeout)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="seconds to watch (600)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
