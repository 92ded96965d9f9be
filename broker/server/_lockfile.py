"""The lock that keeps a second broker off a data directory, and says who holds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..storage import LockFile

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
        self._file = LockFile(self.path)

    def acquire(self, info: dict[str, Any]) -> None:
        """Take the lock and record ``info``; raise AlreadyServing if another process has it."""
        holder = self._file.try_acquire(info)
        if holder is not None:
            raise AlreadyServing(
                f"Another broker (pid {holder.get('pid', '?')}, socket "
                f"{holder.get('socket') or '-'}) is serving {self.path.parent}; stop it with "
                "`prontodb stop`, or give this one another --data-dir."
            )

    def rewrite(self, info: dict[str, Any]) -> None:
        """Replace the recorded ``info`` (once the listeners' addresses are known)."""
        self._file.rewrite(info)

    def release(self) -> None:
        """Clear the record and drop the lock."""
        self._file.release()
