"""This user's running brokers, as their roster entries say (``prontodb ps`` and ``stop --all``).

Stdlib only. Each broker ``prontodb serve`` runs holds an exclusive ``flock`` on its entry,
``ROSTER/broker-PID-NANOSECONDS.json``, for as long as it runs (broker/server/_roster.py). An entry
is read under a shared lock taken without waiting: refused, the broker is alive; granted, it is
gone (killed, however: the kernel drops a dead process's locks), and the entry is deleted. The
lock, not the pid, says who is alive, so a pid reused by another process is never taken for a
broker.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ENTRY_PREFIX = "broker-"
ENTRY_SUFFIX = ".json"
# An empty entry is one a broker is writing now (it locks, then writes); one still empty after
# this long belongs to a broker that died in between.
BIRTH = 60.0


def live_brokers(directories: list[str]) -> list[dict[str, Any]]:
    """The entries of the brokers running now, oldest first, each with ``entry`` (its path);
    stale entries found on the way are deleted."""
    found: list[dict[str, Any]] = []
    for directory in directories:
        try:
            names = os.listdir(directory)
        except OSError:  # no roster yet (no broker ever ran), or not ours to read
            continue
        for name in names:
            if name.startswith(ENTRY_PREFIX) and name.endswith(ENTRY_SUFFIX):
                record = _read_live(os.path.join(directory, name))
                if record is not None:
                    found.append(record)
    found.sort(key=lambda record: (_number(record.get("started")), record["entry"]))
    return found


def _read_live(path: str) -> dict[str, Any] | None:
    """The record of a live broker's entry; None for a stale one (deleted) or one being born."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # gone meanwhile: its broker stopped
    try:
        st = os.fstat(fd)
        if st.st_size == 0 and time.time() - st.st_mtime < BIRTH:
            return None  # its broker is writing it: listed next time
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _record(fd, path)
        _delete_if_same(fd, path)  # nobody holds it: its broker is gone
        return None
    finally:
        os.close(fd)


def _record(fd: int, path: str) -> dict[str, Any] | None:
    try:
        record = json.loads(os.pread(fd, 65536, 0))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return None
    record["entry"] = path
    return record


def _delete_if_same(fd: int, path: str) -> None:
    try:
        named = os.stat(path)
        opened = os.fstat(fd)
        if (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino):
            os.unlink(path)
    except OSError:
        pass  # removed by another reader, or not ours to remove: only a note


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def signal_if_live(record: dict[str, Any], signum: int = signal.SIGTERM) -> int | None:
    """Send ``signum`` to the broker of ``record`` if its entry is still locked: a pidfd to wait
    on for its exit (the caller closes it), or None if it was gone already.

    The pidfd is opened first, then the lock checked: a lock still held proves its broker was
    alive, so it had that pid, when the pidfd was opened, and the signal can reach no other
    process, whatever has the pid since.
    """
    try:
        pidfd = os.pidfd_open(record["pid"])
    except ProcessLookupError:
        return None
    try:
        if not _still_locked(record["entry"]):
            os.close(pidfd)
            return None
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:  # it exited in between
        os.close(pidfd)
        return None
    except BaseException:
        os.close(pidfd)
        raise
    return pidfd


def _still_locked(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # deleted: its broker stopped
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
