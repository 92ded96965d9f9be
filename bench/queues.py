"""Draining a queue with priorities and delays: ProntoDB against Redis sorted-set scheduling.

    python -m bench.queues [--items 20000] [--workers 4,8] [--runs 1] [--delayed 0.2] [--spread 1.0]
                           [--no-report]

Both servers run side by side on temporary directories on a real disk (under /var/tmp) and Unix
sockets, each acknowledging a write only after its fsync (ProntoDB ``--fsync always``; Redis
``appendonly yes``, ``appendfsync always``), and both are stopped by pid at the end.

The queue: ``--items`` items, each with a priority drawn from 0..9 (0 the most urgent); a
``--delayed`` share of them is claimable only from a time spread evenly over the first
``--spread`` seconds of the drain, so they become ready while it runs. The same items, priorities
and times go to both servers.

- ProntoDB: ``set work.<n> VALUE priority=P`` (and ``at=T`` for a delayed one), filled with
  ``call_many``; workers loop ``claim("work")`` + ``ack``. A claim that finds nothing ready while
  delayed items are still to come waits for them (``claim(wait=...)``: the broker serves it the
  moment one is due).
- Redis, the usual sorted-set recipe (BullMQ's shape: a delayed set promoted by the claim script
  itself, with no mover process): a ready set ``q:ready`` scored ``priority * 1e13 + ready_ms``
  (most urgent first, then the one ready longest, ties by member), a delayed set ``q:delayed``
  scored by the ready time in ms, and a processing hash ``q:processing`` (member -> lease end).
  The member is ``P:n:VALUE``. Claim is one Lua script: move the delayed members now due into the
  ready set (at most 100 a call), ``ZPOPMIN`` the ready set, ``HSET`` the member into the
  processing hash with its lease end; when nothing is ready it answers when the next delayed one
  is due, and the worker sleeps until then. Ack is ``HDEL q:processing member``. (A reaper that
  returns members whose lease ran out would complete the recipe; no lease runs out here.)

K workers (``--workers``, each count a separate drain) split over ``--processes`` processes claim
and ack until the queue is empty. Measured: items per second from the go to the last ack, and the
round trip of a claim that found an item ready (a claim that had to wait for a delay to end is not
a round trip). Clients are Python under trio on both sides: ProntoDB's the real ``AsyncClient``,
Redis's the minimal RESP client of bench/loadgen.py.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import random
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trio

from prontodb.clients import AsyncClient

from .claims import Counters, Processes, counters, percentile_ms
from .loadgen import CURSOR, PRONTODB, REDIS, RespClient
from .report import run_and_report
from .servers import Server, running, start_prontodb, start_redis
from .throughput import expect, machine_info

NAMES = {PRONTODB: "ProntoDB", REDIS: "Redis"}
PREFIX = "work"  # ProntoDB: the queue, items work.<n>
READY, DELAYED, PROCESSING = b"q:ready", b"q:delayed", b"q:processing"  # Redis
PRIORITIES = 10  # priorities 0..9
BAND = 10**13  # Redis: a priority's band of ready-set scores (ms since the epoch fit below it)
LEASE = 60.0  # seconds; no lease runs out during a drain
TAIL_WAIT = 0.05  # seconds a worker waits for more once every delayed item is due
WORKER_TIMEOUT = 60.0
FILL_CHUNK = 1000  # ProntoDB: sets per call_many; Redis: members per ZADD

# KEYS: ready, delayed, processing; ARGV: lease in ms. Answers {1, member}, or {0, ms} with the
# time the next delayed member is due (-1: none, the queue is empty).
CLAIM_SCRIPT = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 100)
for i = 1, #due, 2 do
  local member = due[i]
  local priority = tonumber(string.match(member, '^(%d+):'))
  local score = priority * 10000000000000 + tonumber(due[i + 1])
  redis.call('ZADD', KEYS[1], string.format('%.0f', score), member)
  redis.call('ZREM', KEYS[2], member)
end
local popped = redis.call('ZPOPMIN', KEYS[1])
if #popped > 0 then
  redis.call('HSET', KEYS[3], popped[1], string.format('%.0f', now + tonumber(ARGV[1])))
  return {1, popped[1]}
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #nxt > 0 then
  return {0, tonumber(nxt[2])}
end
return {0, -1}
"""
CLAIM_SHA = hashlib.sha1(CLAIM_SCRIPT).hexdigest().encode()


# -- the items ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One queue item: its number, priority, and when it becomes claimable (seconds after the
    go; None: at once)."""

    index: int
    priority: int
    offset: float | None

    def key(self) -> str:
        return f"{PREFIX}.{self.index:06d}"

    def value(self, size: int) -> str:
        return f"{self.index:0{max(size, 6)}d}"

    def member(self, size: int) -> bytes:
        return f"{self.priority}:{self.index:06d}:{self.value(size)}".encode()


def make_items(count: int, delayed: float, spread: float, seed: int) -> list[Item]:
    """``count`` items with priorities 0..9; a ``delayed`` share ready ``spread`` s at the most
    after the go, evenly spread."""
    rng = random.Random(seed)
    items = []
    for index in range(count):
        priority = rng.randrange(PRIORITIES)
        offset = rng.uniform(0, spread) if rng.random() < delayed else None
        items.append(Item(index, priority, offset))
    return items


def index_of(name: str) -> int:
    """The item number in a ProntoDB key (``work.000042``) or a Redis member (``3:000042:...``)."""
    if name.startswith(PREFIX + "."):
        return int(name[len(PREFIX) + 1 :])
    return int(name.split(":")[1])


# -- filling --------------------------------------------------------------------------------


async def fill(kind: str, path: str, items: list[Item], value_size: int, go: float) -> None:
    """Write ``items``; the delayed ones claimable from ``go`` (epoch seconds) plus their offset."""
    if kind == PRONTODB:
        async with await AsyncClient.connect(
            "unix://" + path, user="bench", cursor=CURSOR, timeout=30.0, name="prontodb-bench"
        ) as client:
            for first in range(0, len(items), FILL_CHUNK):
                requests: list[tuple[str, dict[str, Any]]] = []
                for item in items[first : first + FILL_CHUNK]:
                    args: dict[str, Any] = {
                        "cursor": CURSOR,
                        "key": item.key(),
                        "value": item.value(value_size),
                        "priority": item.priority,
                    }
                    if item.offset is not None:
                        args["at"] = go + item.offset
                    requests.append(("set", args))
                for result in await client.call_many(requests):
                    if isinstance(result, Exception):
                        raise result
        return
    now_ms = int(time.time() * 1000)
    resp = await RespClient.connect(path)
    try:
        for first in range(0, len(items), FILL_CHUNK):
            ready: list[bytes] = []
            delayed: list[bytes] = []
            for item in items[first : first + FILL_CHUNK]:
                if item.offset is None:
                    ready += [b"%d" % (item.priority * BAND + now_ms), item.member(value_size)]
                else:
                    # Due from the first whole ms at or after the time: never early.
                    at_ms = -int(-(go + item.offset) * 1000 // 1)
                    delayed += [b"%d" % at_ms, item.member(value_size)]
            for key, pairs in ((READY, ready), (DELAYED, delayed)):
                if pairs:
                    await resp.command(b"ZADD", key, *pairs)
    finally:
        await resp.aclose()


def fill_timed(server: Server, kind: str, items: list[Item], args: argparse.Namespace) -> float:
    """Fill the queue: the ready items, then the delayed ones, due from a go time chosen (from
    how fast the first part went) for just after the fill ends. Returns that go, epoch seconds."""
    ready = [item for item in items if item.offset is None]
    delayed = [item for item in items if item.offset is not None]
    began = time.perf_counter()
    trio.run(fill, kind, server.socket, ready, args.value_size, 0.0)
    per_item = (time.perf_counter() - began) / max(1, len(ready))
    go = time.time() + 0.2 + 2 * per_item * len(delayed)
    trio.run(fill, kind, server.socket, delayed, args.value_size, go)
    if time.time() > go:
        raise RuntimeError(f"filling {NAMES[kind]} overran the go by {time.time() - go:.2f} s")
    return go


# -- the workers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One worker process's share."""

    server: str
    socket: str
    workers: int


@dataclass
class Outcome:
    """What one worker process saw."""

    taken: list[tuple[int, int, float]] = field(default_factory=list)  # (token, item, claimed at)
    claims: list[float] = field(default_factory=list)  # seconds, claims that found an item ready
    cycles: list[float] = field(default_factory=list)  # seconds, claim + ack
    waits: int = 0  # claims that found nothing ready and waited for a delayed item
    last_ack: float = 0.0  # perf_counter
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    redeliveries: int = 0
    cpu_seconds: float = 0.0


async def _pronto_worker(client: AsyncClient, all_due: float, outcome: Outcome) -> None:
    perf, wall = time.perf_counter, time.time
    while True:
        began = perf()
        claimed = await client.claim(PREFIX, lease=LEASE)
        if claimed is None:
            # Nothing ready: wait for a delayed item, or give up once every one is due.
            claimed = await client.claim(
                PREFIX, lease=LEASE, wait=max(all_due - wall(), 0.0) + TAIL_WAIT
            )
            if claimed is None:
                return
            outcome.waits += 1
        else:
            outcome.claims.append(perf() - began)
        at = wall()
        await client.ack(claimed.key, claimed.token)
        outcome.last_ack = perf()
        outcome.cycles.append(outcome.last_ack - began)
        outcome.taken.append((claimed.token, index_of(claimed.key), at))
        if claimed.deliveries != 1:
            outcome.redeliveries += 1


async def _redis_worker(resp: RespClient, all_due: float, outcome: Outcome) -> None:
    perf, wall = time.perf_counter, time.time
    lease_ms = b"%d" % int(LEASE * 1000)
    waited = False
    while True:
        began = perf()
        found, what = await resp.command(
            b"EVALSHA", CLAIM_SHA, b"3", READY, DELAYED, PROCESSING, lease_ms
        )
        if not found:
            if what < 0:
                return  # nothing ready, nothing delayed
            outcome.waits += 1
            waited = True
            await trio.sleep(max(what / 1000 - wall(), 0.0))
            continue
        if waited:
            waited = False
        else:
            outcome.claims.append(perf() - began)
        at = wall()
        if await resp.command(b"HDEL", PROCESSING, what) != 1:
            raise RuntimeError(f"HDEL found no {what!r} in the processing hash")
        outcome.last_ack = perf()
        outcome.cycles.append(outcome.last_ack - began)
        outcome.taken.append((0, index_of(what.decode()), at))


async def _guarded(work: Any, conn: Any, all_due: float, outcome: Outcome) -> None:
    """Run one worker; a failing one stops (the others drain the rest): a finding, not a retry."""
    try:
        await work(conn, all_due, outcome)
    except Exception as exc:
        outcome.errors += 1
        if len(outcome.error_samples) < 5:
            outcome.error_samples.append(f"{type(exc).__name__}: {exc}")


async def _receive(pipe: Connection) -> Any:
    while not pipe.poll():
        await trio.lowlevel.wait_readable(pipe.fileno())
    return pipe.recv()


async def _work(job: Job, parent: Connection) -> Outcome:
    outcome = Outcome()
    async with AsyncExitStack() as stack:
        conns: list[Any] = []
        for _ in range(job.workers):
            if job.server == PRONTODB:
                client = await AsyncClient.connect(
                    "unix://" + job.socket,
                    user="bench",
                    cursor=CURSOR,
                    timeout=30.0,
                    name="prontodb-bench",
                )
                stack.push_async_callback(client.aclose)
                conns.append(client)
            else:
                resp = await RespClient.connect(job.socket)
                stack.push_async_callback(resp.aclose)
                conns.append(resp)
        parent.send(("ready", None))
        start, all_due = await _receive(parent)
        await trio.sleep(max(0.0, start - time.perf_counter()))
        cpu = time.process_time()
        work = _pronto_worker if job.server == PRONTODB else _redis_worker
        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(_guarded, work, conn, all_due, outcome)
        outcome.cpu_seconds = time.process_time() - cpu
    return outcome


def run_worker(job: Job, parent: Connection) -> None:
    """Process entry point: one share of the workers."""
    try:
        outcome = trio.run(_work, job, parent)
    except BaseException:
        parent.send(("failed", traceback.format_exc()))
    else:
        parent.send(("done", outcome))
    finally:
        parent.close()


# -- one drain ------------------------------------------------------------------------------


@dataclass
class Drain:
    """One server's drain with one number of workers."""

    server: str
    workers: int
    items: int
    fill_seconds: float = 0.0
    window: tuple[float, float] = (0.0, 0.0)  # epoch seconds: the fill's start, the last ack
    seconds: float = 0.0
    done: int = 0
    duplicates: int = 0
    early: int = 0  # delayed items claimed before their time
    out_of_order: int = 0  # ProntoDB: never-delayed items claimed out of (priority, age) order
    redeliveries: int = 0
    waits: int = 0
    left: str = ""
    claims: list[float] = field(default_factory=list)  # sorted, seconds
    cycles: list[float] = field(default_factory=list)  # sorted, seconds
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    writes: Counters | None = None  # ProntoDB: filling excluded

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else float("nan")


def run_drain(
    server: Server, kind: str, workers: int, items: list[Item], args: argparse.Namespace
) -> Drain:
    """Connect the workers, fill the queue, go at the chosen time, check what was taken."""
    result = Drain(kind, workers, len(items))
    processes_count = min(args.processes, workers)
    shares = [
        workers // processes_count + (i < workers % processes_count) for i in range(processes_count)
    ]
    with Processes() as processes:
        pipes = [processes.start(run_worker, Job(kind, server.socket, share)) for share in shares]
        for pipe in pipes:
            expect(pipe, "ready", WORKER_TIMEOUT)
        began, began_wall = time.perf_counter(), time.time()
        go = fill_timed(server, kind, items, args)
        result.fill_seconds = time.perf_counter() - began
        before = counters(server) if kind == PRONTODB else Counters(0, 0)
        # Every worker is connected and the queue is full: the go, on both clocks.
        start = time.perf_counter() + (go - time.time())
        for pipe in pipes:
            pipe.send((start, go + args.spread))
        cpu_before = server.cpu_seconds()
        outcomes: list[Outcome] = [
            expect(pipe, "done", WORKER_TIMEOUT + len(items) * 0.01) for pipe in pipes
        ]
        result.server_cpu = server.cpu_seconds() - cpu_before
    server.check_running()
    if kind == PRONTODB:
        result.writes = counters(server) - before
    taken: list[tuple[int, int, float]] = []
    for outcome in outcomes:
        taken += outcome.taken
        result.claims += outcome.claims
        result.cycles += outcome.cycles
        result.errors += outcome.errors
        result.error_samples += outcome.error_samples
        result.redeliveries += outcome.redeliveries
        result.waits += outcome.waits
        result.client_cpu += outcome.cpu_seconds
    result.claims.sort()
    result.cycles.sort()
    result.seconds = max(outcome.last_ack for outcome in outcomes) - start
    result.done = len(taken)
    result.duplicates = len(taken) - len({index for _, index, _ in taken})
    for _, index, at in taken:
        offset = items[index].offset
        if offset is not None and at < go + offset:
            result.early += 1
    if kind == PRONTODB:
        # Claims are made one at a time, in token order. Every never-delayed item is ready from
        # the go and nothing comes back, so those must be taken most urgent first, then oldest.
        order = [
            (items[index].priority, index)
            for _, index, _ in sorted(taken)
            if items[index].offset is None
        ]
        result.out_of_order = sum(a > b for a, b in itertools.pairwise(order))
    result.window = (began_wall, go + result.seconds)
    result.left = trio.run(leftovers, kind, server.socket)
    return result


async def leftovers(kind: str, path: str) -> str:
    """What the server still holds of the queue ("" when it is empty, as it should be)."""
    if kind == PRONTODB:
        async with await AsyncClient.connect(
            "unix://" + path, user="bench", cursor=CURSOR, timeout=30.0
        ) as client:
            count = await client.count(PREFIX)
            held = await client.claims(PREFIX)
        return f"{count} items, {len(held)} claims" if count or held else ""
    resp = await RespClient.connect(path)
    try:
        ready = await resp.command(b"ZCARD", READY)
        delayed = await resp.command(b"ZCARD", DELAYED)
        processing = await resp.command(b"HLEN", PROCESSING)
    finally:
        await resp.aclose()
    if ready or delayed or processing:
        return f"{ready} ready, {delayed} delayed, {processing} processing"
    return ""


async def load_script(path: str) -> None:
    resp = await RespClient.connect(path)
    try:
        sha = await resp.command(b"SCRIPT", b"LOAD", CLAIM_SCRIPT)
        assert sha == CLAIM_SHA, (sha, CLAIM_SHA)
    finally:
        await resp.aclose()


# -- the run --------------------------------------------------------------------------------


@dataclass
class Findings:
    drains: dict[str, list[Drain]] = field(default_factory=lambda: {PRONTODB: [], REDIS: []})
    broker_log: list[str] = field(default_factory=list)

    def medians(self, kind: str) -> list[Drain]:
        """``kind``'s median drain (by items/s) of each worker count, in the order first run."""
        counts = list(dict.fromkeys(d.workers for d in self.drains[kind]))
        chosen = []
        for workers in counts:
            runs = sorted((d for d in self.drains[kind] if d.workers == workers), key=_rate)
            chosen.append(runs[len(runs) // 2])
        return chosen


def _rate(drain: Drain) -> float:
    return drain.rate


def run_all(args: argparse.Namespace, items: list[Item]) -> Findings:
    """Start both servers on fresh directories; for each number of workers, one drain each
    (alternating which goes first); stop them."""
    findings = Findings()
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        for kind, start in ((PRONTODB, start_prontodb), (REDIS, start_redis)):
            tmp = stack.enter_context(
                tempfile.TemporaryDirectory(prefix=f"bench-queues-{kind}-", dir=args.tmp_dir)
            )
            servers[kind] = stack.enter_context(running(start(Path(tmp))))
        trio.run(load_script, servers[REDIS].socket)
        cases = [workers for _ in range(args.runs) for workers in args.workers]
        for number, workers in enumerate(cases):
            # Alternate which server goes first, so neither always runs on a warmer machine.
            for kind in (PRONTODB, REDIS) if number % 2 == 0 else (REDIS, PRONTODB):
                drain = run_drain(servers[kind], kind, workers, items, args)
                print(_progress(drain), flush=True)
                findings.drains[kind].append(drain)
        findings.broker_log = servers[PRONTODB].log_text().splitlines()
    return findings


def _progress(drain: Drain) -> str:
    problems = [p for p in _problems(drain) if p]
    return (
        f"  {NAMES[drain.server]:8} x{drain.workers:<2} {drain.rate:8,.0f} items/s "
        f"({drain.done:,} in {drain.seconds:.2f} s; fill {drain.fill_seconds:.2f} s)  claim p50 "
        f"{percentile_ms(drain.claims, 0.5):.3f} ms p99 {percentile_ms(drain.claims, 0.99):.3f} ms"
        + (" ; " + "; ".join(problems) if problems else "")
    )


def _problems(drain: Drain) -> Iterator[str]:
    if drain.done != drain.items:
        yield f"acked {drain.done:,} of {drain.items:,} items"
    if drain.duplicates:
        yield f"handed out {drain.duplicates} items twice"
    if drain.early:
        yield f"handed out {drain.early} delayed items before their time"
    if drain.out_of_order:
        yield f"claimed {drain.out_of_order} ready items out of priority order"
    if drain.redeliveries:
        yield f"redelivered {drain.redeliveries} items"
    if drain.left:
        yield f"left {drain.left}"
    if drain.errors:
        yield f"{drain.errors} worker errors ({'; '.join(drain.error_samples)})"


# -- the report -----------------------------------------------------------------------------


def command() -> str:
    return shlex.join(["python", "-m", "bench.queues", *sys.argv[1:]])


def report(
    findings: Findings, args: argparse.Namespace, info: dict[str, str], items: list[Item]
) -> str:
    """The section for docs/BENCHMARKS.md (also printed)."""
    delayed = sum(item.offset is not None for item in items)

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "n/a"

    lines = [
        f"## Queues: draining priorities and delays, ProntoDB vs Redis sorted sets ({info['date']})",
        "",
        f"Machine: {info['arch']}, {info['cores']} cores ({info['cpu']}); disk {info['disk']}, "
        f"a 64-byte append plus fdatasync takes {info['fsync']} ms (median). "
        f"Versions: ProntoDB {info['prontodb']} (Python {info['python']}, trio {info['trio']}), "
        f"redis-server {info['redis']}. Load average before the run: {info['load']}.",
        "",
        f"Command: `{command()}` (run by `./scripts/bench.sh queues`).",
        "",
        "Both servers acknowledge a write only after its fsync (ProntoDB `--fsync always`; Redis "
        "`appendonly yes`, `appendfsync always`); every claim and ack is a write.",
        "",
        f"The queue: {len(items):,} items with priorities drawn from 0..{PRIORITIES - 1}, "
        f"{args.value_size}-byte values; {delayed:,} of them ({delayed / len(items):.0%}) are "
        f"claimable only from a time spread evenly over the first {args.spread:g} s of the "
        "drain, so they become ready while it runs. ProntoDB: `set work.<n> VALUE` with "
        "`priority` (and `at` for a delayed one), filled with `call_many`; each worker loops "
        '`claim("work")` + `ack`, and a claim that finds nothing ready while delayed items are '
        "still to come waits for one (`claim(wait=...)`). Redis, the usual sorted-set recipe "
        "(BullMQ's shape, with the delayed set promoted by the claim script rather than by a "
        "mover process): a ready set scored `priority * 1e13 + ready_ms`, a delayed set scored "
        "by ready time, a processing hash. Claim is one Lua script (move up to 100 delayed "
        "members now due into the ready set, `ZPOPMIN` the ready set, `HSET` the member into "
        "the processing hash with its lease end; nothing ready: answer when the next delayed "
        "one is due, and the worker sleeps until then); ack is `HDEL`. Within a priority, "
        "ProntoDB serves the oldest by creation and the recipe the one ready longest.",
        "",
        f"Workers: each count is {_runs(args.runs)} per server, split over {args.processes} "
        "processes; items/s from the go (the queue full, every worker connected) to the last ack. The "
        "claim round trip counts only claims that found an item ready; one that had to wait for "
        "a delay to end is not a round trip.",
        "",
        "| workers | measure | ProntoDB | Redis | ProntoDB/Redis |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for p, r in zip(findings.medians(PRONTODB), findings.medians(REDIS), strict=True):
        rows: list[tuple[str, float, float, str]] = [
            ("items/s", p.rate, r.rate, "{:,.0f}"),
            ("claim round trip, p50 ms", _pct(p.claims, 0.5), _pct(r.claims, 0.5), "{:.3f}"),
            ("claim round trip, p99 ms", _pct(p.claims, 0.99), _pct(r.claims, 0.99), "{:.3f}"),
            ("claim + ack, p50 ms", _pct(p.cycles, 0.5), _pct(r.cycles, 0.5), "{:.3f}"),
            ("server CPU µs per item", _per(p.server_cpu, p), _per(r.server_cpu, r), "{:.0f}"),
            ("server cores busy", _busy(p), _busy(r), "{:.2f}"),
            ("client CPU µs per item", _per(p.client_cpu, p), _per(r.client_cpu, r), "{:.0f}"),
        ]
        for label, a, b, fmt in rows:
            lines.append(
                f"| {p.workers} | {label} | {fmt.format(a)} | {fmt.format(b)} | {ratio(a, b)} |"
            )
    if args.runs > 1:
        lines += [
            "",
            "Every drain, items/s: "
            + "; ".join(
                f"{NAMES[kind]} "
                + ", ".join(f"{d.rate:,.0f} ({d.workers} workers)" for d in drains)
                for kind, drains in findings.drains.items()
            )
            + ".",
        ]
    lines += [
        "",
        "Claims that found nothing ready and waited for a delayed item, over every drain: "
        + ", ".join(
            f"{NAMES[kind]} {sum(d.waits for d in drains)}"
            for kind, drains in findings.drains.items()
        )
        + ". Filling, not measured above (ProntoDB one `set` a request through `call_many`, "
        "Redis 1,000 members a `ZADD`): "
        + ", ".join(
            f"{NAMES[kind]} {_span([d.fill_seconds for d in drains])} s"
            for kind, drains in findings.drains.items()
        )
        + ".",
        "",
        "Checks: " + "; ".join(_checks(findings)) + ".",
    ]
    writes = [
        f"{d.workers} workers: {d.writes.describe(d.items, 'item')}"
        for d in findings.medians(PRONTODB)
        if d.writes is not None
    ]
    if writes:
        lines += [
            "",
            "ProntoDB's log during the drain (claim, ack), from the `records_written` and "
            "`fsyncs` that `status` reports: " + "; ".join(writes) + ".",
        ]
    lines += ["", _how_to_read(findings, info)]
    if findings.broker_log:
        lines += [
            "",
            f"The broker logged {len(findings.broker_log)} warning or error lines"
            f"{_when(findings.broker_log[0], findings.drains[PRONTODB])}; the first: "
            f"`{findings.broker_log[0]}`",
        ]
    if info["tmpfs"] == "yes":
        lines += ["", "**Warning: the temporary directory was on tmpfs; fsync cost nothing.**"]
    return "\n".join(lines)


def _how_to_read(findings: Findings, info: dict[str, str]) -> str:
    """Where the time goes: the broker's event loop, the clients' CPU."""
    fsync_ms = float(info["fsync"])
    pronto, redis = findings.medians(PRONTODB), findings.medians(REDIS)
    bounds = []
    for drain in pronto:
        if drain.writes is None or not drain.done:
            continue
        cpu = drain.server_cpu / drain.done
        syncing = drain.writes.fsyncs / drain.done * fsync_ms / 1000
        bounds.append(
            f"{drain.workers} workers: {1e6 * cpu:.0f} µs of CPU and {1e6 * syncing:.0f} µs of "
            f"fsync an item, so at most about {1 / (cpu + syncing):,.0f} items/s "
            f"(measured {drain.rate:,.0f})"
        )
    return (
        "How to read it: every client is Python under trio, sharing the machine's "
        f"{info['cores']} cores with the server, so compare the ratios and the CPU rows. "
        "ProntoDB's broker runs its requests and its fsyncs (on a fast disk) on one event loop: "
        "an item (a claim and an ack) costs it the CPU above plus its share of an fsync "
        f"({info['fsync']} ms each by the probe), which bounds the drain: "
        + "; ".join(bounds)
        + ". Redis's server, for its part, spent "
        + "; ".join(
            f"{_per(r.server_cpu, r) / _per(p.server_cpu, p):.0%} of ProntoDB's CPU an item "
            f"and was busy {_busy(r):.2f} of a core with {r.workers} workers"
            for p, r in zip(pronto, redis, strict=True)
        )
        + ": its drain waits on its Python clients and its fsyncs more than on its own CPU."
    )


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}"


def _runs(runs: int) -> str:
    return "one drain" if runs == 1 else f"{runs} drains (the median shown)"


def _when(line: str, drains: list[Drain]) -> str:
    """Which drain (its fill included) a broker log line's time falls in, if any."""
    try:
        logged = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return ""
    for drain in drains:
        if drain.window[0] - 1 <= logged <= drain.window[1] + 1:
            return f" (the first during its {drain.workers}-worker run)"
    return ""


def _pct(values: list[float], q: float) -> float:
    return percentile_ms(values, q)


def _per(cpu: float, drain: Drain) -> float:
    return 1e6 * cpu / max(1, drain.done)


def _busy(drain: Drain) -> float:
    return drain.server_cpu / drain.seconds if drain.seconds else float("nan")


def _checks(findings: Findings) -> Iterator[str]:
    problems = [
        f"{NAMES[kind]} with {drain.workers} workers {problem}"
        for kind, drains in findings.drains.items()
        for drain in drains
        for problem in _problems(drain)
    ]
    yield from problems
    if not problems:
        yield (
            "every drain acked each item exactly once, first delivery, no delayed item before "
            "its time, nothing left ready, delayed or claimed, no errors; ProntoDB's claims in "
            "token order took the never-delayed items most urgent first, then oldest"
        )


def _worker_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of worker counts, like 4,8")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000, help="items per drain")
    parser.add_argument(
        "--workers", type=_worker_counts, default=[4, 8], help="worker counts, e.g. 4,8"
    )
    parser.add_argument("--runs", type=int, default=1, help="drains per worker count and server")
    parser.add_argument("--processes", type=int, default=2, help="worker processes per drain")
    parser.add_argument("--delayed", type=float, default=0.2, help="share of delayed items")
    parser.add_argument(
        "--spread", type=float, default=1.0, help="seconds over which delayed items come due"
    )
    parser.add_argument("--value-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tmp-dir", default="/var/tmp", help="where the servers' files go")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()
    items = make_items(args.items, args.delayed, args.spread, args.seed)
    info = machine_info(args.tmp_dir)
    run_and_report(
        "queues",
        info,
        args.tmp_dir,
        args.no_report,
        lambda: report(run_all(args, items), args, info, items),
    )


if __name__ == "__main__":
    main()
