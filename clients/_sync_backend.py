"""The sync client's I/O: blocking stdlib sockets and threading, under ``_anyio_backend``'s names.

The generated sync client (scripts/unasync.py) calls these exactly where the async client awaits
the anyio ones. Connection failures surface as :class:`OSError`; end of stream as ``b""``. Kept to
``_socket`` (not ``socket``, whose import costs the CLI 4 ms more) and ``_thread`` so the CLI,
which uses the sync client, starts fast: ``threading`` (about 0.7 ms) loads only for what needs
it, an :func:`Event` (a caller waiting on another's read) or a :class:`Renewing` thread.
"""

from __future__ import annotations

import _socket
import _thread
import time
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from collections.abc import Callable
    from threading import Event as Event
    from typing import Any, TypeVar

    _Opened = TypeVar("_Opened")

Lock = _thread.allocate_lock  # what threading.Lock is
sleep = time.sleep
# Threads can interleave anywhere, so the state the callers share needs a real lock here.
Mutex = _thread.allocate_lock

if not TYPE_CHECKING:

    def Event() -> Any:
        """A ``threading.Event`` (threading imported on first use)."""
        import threading

        return threading.Event()


class _Deadline:
    """Makes the socket's blocking calls raise TimeoutError after ``seconds`` inside the block."""

    __slots__ = ("_seconds", "_sock")

    def __init__(self, sock: _socket.socket, seconds: float | None) -> None:
        self._sock = sock
        self._seconds = seconds

    def __enter__(self) -> None:
        self._sock.settimeout(self._seconds)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sock.settimeout(None)


class Stream:
    """A connected socket: whole-frame writes, chunked reads, a deadline for the handshake."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock

    def send_all(self, data: bytes) -> None:
        """Write all of ``data``."""
        self._sock.sendall(data)

    def receive_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes, at least one; ``b""`` once the peer has closed its side."""
        return self._sock.recv(max_bytes)

    def deadline(self, seconds: float | None) -> AbstractContextManager[object]:
        """A ``with`` block whose socket calls raise TimeoutError after ``seconds`` (None: none)."""
        if seconds is None:
            return nullcontext()  # the socket blocks without a timeout already
        return _Deadline(self._sock, seconds)

    def close(self) -> None:
        """Close the socket; a thread blocked reading it wakes up with end of stream."""
        try:
            # close() alone does not wake a thread blocked in recv(); shutdown() does.
            self._sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass  # already reset by the peer
        self._sock.close()


def connect_unix(path: str, timeout: float | None) -> Stream:
    """Connect to a Unix socket; OSError if nothing listens, TimeoutError after ``timeout``."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return Stream(sock)


def connect_tcp(host: str, port: int, timeout: float | None, tls: Any = None) -> Stream:
    """Connect over TCP (no Nagle delay), with TLS if given a context; OSError if refused or the
    TLS handshake fails, TimeoutError after ``timeout``."""
    import socket  # for create_connection, which walks getaddrinfo's answers: TCP pays for it

    sock = socket.create_connection((host, port), timeout)
    try:
        # Requests are small frames that want an answer at once: do not hold them back.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)  # handshakes within the timeout
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return Stream(sock)


def Connecting(opened: _Opened) -> _Opened:  # named as the async backend's class
    """The sync client is connected by the time ``connect`` returns: nothing to wrap."""
    return opened


def run_blocking(work: Callable[[], None]) -> None:
    """Run ``work`` here: blocking is what this client does."""
    work()


def shielded() -> AbstractContextManager[object]:
    """Blocking calls are not cancelled from outside: nothing to shield from."""
    return nullcontext()


class Renewing:
    """Calls ``renew()`` every ``interval`` seconds, in a thread of its own, while the ``with``
    block runs. The first failure stops it; a thread cannot interrupt the block, so the block runs
    on (``lost(failure)`` may make the client's calls refuse meanwhile) and its end raises what
    ``lost`` returned."""

    def __init__(
        self, renew: Callable[[], object], interval: float, lost: Callable[[Exception], Exception]
    ) -> None:
        self._renew = renew
        self._interval = interval
        self._lost = lost  # turns the first failure into what the block's end raises
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="prontodb-renewing", daemon=True)
        self._failure: Exception | None = None

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        if self._failure is not None:
            raise self._failure

    def _keep(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._renew()
            except Exception as exc:
                self._failure = self._lost(exc)
                return
