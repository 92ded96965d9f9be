"""Load generation for bench/throughput.py: one process's share of the clients, under trio.

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

import trio

PRONTODB = "prontodb"
REDIS = "redis"
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


class RespError(Exception):
    """An error reply from Redis, or a reply this minimal client does not understand."""


class RespClient:
    """Just enough RESP2 for SET and GET: one command at a time, no pipelining."""

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
        return await self.command(b"GET", key)

    async def command(self, *parts: bytes) -> bytes | None:
        """Send one command and return its simple-string or bulk reply (None for a nil bulk)."""
        frame = [b"*%d\r\n" % len(parts)]
        for part in parts:
            frame += (b"$%d\r\n" % len(part), part, b"\r\n")
        await self._stream.send_all(b"".join(frame))
        line = await self._line()
        kind = line[:1]
        if kind == b"+":
            return line[1:]
        if kind == b"$":
            size = int(line[1:])
            if size < 0:
                return None
            while len(self._buffer) < size + 2:
                await self._receive()
            data = bytes(self._buffer[:size])
            del self._buffer[: size + 2]
            return data
        if kind == b"-":
            raise RespError(line[1:].decode(errors="replace"))
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
