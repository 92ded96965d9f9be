"""Exclusive locks on files: one writer per database directory, and who holds the lock.

An ``flock`` belongs to an open file description, so it conflicts with every other opening of the
file, in another process or in this one, and the kernel drops it when its holder dies, however it
dies: a crash never leaves a stale lock. The file's content (JSON) only says who holds it, for
the message the next opener reads.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ._errors import StorageError
from ._layout import LOCK_NAME


class LockFile:
    """An exclusive, non-blocking ``flock`` on ``path``, recording what its holder says of itself.

    The one flock primitive of the broker: storage holds one per open database directory
    (:class:`DirectoryLock`), the server one on its data directory. With ``remove``, the file
    exists only while someone holds it: release deletes it, and an opener that locked a file its
    holder deleted meanwhile lets go of it and locks the one now at ``path``.
    """

    def __init__(self, path: Path, *, remove: bool = False) -> None:
        self.path = path
        self._remove = remove
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def try_acquire(self, info: Mapping[str, Any]) -> dict[str, Any] | None:
        """Take the lock and record ``info`` in the file: None. If another open file holds it,
        take nothing and return what the holder recorded (``{}`` if nothing readable).

        OSError if the file cannot be made or opened.
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this object")
        # Each retry means another holder released (and deleted) the file meanwhile.
        for _ in range(_RETRIES):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_info(fd)
                os.close(fd)
                return holder
            except BaseException:
                os.close(fd)
                raise
            if _is_at(fd, self.path):
                break
            os.close(fd)  # deleted by its last holder: nobody else will lock it, so lock anew
        else:
            return {}
        self._fd = fd
        try:
            self.rewrite(info)
        except BaseException:
            self.release()
            raise
        return None

    def rewrite(self, info: Mapping[str, Any]) -> None:
        """Replace what the file records about the holder."""
        assert self._fd is not None, "try_acquire() first"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(dict(info)).encode() + b"\n", 0)

    def release(self) -> None:
        """Clear the record (or delete the file) and drop the lock; harmless when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Only the file this object locked: the name may since belong to another holder
            # (a directory renamed aside, and a new one made in its place).
            if self._remove and _is_at(fd, self.path):
                os.unlink(self.path)
            else:
                os.ftruncate(fd, 0)
        except OSError:
            pass  # only a note for other openers; the flock goes with the close regardless
        finally:
            os.close(fd)  # closing the last descriptor of the file description drops the flock


_RETRIES = 100


def _is_at(fd: int, path: Path) -> bool:
    """Whether ``fd`` is the file that ``path`` names now."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _read_info(fd: int) -> dict[str, Any]:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class DirectoryLocked(StorageError):
    """Another opener holds the database directory: another process, or another open object in
    this one. ``pid`` is the holder's, when it recorded one; the message names both."""

    def __init__(self, directory: Path, pid: int | None) -> None:
        self.directory = directory
        self.pid = pid
        if pid is not None and pid == os.getpid():
            text = (
                f"{directory} is already open in this process (pid {pid}); close the database "
                "opened there before opening it again."
            )
        else:
            holder = "" if pid is None else f" (pid {pid})"
            text = (
                f"{directory} is open in another broker or program{holder}; close the database "
                "there or stop that process (a broker: `prontodb stop`), then try again."
            )
        super().__init__(text)


class DirectoryLock:
    """The exclusive lock on a database directory (``DIR/LOCK``), with the holder's pid in it.

    ``Database.open`` (``SegmentStorage.open(..., lock=True)``) takes one for as long as the
    directory is open, so a second opener, in this process or another, gets
    :class:`DirectoryLocked` rather than a second writer on one log. Hold one yourself
    (``with DirectoryLock(path):``) to change the files of a directory that is not open, or to
    open it (``lock=`` this object) without letting go in between. The ``LOCK`` file exists while
    the lock is held (or its holder crashed); release deletes it. The directory must exist.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._file = LockFile(self.directory / LOCK_NAME, remove=True)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._file.held

    def acquire(self) -> Self:
        """Take the lock: DirectoryLocked if another opener has it, OSError if the file cannot be
        made (a missing or read-only directory)."""
        holder = self._file.try_acquire({"pid": os.getpid()})
        if holder is not None:
            pid = holder.get("pid")
            raise DirectoryLocked(self.directory, pid if isinstance(pid, int) else None)
        return self

    def release(self) -> None:
        """Let the next opener in; harmless when not held."""
        self._file.release()

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"DirectoryLock({str(self.directory)!r}, held={self.held})"
