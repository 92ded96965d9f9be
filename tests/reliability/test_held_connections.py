"""1,000 held connections and slow watchers while tens of MB are written.

A thousand connections complete their Hello and then sit idle, and a score of watchers start a
watch on the prefix being written and never read their socket, while a writer writes tens of MB
(hundreds under torture) of values of tens to hundreds of KB. This proves that the broker stays
responsive (every write succeeds, and another client's ping and get round trips stay short),
that it keeps no backlog for a watcher that does not read (when one finally reads, it finds only
what a socket and one output piece hold, then an ``overflow`` error), that every held connection
still answers afterwards, and that the broker's memory stays within what its documented limits
allow. A second case overwrites one key with ~1 MB values a few hundred times: the memory
follows the history window, not the bytes written.
"""

from __future__ import annotations

import os
import random
import resource
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from brokers import open_fds, running_broker, wait_for_fds
from reliability_kit import Figures, Scale

from prontodb.clients import Client
from prontodb.protocol import (
    NEED_DATA,
    Connection,
    Event,
    Hello,
    Push,
    Request,
    Response,
    Role,
    Welcome,
)

MiB = 1 << 20
KiB = 1 << 10
TIMEOUT = 60.0  # seconds for any one socket operation; generous on 2 loaded cores
ROUND_TRIP_LIMIT = 5.0  # seconds a ping or get may take while the broker is loaded
PROBE_EVERY = 0.01  # seconds between two probes of responsiveness

# The broker's limits the memory bound is made of (docs/PROTOCOL.md, docs/FORMAT.md "History";
# broker/server/_session.py RECEIVE_SIZE and SEND_CHUNK, broker/server/_watches.py PUSH_BYTES).
HISTORY_BYTES = 64 * MiB  # the window's byte limit
CHANGE_OVERHEAD = 120  # what the window counts per change beyond its key and value
RECEIVE_BUFFER = 64 * KiB  # one read of a connection's socket
OUTPUT_PIECE = 1 * MiB  # what the broker encodes ahead for a peer that does not read
PUSH_BYTES = 256 * KiB  # a watch's push closes at about this many bytes of events
IN_FLIGHT_COPIES = 6  # copies of a request's frame alive at once while it is applied (below)
ALLOCATOR_SLACK = 16 * MiB  # freed memory the C allocator keeps resident (below)


@dataclass(frozen=True, slots=True)
class Bound:
    """What the broker's RSS may reach, term by term (bytes); see :func:`memory_bound`."""

    terms: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.terms.values())

    def explain(self) -> str:
        return ", ".join(f"{name} {value / MiB:.1f}" for name, value in self.terms.items())


def memory_bound(
    *,
    baseline: int,
    live: int,
    history_revisions: int,
    largest_change: int,
    connections: int,
    slow_peers: int,
    largest_frame: int,
) -> Bound:
    """The most the broker may hold at its peak: its documented limits, and what applying a
    request and compacting hold for a while:

    - ``baseline``: its RSS before the load (code, the catalog, open databases);
    - ``live``: the values stored (the engine keeps every live key in memory);
    - ``window``: the history window, which the watchers read from, at most ``HISTORY_BYTES``
      and at most its revisions times the largest change;
    - ``receive buffers``: one socket read (64 KiB) per connection;
    - ``output pieces``: for each peer that does not read, one output piece (1 MiB) and the push
      being encoded for it (a watcher holds one push's bytes, never a backlog);
    - ``request in flight``: the frame being applied, held up to six times at once (the bytes
      read, the body cut from them and its intermediate copy, the decoded value, its log record,
      the record framed for the file);
    - ``compaction``: a compaction writes a snapshot of the live data and the window as they
      were when it began, so until it ends those stay alive beside what replaced them;
    - ``allocator slack``: RSS counts pages, not objects: glibc keeps freed blocks resident for
      reuse, in the main heap and in the arena of each thread that handles values (the log
      writer's, the compaction's): a few MiB beyond the other terms when measured, allowed 16.
    """
    window = min(HISTORY_BYTES, history_revisions * largest_change)
    return Bound(
        {
            "baseline": baseline,
            "live": live,
            "window": window,
            "receive buffers": connections * RECEIVE_BUFFER,
            "output pieces": slow_peers * (OUTPUT_PIECE + PUSH_BYTES + largest_frame),
            "request in flight": IN_FLIGHT_COPIES * largest_frame,
            "compaction": live + window,
            "allocator slack": ALLOCATOR_SLACK,
        }
    )


def memory(pid: int) -> tuple[int, int]:
    """The process's resident set now and at its peak (VmRSS, VmHWM), in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * KiB
    return found["VmRSS"], found["VmHWM"]


def raise_fd_limit(needed: int) -> None:
    """Let this process (and the broker it starts) open ``needed`` fds: the soft limit up to
    the hard one if need be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"{needed} file descriptors needed, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- raw connections --------------------------------------------------------------------------


class Peer:
    """A raw connection speaking the protocol, for holding a thousand cheaply."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.conn = Connection(Role.CLIENT)
        self.bytes_read = 0

    def send(self, *messages: Hello | Request) -> None:
        self.sock.sendall(b"".join(self.conn.send(m) for m in messages))

    def next(self) -> Event:
        while (event := self.conn.next_event()) is NEED_DATA:
            data = self.sock.recv(64 * KiB)
            self.bytes_read += len(data)
            self.conn.receive_data(data)
        return event

    def kernel_buffers(self) -> int:
        """What the kernel may hold between the broker and this socket (the broker's sockets
        have the same defaults as ours)."""
        options = (socket.SO_SNDBUF, socket.SO_RCVBUF)
        return sum(self.sock.getsockopt(socket.SOL_SOCKET, option) for option in options)

    def close(self) -> None:
        self.sock.close()


HELLO = Hello(client="held/1", user="held")


@contextmanager
def peers(path: str, count: int, first: Sequence[Request] = ()) -> Iterator[list[Peer]]:
    """``count`` connections that completed their Hello (and sent ``first``), closed on exit.
    Opened a hundred at a time: connect and greet them all, then read their Welcomes."""
    opened: list[Peer] = []
    try:
        for start in range(0, count, 100):
            batch = [Peer(path) for _ in range(min(100, count - start))]
            opened += batch
            for peer in batch:
                peer.send(HELLO, *first)
            for peer in batch:
                welcome = peer.next()
                assert isinstance(welcome, Welcome), welcome
        yield opened
    finally:
        for peer in opened:
            peer.close()


def start_watch(peer: Peer) -> None:
    """Wait for the watch's first push (no events: it is in place), then read no more."""
    push = peer.next()
    assert isinstance(push, Push), push
    assert push.stream == 1, push
    assert not push.event["events"], push


@dataclass(frozen=True, slots=True)
class CutOff:
    """How a slow watcher's stream ended once it read: its Response, and what it had read."""

    response: Response
    pushes: int
    bytes_read: int


def read_until_answered(peer: Peer) -> CutOff:
    """Read a watcher's pushes until its watch's Response (the end of its stream)."""
    pushes = 0
    while True:
        event = peer.next()
        if isinstance(event, Response) and event.id == 1:
            return CutOff(event, pushes, peer.bytes_read)
        assert isinstance(event, Push), event
        pushes += 1


# -- a client that keeps checking the broker answers ------------------------------------------


class Prober(threading.Thread):
    """Pings and gets a small key every PROBE_EVERY seconds, timing each round trip."""

    def __init__(self, url: str, cursor: str) -> None:
        super().__init__(name="prober", daemon=True)
        self.client = Client.connect(url, user="prober", cursor=cursor)
        self.client.set("probe", "still here")
        self.stop = threading.Event()
        self.round_trips: list[float] = []
        self.wrong = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.wait(PROBE_EVERY):
                started = time.monotonic()
                self.client.ping()
                if self.client.get("probe") != "still here":
                    self.wrong += 1
                self.round_trips.append(time.monotonic() - started)
        except BaseException as exc:
            self.error = exc


@dataclass(slots=True)
class Writer:
    """Writes values of random sizes over a few keys under a prefix, checking each answer."""

    client: Client
    rng: random.Random
    prefix: str
    keys: int
    sizes: tuple[int, int]
    written: int = 0
    writes: int = 0
    last: dict[str, bytes] = field(default_factory=dict)
    wrong: int = 0
    _revision: int = 0
    _block: bytes = b""

    def write(self, total: int) -> None:
        if not self._block:
            self._block = self.rng.randbytes(self.sizes[1])
        while self.written < total:
            size = self.rng.randrange(*self.sizes)
            value = self.writes.to_bytes(8, "big") + self._block[: size - 8]
            key = f"{self.prefix}.k{self.writes % self.keys}"
            revision = self.client.set(key, value)
            if revision <= self._revision:
                self.wrong += 1
            self._revision = revision
            self.last[key] = value
            self.written += size
            self.writes += 1

    def check(self) -> None:
        """Every key holds the value written last."""
        for key, value in self.last.items():
            if self.client.get(key) != value:
                self.wrong += 1

    @property
    def live(self) -> int:
        return sum(len(value) for value in self.last.values())


def ping_all(idle: list[Peer]) -> int:
    """Ping every held connection at once; how many answer pong."""
    for peer in idle:
        peer.send(Request(2, "ping", {}))
    return sum(1 for peer in idle if peer.next() == Response(2, None, "pong"))


# -- the cases --------------------------------------------------------------------------------


def test_held_connections_and_slow_watchers(
    short_dir: Path, scale: Scale, figures: Figures
) -> None:
    held, watchers = scale.pick(1000, 5000), scale.pick(20, 100)
    total = scale.pick(40, 400) * MiB
    keys, sizes = 16, (16 * KiB, 512 * KiB)
    # The quick run writes less than the default window holds, so it keeps 64 revisions (at
    # most 32 MiB) to have the watchers overflow; the torture run keeps the default window
    # and writes past its 64 MiB.
    revisions = scale.pick(64, 100_000)
    extra = ["--history-revisions", str(revisions)]
    seed = random.SystemRandom().randrange(2**32)
    raise_fd_limit(held + watchers + 100)
    figures.scenario = "1,000 held connections and slow watchers"

    with running_broker(short_dir / "data", short_dir / "s.sock", extra=extra) as broker:
        prober = Prober(broker.url, "held")
        writer = Writer(
            Client.connect(broker.url, user="writer", cursor="held"),
            random.Random(seed),
            "load",
            keys,
            sizes,
        )
        try:
            fds_before = open_fds(broker.pid)
            baseline, _ = memory(broker.pid)
            watch = Request(1, "watch", {"prefix": "load", "cursor": "held"})
            with (
                peers(broker.socket, held) as idle,
                peers(broker.socket, watchers, [watch]) as slow,
            ):
                for peer in slow:
                    start_watch(peer)
                holding, _ = memory(broker.pid)
                prober.start()
                write_started = time.monotonic()
                writer.write(total)
                write_seconds = time.monotonic() - write_started
                prober.stop.set()
                prober.join(TIMEOUT)
                writer.check()
                in_kernel = slow[0].kernel_buffers()
                cut_off = [read_until_answered(peer) for peer in slow]
                answering = ping_all(idle)
                _, peak = memory(broker.pid)
            fds_after = wait_for_fds(broker, fds_before, writer.client.ping)
        finally:
            prober.stop.set()
            prober.client.close()
            writer.client.close()

    bound = memory_bound(
        baseline=baseline,
        live=writer.live,
        history_revisions=revisions,
        largest_change=sizes[1] + len("load.k00") + CHANGE_OVERHEAD,
        connections=held + watchers + 2,
        slow_peers=watchers,
        largest_frame=sizes[1] + 1024,
    )
    overflowed = [c for c in cut_off if c.response.error and c.response.error["code"] == "overflow"]
    max_read = max(c.bytes_read for c in cut_off)
    round_trip = max(prober.round_trips, default=0.0)
    figures["connections held"] = held
    figures["slow watchers"] = watchers
    figures["writes"] = writer.writes
    figures["MB written"] = round(writer.written / 1e6, 1)
    figures["write seconds"] = round(write_seconds, 1)
    figures["watchers cut off with overflow"] = len(overflowed)
    figures["most MB a slow watcher read"] = round(max_read / 1e6, 2)
    figures["held connections answering"] = answering
    figures["probes"] = len(prober.round_trips)
    figures["max round trip ms"] = round(round_trip * 1000, 1)
    figures["KB per held connection"] = round((holding - baseline) / (held + watchers) / 1e3, 1)
    figures["baseline RSS MB"] = round(baseline / 1e6, 1)
    figures["peak RSS MB"] = round(peak / 1e6, 1)
    figures["bound MB"] = round(bound.total / 1e6, 1)
    figures["wrong values"] = writer.wrong + prober.wrong
    figures["leaked fds"] = max(0, fds_after - fds_before)

    assert prober.error is None, f"the prober failed: {prober.error!r}"
    assert figures["wrong values"] == 0, f"seed {seed}"
    assert round_trip < ROUND_TRIP_LIMIT, f"a round trip took {round_trip:.2f} s"
    assert len(prober.round_trips) > 0, "the prober made no round trip while the writer wrote"
    assert len(overflowed) == watchers, [c.response for c in cut_off if c not in overflowed]
    for c in overflowed:  # where it was, and the window already past it
        details = c.response.error or {}
        assert details["next_rev"] < details["oldest_rev"], details
    # Only what the kernel's socket buffers and one output piece held: no backlog was kept.
    may_read = in_kernel + OUTPUT_PIECE + PUSH_BYTES + sizes[1]
    assert max_read <= may_read, (
        f"a slow watcher read {max_read / MiB:.2f} MiB before its overflow, more than the "
        f"{may_read / MiB:.2f} MiB its socket and one output piece hold"
    )
    assert answering == held, f"{held - answering} held connections no longer answer"
    assert peak <= bound.total, (
        f"peak RSS {peak / MiB:.1f} MiB over the bound {bound.total / MiB:.1f} MiB "
        f"({bound.explain()})"
    )
    assert figures["leaked fds"] == 0, f"{fds_after} fds open after, {fds_before} before"


def test_overwriting_one_key_keeps_memory_within_the_window(
    short_dir: Path, scale: Scale, figures: Figures
) -> None:
    """A few hundred ~1 MB values written over one key: the broker keeps the live value and the
    history window, not every value ever written (the defect this guards against grew RSS by
    the bytes written, ~500 MB for 500 such writes)."""
    writes, size = scale.pick(300, 1000), 1_000_000
    # Quick: a 16-revision window (16 MB), so the bound is tight; torture: the default window,
    # which its 64 MiB byte limit bounds.
    revisions = scale.pick(16, 100_000)
    extra = ["--history-revisions", str(revisions)]
    figures.scenario = "one key overwritten with 1 MB values"
    with (
        running_broker(short_dir / "data", short_dir / "s.sock", extra=extra) as broker,
        Client.connect(broker.url, cursor="big") as client,
    ):
        client.set("warm", 1)  # the database open before the baseline
        baseline, _ = memory(broker.pid)
        block = os.urandom(size)
        value = b""
        for n in range(writes):
            value = n.to_bytes(8, "big") + block[8:]
            client.set("big", value)
        wrong = int(client.get("big") != value)
        _, peak = memory(broker.pid)
    bound = memory_bound(
        baseline=baseline,
        live=size,
        history_revisions=revisions,
        largest_change=size + len("big") + CHANGE_OVERHEAD,
        connections=1,
        slow_peers=0,
        largest_frame=size + 1024,
    )
    figures["writes"] = writes
    figures["MB written"] = round(writes * size / 1e6, 1)
    figures["history revisions"] = revisions
    figures["baseline RSS MB"] = round(baseline / 1e6, 1)
    figures["peak RSS MB"] = round(peak / 1e6, 1)
    figures["bound MB"] = round(bound.total / 1e6, 1)
    figures["wrong values"] = wrong
    assert wrong == 0, "the key does not hold the value written last"
    assert peak <= bound.total, (
        f"peak RSS {peak / MiB:.1f} MiB over the bound {bound.total / MiB:.1f} MiB "
        f"({bound.explain()}) after writing {writes} x {size} bytes to one key"
    )
