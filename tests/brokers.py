"""Real broker processes for tests: started on a private directory, stopped by pid however a test ends.

``serve --ready-fd N`` writes one JSON line (pid, socket, tcp) to fd N once it listens, so a test
waits on that pipe instead of polling or sleeping.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 30.0  # seconds; generous for a loaded 2-core CI machine
STOP_TIMEOUT = 30.0


@dataclass
class BrokerProcess:
    """A broker started by :func:`start_broker`; ``url`` is its Unix socket's."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    socket: str
    tcp: str | None
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    http: str | None = None  # serve --http's address, with the port it got

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return "unix://" + self.socket

    @property
    def tcp_url(self) -> str:
        assert self.tcp is not None, "start the broker with tcp=True"
        return "tcp://" + self.tcp

    def terminate(self) -> int:
        """SIGTERM, then wait for a clean exit; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL: the crash case. Waits for the process to be gone."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(STOP_TIMEOUT)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def serve_command(*args: str) -> list[str]:
    """The argv that runs ``prontodb serve`` with this interpreter."""
    return [sys.executable, "-m", "prontodb.clients.cli", "serve", *args]


def start_broker(
    data_dir: Path,
    socket: Path | None = None,
    *,
    tcp: bool = False,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> BrokerProcess:
    """Start ``prontodb serve`` on ``data_dir`` and wait until it listens (in ``env``, else the
    test's environment)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    socket = socket or data_dir / "test.sock"
    log = data_dir.parent / f"{data_dir.name}.log"
    read_fd, write_fd = os.pipe()
    args = ["--data-dir", str(data_dir), "--socket", str(socket), "--ready-fd", str(write_fd)]
    if tcp:  # for the transport, not for tokens: tests of authentication start without this
        args += ["--tcp", "127.0.0.1:0", *([] if "--tls-cert" in extra else ["--insecure"])]
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            serve_command(*args, *extra),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            pass_fds=(write_fd,),
            env=env,
        )
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], START_TIMEOUT)
        line = os.read(read_fd, 65536) if ready else b""
    finally:
        os.close(read_fd)
    if not line:
        if process.poll() is None:
            process.kill()
        process.wait(STOP_TIMEOUT)
        raise RuntimeError(f"the broker did not start; its log:\n{log.read_text(errors='replace')}")
    info = json.loads(line)
    return BrokerProcess(
        process, data_dir, info["socket"], info.get("tcp"), log, dict(env or {}), info.get("http")
    )


@contextmanager
def running_broker(
    data_dir: Path, socket: Path | None = None, *, tcp: bool = False, extra: Sequence[str] = ()
) -> Iterator[BrokerProcess]:
    """A broker for the ``with`` block; killed by pid on the way out if it is still running."""
    broker = start_broker(data_dir, socket, tcp=tcp, extra=extra)
    try:
        yield broker
    finally:
        if broker.process.poll() is None:
            try:
                broker.terminate()
            except subprocess.TimeoutExpired:
                broker.kill()


FD_TIMEOUT = 10.0  # seconds for a broker to close the fds of connections that ended


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` has open (Linux /proc)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for_fds(broker: BrokerProcess, baseline: int, ping: Callable[[], object]) -> int:
    """The broker's fd count once back at ``baseline`` (sessions close their sockets as they
    end, asynchronously), or what it is at the deadline; ``ping`` keeps its loop turning."""
    deadline = time.monotonic() + FD_TIMEOUT
    while (count := open_fds(broker.pid)) > baseline and time.monotonic() < deadline:
        ping()
        time.sleep(0.01)  # a deadline loop, the last resort: nothing signals an fd's close
    return count
