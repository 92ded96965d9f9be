"""A ``prontodb serve`` process for tests: started on a directory of its own, stopped by its pid.

Stdlib only. The broker says it listens by writing one JSON line to a pipe (``serve
--ready-fd``), so a start waits on that pipe, never on a sleep or a poll of the socket.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

START_TIMEOUT = 30.0  # seconds for the ready line; a loaded 2-core CI machine needs well under 1
STOP_TIMEOUT = 10.0  # seconds after SIGTERM before SIGKILL
LOG_TAIL_BYTES = 4096
FSYNC_POLICIES = ("always", "interval", "never")


class BrokerStartError(RuntimeError):
    """The broker exited, or did not say it listens in time; the message ends with its log."""


class BrokerProcess:
    """A ProntoDB broker run as a process (``prontodb serve``) for tests.

    ``data_dir``, ``socket`` and ``log`` are its paths; ``args`` are extra ``serve`` options
    (``--fsync never``, ``--require-auth``, ``--tcp 127.0.0.1:0 --insecure``, ...). It is
    made stopped: :meth:`start` runs it, :meth:`stop` ends it with SIGTERM (SIGKILL if it hangs),
    :meth:`kill` with SIGKILL (a crash), and :meth:`start` again runs a new process on the same
    directory and socket, so :attr:`url` stays the same (a TCP port does not: it is picked anew).
    """

    def __init__(
        self, data_dir: Path, socket: Path, log: Path, *, args: Sequence[str] = ()
    ) -> None:
        self.data_dir = data_dir
        self.socket = socket
        self.log = log
        self.args = tuple(args)
        self.tcp_url: str | None = None
        """``tcp://host:port`` once started with ``--tcp``, else None."""
        self._process: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None  # the write end of the pipe the broker watches

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<BrokerProcess {self.url} {state}>"

    # -- what it is --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``unix://`` and its socket: what ``Client.connect`` and ``$PRONTODB_URL`` take."""
        return "unix://" + str(self.socket)

    @property
    def pid(self) -> int | None:
        """The pid of its last process (still set once it has exited), or None before a start."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Whether its process is running (one that exited is reaped by this check)."""
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status of its last process: None while it runs, -N if signal N ended it."""
        return None if self._process is None else self._process.poll()

    @property
    def admin_token(self) -> str:
        """The token of the user ``admin`` the broker made in a new data directory, for
        brokers started with ``--require-auth`` (or tests of TCP)."""
        return (self.data_dir / "admin.token").read_text().strip()

    def environ(self) -> dict[str, str]:
        """The environment variables that point a ``prontodb`` CLI or a client at it."""
        return {"PRONTODB_URL": self.url}

    def log_text(self) -> str:
        """What the broker has written to its log (stdout and stderr) so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- running it ---------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Run the broker and return once it listens; :class:`BrokerStartError` if it exits
        first (its data directory is another broker's, a bad option, ...) or takes too long."""
        if self.running:
            raise RuntimeError(f"{self!r} is running already")
        self._close_lifeline()  # a process that exited by itself left its pipe open
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ready_read, ready_write = os.pipe()
        life_read, self._lifeline = os.pipe()
        argv = [
            *(sys.executable, "-P", "-m", "prontodb.testing._serve", str(life_read), "serve"),
            *("--data-dir", str(self.data_dir), "--socket", str(self.socket)),
            *("--ready-fd", str(ready_write), *self.args),
        ]
        try:
            with self.log.open("ab") as log:
                # A session of its own: a Ctrl-C meant for pytest does not stop the broker under
                # the tests that are finishing; pytest's teardown (or the pipe) stops it.
                self._process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(ready_write, life_read),
                    start_new_session=True,
                )
        except BaseException:
            os.close(ready_read)
            self._close_lifeline()
            raise
        finally:
            os.close(ready_write)
            os.close(life_read)
        try:
            line = _read_line(ready_read, timeout)
        finally:
            os.close(ready_read)
        if line is None:
            self._abandon(f"did not say it listens within {timeout:g} s")
        if not line:
            self._abandon("exited before it listened")
        tcp = json.loads(line).get("tcp")
        self.tcp_url = None if tcp is None else "tcp://" + tcp

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, and wait for the clean shutdown; SIGKILL if it has not ended in ``timeout``
        seconds. Returns its exit status (0: clean), or None if it was never started."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_lifeline()
        return process.returncode

    def wait(self, timeout: float | None = STOP_TIMEOUT) -> int:
        """Wait for the process to exit by itself (after ``client.stop()``, say); its exit
        status. ``subprocess.TimeoutExpired`` if it still runs after ``timeout`` seconds."""
        if self._process is None:
            raise RuntimeError(f"{self!r} was never started")
        return self._process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, the crash case: no clean shutdown, the data directory left as a crash leaves
        it. Returns once the process is gone."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._close_lifeline()

    def restart(self) -> None:
        """:meth:`stop` (clean), then :meth:`start` on the same directory and socket."""
        self.stop()
        self.start()

    def _abandon(self, why: str) -> NoReturn:
        self.kill()
        raise BrokerStartError(f"The broker {why}; {self.log} ends with:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        text = self.log_text()[-LOG_TAIL_BYTES:]
        return text or "(nothing)"

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None


def _read_line(fd: int, timeout: float) -> bytes | None:
    """One line from ``fd``: b"" if it closed first, None if the timeout came first."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return b""
        data += chunk
    return data
