"""The embedded default: start a broker in the background when nothing answers on the default socket.

Stdlib only, and imported only when a connection was refused, so it costs the fast path nothing.

Several CLIs may find no broker at the same moment (a script starting ten workers at once). They
serialise on an exclusive ``flock`` of ``DATA_DIR/autostart.lock``; whoever holds it checks the socket
again (an earlier holder may have started the broker meanwhile) and only then starts one. The broker
reports on a pipe once it listens (``serve --ready-fd``), so nobody polls the socket waiting for it.
The broker's own lock on the data directory (``broker.lock``) is the last line of defence: a second
broker started by any other route exits at once and this module reports what its log says.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import sys
import time

LOCK_NAME = "autostart.lock"
BROKER_LOCK_NAME = "broker.lock"  # held by a running broker (broker/server/_lockfile.py)
LOG_NAME = "broker.log"
# A broker on a loaded two-core machine opens in well under a second; ten seconds leaves room for
# replaying a large log. Waiting for the lock covers one full start by another CLI, plus a margin.
START_TIMEOUT = 10.0
LOCK_TIMEOUT = START_TIMEOUT + 5.0
LOCK_POLL = 0.01  # seconds between tries of the lock; flock has no timeout of its own
LOG_TAIL_LINES = 10
# An auto-started broker stops after this long with no connection (serve --idle-exit), so that the
# brokers of data directories no longer used do not pile up; $PRONTODB_IDLE_EXIT (seconds, 0:
# never) overrides it. Ten minutes keeps one up across the pauses of an interactive session.
IDLE_EXIT = 600.0
IDLE_EXIT_VARIABLE = "PRONTODB_IDLE_EXIT"


class AutostartError(Exception):
    """The background broker could not be started; the message says why and where its log is."""


def answers(socket_path: str) -> bool:
    """Whether something accepts connections on the Unix socket ``socket_path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
    except OSError:
        return False
    finally:
        sock.close()
    return True


def start_default_broker() -> None:
    """Return once a broker serves the default data directory on the default socket (the ones
    the environment names, clients/_locations.py), starting one if none answers.

    Raises ProntoError ``unavailable`` saying why none could be started.
    """
    from prontodb.protocol import ErrorCode, ProntoError

    from ._locations import default_data_dir, default_socket_path

    data_dir = default_data_dir()
    try:
        ensure_broker(data_dir, default_socket_path(data_dir))
    except AutostartError as exc:
        raise ProntoError(ErrorCode.UNAVAILABLE, str(exc)) from None
    except OSError as exc:  # the data directory cannot be created or locked
        raise ProntoError(
            ErrorCode.UNAVAILABLE,
            f"Cannot start a broker in {data_dir} ({exc.strerror}); set PRONTODB_DATA_DIR to a "
            "writable directory, or pass --url.",
        ) from None


def ensure_broker(data_dir: str, socket_path: str, *, timeout: float = START_TIMEOUT) -> None:
    """Return once a broker serves ``data_dir`` on ``socket_path``, starting one if none answers.

    Raises :class:`AutostartError` if the lock cannot be had in time or the broker does not come up.
    """
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    lock_path = os.path.join(data_dir, LOCK_NAME)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _lock(fd, lock_path)
        # Under the lock: a CLI that held it before us may have started the broker already.
        if answers(socket_path):
            return
        # A broker that still holds the data directory but no longer listens is stopping: wait
        # for it to go rather than start one that would refuse to run beside it.
        if _wait_for_holder(data_dir, socket_path):
            return
        pid = _spawn_and_wait(data_dir, socket_path, timeout)
        # The pid of the broker this lock file last started, for people (and tests) looking for it.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{pid}\n".encode(), 0)
    finally:
        os.close(fd)  # closing the descriptor drops the flock


def _lock(fd: int, path: str) -> None:
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise AutostartError(
                    f"Another prontodb has been starting the broker for over {LOCK_TIMEOUT:.0f} s "
                    f"(it holds {path}); check `prontodb status`, or start one with `prontodb serve`."
                ) from None
            time.sleep(LOCK_POLL)


def _wait_for_holder(data_dir: str, socket_path: str) -> bool:
    """Wait while a broker holds ``DATA_DIR/broker.lock`` without answering on ``socket_path``.

    True if it came to answer meanwhile (it was starting), False once the lock is free. Raises
    AutostartError if it serves another socket, or neither answers nor goes in time.
    """
    try:
        fd = os.open(os.path.join(data_dir, BROKER_LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return False  # nobody holds it: no broker runs
            except BlockingIOError:
                pass
            holder = _holder(fd)
            other = holder.get("socket")
            if isinstance(other, str) and other != socket_path:
                raise AutostartError(
                    f"A broker (pid {holder.get('pid', '?')}) serves {data_dir} on another socket, "
                    f"{other}; use --url unix://{other} (or PRONTODB_SOCKET), or stop it."
                )
            if answers(socket_path):
                return True
            if time.monotonic() >= deadline:
                raise AutostartError(
                    f"The broker (pid {holder.get('pid', '?')}) holding {data_dir} has not "
                    f"answered on {socket_path} for {LOCK_TIMEOUT:.0f} s; see "
                    f"{os.path.join(data_dir, LOG_NAME)}, or stop it."
                )
            time.sleep(LOCK_POLL)
    finally:
        os.close(fd)  # also drops a shared lock taken above


def _holder(fd: int) -> dict[str, object]:
    """What the broker holding the lock wrote into it (pid, socket), or {}."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def idle_exit() -> float:
    """The ``--idle-exit`` an auto-started broker gets: $PRONTODB_IDLE_EXIT, else IDLE_EXIT."""
    text = os.environ.get(IDLE_EXIT_VARIABLE) or ""
    if not text:
        return IDLE_EXIT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise AutostartError(
            f"{IDLE_EXIT_VARIABLE}={text!r} is not a number of seconds (0 for never); fix or "
            "unset it."
        )
    return seconds


def _spawn_and_wait(data_dir: str, socket_path: str, timeout: float) -> int:
    """Start ``prontodb serve`` detached; return its pid once it listens."""
    idle = idle_exit()  # before anything is opened: a bad value starts nothing
    log_path = os.path.join(data_dir, LOG_NAME)
    read_fd, write_fd = os.pipe()  # both non-inheritable (PEP 446) ...
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.set_inheritable(write_fd, True)  # ... except the end the broker writes to
        argv = [
            sys.executable,
            # -P: do not put the caller's working directory on sys.path, where a stray
            # prontodb.py could shadow the installed package.
            "-P",
            "-m",
            "prontodb.clients.cli",
            "serve",
            "--data-dir",
            data_dir,
            "--socket",
            socket_path,
            "--log-file",
            log_path,
            "--ready-fd",
            str(write_fd),
            "--idle-exit",
            repr(idle),
            "--auto-started",
        ]
        # posix_spawn rather than subprocess: a new session (so the terminal's signals do not reach
        # the broker), no Popen object to warn that its child outlives it, and no subprocess import.
        pid = os.posix_spawn(
            sys.executable,
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    except OSError as exc:
        os.close(read_fd)
        raise AutostartError(
            f"Could not start a broker ({exc.strerror}); start one with `prontodb serve`."
        ) from None
    finally:
        os.close(write_fd)
        os.close(log_fd)
    try:
        line = _read_line(read_fd, timeout)
    finally:
        os.close(read_fd)
    if line is None:
        raise AutostartError(
            f"The broker started in the background (pid {pid}) did not report ready within "
            f"{timeout:.0f} s (a large database takes a while to open); retry shortly, and see "
            f"{log_path} if it persists."
        )
    if not line:
        status = _reap(pid)
        if answers(socket_path):  # it lost a race to a broker started some other way
            return pid
        raise AutostartError(
            f"The broker started in the background exited ({status}) before listening; "
            f"{log_path} ends with:\n{_tail(log_path)}"
        )
    try:
        return int(json.loads(line)["pid"])
    except (ValueError, KeyError, TypeError):
        return pid


def _read_line(fd: int, timeout: float) -> bytes | None:
    """The ready line (b"" on EOF), or None if nothing came before the timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return data
        data += chunk
    return data


def _reap(pid: int) -> str:
    """Collect the exited broker's status (it is our child) and describe it."""
    # EOF on the ready pipe means it is exiting; allow it a moment to finish doing so.
    deadline = time.monotonic() + 5.0
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return "status unknown"
        if done:
            code = os.waitstatus_to_exitcode(status)
            return f"exit status {code}" if code >= 0 else f"signal {-code}"
        if time.monotonic() >= deadline:
            return "still running"
        time.sleep(LOCK_POLL)


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 16384))
            lines = log.read().decode(errors="replace").splitlines()
    except OSError as exc:
        return f"(cannot read it: {exc.strerror})"
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(nothing)"
