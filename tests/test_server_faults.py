"""Faults from outside, met by the broker in-process: a peer that breaks the protocol, a damaged
database, a disk whose fsync fails. Each is answered with a clear error, logged in one line (no
traceback: those are for the broker's own bugs), and never spills onto the other clients.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from inprocess import Running, running_broker, until
from wire import Wire

from prontodb.broker.server import ServerConfig
from prontodb.broker.server._databases import COMPACTION_CHECK_EVERY, OpenDatabase
from prontodb.broker.server._quiet_log import QuietLog
from prontodb.broker.storage import FaultPoints
from prontodb.protocol import (
    Connection,
    ConnectionClosed,
    ErrorCode,
    Goodbye,
    Hello,
    Request,
    Response,
    Role,
)


@pytest.fixture
async def server(short_dir: Path) -> AsyncIterator[Running]:
    config = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "s.sock")
    async with running_broker(config) as running:
        yield running


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None]


# -- a peer's fault is one line ------------------------------------------------------------------


async def test_hello_and_a_bad_frame_in_one_read_log_one_line_and_no_traceback(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    # The Welcome was queued when the fault was read: it cannot go any more, which is the
    # peer's doing, not a bug of ours (this used to log a traceback per connection).
    caplog.set_level(logging.INFO, logger="prontodb.server")
    for _ in range(3):
        stream = await trio.open_unix_socket(server.socket)
        hello = Connection(Role.CLIENT).send(Hello(client="fuzz", user="u"))
        await stream.send_all(hello + b"\x00\x00\x00\x03\xc1\xc1\xc1")
        wire = Wire(stream)
        wire.conn.send(Hello(client="fuzz", user="u"))
        goodbye = await wire.next()
        assert isinstance(goodbye, Goodbye)
        assert goodbye.code == ErrorCode.PROTOCOL
        assert isinstance(await wire.next(), ConnectionClosed)
        await stream.aclose()
    assert not tracebacks(caplog)
    assert len([r for r in caplog.records if "protocol error" in r.getMessage()]) == 3
    good = await server.wire()
    assert await good.result("ping") == "pong"


def test_repeated_lines_are_held_back_and_counted() -> None:
    now = [0.0]
    logger = logging.getLogger("prontodb.test.quiet")
    written: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        quiet = QuietLog(logger, window=60.0, burst=3, clock=lambda: now[0])
        for n in range(100):
            quiet.info("protocol", "bad frame %d", n)
        quiet.info("login", "a failed login")  # another kind has its own budget
        assert written == ["bad frame 0", "bad frame 1", "bad frame 2", "a failed login"]
        now[0] = 61.0
        quiet.info("protocol", "bad frame %d", 100)
        assert written[-1] == "bad frame 100 (97 more like it held back in the last 60 s)"
    finally:
        logger.removeHandler(handler)


# -- a damaged database --------------------------------------------------------------------------


async def test_a_damaged_database_is_refused_in_one_line_until_its_files_change(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    w = await server.wire()
    assert await w.result("set", key="a", value=1, cursor="hurt") == 1
    db = server.broker.databases.open_at(server.broker.databases.directory("hurt"))
    assert db is not None
    await server.broker.databases.close(db)
    segment = server.broker.databases.directory("hurt") / "seg-00000001.log"
    kept = segment.read_bytes()
    segment.unlink()
    for _ in range(5):  # refused each time, from what was found the first time
        response = await w.call("get", key="a", cursor="hurt")
        assert response.error is not None
        assert response.error["code"] == ErrorCode.UNAVAILABLE
        assert str(segment) in response.error["message"]
        assert "segment missing" in response.error["message"]
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert not tracebacks(caplog)
    assert await w.result("set", key="b", value=2) == 1  # the other databases serve on
    segment.write_bytes(kept)  # the operator puts the file back: the next request reopens it
    assert await w.result("get", key="a", cursor="hurt") == 1


async def test_a_waiting_claim_whose_database_cannot_reopen_is_answered_not_dropped(
    server: Running,
) -> None:
    # The claim follows its database through a close; the reopen is refused (damage): the claim
    # gets that refusal, and the connection (which used to end with it) serves on.
    w = await server.wire()
    assert await w.result("set", key="x", value=1, cursor="hurt") == 1
    request = w.request("claim", prefix="queue", wait=30, cursor="hurt")
    await w.send(request)
    databases = server.broker.databases
    await until(lambda: any(db.waiters.queued("queue") for db in databases.opened()))
    db = databases.open_at(databases.directory("hurt"))
    assert db is not None
    (databases.directory("hurt") / "seg-00000001.log").unlink()
    await databases.close(db)  # as a restore or a failed write would
    response = await w.next()
    assert isinstance(response, Response)
    assert response.id == request.id
    assert response.error is not None
    assert response.error["code"] == ErrorCode.UNAVAILABLE
    assert "segment missing" in response.error["message"]
    assert await w.result("ping") == "pong"


# -- a disk whose fsync fails ----------------------------------------------------------------------


async def test_a_failed_fsync_is_unavailable_never_acknowledged_and_reread_on_reopen(
    server: Running, faults: FaultPoints, caplog: pytest.LogCaptureFixture
) -> None:
    w = await server.wire()
    assert await w.result("set", key="k", value="durable") == 1
    failing = [True]

    def fsync(path: Path) -> None:
        if failing[0]:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    faults.fsync = fsync
    response = await w.call("set", key="k", value="never acknowledged")
    assert response.error is not None
    assert response.error["code"] == ErrorCode.UNAVAILABLE
    assert "could not fsync" in response.error["message"]
    assert "input/output error (EIO)" in response.error["message"]
    # While the disk fails, every write is refused: none is acknowledged.
    response = await w.call("set", key="k", value="also refused")
    assert response.error is not None
    assert response.error["code"] == ErrorCode.UNAVAILABLE
    failing[0] = False  # the disk is back: the database is reopened and its log re-read
    assert await w.result("get", key="k") == "durable"
    assert await w.result("set", key="k", value="after") == 2
    assert not tracebacks(caplog)


# -- the log file is bounded -----------------------------------------------------------------------

ROTATING = """
import logging, os, sys
from pathlib import Path
from prontodb.broker.server._run import setup_logging

setup_logging(Path(sys.argv[1]), max_bytes=4096)
log = logging.getLogger("prontodb.server")
for n in range(400):
    log.warning("line %d of a broker that logs a lot", n)
    if n == 399:
        os.write(2, b"the last words of a crash, written straight to stderr\\n")
"""


def test_the_log_file_is_rotated_by_size_and_takes_stderr_along(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    done = subprocess.run(
        [sys.executable, "-c", ROTATING, str(log)], capture_output=True, timeout=60, check=True
    )
    assert done.stderr == b""  # stderr went to the log file, not to the terminal
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["broker.log", "broker.log.1", "broker.log.2", "broker.log.3"]
    for path in tmp_path.iterdir():
        assert path.stat().st_size <= 4096 + 200, path  # a file passes the limit by one line
    current = log.read_text()
    assert "line 399 of a broker" in current
    assert "the last words of a crash" in current


class HeldFsync:
    """An fsync hook that hangs for segments of ``directory`` until :meth:`release`d. It gives
    up after 10 s (had it hung the event loop, nothing could release it): :attr:`gave_up`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.entered, self._release = threading.Event(), threading.Event()
        self.gave_up = False

    def __call__(self, path: Path) -> None:
        if path.parent == self.directory:
            self.entered.set()
            self.gave_up |= not self._release.wait(10)

    def release(self) -> None:
        assert not self.gave_up, "the fsync was held until it gave up: the event loop waited"
        self._release.set()


async def a_write_held(
    server: Running, faults: FaultPoints, w: Wire
) -> tuple[OpenDatabase, HeldFsync]:
    """Database ``slow`` with its writes in a thread, and a write of ``w`` (value 2, revision 3)
    in that thread now, its fsync held until the test releases it."""
    slow = await slow_database(server, w, "slow")
    faults.fsync = held = HeldFsync(slow.directory)
    await w.send(w.request("set", key="k", value=2, cursor="slow"))
    await until(held.entered.is_set)
    return slow, held


async def slow_database(server: Running, w: Wire, name: str) -> OpenDatabase:
    """Database ``name``, opened and with its writes moved to a thread (as after a slow one)."""
    databases = server.broker.databases
    assert await w.result("set", key="k", value=0, cursor=name) == 1
    db = databases.open_at(databases.directory(name))
    assert db is not None
    db.slow_write = 0.0
    assert await w.result("set", key="k", value=1, cursor=name) == 2
    return db


async def test_a_stuck_fsync_holds_up_its_own_database_only(
    server: Running, faults: FaultPoints
) -> None:
    a, b = await server.wire(), await server.wire()
    _, held = await a_write_held(server, faults, a)
    # Another database is served while the first one's fsync hangs in its thread.
    assert await b.result("set", key="k", value="other", cursor="fast") == 1
    assert await b.result("get", key="k", cursor="fast") == "other"
    held.release()
    answer = await a.next()
    assert isinstance(answer, Response)
    assert answer.raise_for_error() == 3


async def test_requests_racing_the_reopen_of_a_failed_database_all_wait_for_it(
    server: Running, faults: FaultPoints
) -> None:
    # The failed database is closed by the first request that finds it failed (in a thread);
    # those that come meanwhile must wait for that close and the reopen, not open the directory
    # a second time beside it (which its lock refused as "open in another broker"). Repeated:
    # the close and the other requests race.
    wires = [await server.wire() for _ in range(8)]
    assert await wires[0].result("set", key="k", value=0) == 1

    def fsync(path: Path) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    async def get(wire: Wire, answers: list[object]) -> None:
        answers.append((await wire.call("get", key="k")).result)

    for _ in range(20):
        faults.fsync = fsync
        assert (await wires[0].call("set", key="k", value=1)).error is not None
        faults.fsync = None
        answers: list[object] = []
        async with trio.open_nursery() as nursery:
            for wire in wires:
                nursery.start_soon(get, wire, answers)
        assert answers == [0] * len(wires)


async def test_a_peer_that_leaves_while_its_answers_are_written_is_let_go(
    server: Running,
) -> None:
    # Pipelined reads of a large value, then the peer closes without reading: the writes fail
    # halfway, and the connection must still end (its descriptor closed, not held until the
    # broker stops, which then waited out its grace period for it).
    w = await server.wire()
    assert await w.result("set", key="blob", value="x" * 100_000) == 1
    before = server.broker.status()["connections"]
    for _ in range(5):
        stream = await trio.open_unix_socket(server.socket)
        conn = Connection(Role.CLIENT)
        data = conn.send(Hello(client="leaver", user="u"))
        for n in range(1, 101):
            data += conn.send(Request(n, "get", {"key": "blob"}))
        await stream.send_all(data)
        await stream.aclose()
    await until(lambda: server.broker.status()["connections"] == before)


async def test_an_optional_argument_given_as_nil_is_taken_as_absent(server: Running) -> None:
    # `limit: nil` used to fail an assertion: `internal`, and a traceback in the log.
    w = await server.wire()
    await w.result("set", key="q.a", value=1)
    assert await w.result("keys", prefix="q", limit=None) == {"keys": ["q.a"], "more": False}
    assert await w.result("scan", prefix="q", limit=None) == {"items": [["q.a", 1]], "more": False}


# -- found by review ---------------------------------------------------------------------------------


async def test_status_is_answered_while_a_slow_database_fsyncs(
    server: Running, faults: FaultPoints
) -> None:
    # Its figures were read under the storage lock, which the fsync in the thread holds.
    a, b = await server.wire(), await server.wire()
    _, held = await a_write_held(server, faults, a)
    status = await b.result("status")
    assert [d["name"] for d in status["databases"]] == ["slow"]
    held.release()
    assert isinstance(await a.next(), Response)


async def test_closing_a_database_writes_a_roll_marker_queued_behind_a_threaded_write(
    server: Running, faults: FaultPoints
) -> None:
    # A compaction's roll marker queued while a write ran in the thread: the close must write
    # it, or the compaction (which the close waits for) waits for it forever.
    a = await server.wire()
    slow, held = await a_write_held(server, faults, a)
    slow.writes_unchecked = COMPACTION_CHECK_EVERY
    slow.database._retry_compaction_at = 0
    finish = slow.database.start_compaction()  # as maybe_compact does, wanted or not
    slow.wake()
    slow.compaction_done = done = trio.Event()

    async def compact() -> None:
        try:
            await trio.to_thread.run_sync(finish)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(compact)
        closed = trio.Event()

        async def close() -> None:
            await server.broker.databases.close(slow)
            closed.set()

        nursery.start_soon(close)
        held.release()
        with trio.move_on_after(10) as hung:
            await closed.wait()
        if hung.cancelled_caught:  # write the marker ourselves, so that the test fails, not hangs
            slow.database.writer.write_pending()
    assert not hung.cancelled_caught, "the close waited for a roll marker nobody wrote"
    assert done.is_set()
    answer = await a.next()  # the write that was in the thread: written, and acknowledged
    assert isinstance(answer, Response)
    assert answer.raise_for_error() == 3
    assert await a.result("get", key="k", cursor="slow") == 2  # reopened, nothing lost
