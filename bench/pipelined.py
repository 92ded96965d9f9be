"""Pipelined set and get on one connection: ProntoDB's ``AsyncClient`` against redis-py's pipeline.

    python -m bench.pipelined [--seconds 3] [--rounds 3] [--depth 16] [--no-report]

Needs redis-py, which the ``test`` extra installs (``./scripts/setup.sh`` does).

A Python client on both sides, one connection each, ``--depth`` requests in flight at once:
ProntoDB's are ``depth`` trio tasks sharing one ``AsyncClient`` (it pipelines concurrent calls on
its connection); Redis's are redis-py's asyncio pipeline, ``depth`` commands sent in one write and
their replies read together, again and again. Both servers fsync before acknowledging a write
(ProntoDB ``--fsync always``, Redis ``appendfsync always``), on a Unix socket, random keys out of
1,000, 16-byte values. Rounds alternate the two servers (set, then get); the figures are the
medians over the rounds, with each server's CPU time per op from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .loadgen import CURSOR, PRONTODB, REDIS, fill, key_names, make_value
from .report import run_and_report
from .servers import Server, running, start_prontodb, start_redis
from .throughput import machine_info

NAMES = {PRONTODB: "ProntoDB", REDIS: "Redis"}


@dataclass
class Run:
    """One server, one op, one round."""

    ops: int
    seconds: float
    server_cpu: float
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.ops / self.seconds


async def _pronto(path: str, op: str, depth: int, seconds: float, keys: list[str]) -> int:
    from prontodb.clients import AsyncClient

    value = make_value(random.Random(0), 16)
    done = 0
    async with await AsyncClient.connect(
        "unix://" + path, user="bench", cursor=CURSOR, timeout=30.0, name="prontodb-bench"
    ) as client:
        end = time.monotonic() + seconds

        async def caller(seed: int) -> None:
            nonlocal done
            rng = random.Random(seed)
            while time.monotonic() < end:
                key = rng.choice(keys)
                if op == "set":
                    await client.set(key, value)
                else:
                    await client.get(key)
                done += 1

        async with trio.open_nursery() as nursery:
            for seed in range(depth):
                nursery.start_soon(caller, seed)
    return done


async def _redis(path: str, op: str, depth: int, seconds: float, keys: list[str]) -> int:
    import redis.asyncio  # the test extra's (pip install -e '.[test]')

    value = make_value(random.Random(0), 16).encode()
    rng = random.Random(1)
    done = 0
    client = redis.asyncio.Redis(unix_socket_path=path)
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pipe = client.pipeline(transaction=False)
            for _ in range(depth):
                key = rng.choice(keys)
                if op == "set":
                    pipe.set(key, value)
                else:
                    pipe.get(key)
            await pipe.execute()
            done += depth
    finally:
        await client.aclose()
    return done


def run_one(server: Server, kind: str, op: str, args: argparse.Namespace) -> Run:
    """One timed run in this process (the client), with the server's CPU time around it."""
    keys = key_names(args.keyspace)
    cpu_before, client_before = server.cpu_seconds(), time.process_time()
    began = time.monotonic()
    if kind == PRONTODB:
        ops = trio.run(_pronto, server.socket, op, args.depth, args.seconds, keys)
    else:
        ops = asyncio.run(_redis(server.socket, op, args.depth, args.seconds, keys))
    took = time.monotonic() - began
    server.check_running()
    return Run(ops, took, server.cpu_seconds() - cpu_before, time.process_time() - client_before)


def run_all(args: argparse.Namespace) -> dict[tuple[str, str], list[Run]]:
    runs: dict[tuple[str, str], list[Run]] = {}
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        start: Callable[[Path], Server]
        for kind, start in ((PRONTODB, start_prontodb), (REDIS, start_redis)):
            tmp = stack.enter_context(
                tempfile.TemporaryDirectory(prefix=f"bench-{kind}-", dir=args.tmp_dir)
            )
            server = stack.enter_context(running(start(Path(tmp))))
            trio.run(fill, kind, server.socket, args.keyspace, 16)
            servers[kind] = server
        for round_ in range(args.rounds):
            for op in ("set", "get"):
                for kind, server in servers.items():
                    run = run_one(server, kind, op, args)
                    runs.setdefault((op, kind), []).append(run)
                    print(
                        f"round {round_ + 1} {op} {NAMES[kind]}: {run.rate:,.0f} ops/s, "
                        f"server {run.server_cpu / run.ops * 1e6:.1f} µs/op",
                        flush=True,
                    )
    return runs


def report(runs: dict[tuple[str, str], list[Run]], args: argparse.Namespace, info: Any) -> str:
    lines = [
        "## Pipelined: one connection, "
        f"{args.depth} requests in flight (`python -m bench.pipelined`)",
        "",
        f"{info['date']}, {info['cores']} cores ({info['cpu']}), disk {info['disk']}, "
        f"load average {info['load']} at the start; Python {info['python']}, Redis "
        f"{info['redis']}. Medians of {args.rounds} rounds of {args.seconds:g} s, the two "
        "servers alternating; fsync before every acknowledged write on both.",
        "",
        "| op | ProntoDB ops/s | Redis ops/s | ratio | ProntoDB server µs/op "
        "| Redis server µs/op | ProntoDB client µs/op | redis-py µs/op |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for op in ("set", "get"):
        p, r = runs[(op, PRONTODB)], runs[(op, REDIS)]
        p_rate = statistics.median(x.rate for x in p)
        r_rate = statistics.median(x.rate for x in r)

        def per_op(items: list[Run], cpu: Callable[[Run], float]) -> float:
            return statistics.median(cpu(x) / x.ops * 1e6 for x in items)

        lines.append(
            f"| {op} | {p_rate:,.0f} | {r_rate:,.0f} | {p_rate / r_rate:.2f}x | "
            f"{per_op(p, lambda x: x.server_cpu):.1f} | {per_op(r, lambda x: x.server_cpu):.1f} | "
            f"{per_op(p, lambda x: x.client_cpu):.1f} | {per_op(r, lambda x: x.client_cpu):.1f} |"
        )
    lines += [
        "",
        "ProntoDB's callers keep the window full (a new request goes as soon as an answer "
        "comes); redis-py's pipeline sends its batch and waits for every reply before the next, "
        "so each side is driven the way its client is meant to be used. The client runs in the "
        "benchmark's own process, one core of the two; its CPU per op is in the last columns.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--depth", type=int, default=16, help="requests in flight")
    parser.add_argument("--keyspace", type=int, default=1000)
    parser.add_argument("--tmp-dir", default="/var/tmp", help="where the servers' files go")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()
    if importlib.util.find_spec("redis") is None:
        print("bench.pipelined: skipped, it needs redis-py (.venv/bin/pip install redis)")
        return
    info = machine_info(args.tmp_dir)
    run_and_report(
        "pipelined", info, args.tmp_dir, args.no_report, lambda: report(run_all(args), args, info)
    )


if __name__ == "__main__":
    main()
