"""The async client's I/O: sockets and synchronisation from anyio (trio or asyncio).

The only module of the clients that imports anyio. ``_sync_backend`` has the same names with
blocking stdlib equivalents, so that the sync client is generated from the async one by
substitution (scripts/unasync.py). Connection failures surface as :class:`OSError`; end of stream
as ``b""``.
"""

from __future__ import annotations

import ssl
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType

import anyio
import anyio.abc

Lock = anyio.Lock
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

    async def send_all(self, data: bytes) -> None:
        """Write all of ``data``. Shielded from cancellation: a frame is written whole or the
        connection is broken, never left half-sent by a caller that gave up."""
        try:
            with anyio.CancelScope(shield=True):
                await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise OSError(f"cannot write to the broker: {exc!r}") from exc

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes, at least one; ``b""`` once the peer has closed its side.

        A cancelled read consumes nothing, so no received byte is ever lost.
        """
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


def shielded() -> AbstractContextManager[object]:
    """A block that an anyio cancellation does not interrupt (the give-back of a failed claim).
    Under asyncio a native ``Task.cancel()`` still can: anyio cannot shield from those."""
    return anyio.CancelScope(shield=True)
