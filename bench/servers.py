"""Servers to benchmark against: a ProntoDB broker and a redis-server, each on a private directory.

Both listen on a Unix socket only (no ports to collide on), are started with the durability the
benchmark compares (fsync on every acknowledged write), and are stopped by pid however the run ends.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0  # seconds; generous, the 2-core machine may be busy
STOP_TIMEOUT = 30.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """A server process started here; ``socket`` is the path of the Unix socket it listens on."""

    name: str
    process: subprocess.Popen[bytes]
    socket: str
    directory: Path
    log: Path
    ready: dict[str, Any] = field(default_factory=dict)  # the ready line (ProntoDB's addresses)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far (from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        # After the command name: state is field 3, utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def check_running(self) -> None:
        """Raise with the server's log if it has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} (pid {self.pid}) exited with status {self.process.returncode}; "
                f"its log:\n{self.log_text()}"
            )

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit, SIGKILL if it takes too long; returns the status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(STOP_TIMEOUT)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def running(server: Server) -> Iterator[Server]:
    """Stop ``server`` by its pid when the block ends, whatever happened in it."""
    try:
        yield server
    finally:
        server.stop()


def start_prontodb(
    directory: Path,
    *,
    fsync: str = "always",
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Server:
    """``prontodb serve`` on ``directory/data`` (with ``extra`` options, and ``env`` added to the
    environment: another PYTHONPATH runs other code); waits for its ready line rather than
    polling. ``Server.ready`` is that line."""
    sock = directory / "prontodb.sock"
    argv = ["prontodb.clients.cli", "serve", "--data-dir", str(directory / "data")]
    argv += ["--socket", str(sock), "--fsync", fsync, *extra]
    return _start_python("prontodb", argv, directory, env)


def start_floor(directory: Path) -> Server:
    """bench/floor_server.py: the hand-off with no broker logic (its docstring says why)."""
    argv = ["bench.floor_server", "--socket", str(directory / "floor.sock")]
    argv += ["--log", str(directory / "floor.aof")]
    return _start_python("floor", argv, directory)


def _start_python(
    name: str, module_argv: list[str], directory: Path, extra_env: Mapping[str, str] | None = None
) -> Server:
    """``python -m MODULE ARGS --ready-fd N``; waits for the JSON line with its socket on N."""
    log = directory / f"{name}.log"
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", *module_argv, "--ready-fd", str(write_fd)]
    # Warnings only: a log line per connection or request would be part of what is measured.
    env = {**os.environ, "PRONTODB_LOG_LEVEL": "WARNING", **(extra_env or {})}
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            pass_fds=(write_fd,),
            env=env,
        )
    os.close(write_fd)
    server = Server(name, process, "", directory, log)
    try:
        ready, _, _ = select.select([read_fd], [], [], START_TIMEOUT)
        line = os.read(read_fd, 65536) if ready else b""
    finally:
        os.close(read_fd)
    if not line:
        server.stop()
        raise RuntimeError(f"{name} did not start; its log:\n{server.log_text()}")
    server.ready = json.loads(line)
    server.socket = server.ready["socket"]
    return server


def start_redis(directory: Path) -> Server:
    """redis-server with an fsync on every write (appendfsync always), on a Unix socket only."""
    sock = directory / "redis.sock"
    log = directory / "redis.log"
    argv = [
        "redis-server",
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--unixsocketperm",
        "700",
        "--dir",
        str(directory),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--logfile",
        str(log),
    ]
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = Server("redis-server", process, str(sock), directory, log)
    try:
        _wait_for_redis(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_for_redis(server: Server) -> None:
    """Retry PING on the socket with a growing pause, until PONG or the deadline."""
    deadline = time.monotonic() + START_TIMEOUT
    pause = 0.005
    while True:
        server.check_running()
        if _redis_pong(server.socket):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"redis-server did not answer PING within {START_TIMEOUT:g} s; its log:\n"
                f"{server.log_text()}"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _redis_pong(path: str) -> bool:
    """Whether a Redis server answers PING with PONG (not -LOADING) at ``path`` right now."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        probe.sendall(b"PING\r\n")
        return probe.recv(64).startswith(b"+PONG")
    except OSError:
        return False
    finally:
        probe.close()
