"""Locks: contenders looping acquire, hold, release; ProntoDB vs Redis's recipe and etcd's lock.

    python -m bench.locks [--contenders 8] [--seconds 6] [--rounds 3] [--no-report]

The servers run side by side on temporary directories on a real disk (under /var/tmp), each
acknowledging a write only after its fsync (ProntoDB ``--fsync always``; Redis ``appendonly yes``,
``appendfsync always``; etcd, one member, fsyncs its WAL before it answers), and are stopped by pid
at the end. ProntoDB and Redis listen on Unix sockets, etcd on free loopback TCP ports (its JSON
gateway speaks HTTP over TCP only).

``--contenders`` processes (spawned; one connection to each server apiece, under trio) take the
locks in turns: ``--rounds`` turns per lock, each lock taking its turn after the other round by
round, so that a change in the machine's speed (its disk stalls now and then) hits every lock
alike; a turn is ``--warmup`` seconds, then ``--seconds``/``--rounds`` measured. In a turn each
contender loops acquire, the critical section (``--hold`` seconds; by default nothing at all: the
time stamps), release, and acquires again at once, until the turn ends. The locks:

- ProntoDB, ``acquire`` + ``unlock``: one session per contender (``keep_session(ttl, bound=True)``,
  kept alive in the background) for the whole turn; ``acquire(name, "lock", session, wait=...)``
  waits at the broker, which answers when the member holds (only the next in line is woken), and
  ``unlock(name, token)`` releases.
- ProntoDB, ``async with client.lock(name, ttl=...)`` per cycle: what the docs show first; each
  block grants a session, acquires, and revokes the session at its end.
- Redis, the usual recipe: ``SET name token NX PX 10000`` to acquire, a Lua check-and-delete
  (``EVALSHA``) to release; a contender that finds the lock taken sleeps and tries again, as
  redis-py's ``Lock`` does: every ``--poll`` seconds (0.1, redis-py's default) and, as a second
  system, every ``--fast-poll`` seconds. Clients: bench/loadgen.py's minimal RESP client.
- etcd, its v3 lock API through the JSON gateway: a lease per contender (``/v3/lease/grant``,
  kept alive every ttl/3), ``POST /v3/lock/lock`` (blocks until the lock is the contender's) and
  ``POST /v3/lock/unlock``; a few lines of HTTP/1.1 here, one kept-alive connection each.

Every time is ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process). Per cycle a
contender records when it called acquire, when acquire returned (it holds: it is running), when it
called release, and when release returned. From those:

- hand-over: for every release while another contender was waiting, the time from the release call
  to the moment one of the contenders waiting then holds the lock. A releaser that takes the lock
  straight back (a polling lock lets it) is not a hand-over: that release's hand-over runs on until
  a waiter gets in.
- release to next holder: from a release call to the next acquisition by anyone (the lock's idle
  time between holders; under a polling lock often the releaser itself).
- waits: from calling acquire to holding; fairness: the longest wait against the mean.

If etcd is not installed or does not start, the others run without it and the section says why.

The targets (the issue): hand-over p99 at most 0.5x Redis's polling recipe's (redis-py's default
poll) and at most etcd's; no starvation: with 8 contenders the longest wait at most 10x the mean.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .claims import Counters, Processes, counters, percentile_ms
from .loadgen import CURSOR, RespClient, RespError
from .report import run_and_report
from .servers import Server, running, start_prontodb, start_redis
from .throughput import expect, machine_info
from .watch_fanout import Etcd, EtcdError, b64, cpu_seconds, etcd_versions, start_etcd

if TYPE_CHECKING:
    from prontodb.clients import AsyncClient

PRONTODB = "prontodb"  # acquire + unlock, one session per contender
PRONTODB_BLOCK = "prontodb_block"  # async with client.lock(...) per cycle
REDIS_POLL = "redis_poll"  # redis-py's default poll
REDIS_FAST = "redis_fast"  # a short poll
ETCD = "etcd"

LOCK_NAME = "bench_lock"  # ProntoDB's acquire/unlock lock, Redis's key, etcd's lock name
BLOCK_LOCK_NAME = "bench_lock_block"  # ProntoDB's lock() blocks (no leftover members shared)
FOREVER = 86_400.0  # an acquire's wait: as long as it takes (the broker's longest)
REDIS_PX = b"10000"  # the Redis lock's expiry, ms: the same 10 s as the sessions' and leases' TTL
RELEASE_SCRIPT = (
    b'if redis.call("get",KEYS[1]) == ARGV[1] then return redis.call("del",KEYS[1]) '
    b"else return 0 end"
)
WORKER_TIMEOUT = 60.0  # seconds a contender may take to connect, or to finish its turn
HANDOVER_MAX_RATIO_REDIS = 0.5  # the issue: hand-over p99 at most 0.5x Redis's polling recipe ...
HANDOVER_MAX_RATIO_ETCD = 1.0  # ... and at most etcd's
STARVATION_MAX = 10.0  # longest wait at most 10x the mean wait


@dataclass(frozen=True)
class System:
    """One lock under test."""

    key: str
    label: str  # for the table's header
    poll: float = 0.0  # Redis: seconds between tries


def systems(args: argparse.Namespace, etcd: bool) -> list[System]:
    """The locks of this run, in the order they take their turns."""
    found = [
        System(PRONTODB, "ProntoDB acquire/unlock"),
        System(PRONTODB_BLOCK, "ProntoDB `lock()` block"),
        System(REDIS_POLL, f"Redis, {_ms_label(args.poll)} poll", args.poll),
        System(REDIS_FAST, f"Redis, {_ms_label(args.fast_poll)} poll", args.fast_poll),
    ]
    if etcd:
        found.append(System(ETCD, "etcd"))
    return found


def _ms_label(seconds: float) -> str:
    return f"{1000 * seconds:g} ms"


# -- the contender processes ----------------------------------------------------------------


@dataclass(frozen=True)
class ContenderJob:
    """What one contender process connects to, and how it holds."""

    number: int
    pronto_socket: str
    redis_socket: str
    etcd_port: int  # 0: no etcd in this run
    ttl: float  # ProntoDB sessions' and etcd leases' TTL, seconds
    hold: float  # seconds in the critical section (0: none)


@dataclass(frozen=True)
class Turn:
    """One lock's turn, in shared ``time.monotonic()`` instants."""

    system: System
    start: float  # contenders begin: warm-up
    measure_from: float
    measure_to: float  # no acquire is begun after this


@dataclass
class TurnOutcome:
    """What one contender did in a turn."""

    holds: list[tuple[float, float, float, float]] = field(default_factory=list)
    gave_up: tuple[float, float] | None = None  # a polling wait abandoned at the end: want, when
    failed_tries: int = 0  # Redis: SET NX that found the lock taken, in the measured part
    cpu_seconds: float = 0.0  # this process, over the measured part


class EtcdHttp:
    """JSON calls to etcd's gateway over one kept-alive HTTP/1.1 connection."""

    def __init__(self, stream: trio.SocketStream, port: int) -> None:
        self._stream = stream
        self._port = port
        self._buffer = bytearray()

    @classmethod
    async def connect(cls, port: int) -> EtcdHttp:
        return cls(await trio.open_tcp_stream("127.0.0.1", port), port)  # TCP_NODELAY is on

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON to ``path``; the JSON answer (a streaming call's first message)."""
        data = json.dumps(body).encode()
        await self._stream.send_all(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self._port, len(data), data)
        )
        head = (await self._until(b"\r\n\r\n")).decode("latin-1")
        status, *lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
        if "content-length" in headers:
            answer = await self._exactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            answer = await self._chunked()
        else:
            raise EtcdError(f"{path}: an answer with no length ({status!r})")
        if not status.startswith("HTTP/1.1 200"):
            raise EtcdError(f"{path} answered {status!r}: {answer[:300]!r}")
        message: dict[str, Any] = json.loads(answer.split(b"\n", 1)[0])
        if "error" in message:
            raise EtcdError(f"{path}: {message['error']}")
        return message

    async def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int((await self._until(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._until(b"\r\n")  # no trailers
                return bytes(body)
            body += await self._exactly(size)
            await self._until(b"\r\n")

    async def _until(self, marker: bytes) -> bytes:
        while (end := self._buffer.find(marker)) < 0:
            await self._receive()
        data = bytes(self._buffer[:end])
        del self._buffer[: end + len(marker)]
        return data

    async def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._receive()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _receive(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            raise EtcdError("etcd closed the connection")
        self._buffer += data


@dataclass
class Connections:
    """One contender's connections, open for the whole run."""

    pronto: AsyncClient
    redis: RespClient
    release_sha: bytes
    etcd: EtcdHttp | None


class Contender:
    """One contender's turns (one process each)."""

    def __init__(self, job: ContenderJob, conns: Connections) -> None:
        self.job = job
        self.conns = conns

    async def turn(self, turn: Turn) -> TurnOutcome:
        """Loop over ``turn``'s lock until the turn ends; what it did."""
        outcome = TurnOutcome()
        await _sleep_until(turn.start)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_measure_cpu, turn, outcome)
            kind = turn.system.key
            if kind == PRONTODB:
                await self._pronto(turn, outcome)
            elif kind == PRONTODB_BLOCK:
                await self._pronto_block(turn, outcome)
            elif kind == ETCD:
                await self._etcd(turn, outcome)
            else:
                await self._redis(turn, outcome)
        return outcome

    async def _critical(self) -> None:
        if self.job.hold > 0:
            await trio.sleep(self.job.hold)

    async def _pronto(self, turn: Turn, outcome: TurnOutcome) -> None:
        client, now = self.conns.pronto, time.monotonic
        async with client.keep_session(self.job.ttl, bound=True) as session:
            while (want := now()) < turn.measure_to:
                held = await client.acquire(LOCK_NAME, "lock", session, wait=FOREVER)
                got = now()
                if held is None:
                    raise RuntimeError(f"contender {self.job.number}: acquire returned None")
                await self._critical()
                release = now()
                if not await client.unlock(LOCK_NAME, held.token):
                    raise RuntimeError(f"contender {self.job.number}: unlock found no token")
                outcome.holds.append((want, got, release, now()))

    async def _pronto_block(self, turn: Turn, outcome: TurnOutcome) -> None:
        client, now = self.conns.pronto, time.monotonic
        while (want := now()) < turn.measure_to:
            async with client.lock(BLOCK_LOCK_NAME, ttl=self.job.ttl):
                got = now()
                await self._critical()
                release = now()
            outcome.holds.append((want, got, release, now()))

    async def _redis(self, turn: Turn, outcome: TurnOutcome) -> None:
        resp, now, poll = self.conns.redis, time.monotonic, turn.system.poll
        key = LOCK_NAME.encode()
        for count in itertools.count():
            want = now()
            if want >= turn.measure_to:
                return
            token = b"%d-%d" % (self.job.number, count)  # redis-py's is a uuid: unique per hold
            while await resp.command(b"SET", key, token, b"NX", b"PX", REDIS_PX) != b"OK":
                tried = now()
                if turn.measure_from <= tried < turn.measure_to:
                    outcome.failed_tries += 1
                if tried >= turn.measure_to:
                    outcome.gave_up = (want, tried)
                    return
                await trio.sleep(poll)
            got = now()
            await self._critical()
            release = now()
            deleted = await resp.command(b"EVALSHA", self.conns.release_sha, b"1", key, token)
            if deleted != 1:
                raise RespError(f"contender {self.job.number}: the release deleted {deleted!r}")
            outcome.holds.append((want, got, release, now()))

    async def _etcd(self, turn: Turn, outcome: TurnOutcome) -> None:
        http, now = self.conns.etcd, time.monotonic
        assert http is not None
        granted = await http.post("/v3/lease/grant", {"TTL": math.ceil(self.job.ttl)})
        lease = int(granted["ID"])
        name = b64(LOCK_NAME.encode())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_keep_lease, self.job, lease)
            while (want := now()) < turn.measure_to:
                key = (await http.post("/v3/lock/lock", {"name": name, "lease": lease}))["key"]
                got = now()
                await self._critical()
                release = now()
                await http.post("/v3/lock/unlock", {"key": key})
                outcome.holds.append((want, got, release, now()))
            nursery.cancel_scope.cancel()
        await http.post("/v3/lease/revoke", {"ID": lease})


async def _keep_lease(job: ContenderJob, lease: int) -> None:
    """Keep etcd ``lease`` alive every ttl/3 (as ProntoDB's ``keep_session`` does), on a
    connection of its own: the other one is blocked in the lock calls."""
    http = await EtcdHttp.connect(job.etcd_port)
    try:
        while True:
            await trio.sleep(job.ttl / 3)
            answer = await http.post("/v3/lease/keepalive", {"ID": lease})
            if int(answer.get("result", {}).get("TTL", 0)) <= 0:
                raise EtcdError(f"contender {job.number}: lease {lease} is gone")
    finally:
        await http.aclose()


async def _sleep_until(instant: float) -> None:
    # trio's clock has its own origin, so instants are turned into durations of time.monotonic().
    await trio.sleep(max(0.0, instant - time.monotonic()))


async def _measure_cpu(turn: Turn, outcome: TurnOutcome) -> None:
    await _sleep_until(turn.measure_from)
    before = time.process_time()
    await _sleep_until(turn.measure_to)
    outcome.cpu_seconds = time.process_time() - before


async def _receive(pipe: Connection) -> Any:
    """The next message on ``pipe``, without blocking trio while none has come."""
    while not pipe.poll():
        await trio.lowlevel.wait_readable(pipe.fileno())
    return pipe.recv()


async def _contend(job: ContenderJob, parent: Connection) -> None:
    """Connect to every server, report ready, then run each turn sent until None."""
    from prontodb.clients import AsyncClient

    async with AsyncExitStack() as stack:
        pronto = await AsyncClient.connect(
            "unix://" + job.pronto_socket,
            user="bench",
            cursor=CURSOR,
            timeout=30.0,
            name=f"prontodb-bench-lock-{job.number}",
        )
        stack.push_async_callback(pronto.aclose)
        resp = await RespClient.connect(job.redis_socket)
        stack.push_async_callback(resp.aclose)
        sha = await resp.command(b"SCRIPT", b"LOAD", RELEASE_SCRIPT)
        etcd = None
        if job.etcd_port:
            etcd = await EtcdHttp.connect(job.etcd_port)
            stack.push_async_callback(etcd.aclose)
        contender = Contender(job, Connections(pronto, resp, sha, etcd))
        parent.send(("ready", None))
        while True:
            try:
                turn = await _receive(parent)
            except EOFError:
                return  # the parent stopped the run (it failed, or was interrupted)
            if turn is None:
                return
            parent.send(("done", await contender.turn(turn)))


def run_contender(job: ContenderJob, parent: Connection) -> None:
    """Process entry point: ``("ready", None)``, then ``("done", TurnOutcome)`` per turn; or
    ``("failed", traceback)``."""
    try:
        trio.run(_contend, job, parent)
    except BaseException:
        parent.send(("failed", traceback.format_exc()))
    finally:
        parent.close()


# -- the analysis ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """One acquisition: who, and when it was asked for, held, released and done releasing."""

    contender: int
    want: float
    got: float
    release: float
    released: float


@dataclass
class LockResult:
    """One lock's turn, measured part only (times in seconds; lists sorted)."""

    system: System
    seconds: float
    cycles: int = 0  # acquisitions in the measured part
    handovers: list[float] = field(default_factory=list)
    handover_lower_bounds: int = 0  # hand-overs whose waiters all gave up at the end
    gaps: list[float] = field(default_factory=list)  # release to the next holder, whoever
    retaken: int = 0  # releases whose next holder was the releaser itself
    waits: list[float] = field(default_factory=list)
    unfinished_waits: int = 0  # polling waits given up at the turn's end (counted as waits)
    holds_by_contender: list[int] = field(default_factory=list)
    overlaps: int = 0  # a hold that began before the previous one's release: mutual exclusion
    failed_tries: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    writes: Counters | None = None  # ProntoDB: records and fsyncs over the measured part
    round_rates: list[float] = field(default_factory=list)  # cycles/s of each round

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds

    @property
    def mean_wait(self) -> float:
        return sum(self.waits) / len(self.waits) if self.waits else float("nan")

    @property
    def starvation(self) -> float:
        """The longest wait over the mean wait."""
        return self.waits[-1] / self.mean_wait if self.waits else float("nan")


def analyse(
    turn: Turn, outcomes: list[TurnOutcome], server_cpu: float, writes: Counters | None = None
) -> LockResult:
    """Merge every contender's holds into one timeline and measure it."""
    begin, end = turn.measure_from, turn.measure_to
    result = LockResult(turn.system, end - begin, server_cpu=server_cpu, writes=writes)
    holds = sorted(
        (Hold(n, *times) for n, outcome in enumerate(outcomes) for times in outcome.holds),
        key=lambda hold: hold.got,
    )
    for before, after in itertools.pairwise(holds):
        if after.got < before.release:
            result.overlaps += 1
        if begin <= before.release < end:
            result.gaps.append(after.got - before.release)
            result.retaken += after.contender == before.contender
    lines = Waits(holds, outcomes)
    for hold in holds:
        if begin <= hold.release < end:
            lines.hand_over(result, hold)
    result.holds_by_contender = [0] * len(outcomes)
    for hold in holds:
        if begin <= hold.got < end:
            result.cycles += 1
            result.holds_by_contender[hold.contender] += 1
            result.waits.append(hold.got - hold.want)
    for outcome in outcomes:
        if outcome.gave_up is not None:
            result.unfinished_waits += 1
            result.waits.append(outcome.gave_up[1] - outcome.gave_up[0])
        result.failed_tries += outcome.failed_tries
        result.client_cpu += outcome.cpu_seconds
    for times in (result.handovers, result.gaps, result.waits):
        times.sort()
    result.round_rates.append(result.rate)
    return result


def merge(rounds: list[LockResult]) -> LockResult:
    """One lock's rounds as one result."""
    first = rounds[0]
    total = LockResult(first.system, 0.0, holds_by_contender=[0] * len(first.holds_by_contender))
    for part in rounds:
        total.seconds += part.seconds
        total.cycles += part.cycles
        total.handovers += part.handovers
        total.handover_lower_bounds += part.handover_lower_bounds
        total.gaps += part.gaps
        total.retaken += part.retaken
        total.waits += part.waits
        total.unfinished_waits += part.unfinished_waits
        total.holds_by_contender = [
            a + b for a, b in zip(total.holds_by_contender, part.holds_by_contender, strict=True)
        ]
        total.overlaps += part.overlaps
        total.failed_tries += part.failed_tries
        total.server_cpu += part.server_cpu
        total.client_cpu += part.client_cpu
        if part.writes is not None:
            so_far = total.writes or Counters(0, 0)
            total.writes = Counters(
                so_far.records + part.writes.records, so_far.fsyncs + part.writes.fsyncs
            )
        total.round_rates += part.round_rates
    for times in (total.handovers, total.gaps, total.waits):
        times.sort()
    return total


class Waits:
    """Each contender's waits in order, as (asked, held) instants. A wait given up at the end
    "holds" when it was given up, which makes the hand-overs that waited on it lower bounds."""

    def __init__(self, holds: list[Hold], outcomes: list[TurnOutcome]) -> None:
        self.wants: list[list[float]] = [[] for _ in outcomes]
        self.gots: list[list[float]] = [[] for _ in outcomes]
        self.gave_up_at: list[float | None] = [None for _ in outcomes]
        for hold in holds:  # in order of holding, which is each contender's order of asking
            self.wants[hold.contender].append(hold.want)
            self.gots[hold.contender].append(hold.got)
        for n, outcome in enumerate(outcomes):
            if outcome.gave_up is not None:
                self.wants[n].append(outcome.gave_up[0])
                self.gots[n].append(outcome.gave_up[1])
                self.gave_up_at[n] = outcome.gave_up[1]

    def hand_over(self, result: LockResult, hold: Hold) -> None:
        """The hand-over after ``hold``'s release: until the first of the contenders waiting at
        that moment holds (none waiting: no hand-over)."""
        first: float | None = None
        lower_bound = False
        for n, (mine, theirs) in enumerate(zip(self.wants, self.gots, strict=True)):
            if n == hold.contender:
                continue
            i = bisect.bisect_right(mine, hold.release) - 1
            if i >= 0 and theirs[i] > hold.release and (first is None or theirs[i] < first):
                first = theirs[i]
                lower_bound = theirs[i] == self.gave_up_at[n]
        if first is not None:
            result.handovers.append(first - hold.release)
            result.handover_lower_bounds += lower_bound


# -- the run --------------------------------------------------------------------------------


@dataclass
class Findings:
    """Everything one run measured."""

    results: list[LockResult] = field(default_factory=list)
    etcd_missing: str = ""  # why etcd is not in the run ("" when it is)
    etcd_version: str = ""
    logs: dict[str, list[str]] = field(default_factory=dict)  # the servers' warnings and errors
    load_after: str = ""  # the load average once every turn was over


def try_etcd(stack: ExitStack, args: argparse.Namespace, findings: Findings) -> Etcd | None:
    """Start etcd if it is installed and starts; else note why in ``findings``."""
    if args.no_etcd:
        findings.etcd_missing = "left out with `--no-etcd`"
        return None
    if shutil.which("etcd") is None:
        findings.etcd_missing = "etcd is not installed here (Debian: `apt-get install etcd-server`)"
        return None
    findings.etcd_version = etcd_versions()
    tmp = stack.enter_context(
        tempfile.TemporaryDirectory(prefix="bench-locks-etcd-", dir=args.tmp_dir)
    )
    try:
        etcd = start_etcd(Path(tmp))
    except (OSError, RuntimeError) as exc:
        findings.etcd_missing = f"etcd did not start: {str(exc).splitlines()[0]}"
        print(f"warning: {findings.etcd_missing}", file=sys.stderr)
        return None
    stack.enter_context(running(etcd))
    return etcd


def run_all(args: argparse.Namespace) -> Findings:
    """Start the servers on fresh directories and the contenders, give each lock its turn."""
    findings = Findings()
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        for kind, start in ((PRONTODB, start_prontodb), ("redis", start_redis)):
            tmp = stack.enter_context(
                tempfile.TemporaryDirectory(prefix=f"bench-locks-{kind}-", dir=args.tmp_dir)
            )
            servers[kind] = stack.enter_context(running(start(Path(tmp))))
        etcd = try_etcd(stack, args, findings)
        if etcd is not None:
            servers[ETCD] = etcd
        processes = stack.enter_context(Processes())
        pipes = [
            processes.start(
                run_contender,
                ContenderJob(
                    number,
                    servers[PRONTODB].socket,
                    servers["redis"].socket,
                    etcd.port if etcd is not None else 0,
                    args.ttl,
                    args.hold,
                ),
            )
            for number in range(args.contenders)
        ]
        for pipe in pipes:
            expect(pipe, "ready", WORKER_TIMEOUT)
        rounds: dict[str, list[LockResult]] = {}
        for number in range(args.rounds):
            for system in systems(args, etcd is not None):
                server = servers[_server_of(system)]
                result = take_turn(system, server, pipes, args)
                server.check_running()
                print(f"round {number + 1}: {_progress(result)}", flush=True)
                rounds.setdefault(system.key, []).append(result)
        findings.results = [merge(parts) for parts in rounds.values()]
        findings.load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        for result in findings.results:
            print(f"all:     {_progress(result)}", flush=True)
        for pipe in pipes:
            pipe.send(None)
        for name, server in servers.items():
            # Auth is off, so etcd's warning that simple tokens are not signed says nothing.
            log = [line for line in server.log_text().splitlines() if "simple token" not in line]
            if log and name != "redis":  # Redis logs its start-up at its default level
                findings.logs[name] = log
    return findings


def _server_of(system: System) -> str:
    if system.key in (PRONTODB, PRONTODB_BLOCK):
        return PRONTODB
    return ETCD if system.key == ETCD else "redis"


def take_turn(
    system: System, server: Server, pipes: list[Connection], args: argparse.Namespace
) -> LockResult:
    """One lock's round: every contender at once, the server's CPU over the measured part."""
    server.check_running()
    start = time.monotonic() + 0.1
    seconds = args.seconds / args.rounds
    turn = Turn(system, start, start + args.warmup, start + args.warmup + seconds)
    for pipe in pipes:
        pipe.send(turn)
    pronto = _server_of(system) == PRONTODB
    time.sleep(max(0.0, turn.measure_from - time.monotonic()))
    cpu_before = cpu_seconds(server.pid)
    before = counters(server) if pronto else None
    time.sleep(max(0.0, turn.measure_to - time.monotonic()))
    server_cpu = cpu_seconds(server.pid) - cpu_before
    writes = counters(server) - before if before is not None else None
    timeout = WORKER_TIMEOUT + args.warmup + seconds
    outcomes: list[TurnOutcome] = [expect(pipe, "done", timeout) for pipe in pipes]
    return analyse(turn, outcomes, server_cpu, writes)


# -- the report -----------------------------------------------------------------------------


def command() -> str:
    """This run's command line, as someone would type it to repeat it."""
    return shlex.join(["python", "-m", "bench.locks", *sys.argv[1:]])


def _progress(result: LockResult) -> str:
    return (
        f"  {result.system.label:26} {result.rate:7,.0f} cycles/s  hand-over p50 "
        f"{percentile_ms(result.handovers, 0.5):7.3f} ms  p99 "
        f"{percentile_ms(result.handovers, 0.99):8.3f} ms  longest wait "
        f"{percentile_ms(result.waits, 1.0):8.1f} ms ({result.starvation:.1f}x the mean)"
    )


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(findings: Findings, args: argparse.Namespace, info: dict[str, str]) -> str:
    """The section for docs/BENCHMARKS.md (also printed)."""
    results = {result.system.key: result for result in findings.results}
    shown = findings.results

    def row(label: str, value: Any) -> str:
        return f"| {label} | " + " | ".join(value(result) for result in shown) + " |"

    def ms(times: str, q: float) -> Any:
        return lambda r: f"{percentile_ms(getattr(r, times), q):.3f}"

    def per_cycle_us(attribute: str) -> Any:
        return lambda r: f"{1e6 * getattr(r, attribute) / max(1, r.cycles):.0f}"

    versions = (
        f"ProntoDB {info['prontodb']} (Python {info['python']}, trio {info['trio']}), "
        f"redis-server {info['redis']}"
    )
    if findings.etcd_version and ETCD in results:
        versions += f", etcd {findings.etcd_version}"
    lines = [
        f"## Locks: {args.contenders} contenders, ProntoDB vs Redis's recipe and etcd "
        f"({info['date']})",
        "",
        f"Machine: {info['arch']}, {info['cores']} cores ({info['cpu']}); disk {info['disk']}, "
        f"a 64-byte append plus fdatasync takes {info['fsync']} ms (median). "
        f"Versions: {versions}. Load average before the run: {info['load']}; after it: "
        f"{findings.load_after} (this machine is shared: work that starts during a run shows "
        "in the turns' cycles/s below).",
        "",
        f"Command: `{command()}` (run by `./scripts/bench.sh locks`).",
    ]
    if findings.etcd_missing:
        lines += ["", f"**etcd is not in this run**: {findings.etcd_missing}."]
    lines += [
        "",
        f"{args.contenders} contender processes (one connection to each server apiece, Python "
        f"under trio) take the locks in turns, {args.rounds} turns per lock, the locks taking "
        "theirs one after the other round by round (so that a change in the machine's speed "
        f"hits every lock alike); a turn is {args.warmup:g} s of warm-up and "
        f"{args.seconds / args.rounds:g} s measured ({args.seconds:g} s per lock in all). In "
        "a turn each contender loops acquire, critical section ("
        + ("nothing but the time stamps" if args.hold <= 0 else f"{1000 * args.hold:g} ms asleep")
        + "), release, and acquires again at once. Every server acknowledges a write only "
        "after its fsync (ProntoDB `--fsync always`; Redis `appendonly yes`, `appendfsync "
        "always`; etcd, one member, fsyncs its WAL before it answers). The locks:",
        "",
        "- **ProntoDB acquire/unlock**: one session per contender for the whole turn "
        f"(`keep_session({args.ttl:g}, bound=True)`, kept alive in the background); "
        f'`acquire("{LOCK_NAME}", "lock", session, wait=...)` waits at the broker, which '
        "answers the next in line when it comes to hold; `unlock(name, token)` releases. What "
        "a user writes who holds a lock many times.",
        f'- **ProntoDB `lock()` block**: `async with client.lock("{BLOCK_LOCK_NAME}", '
        f"ttl={args.ttl:g})` per cycle, the form the docs show first: each block grants a "
        "session (bound, kept alive), acquires, and revokes the session at its end (the "
        "release).",
        f"- **Redis**, the usual recipe: `SET {LOCK_NAME} token NX PX {REDIS_PX.decode()}` to "
        'acquire, `if redis.call("get",KEYS[1]) == ARGV[1] then return redis.call("del",KEYS[1]) '
        "else return 0 end` (`EVALSHA`) to release; a contender that finds the lock taken "
        "sleeps and tries again, as redis-py's `Lock` does (its `sleep` defaults to 0.1 s): "
        f"every {_ms_label(args.poll)}, and as a second lock every {_ms_label(args.fast_poll)}. "
        "The client is bench/loadgen.py's minimal RESP client, Redis on a Unix socket.",
    ]
    if ETCD in results:
        lines.append(
            "- **etcd**, its v3 lock API through the JSON gateway: a lease per contender "
            f"(`/v3/lease/grant`, TTL {math.ceil(args.ttl)} s, kept alive every ttl/3), "
            "`POST /v3/lock/lock` (answers once the lock is the contender's) and "
            "`POST /v3/lock/unlock`; a few lines of HTTP/1.1 over one kept-alive loopback TCP "
            "connection per contender."
        )
    lines += [
        "",
        "Every time is `time.monotonic()` (CLOCK_MONOTONIC, one clock for every process). "
        "**Hand-over**: for every release while another contender was waiting, from the "
        "releaser's call to the moment one of the contenders waiting then holds the lock (its "
        "acquire has returned: it is running). A releaser that takes the lock straight back, "
        "which a polling lock lets it do, hands nothing over: that release's hand-over runs on "
        "until a waiter gets in. **Release to next holder**: from a release call to the next "
        "acquisition by anyone, the releaser included (the lock's idle time). **Wait**: from "
        "calling acquire to holding"
        + (
            "; a polling wait still unanswered when its turn ended counts as a wait until then"
            if any(r.unfinished_waits for r in shown)
            else ""
        )
        + ".",
        "",
        "| measure | " + " | ".join(result.system.label for result in shown) + " |",
        "| --- | " + " | ".join("---:" for _ in shown) + " |",
        row("cycles/s (acquire, hold, release)", lambda r: f"{r.rate:,.0f}"),
        row("hand-over p50, ms", ms("handovers", 0.5)),
        row("hand-over p99, ms", ms("handovers", 0.99)),
        row("hand-over max, ms", ms("handovers", 1.0)),
        row("release to next holder p50, ms", ms("gaps", 0.5)),
        row("release to next holder p99, ms", ms("gaps", 0.99)),
        row(
            "releases the releaser took back, %",
            lambda r: f"{100 * r.retaken / max(1, len(r.gaps)):.1f}",
        ),
        row("wait p50, ms", ms("waits", 0.5)),
        row("wait mean, ms", lambda r: f"{1000 * r.mean_wait:.3f}"),
        row("wait p99, ms", ms("waits", 0.99)),
        row("longest wait, ms", ms("waits", 1.0)),
        row("longest wait / mean wait", lambda r: f"{r.starvation:.1f}x"),
        row(
            "holds per contender, fewest-most",
            lambda r: f"{min(r.holds_by_contender):,}-{max(r.holds_by_contender):,}",
        ),
        row("server CPU per cycle, µs", per_cycle_us("server_cpu")),
        row("server cores busy", lambda r: f"{r.server_cpu / r.seconds:.2f}"),
        row("contenders' CPU per cycle, µs", per_cycle_us("client_cpu")),
        "",
        *_targets(results),
        "",
        "Checks: " + "; ".join(_checks(findings)) + ".",
    ]
    polls = [r for r in shown if r.system.poll]
    if polls:
        lines += [
            "",
            "Redis's tries that found the lock taken, per cycle: "
            + "; ".join(f"{r.system.label} {r.failed_tries / max(1, r.cycles):.2f}" for r in polls)
            + ".",
        ]
    lines += [
        "",
        "Every turn, cycles/s: "
        + "; ".join(
            f"{r.system.label} " + ", ".join(f"{rate:,.0f}" for rate in r.round_rates)
            for r in shown
        )
        + ".",
    ]
    logged = [r for r in shown if r.writes is not None]
    if logged:
        lines += [
            "",
            "ProntoDB's log over the measured part, from the `records_written` and `fsyncs` that "
            "`status` reports: "
            + "; ".join(
                f"{r.system.label}: {r.writes.describe(max(1, r.cycles), 'cycle')}"
                for r in logged
                if r.writes is not None
            )
            + ".",
        ]
    for name, log in findings.logs.items():
        lines += [
            "",
            f"The {name} server logged {len(log)} warning or error lines; the first: `{log[0]}`",
        ]
    lines += ["", *_how_to_read(results, args)]
    if info["tmpfs"] == "yes":
        lines += ["", "**Warning: the temporary directory was on tmpfs; fsync cost nothing.**"]
    return "\n".join(lines)


def _targets(results: dict[str, LockResult]) -> list[str]:
    pronto = results[PRONTODB]
    p99 = percentile_ms(pronto.handovers, 0.99)
    lines = [
        "Targets from the issue (ProntoDB acquire/unlock; its `lock()` block in brackets):",
        "",
    ]
    block = results.get(PRONTODB_BLOCK)
    block_p99 = percentile_ms(block.handovers, 0.99) if block else float("nan")
    for key, most in ((REDIS_POLL, HANDOVER_MAX_RATIO_REDIS), (ETCD, HANDOVER_MAX_RATIO_ETCD)):
        other = results.get(key)
        if other is None:
            whose = "etcd's" if key == ETCD else f"{most:g}x Redis's"
            lines.append(f"- hand-over p99 at most {whose}: not measured, not in this run")
            continue
        theirs = percentile_ms(other.handovers, 0.99)
        what = f"{most:g}x {other.system.label}'s" if most != 1 else f"{other.system.label}'s"
        lines.append(
            f"- hand-over p99 at most {what}: {p99 / theirs:.2f}x ({p99:.3f} vs {theirs:.3f} ms), "
            f"{_verdict(p99 <= most * theirs)} (`lock()` block: {block_p99 / theirs:.2f}x)"
        )
    fast = results.get(REDIS_FAST)
    if fast is not None:
        theirs = percentile_ms(fast.handovers, 0.99)
        lines.append(
            f"- for comparison, against {fast.system.label} (not a target): {p99 / theirs:.2f}x "
            f"({p99:.3f} vs {theirs:.3f} ms)"
        )
    lines.append(
        f"- no starvation, longest wait at most {STARVATION_MAX:g}x the mean: "
        f"{pronto.starvation:.1f}x, {_verdict(pronto.starvation <= STARVATION_MAX)}"
        + (f" (`lock()` block: {block.starvation:.1f}x)" if block else "")
    )
    return lines


def _checks(findings: Findings) -> list[str]:
    """What the run saw of correctness: mutual exclusion, releases, unfinished waits."""
    problems = []
    for result in findings.results:
        if result.overlaps:
            problems.append(
                f"{result.system.label}: {result.overlaps} holds began before the previous "
                "holder's release call"
            )
        if result.unfinished_waits:
            problems.append(
                f"{result.system.label}: {result.unfinished_waits} waits were still polling "
                "when their turn ended"
                + (
                    f" ({result.handover_lower_bounds} hand-overs waited on them alone: lower "
                    "bounds)"
                    if result.handover_lower_bounds
                    else ""
                )
            )
    if not any(result.overlaps for result in findings.results):
        problems.insert(
            0,
            "no hold began before the previous holder had called release (mutual exclusion "
            "held on every lock); every ProntoDB unlock found its token and every Redis release "
            "deleted the releaser's own token",
        )
    return problems


def _how_to_read(results: dict[str, LockResult], args: argparse.Namespace) -> list[str]:
    pronto = results[PRONTODB]
    others = args.contenders - 1
    lines = [
        "How to read it: every contender is Python under trio, sharing the machine's "
        "cores with the servers, so client costs are in every figure: compare the ratios. "
        "ProntoDB and etcd keep their waiters in line (by create revision) and answer the next "
        "one when the lock passes to it: every release is a hand-over, and a contender waits "
        f"for the {others} others' turns, no more (ProntoDB: mean wait "
        f"{1000 * pronto.mean_wait:.1f} ms, {others} x its mean hand-over of "
        f"{1000 * _mean(pronto.handovers):.2f} ms is {1000 * others * _mean(pronto.handovers):.1f} "
        "ms). Redis's recipe has no line: a waiter learns that the lock is free only by trying "
        "again, so the releaser, which tries at once, mostly takes the lock straight back (the "
        'row "releases the releaser took back"); its cycles/s are mostly one contender taking '
        "its own lock again, and a waiter gets in only when a try lands in the short gap "
        "between a release and the releaser's next SET. Its hand-overs are as long as the "
        "waiters' tries take to hit such a gap (with a 100 ms poll, longer than the poll: a "
        "try that finds the lock taken again sleeps another poll), and its longest waits are "
        "many times its mean. A shorter poll gives the waiters more chances at the gap, at "
        "the price of a try that finds the lock taken every poll, per waiter (the line on "
        "Redis's tries above, and the contenders' CPU row).",
    ]
    block = results.get(PRONTODB_BLOCK)
    if block is not None and block.writes is not None and pronto.writes is not None:
        lines += [
            "",
            "ProntoDB's `lock()` block writes three records per cycle (the session's grant, the "
            "join, the revoke that releases) where acquire/unlock with a kept session writes "
            "two, and the broker fsyncs on its event loop, one batch at a time, so a release "
            "more often waits for another contender's write to be synced first: "
            f"{block.writes.fsyncs / max(1, block.cycles):.2f} fsyncs per cycle against "
            f"{pronto.writes.fsyncs / max(1, pronto.cycles):.2f}, and a slower hand-over.",
        ]
    etcd = results.get(ETCD)
    if etcd is not None:
        lines += [
            "",
            "etcd's lock (its `concurrency.Mutex`, run inside the server) waits for the member "
            "ahead of it to go with a watch that starts at the revision of the read that found "
            "it; etcd 3.4 puts a watch that starts at a past or current revision in its "
            "unsynced group, which a loop catches up every 100 ms. A member ahead that leaves "
            "before that is heard of at the loop's next pass, so the line moves about one round "
            f"per 100 ms: {etcd.rate:,.0f} cycles/s with {args.contenders} contenders, waits of "
            f"{1000 * etcd.mean_wait:.0f} ms on average, most hand-overs fast (p50 "
            f"{percentile_ms(etcd.handovers, 0.5):.3f} ms) and the rest up to the loop "
            f"(p99 {percentile_ms(etcd.handovers, 0.99):.3f} ms).",
        ]
    return lines


def _mean(times: list[float]) -> float:
    return sum(times) / len(times) if times else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contenders", type=int, default=8, help="contender processes")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per lock")
    parser.add_argument("--rounds", type=int, default=3, help="turns per lock, sharing --seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per turn")
    parser.add_argument(
        "--hold", type=float, default=0.0, help="seconds in the critical section (0: none)"
    )
    parser.add_argument("--ttl", type=float, default=10.0, help="session and lease TTL, seconds")
    parser.add_argument(
        "--poll", type=float, default=0.1, help="Redis: seconds between tries (redis-py's default)"
    )
    parser.add_argument(
        "--fast-poll", type=float, default=0.001, help="Redis, the second lock: seconds"
    )
    parser.add_argument("--tmp-dir", default="/var/tmp", help="where the servers' files go")
    parser.add_argument("--no-etcd", action="store_true", help="leave etcd out")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()
    if args.contenders < 2 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--contenders must be at least 2, --rounds at least 1, --seconds above 0")
    info = machine_info(args.tmp_dir)
    run_and_report(
        "locks", info, args.tmp_dir, args.no_report, lambda: report(run_all(args), args, info)
    )


if __name__ == "__main__":
    main()
