"""A small HTTP/1.1 server for the broker's own pages (``serve --http``): h11 over trio streams.

h11 (by trio's authors) is the protocol alone: it parses and frames, and this module does the I/O,
so the server runs in the broker's own trio loop and nursery, with no second event loop or thread
(hypercorn's trio worker would bring a whole ASGI stack for a few routes). Routes are exact paths
mapped to handlers; a handler answers with a body, or with a producer that writes chunks until it
returns or the client goes (what Server-Sent Events need): each write waits for the socket, so
the client's reading sets the producer's pace and nothing queues in between. Everything a client can make it hold is
bounded: the request head's size, the body's, the connections at once, the time to send a request
and to take an answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import h11
import trio

logger = logging.getLogger("prontodb.server")

MAX_HEAD = 16 * 1024  # bytes of a request line and headers; past it: 431
MAX_BODY = 4096  # bytes of a request body (these routes take none); past it: 413
MAX_CONNECTIONS = 64  # open at once; past it a connection is answered 503 and closed
READ_TIMEOUT = 10.0  # seconds a client has to send its request (idle between requests too)
SEND_TIMEOUT = 30.0  # seconds an answer, or one chunk of a stream, may take to be taken
LINGER = 1.0  # seconds a refused client's unread bytes are drained for (see _linger)
LINGER_BYTES = 64 * 1024
RECEIVE_SIZE = 16 * 1024
METHODS = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request as a handler sees it: header names in lower case (the last of a repeated
    name wins)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]

    def bearer(self) -> str | None:
        """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None


# Sends one chunk of a streamed answer; returns once the socket took it (a client that takes
# none for ``send_timeout`` is dropped: the producer is cancelled).
Write = Callable[[bytes], Awaitable[None]]


@dataclass(slots=True)
class HttpResponse:
    """An answer: ``body``, or the chunks ``stream(write)`` writes (sent as they come, chunked,
    until it returns or the client goes, which cancels it; the connection closes after it)."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Callable[[Write], Awaitable[None]] | None = None


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
# Given every request before its route: an answer refuses it (a 401), None lets it through.
Guard = Callable[[HttpRequest], HttpResponse | None]


def text(status: int, message: str, **extra: Any) -> HttpResponse:
    """A plain-text answer of one line."""
    headers = [(name.replace("_", "-"), str(value)) for name, value in extra.items()]
    return HttpResponse(status, (message + "\n").encode(), headers=headers)


class _Refused(Exception):
    """A request answered with an error and the connection closed (what h11 cannot parse)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HttpServer:
    """Serves ``routes`` (exact paths; add more before serving) on the listeners it is given."""

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        server_name: str,
        guard: Guard | None = None,
        max_connections: int = MAX_CONNECTIONS,
        read_timeout: float = READ_TIMEOUT,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self.routes: dict[str, Handler] = dict(routes)
        self.server_name = server_name
        self.guard = guard
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.send_timeout = send_timeout
        self.connections = 0  # open now

    async def serve(self, listeners: Sequence[trio.abc.Listener[Any]]) -> None:
        """Accept and serve until cancelled; the connections end with it. (trio's
        serve_listeners also rides out a failed accept, e.g. out of file descriptors.)"""
        await trio.serve_listeners(self.handle, list(listeners))

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one connection: its requests one after the other (kept alive) until it closes,
        goes quiet for ``read_timeout``, or sends what cannot be answered."""
        try:
            if self.connections >= self.max_connections:
                await self._send_raw(stream, 503, "Too many connections; try again shortly.")
                await _linger(stream)
                return
            self.connections += 1
            try:
                await self._serve(
                    stream, h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
                )
            finally:
                self.connections -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass  # the client went (or a TLS handshake failed): nothing to answer
        except Exception:  # a bug of ours must not take the broker down
            logger.exception("http: a connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.abc.Stream, conn: h11.Connection) -> None:
        while True:
            try:
                request = await self._next_request(stream, conn)
            except _Refused as refused:
                await self._send_error(stream, conn, refused.status, refused.message)
                await _linger(stream)
                return
            if request is None:
                return
            response = await self._respond(request)
            if not await self._send(stream, conn, request, response):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _next_request(
        self, stream: trio.abc.Stream, conn: h11.Connection
    ) -> HttpRequest | None:
        """The next request, its body read (and dropped); None once the client closed or went
        quiet. _Refused for one that cannot be served."""
        request: HttpRequest | None = None
        body = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Refused(exc.error_status_hint, f"Bad request: {exc}.") from None
            if event is h11.NEED_DATA:
                with trio.move_on_after(self.read_timeout):
                    conn.receive_data(bytes(await stream.receive_some(RECEIVE_SIZE)))
                    continue
                return None  # quiet too long: close, whether a request was half sent or not
            if isinstance(event, h11.Request):
                # h11 bounds a head still coming; one that came whole in a read is checked here.
                size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if size > MAX_HEAD:
                    raise _Refused(431, f"Request heads are limited to {MAX_HEAD} bytes.")
                request = _request(event)
            elif isinstance(event, h11.Data):
                body += len(event.data)
                if body > MAX_BODY:
                    raise _Refused(413, f"Request bodies are limited to {MAX_BODY} bytes.")
            elif isinstance(event, h11.EndOfMessage):
                return request
            else:  # ConnectionClosed
                return None

    async def _respond(self, request: HttpRequest) -> HttpResponse:
        if request.method not in METHODS:
            return text(405, f"Only {' and '.join(METHODS)} are served.", allow=", ".join(METHODS))
        if self.guard is not None:
            refused = self.guard(request)
            if refused is not None:
                return refused
        handler = self.routes.get(request.path)
        if handler is None:
            return text(404, f"Nothing at {request.path}; try {', '.join(sorted(self.routes))}.")
        try:
            return await handler(request)
        except Exception:
            logger.exception("http: %s %s failed", request.method, request.path)
            return text(500, "The broker failed to answer; see its log.")

    async def _send(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection,
        request: HttpRequest,
        response: HttpResponse,
    ) -> bool:
        """Send ``response``; whether the connection may serve another request."""
        headers = [
            ("server", self.server_name),
            ("content-type", response.content_type),
            *response.headers,
        ]
        chunks = response.stream
        if chunks is not None:
            headers += [("cache-control", "no-cache"), ("connection", "close")]
        else:
            headers.append(("content-length", str(len(response.body))))
        with trio.move_on_after(self.send_timeout) as sending:
            await stream.send_all(
                conn.send(
                    h11.Response(
                        status_code=response.status,
                        headers=headers,
                        reason=_reason(response.status),
                    )
                )
            )
            if chunks is None:
                if request.method != "HEAD" and response.body:
                    await stream.send_all(conn.send(h11.Data(data=response.body)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                return True
        if chunks is not None and not sending.cancelled_caught and request.method != "HEAD":
            await self._stream(stream, conn, chunks)
        return False

    async def _stream(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection,
        produce: Callable[[Write], Awaitable[None]],
    ) -> None:
        """Send each chunk ``produce`` writes, until it returns or the client goes (closes, or
        sends anything: it gets no more requests served on this connection); either way
        ``produce`` is over when this returns."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_client_goes, stream, nursery.cancel_scope)

            async def send(event: h11.Data | h11.EndOfMessage) -> None:
                gone = False
                with trio.move_on_after(self.send_timeout) as sending:
                    try:
                        await stream.send_all(conn.send(event))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        gone = True  # reset before the reader below saw it close
                if gone or sending.cancelled_caught:  # gone, or it does not read: drop it
                    nursery.cancel_scope.cancel()
                    await trio.lowlevel.checkpoint()  # raises Cancelled: the producer ends

            async def write(chunk: bytes) -> None:
                await send(h11.Data(data=chunk))

            await produce(write)
            await send(h11.EndOfMessage())
            nursery.cancel_scope.cancel()

    async def _send_error(
        self, stream: trio.abc.Stream, conn: h11.Connection, status: int, message: str
    ) -> None:
        """Answer what h11 could not parse, then close."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = (message + "\n").encode()
        headers = [
            ("server", self.server_name),
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        with trio.move_on_after(self.send_timeout):
            await stream.send_all(
                conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
            )
            await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))

    async def _send_raw(self, stream: trio.abc.Stream, status: int, message: str) -> None:
        """An answer before any request was read (no h11 connection may send one then)."""
        body = (message + "\n").encode()
        head = (
            f"HTTP/1.1 {status} {_reason(status)}\r\nserver: {self.server_name}\r\n"
            f"content-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        with trio.move_on_after(self.send_timeout):
            await stream.send_all(head.encode() + body)


async def _linger(stream: trio.abc.Stream) -> None:
    """Close our side, then read what the client still sends (a while, a little) before the
    socket closes: closing with its bytes unread would reset the connection, and the client
    could lose the answer it was just sent."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()
    drained = 0
    with trio.move_on_after(LINGER):
        while drained < LINGER_BYTES and (data := await stream.receive_some(RECEIVE_SIZE)):
            drained += len(data)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _request(event: h11.Request) -> HttpRequest:
    target = event.target.decode("latin-1")
    path, _, query = target.partition("?")
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
    return HttpRequest(event.method.decode("latin-1"), path, query, headers)


async def _until_client_goes(stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
    try:
        await stream.receive_some(RECEIVE_SIZE)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()
