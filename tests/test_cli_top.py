"""``prontodb top`` as a person and a script see it: a real broker process, ``top`` run in a real
terminal (tmux; its screen read with capture-pane) while a load runs, and ``--once`` and
``--json`` through a subprocess's pipes. Every process is stopped by its pid, and every tmux
server by its socket name, however the test ends."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from brokers import BrokerProcess, running_broker, start_broker
from cli_support import invoke, stop_by_pid

from prontodb.clients import Client

TIMEOUT = 30.0  # seconds for anything to show; generous for a loaded 2-core machine
CLI = [sys.executable, "-m", "prontodb.clients.cli"]
TMUX = shutil.which("tmux")
needs_tmux = pytest.mark.skipif(
    TMUX is None,
    reason="tmux is not installed (.ci/run installs it): the live view is tested in a real terminal",
)


def top_command(broker: BrokerProcess, *args: str) -> list[str]:
    return [*CLI, "--url", broker.url, "--user", "watcher", "top", *args]


def until(condition: Callable[[], bool], what: str, tick: Callable[[], None] | None = None) -> None:
    """Look every 20 ms (running ``tick`` first, if given), for at most TIMEOUT seconds, until
    ``condition()`` holds."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        if tick is not None:
            tick()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {TIMEOUT:g} s: {what}")
        time.sleep(0.02)


# -- the live view, in tmux ----------------------------------------------------------------------


class Terminal:
    """A tmux server of its own (``-L`` with a unique name) running one command in a 160x50 pane."""

    def __init__(self, name: str) -> None:
        self.name = name

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        done = subprocess.run(
            [TMUX, "-L", self.name, *args], capture_output=True, text=True, timeout=TIMEOUT
        )
        return done.stdout if done.returncode == 0 else ""

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def running(self) -> bool:
        assert TMUX is not None
        return (
            subprocess.run([TMUX, "-L", self.name, "has-session"], capture_output=True).returncode
            == 0
        )


@contextmanager
def terminal(command: list[str], status_file: Path) -> Iterator[Terminal]:
    """``command`` in a tmux pane; once it exits, its status and the terminal's mode (``stty
    -a``) are written to ``status_file``. The tmux server is killed however the test ends."""
    assert TMUX is not None
    term = Terminal(f"pdb-top-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    # Written aside and renamed into place, so that a reader never sees the status without the
    # terminal's mode after it.
    partial = f"{status_file}.partial"
    shell = (
        f"{subprocess.list2cmdline(command)}; code=$?; stty -a >{partial}; "
        f"echo status=$code >>{partial}; mv {partial} {status_file}"
    )
    try:
        subprocess.run(
            [TMUX, "-L", term.name, "new-session", "-d", "-x", "160", "-y", "50", shell],
            check=True,
            timeout=TIMEOUT,
        )
        yield term
    finally:
        subprocess.run([TMUX, "-L", term.name, "kill-server"], capture_output=True, timeout=TIMEOUT)


def cells(screen: str, *first: str) -> list[str] | None:
    """The cells of the first line of ``screen`` whose first cells are ``first``, or None."""
    for line in screen.splitlines():
        found = line.split()
        if found[: len(first)] == list(first):
            return found
    return None


def number(cell: str) -> float:
    """A figure as top prints it (``1,234``, ``12.3k``)."""
    scale = {"k": 1e3, "M": 1e6}.get(cell[-1:], 1.0)
    return float(cell.rstrip("kM").replace(",", "")) * scale


@needs_tmux
def test_the_live_view_follows_a_load_and_quits_on_q(tmp_path: Path, short_dir: Path) -> None:
    status = tmp_path / "status"
    with (
        running_broker(tmp_path / "data", short_dir / "b.sock") as broker,
        Client.connect(broker.url, user="loader") as client,
        terminal(top_command(broker, "--interval", "0.2"), status) as term,
    ):
        until(lambda: "prontodb top" in term.screen() and "OP" in term.screen(), "the first frame")
        assert cells(term.screen(), "set") is None  # nothing set yet
        sent = 0

        def load() -> None:  # a few writes and claims between two looks at the screen
            nonlocal sent
            for _ in range(10):
                client.set(f"jobs.j{sent}", sent)
                sent += 1
            item = client.claim("jobs")
            assert item is not None

        def busy() -> bool:
            sets = cells(term.screen(), "set")
            queue = cells(term.screen(), "default", "jobs")
            return (
                sets is not None
                and number(sets[1]) > 0
                and queue is not None
                and int(queue[2]) > 0  # READY
                and int(queue[4]) > 0  # CLAIMED
            )

        until(busy, "the sets' rate and the queue on screen", tick=load)
        assert cells(term.screen(), "claim") is not None
        assert cells(term.screen(), "loader", "unix") is not None  # connections by user
        # The load stops: the screen settles on the broker's own figures.
        stats = client.queue_show("jobs")

        def settled() -> bool:
            queue = cells(term.screen(), "default", "jobs")
            return (
                cells(term.screen(), "set") is None
                and queue is not None
                and (int(queue[2]), int(queue[4])) == (stats.ready, stats.claimed)
            )

        until(settled, f"no sets, and the queue at {stats.ready} ready, {stats.claimed} claimed")
        term.tmux("send-keys", "q")
        until(lambda: status.exists() and "status=" in status.read_text(), "top to exit on q")
    text = status.read_text()
    assert "status=0" in text
    # The terminal is as it was: line editing and echo back on.
    assert re.search(r"(?<![-\w])icanon\b", text)
    assert re.search(r"(?<![-\w])echo\b", text)


@needs_tmux
def test_the_live_view_says_the_broker_went_away_and_reconnects(
    tmp_path: Path, short_dir: Path
) -> None:
    status = tmp_path / "status"
    socket = short_dir / "b.sock"
    first = start_broker(tmp_path / "data", socket)
    second: BrokerProcess | None = None
    try:
        with terminal(top_command(first, "--interval", "0.2"), status) as term:
            until(lambda: f"pid {first.pid}" in term.screen(), "the first broker's frame")
            assert first.terminate() == 0
            until(lambda: "No broker answers" in term.screen(), "the broker gone, on screen")
            assert term.running()  # it waits, rather than crash
            second = start_broker(tmp_path / "data", socket)
            pid = second.pid
            until(
                lambda: f"pid {pid}" in term.screen() and "No broker" not in term.screen(),
                "the new broker's frame",
            )
    finally:
        for broker in (first, second):
            if broker is not None and broker.process.poll() is None:
                try:
                    broker.terminate()
                except subprocess.TimeoutExpired:
                    broker.kill()


def test_keys_come_unechoed_one_at_a_time_and_the_terminal_is_put_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prontodb.clients._cli_top import Keys, keyboard

    master, slave = os.openpty()  # a real terminal pair: the test types on the master side
    try:
        with os.fdopen(os.dup(slave), "r") as stdin:
            monkeypatch.setattr(sys, "stdin", stdin)
            before = termios.tcgetattr(slave)
            with keyboard() as keys:
                mode = termios.tcgetattr(slave)[3]
                assert not mode & (termios.ICANON | termios.ECHO)
                assert mode & termios.ISIG  # Ctrl-C still interrupts
                os.write(master, b"x")
                os.write(master, b"q")
                assert keys.wait(TIMEOUT)
            assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)
    assert not Keys(None).wait(0)


# -- --once and --json, through pipes ------------------------------------------------------------


def test_once_prints_one_frame_over_one_interval(tmp_path: Path, short_dir: Path) -> None:
    with running_broker(tmp_path / "data", short_dir / "b.sock") as broker:
        with Client.connect(broker.url, user="loader") as client:
            for n in range(5):
                client.set(f"jobs.j{n}", n)
            assert client.claim("jobs") is not None
        done = subprocess.run(
            top_command(broker, "--once", "--interval", "0.2"),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    assert done.returncode == 0, done.stderr
    screen = done.stdout
    assert f"pid {broker.pid}" in screen
    assert "every 0.2 s" in screen
    assert "Rates since the broker started" not in screen  # two snapshots: the interval's
    assert cells(screen, "default", "jobs")[2:5] == ["4", "0", "1"]  # type: ignore[index]
    assert cells(screen, "watcher", "unix") == ["watcher", "unix", "1", "0"]
    assert cells(screen, "stats") is not None  # top's own first snapshot
    assert "\x1b[" not in screen  # no colours or cursor moves in a pipe


def sets(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """The frame's row of ``set``, if sets were answered in its interval."""
    return [row for row in frame["ops"] if row["op"] == "set"]


def test_json_prints_an_object_per_interval(tmp_path: Path, short_dir: Path) -> None:
    with (
        running_broker(tmp_path / "data", short_dir / "b.sock") as broker,
        subprocess.Popen(
            top_command(broker, "--json", "--interval", "0.2"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as process,
    ):
        try:
            assert process.stdout is not None
            frames = [json.loads(read_line(process.stdout.fileno()))]
            with Client.connect(broker.url, user="loader") as client:
                for n in range(20):
                    client.set(f"k{n}", n)
            # A later frame covers the interval of the sets.
            while not sets(frames[-1]):
                frames.append(json.loads(read_line(process.stdout.fileno())))
        finally:
            stop_by_pid(process.pid)
            process.wait(TIMEOUT)
    for frame in frames:
        assert frame["interval"] > 0  # never the figures since the start
        assert frame["pid"] == broker.pid
    (row,) = sets(frames[-1])
    assert row["rate"] > 0
    assert row["p99"] > 0
    assert frames[-1]["databases"][0]["cursor"] == "default"


def test_to_a_pipe_a_frame_is_printed_every_interval(tmp_path: Path, short_dir: Path) -> None:
    with (
        running_broker(tmp_path / "data", short_dir / "b.sock") as broker,
        subprocess.Popen(
            top_command(broker, "--interval", "0.2"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as process,
    ):
        try:
            assert process.stdout is not None
            lines = [read_line(process.stdout.fileno())]
            while sum(1 for line in lines if line.startswith("prontodb top")) < 3:
                lines.append(read_line(process.stdout.fileno()))
        finally:
            stop_by_pid(process.pid)
            process.wait(TIMEOUT)
    text = "".join(lines)
    assert "\x1b[" not in text  # no screen drawing in a pipe
    assert "Rates since the broker started" not in text
    frames = text.split("\n\nprontodb top")  # a blank line between two frames
    assert len(frames) == 3
    assert all("OP" in frame for frame in frames[:2])


def test_once_in_process_as_text_and_as_json(tmp_path: Path, short_dir: Path) -> None:
    # The same paths as the subprocesses above, run in the test's process (they count in the
    # coverage report, which does not follow child processes).
    with running_broker(tmp_path / "data", short_dir / "b.sock") as broker:
        with Client.connect(broker.url, user="loader") as client:
            client.set("jobs.a", 1, priority=5)  # a queue item
        base = ["--url", broker.url, "--user", "watcher", "top", "--once", "--interval", "0.1"]
        text = invoke(base)
        document = invoke([*base, "--json"])
    assert text.status == 0, text.err
    assert cells(text.out, "default", "jobs")[2] == "1"  # type: ignore[index]
    assert document.status == 0, document.err
    frame = json.loads(document.out)
    assert frame["queues"][0]["queue"] == "jobs"
    assert frame["pid"] == broker.pid


def test_once_without_a_broker_says_so(tmp_path: Path, short_dir: Path) -> None:
    done = subprocess.run(
        [*CLI, "--url", f"unix://{short_dir}/nothing.sock", "top", "--once", "--interval", "0.1"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert "No broker answers" in done.stderr


def read_line(fd: int) -> str:
    """The next line from ``fd``, within TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no line within {TIMEOUT:g} s")
        chunk = os.read(fd, 1)  # a byte at a time: nothing past the line is taken
        if not chunk:
            raise AssertionError("the stream ended")
        data += chunk
    return data.decode()


def test_a_refused_user_is_told_why_rather_than_retried(tmp_path: Path, short_dir: Path) -> None:
    with running_broker(
        tmp_path / "data", short_dir / "b.sock", extra=["--require-auth"]
    ) as broker:
        done = subprocess.run(
            top_command(broker, "--once", "--interval", "0.1"),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={k: v for k, v in os.environ.items() if k != "PRONTODB_TOKEN"},
        )
    assert done.returncode == 1
    assert done.stdout == ""
    assert "token" in done.stderr
