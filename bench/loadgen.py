"""Load generation for bench/throughput.py and bench/claims.py: one process's share of the clients,
under trio.

Each load-generator process is started by the benchmark (multiprocessing, spawn), opens its
clients, reports ready on its pipe and waits for a :class:`Window`. Every client then runs one
request at a time (no pipelining) on random keys until the window ends; the ops that complete
inside the measured part of the window are counted and their latencies kept.

ProntoDB is driven through the real ``AsyncClient``; Redis through :class:`RespClient`, a minimal
RESP client over the same trio sockets, so that both servers see the same harness, concurrency
model and a Python client on the other end.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from prontodb.clients import AsyncClient

PRONTODB = "prontodb"
REDIS = "redis"
FLOOR = "floor"  # bench/floor_server.py: RESP like Redis, so its clients are Redis's
CURSOR = "bench"  # the ProntoDB database the benchmark writes

# One client's operation on one key; returns False when a get found nothing.
Op = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True)
class Job:
    """What one load-generator process runs."""

    server: str  # PRONTODB or REDIS
    socket: str
    op: str  # "set" or "get"
    clients: int
    keyspace: int
    value_size: int
    seed: int


@dataclass(frozen=True)
class Window:
    """Shared ``time.monotonic()`` instants (one clock for every process on Linux)."""

    start: float  # clients begin: warm-up
    measure_from: float
    measure_to: float  # no new request after this


@dataclass
class Outcome:
    """What one process measured inside the window."""

    ops: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, one per counted op
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # this process's CPU time during the measured part


def key_names(keyspace: int) -> list[str]:
    """The keys every client picks from (valid ProntoDB keys, used as-is for Redis)."""
    return [f"bench.key_{i:05d}" for i in range(keyspace)]


def make_value(rng: random.Random, size: int) -> str:
    """An ASCII value of exactly ``size`` bytes (as str for ProntoDB, encoded for Redis)."""
    return "".join(rng.choices("0123456789abcdef", k=size))


def _frame(parts: tuple[bytes, ...]) -> bytes:
    """One RESP2 command as an array of bulk strings."""
    frame = [b"*%d\r\n" % len(parts)]
    for part in parts:
        frame += (b"$%d\r\n" % len(part), part, b"\r\n")
    return b"".join(frame)


class RespError(Exception):
    """An error reply from Redis, or a reply this minimal client does not understand."""


class RespClient:
    """Just enough RESP2 for the benchmarks: one command at a time, no pipelining."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    @classmethod
    async def connect(cls, path: str) -> RespClient:
        return cls(await trio.open_unix_socket(path))

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def set(self, key: bytes, value: bytes) -> None:
        reply = await self.command(b"SET", key, value)
        if reply != b"OK":
            raise RespError(f"SET answered {reply!r}")

    async def get(self, key: bytes) -> bytes | None:
        value: bytes | None = await self.command(b"GET", key)
        return value

    async def command(self, *parts: bytes) -> Any:
        """Send one command and return its reply: bytes, int, None (nil) or a list of those."""
        await self._stream.send_all(_frame(parts))
        return await self._reply()

    async def _reply(self) -> Any:
        line = await self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self._buffer) < size + 2:
                await self._receive()
            data = bytes(self._buffer[:size])
            del self._buffer[: size + 2]
            return data
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [await self._reply() for _ in range(count)]
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        raise RespError(f"unexpected reply {line[:40]!r}")

    async def _line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            await self._receive()
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def _receive(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            raise RespError("Redis closed the connection")
        self._buffer += data


async def open_client(server: str, path: str, op: str, value: str, stack: AsyncExitStack) -> Op:
    """Connect one client (closed by ``stack``) and return its operation."""
    if server == PRONTODB:
        from prontodb.clients import AsyncClient

        client = await AsyncClient.connect(
            "unix://" + path, user="bench", cursor=CURSOR, timeout=30.0, name="prontodb-bench"
        )
        stack.push_async_callback(client.aclose)

        async def pronto_set(key: str) -> bool:
            await client.set(key, value)
            return True

        async def pronto_get(key: str) -> bool:
            return await client.get(key) is not None

        return pronto_set if op == "set" else pronto_get

    resp = await RespClient.connect(path)
    stack.push_async_callback(resp.aclose)
    encoded = value.encode()

    # Keys are encoded per call, as the ProntoDB client encodes its request per call.
    async def redis_set(key: str) -> bool:
        await resp.set(key.encode(), encoded)
        return True

    async def redis_get(key: str) -> bool:
        return await resp.get(key.encode()) is not None

    return redis_set if op == "set" else redis_get


async def fill(server: str, path: str, keyspace: int, value_size: int) -> None:
    """Write every key once, so that gets find a value."""
    value = make_value(random.Random(0), value_size)
    async with AsyncExitStack() as stack:
        op = await open_client(server, path, "set", value, stack)
        for key in key_names(keyspace):
            await op(key)


async def _sleep_until(instant: float) -> None:
    # trio's clock has its own origin, so deadlines are turned into durations of time.monotonic().
    await trio.sleep(max(0.0, instant - time.monotonic()))


async def _drive(
    op: Op, keys: list[str], rng: random.Random, window: Window, outcome: Outcome
) -> None:
    """One client: a request, its answer, the next request, until the window closes."""
    monotonic = time.monotonic
    randrange = rng.randrange
    latencies = outcome.latencies
    begin, end, count = window.measure_from, window.measure_to, len(keys)
    await _sleep_until(window.start)
    while (started := monotonic()) < end:
        try:
            found = await op(keys[randrange(count)])
        except Exception as exc:
            # A failing client stops: its errors are a finding, not something to retry past.
            outcome.errors += 1
            if len(outcome.error_samples) < 5:
                outcome.error_samples.append(f"{type(exc).__name__}: {exc}")
            return
        done = monotonic()
        if not found:
            outcome.errors += 1
            if len(outcome.error_samples) < 5:
                outcome.error_samples.append("get found no value for a key that was filled")
        if begin <= done <= end:
            latencies.append(done - started)


async def _measure_cpu(window: Window, outcome: Outcome) -> None:
    await _sleep_until(window.measure_from)
    before = time.process_time()
    await _sleep_until(window.measure_to)
    outcome.cpu_seconds = time.process_time() - before


async def _work(job: Job, pipe: Connection) -> Outcome:
    rng = random.Random(job.seed)
    keys = key_names(job.keyspace)
    outcome = Outcome()
    async with AsyncExitStack() as stack:
        ops = [
            await open_client(
                job.server, job.socket, job.op, make_value(rng, job.value_size), stack
            )
            for _ in range(job.clients)
        ]
        pipe.send(("ready", None))
        window: Window = await trio.to_thread.run_sync(pipe.recv)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_measure_cpu, window, outcome)
            for index, op in enumerate(ops):
                client_rng = random.Random(job.seed * 1_000_003 + index)
                nursery.start_soon(_drive, op, keys, client_rng, window, outcome)
    outcome.ops = len(outcome.latencies)
    return outcome


def run_worker(job: Job, pipe: Connection) -> None:
    """Process entry point: run ``job``, send ``("done", Outcome)`` or ``("failed", traceback)``."""
    try:
        outcome = trio.run(_work, job, pipe)
    except BaseException:
        pipe.send(("failed", traceback.format_exc()))
    else:
        pipe.send(("done", outcome))
    finally:
        pipe.close()


# -- claims (bench/claims.py) ----------------------------------------------------------------
#
# Below: the load generators of bench/claims.py. A hand-off pair (one producer process, one
# consumer process, talking over their own pipe) and drain workers (N claimers per process).
# Every process connects, reports ready, waits for the go, and reports what it saw as plain
# tuples: times are time.perf_counter(), which is CLOCK_MONOTONIC, one clock for every process.

HANDOFF_PREFIX = "jobs"  # ProntoDB: the hand-off's queue, items jobs.<n>
HANDOFF_LIST = b"q"  # Redis: the hand-off's list
DRAIN_PREFIX = "tasks"  # ProntoDB: the drain's queue, items tasks.<n>
DRAIN_LIST = b"tasks"  # Redis: the drain's list ...
DRAIN_PROCESSING = b"processing"  # ... and the reliable queue's in-progress list


class RespQueueClient(RespClient):
    """:class:`RespClient` plus the list commands a work queue needs."""

    @classmethod
    async def connect(cls, path: str) -> RespQueueClient:
        return cls(await trio.open_unix_socket(path))

    async def lpush(self, key: bytes, *values: bytes) -> int:
        length: int = await self.command(b"LPUSH", key, *values)
        return length

    async def blpop(self, key: bytes) -> bytes:
        """BLPOP with no timeout: the popped value."""
        reply = await self.command(b"BLPOP", key, b"0")
        if not isinstance(reply, list) or len(reply) != 2:
            raise RespError(f"BLPOP answered {reply!r}")
        value: bytes = reply[1]
        return value

    async def lmove(self, source: bytes, destination: bytes) -> bytes | None:
        """LMOVE source destination RIGHT LEFT: the oldest of an LPUSHed list, or None."""
        value: bytes | None = await self.command(b"LMOVE", source, destination, b"RIGHT", b"LEFT")
        return value

    async def lrem(self, key: bytes, value: bytes) -> int:
        removed: int = await self.command(b"LREM", key, b"1", value)
        return removed

    async def llen(self, key: bytes) -> int:
        length: int = await self.command(b"LLEN", key)
        return length


def queue_item(index: int, size: int) -> str:
    """Item ``index``'s value: its number, zero-padded to ``size`` bytes (at least 6)."""
    return f"{index:0{max(size, 6)}d}"


async def fill_queue(server: str, path: str, items: int, value_size: int) -> None:
    """Put ``items`` items in the drain's queue, oldest first: ProntoDB ``tasks.<n>`` by txns of
    128 sets (the most one txn takes), Redis by LPUSHes of 500 values (the oldest at the right)."""
    values = [queue_item(i, value_size) for i in range(items)]
    if server == PRONTODB:
        from prontodb.clients import AsyncClient

        async with await AsyncClient.connect(
            "unix://" + path, user="bench", cursor=CURSOR, timeout=30.0, name="prontodb-bench"
        ) as client:
            for first in range(0, items, 128):
                ops = [
                    {"op": "set", "key": f"{DRAIN_PREFIX}.{i:06d}", "value": values[i]}
                    for i in range(first, min(items, first + 128))
                ]
                await client.txn([], ops)
        return
    resp = await RespQueueClient.connect(path)
    try:
        for first in range(0, items, 500):
            await resp.lpush(DRAIN_LIST, *(v.encode() for v in values[first : first + 500]))
    finally:
        await resp.aclose()


@dataclass(frozen=True)
class HandoffJob:
    """The hand-off pair's rounds; the servers take turns (:func:`handoff_server`)."""

    pronto_socket: str
    redis_socket: str
    floor_socket: str
    rounds: int  # warm-up rounds included
    gap: float  # seconds the producer waits after the consumer is blocked
    value_size: int
    wait: float  # a ProntoDB claim's wait: how long a lost item stalls the run


HANDOFF_SERVERS = (PRONTODB, REDIS, FLOOR)


def handoff_server(index: int) -> str:
    """Which server round ``index`` of the hand-off runs on."""
    return HANDOFF_SERVERS[index % len(HANDOFF_SERVERS)]


async def _connect_all(
    job: HandoffJob, stack: AsyncExitStack
) -> tuple[AsyncClient, dict[str, RespQueueClient]]:
    """ProntoDB's client, and a RESP client for each of Redis and the floor."""
    from prontodb.clients import AsyncClient

    client = await AsyncClient.connect(
        "unix://" + job.pronto_socket,
        user="bench",
        cursor=CURSOR,
        timeout=30.0,
        name="prontodb-bench",
    )
    stack.push_async_callback(client.aclose)
    resp = {}
    for kind, path in ((REDIS, job.redis_socket), (FLOOR, job.floor_socket)):
        resp[kind] = await RespQueueClient.connect(path)
        stack.push_async_callback(resp[kind].aclose)
    return client, resp


async def _receive(pipe: Connection) -> Any:
    """The next message on ``pipe``, without blocking trio while none has come."""
    while not pipe.poll():
        await trio.lowlevel.wait_readable(pipe.fileno())
    return pipe.recv()


async def _handoff_consumer(
    job: HandoffJob, peer: Connection, parent: Connection
) -> list[tuple[int, float, str, int, int]]:
    """Per round: block in a claim (or BLPOP), tell the producer, take the item, ack it.

    Returns ``(round, returned_at, key, deliveries, token)``; RESP rounds have no key of their
    own (the value stands in), 1 delivery and token 0.
    """
    import trio.testing

    seen: list[tuple[int, float, str, int, int]] = []
    async with AsyncExitStack() as stack:
        client, resp = await _connect_all(job, stack)

        async def take(index: int, got: list[tuple[float, str, int, int]]) -> None:
            if handoff_server(index) == PRONTODB:
                claimed = await client.claim(HANDOFF_PREFIX, wait=job.wait)
                returned = time.perf_counter()  # first thing: the hand-off ends here
                if claimed is None:
                    raise RuntimeError(f"round {index}: nothing claimed in {job.wait:g} s")
                got.append((returned, claimed.key, claimed.deliveries, claimed.token))
            else:
                value = await resp[handoff_server(index)].blpop(HANDOFF_LIST)
                got.append((time.perf_counter(), value.decode(), 1, 0))

        parent.send(("ready", None))
        await _receive(parent)  # the go
        for index in range(job.rounds):
            got: list[tuple[float, str, int, int]] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(take, index, got)
                # Every other task is blocked: the claim (or BLPOP) has been sent.
                await trio.testing.wait_all_tasks_blocked()
                peer.send(index)
            returned, key, deliveries, token = got[0]
            if handoff_server(index) == PRONTODB:
                await client.ack(key, token)
            seen.append((index, returned, key, deliveries, token))
    return seen


async def _handoff_producer(
    job: HandoffJob, peer: Connection, parent: Connection
) -> list[tuple[int, float, float]]:
    """Per round: wait for the consumer to be blocked, then set ``jobs.<n>`` (or LPUSH).

    Returns ``(round, before_write, write_answered)``.
    """
    done: list[tuple[int, float, float]] = []
    async with AsyncExitStack() as stack:
        client, resp = await _connect_all(job, stack)
        parent.send(("ready", None))
        await _receive(parent)
        for index in range(job.rounds):
            blocked = await _receive(peer)
            if blocked != index:
                raise RuntimeError(f"the consumer is at round {blocked}, the producer at {index}")
            # The request is on its way; give the server time to read it and park the waiter.
            await trio.sleep(job.gap)
            value = queue_item(index, job.value_size)
            if handoff_server(index) == PRONTODB:
                key = f"{HANDOFF_PREFIX}.{index:06d}"
                before = time.perf_counter()
                await client.set(key, value)
            else:
                encoded, pusher = value.encode(), resp[handoff_server(index)]
                before = time.perf_counter()
                await pusher.lpush(HANDOFF_LIST, encoded)
            done.append((index, before, time.perf_counter()))
    return done


def run_handoff_consumer(job: HandoffJob, peer: Connection, parent: Connection) -> None:
    """Process entry point of the hand-off's consumer."""
    _run_reporting(parent, _handoff_consumer, job, peer, parent)


def run_handoff_producer(job: HandoffJob, peer: Connection, parent: Connection) -> None:
    """Process entry point of the hand-off's producer."""
    _run_reporting(parent, _handoff_producer, job, peer, parent)


@dataclass(frozen=True)
class DrainJob:
    """One process's share of the drain's workers."""

    server: str
    socket: str
    workers: int


@dataclass
class DrainOutcome:
    """What one drain process saw."""

    taken: list[tuple[int, str]] = field(default_factory=list)  # (token, key); Redis token 0
    cycles: list[float] = field(default_factory=list)  # seconds, one claim + ack each
    finished: float = 0.0  # perf_counter when its last worker found the queue empty
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    redeliveries: int = 0
    cpu_seconds: float = 0.0


async def _drain(job: DrainJob, parent: Connection) -> DrainOutcome:
    """``job.workers`` connections claim and ack (LMOVE and LREM) until the queue is empty."""
    outcome = DrainOutcome()
    perf = time.perf_counter

    async def pronto_worker(client: AsyncClient) -> None:
        while True:
            began = perf()
            claimed = await client.claim(DRAIN_PREFIX)
            if claimed is None:
                return
            await client.ack(claimed.key, claimed.token)
            outcome.cycles.append(perf() - began)
            outcome.taken.append((claimed.token, claimed.key))
            if claimed.deliveries != 1:
                outcome.redeliveries += 1

    async def redis_worker(resp: RespQueueClient) -> None:
        while True:
            began = perf()
            item = await resp.lmove(DRAIN_LIST, DRAIN_PROCESSING)
            if item is None:
                return
            if await resp.lrem(DRAIN_PROCESSING, item) != 1:
                raise RespError(f"LREM found no {item!r} in the processing list")
            outcome.cycles.append(perf() - began)
            outcome.taken.append((0, item.decode()))

    async with AsyncExitStack() as stack:
        conns = [await _drain_connection(job, stack) for _ in range(job.workers)]
        parent.send(("ready", None))
        start: float = await _receive(parent)
        await trio.sleep(max(0.0, start - perf()))
        cpu = time.process_time()
        work = pronto_worker if job.server == PRONTODB else redis_worker
        async with trio.open_nursery() as nursery:
            for conn in conns:
                nursery.start_soon(_guarded, outcome, work, conn)
        outcome.cpu_seconds = time.process_time() - cpu
    return outcome


async def _guarded(
    outcome: DrainOutcome, work: Callable[[Any], Awaitable[None]], conn: Any
) -> None:
    """Run one drain worker; a failing one stops (the others drain the rest): a finding, not
    a retry."""
    try:
        await work(conn)
    except Exception as exc:
        outcome.errors += 1
        if len(outcome.error_samples) < 5:
            outcome.error_samples.append(f"{type(exc).__name__}: {exc}")
    outcome.finished = max(outcome.finished, time.perf_counter())


async def _drain_connection(job: DrainJob, stack: AsyncExitStack) -> Any:
    """One drain worker's connection (a client, or a RESP connection to Redis), closed with
    ``stack``."""
    if job.server != PRONTODB:
        resp = await RespQueueClient.connect(job.socket)
        stack.push_async_callback(resp.aclose)
        return resp
    from prontodb.clients import AsyncClient

    client = await AsyncClient.connect(
        "unix://" + job.socket, user="bench", cursor=CURSOR, timeout=30.0, name="prontodb-bench"
    )
    stack.push_async_callback(client.aclose)
    return client


def run_drain_worker(job: DrainJob, parent: Connection) -> None:
    """Process entry point of one share of the drain's workers."""
    _run_reporting(parent, _drain, job, parent)


def _run_reporting(parent: Connection, main: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run ``main`` under trio; send ``("done", result)`` or ``("failed", traceback)``."""
    try:
        result = trio.run(main, *args)
    except BaseException:
        parent.send(("failed", traceback.format_exc()))
    else:
        parent.send(("done", result))
    finally:
        parent.close()
