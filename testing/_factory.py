"""Brokers made on demand, each on a directory of its own, all stopped together."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from ._process import FSYNC_POLICIES, BrokerProcess

# sun_path holds 108 bytes on Linux, its terminating NUL included; like the CLI, stay below.
MAX_SOCKET_PATH = 103


class BrokerFactory:
    """Call it to start a broker: ``factory("--require-auth", fsync="never")`` returns a running
    :class:`BrokerProcess` on a new directory from ``make_directory()`` (its data in ``data/``,
    its log in ``broker.log``, its socket in ``broker.sock`` if that path is short enough for a
    Unix socket, else in a private directory under /tmp). :meth:`close` (or the end of a
    ``with`` block) stops every broker it started, by pid.

    ``fsync`` is the ``--fsync`` policy of the brokers not given one: always, interval or never.
    """

    def __init__(self, make_directory: Callable[[], Path], *, fsync: str = "always") -> None:
        _check_fsync(fsync)
        self.make_directory = make_directory
        self.fsync = fsync
        self.brokers: list[BrokerProcess] = []
        """Every broker started, in order."""
        self._socket_dirs: list[Path] = []

    def __call__(self, *args: str, fsync: str | None = None) -> BrokerProcess:
        """Start a broker with the ``serve`` options ``args``; it listens when this returns."""
        policy = self.fsync if fsync is None else fsync
        _check_fsync(policy)
        directory = self.make_directory()
        broker = BrokerProcess(
            directory / "data",
            self._socket_path(directory),
            directory / "broker.log",
            args=("--fsync", policy, *args),
        )
        self.brokers.append(broker)  # before the start: a start that fails still gets stopped
        broker.start()
        return broker

    def close(self) -> None:
        """Stop every broker started (SIGTERM; SIGKILL if one hangs), and remove the private
        socket directories."""
        try:
            for broker in self.brokers:
                broker.stop()
        finally:
            for directory in self._socket_dirs:
                shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> BrokerFactory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _socket_path(self, directory: Path) -> Path:
        socket = directory / "broker.sock"
        if len(os.fsencode(socket)) <= MAX_SOCKET_PATH:
            return socket
        # pytest's temporary directories can be longer than a socket path may be.
        short = Path(tempfile.mkdtemp(prefix="prontodb-", dir="/tmp"))
        self._socket_dirs.append(short)
        return short / "broker.sock"


def _check_fsync(policy: str) -> None:
    if policy not in FSYNC_POLICIES:
        raise ValueError(f"fsync policy {policy!r}: use one of {', '.join(FSYNC_POLICIES)}")
