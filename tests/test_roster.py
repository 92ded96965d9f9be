"""The roster a broker lists itself in while it runs, and how ``ps`` and ``stop --all`` read it:
its lock says who is alive, never its pid. A broker in the test's trio run, and entries written
by hand for the dead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from inprocess import running_broker

from prontodb.broker.server import ServerConfig
from prontodb.clients import _roster


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is no broker, whose pid a dead broker's entry may name."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        yield process
    finally:
        process.kill()
        process.communicate()  # reaps it and closes its stdin


def forge(roster: Path, pid: int, name: str = "broker-1-1.json") -> Path:
    """An entry as a broker writes it, whose broker is gone (nobody holds its lock)."""
    roster.mkdir(mode=0o700, exist_ok=True)
    entry = roster / name
    entry.write_text(json.dumps({"pid": pid, "data_dir": "/gone", "socket": None, "started": 1.0}))
    return entry


async def test_a_broker_is_listed_while_it_runs(short_dir: Path) -> None:
    roster = short_dir / "roster"
    config = ServerConfig(
        data_dir=short_dir / "data",
        socket_path=short_dir / "s.sock",
        tcp=("127.0.0.1", 0),
        insecure=True,
        idle_exit=60.0,
        roster=roster,
    )
    async with running_broker(config) as running:
        [entry] = roster.iterdir()
        assert entry.name.startswith(f"broker-{os.getpid()}-")
        assert roster.stat().st_mode & 0o777 == 0o700
        [listed] = _roster.live_brokers([str(roster), str(short_dir / "no-such-roster")])
        assert listed == {
            "pid": os.getpid(),
            "data_dir": str(short_dir / "data"),
            "socket": str(short_dir / "s.sock"),
            "tcp": running.info.tcp,
            "http": None,
            "started": running.broker.started,
            "auto_started": False,
            "idle_exit": 60.0,
            "version": running.broker.server_name.partition("/")[2],
            "entry": str(entry),
        }
        assert entry.exists()  # a live one is never removed
    # A clean stop takes its entry with it.
    with trio.fail_after(10):
        await running.stopped.wait()
    assert list(roster.iterdir()) == []
    assert _roster.live_brokers([str(roster)]) == []


async def test_without_a_roster_a_broker_lists_itself_nowhere(short_dir: Path) -> None:
    config = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "s.sock")
    async with running_broker(config):
        assert sorted(os.listdir(short_dir)) == ["data", "s.sock"]


async def test_a_roster_that_cannot_be_written_is_a_warning_not_a_failure(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (short_dir / "file").write_text("")
    config = ServerConfig(
        data_dir=short_dir / "data", socket_path=short_dir / "s.sock", roster=short_dir / "file"
    )
    async with running_broker(config) as running:
        wire = await running.wire()
        assert await wire.result("ping") == "pong"
    assert "not listed for `prontodb ps`" in caplog.text


def test_the_entry_of_a_dead_broker_is_removed_and_its_pid_never_signalled(
    short_dir: Path, bystander: subprocess.Popen[bytes]
) -> None:
    # Its broker died (kill -9: no clean stop deleted the entry) and the pid now belongs to a
    # process that is no broker: the free lock says so, whatever the pid.
    roster = short_dir / "roster"
    entry = forge(roster, bystander.pid)
    record = {"pid": bystander.pid, "entry": str(entry)}
    assert _roster.signal_if_live(record) is None
    assert _roster.live_brokers([str(roster)]) == []
    assert not entry.exists()
    assert _roster.signal_if_live(record) is None  # and once its entry is gone
    assert bystander.poll() is None


def test_an_entry_being_written_is_skipped_not_removed(short_dir: Path) -> None:
    roster = short_dir / "roster"
    roster.mkdir()
    newborn = roster / "broker-2-2.json"
    newborn.touch()  # a broker creates, locks, then writes it
    old = roster / "broker-3-3.json"
    old.touch()
    os.utime(old, (0, 0))  # empty for ages: its broker died before writing it
    (roster / "notes.txt").write_text("not an entry")
    assert _roster.live_brokers([str(roster)]) == []
    assert sorted(p.name for p in roster.iterdir()) == ["broker-2-2.json", "notes.txt"]
