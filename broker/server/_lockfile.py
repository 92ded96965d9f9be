"""The lock that keeps a second broker off a data directory, and says who holds it."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

LOCK_NAME = "broker.lock"


class AlreadyServing(Exception):
    """Another broker holds the data directory; the message names its pid and socket."""


class DataDirLock:
    """An exclusive ``flock`` on ``DATA_DIR/broker.lock``, held for the broker's lifetime.

    The kernel drops the lock when the process dies, however it dies, so a crashed broker never
    leaves a stale lock behind. The file's contents (pid, socket, tcp) are for the message a
    second broker prints, and for ``prontodb status`` when no broker answers.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, info: dict[str, Any]) -> None:
        """Take the lock and record ``info``; raise AlreadyServing if another process has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_info(fd)
            os.close(fd)
            raise AlreadyServing(
                f"Another broker (pid {holder.get('pid', '?')}, socket "
                f"{holder.get('socket') or '-'}) is serving {self.path.parent}; stop it with "
                "`prontodb stop`, or give this one another --data-dir."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.rewrite(info)

    def rewrite(self, info: dict[str, Any]) -> None:
        """Replace the recorded ``info`` (once the listeners' addresses are known)."""
        assert self._fd is not None, "acquire() first"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(info).encode() + b"\n", 0)

    def release(self) -> None:
        """Clear the record and drop the lock."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def _read_info(fd: int) -> dict[str, Any]:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}
