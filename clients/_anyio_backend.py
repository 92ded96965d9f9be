"""The async client's I/O: sockets and synchronisation from anyio (trio or asyncio).

The only module of the clients that imports anyio. ``_sync_backend`` has the same names with
blocking stdlib equivalents, so that the sync client is generated from the async one by
substitution (scripts/unasync.py). Connection failures surface as :class:`OSError`; end of stream
as ``b""``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Coroutine, Generator
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.streams.tls
import anyio.to_thread


def Lock() -> anyio.Lock:  # named as the sync backend's threading.Lock
    """A lock whose uncontended acquire does not pass through the event loop (a request takes
    it once to send)."""
    return anyio.Lock(fast_acquire=True)


Event = anyio.Event
sleep = anyio.sleep


class Mutex:
    """Guards client state across sections that never await.

    Tasks of one event loop cannot interleave inside such a section, so it needs no lock: this
    one does nothing. The sync backend's is a real lock, because threads can interleave anywhere.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class Stream:
    """A connected socket: whole-frame writes, chunked reads, a deadline for the handshake."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        # A plain socket (no TLS) is written and read directly while that need not wait: each
        # anyio stream call would otherwise add a pass through the event loop to every request.
        # (Not under TLS, nor where asyncio's transports own the socket: there the raw socket is
        # a TransportSocket, which cannot send.)
        self._sock: socket.socket | None = None
        if not isinstance(stream, anyio.streams.tls.TLSStream):
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
            if isinstance(raw, socket.socket):
                self._sock = raw

    async def send_all(self, data: bytes) -> None:
        """Write all of ``data``. Shielded from cancellation: a frame is written whole or the
        connection is broken, never left half-sent by a caller that gave up."""
        if self._sock is not None:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise OSError(f"cannot write to the broker: {exc!r}") from exc
            if sent == len(data):
                return
            data = data[sent:]  # the socket's buffer is full: wait as the stream does
        try:
            with anyio.CancelScope(shield=True):
                await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise OSError(f"cannot write to the broker: {exc!r}") from exc

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes, at least one; ``b""`` once the peer has closed its side.

        A cancelled read consumes nothing, so no received byte is ever lost.
        """
        sock = self._sock
        if sock is not None:
            await anyio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while True:
                try:
                    data = sock.recv(max_bytes)  # b"" at the end of the stream
                except BlockingIOError:
                    pass
                except OSError as exc:
                    raise OSError(f"cannot read from the broker: {exc!r}") from exc
                else:
                    if not waited:  # a stream that never makes us wait must not starve others
                        await anyio.lowlevel.cancel_shielded_checkpoint()
                    return data
                try:
                    await anyio.wait_readable(sock)
                except anyio.ClosedResourceError as exc:  # closed by another task
                    raise OSError(f"cannot read from the broker: {exc!r}") from exc
                waited = True
        try:
            return await self._stream.receive(max_bytes)
        except anyio.EndOfStream:
            return b""
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise OSError(f"cannot read from the broker: {exc!r}") from exc

    def deadline(self, seconds: float | None) -> AbstractContextManager[object]:
        """A ``with`` block that raises TimeoutError after ``seconds`` (None: no limit)."""
        if seconds is None:
            return nullcontext()  # a cancel scope costs 9 µs a read: a watch reads per event
        return anyio.fail_after(seconds)

    async def aclose(self) -> None:
        """Close the socket; a task blocked reading it gets OSError."""
        if self._sock is not None:
            # Wake a task waiting in wait_readable on it (anyio's own close does not know of
            # that wait), before the fd number can be reused.
            anyio.notify_closing(self._sock)
        await self._stream.aclose()


async def connect_unix(path: str, timeout: float | None) -> Stream:  # noqa: ASYNC109
    """Connect to a Unix socket; OSError if nothing listens, TimeoutError after ``timeout``."""
    with anyio.fail_after(timeout):
        return Stream(await anyio.connect_unix(path))


async def connect_tcp(
    host: str,
    port: int,
    timeout: float | None,  # noqa: ASYNC109
    tls: ssl.SSLContext | None = None,
) -> Stream:
    """Connect over TCP (no Nagle delay), with TLS if given a context; OSError if refused or the
    TLS handshake fails, TimeoutError after ``timeout``."""
    with anyio.fail_after(timeout):
        if tls is None:
            return Stream(await anyio.connect_tcp(host, port))
        try:
            stream = await anyio.connect_tcp(host, port, ssl_context=tls, tls_hostname=host)
        except anyio.BrokenResourceError as exc:  # the handshake failed: say why, as ssl does
            cause = exc.__cause__
            if isinstance(cause, ssl.SSLError):
                raise cause from None
            raise ssl.SSLError(f"TLS handshake failed: {cause or exc}") from exc
        return Stream(stream)


class _Closable(Protocol):
    async def aclose(self) -> None: ...


_Opened = TypeVar("_Opened", bound=_Closable)


class Connecting(Generic[_Opened]):
    """A connection being opened: ``await`` it for the client, or enter it with ``async with``
    (which closes the client on leaving), as httpx's and redis-py's clients allow."""

    def __init__(self, opening: Coroutine[Any, Any, _Opened]) -> None:
        self._opening = opening
        self._opened: _Opened | None = None

    def __await__(self) -> Generator[Any, None, _Opened]:
        return self._opening.__await__()

    async def __aenter__(self) -> _Opened:
        self._opened = await self._opening
        return self._opened

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._opened is not None:
            await self._opened.aclose()


async def run_blocking(work: Callable[[], None]) -> None:
    """Run blocking ``work`` (starting a broker: file locks, a child's ready pipe) in a worker
    thread, so that the event loop goes on meanwhile."""
    await anyio.to_thread.run_sync(work)


def shielded() -> AbstractContextManager[object]:
    """A block that an anyio cancellation does not interrupt (the give-back of a failed claim).
    Under asyncio a native ``Task.cancel()`` still can: anyio cannot shield from those."""
    return anyio.CancelScope(shield=True)


class Renewing:
    """Awaits ``renew()`` every ``interval`` seconds, in a task of its own, while the ``async
    with`` block runs. The first failure stops it and cancels the block, whose end then raises
    ``lost(failure)`` (a session kept alive is lost: the block must not go on as if it held it)."""

    def __init__(
        self,
        renew: Callable[[], Coroutine[Any, Any, object]],
        interval: float,
        lost: Callable[[Exception], Exception],
    ) -> None:
        self._renew = renew
        self._interval = interval
        self._lost = lost  # turns the first failure into what the block's end raises
        self._group = anyio.create_task_group()
        # The block's own scope, inside the group's: what a failed renewal cancels, so that the
        # block's exceptions never pass through the group (which would wrap them in a group).
        self._block = anyio.CancelScope()
        self._failure: Exception | None = None

    async def __aenter__(self) -> None:
        await self._group.__aenter__()
        self._group.start_soon(self._keep)
        self._block.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        absorbed = bool(self._block.__exit__(exc_type, exc, tb))  # its own cancellation only
        self._group.cancel_scope.cancel()  # the renewals end with the block
        await self._group.__aexit__(None, None, None)
        if self._failure is not None:
            raise self._failure
        return absorbed

    async def _keep(self) -> None:
        while True:
            await anyio.sleep(self._interval)
            try:
                await self._renew()
            except Exception as exc:
                self._failure = self._lost(exc)
                self._block.cancel()
                return
