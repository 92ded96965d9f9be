"""A watch: the stream of changes under a prefix, on a connection of its own, resumed after a loss.

A watch has its own connection (as a Redis subscriber has), so its socket is its flow control: a
consumer that stops reading holds back only its own stream, and the broker, which keeps no queue per
watcher, cuts it off with ``overflow`` only once its history window has moved past it. When the
connection is lost (the broker restarted, the network failed) the watch connects again and resumes
where it was: every event exactly once, in revision order.
"""

from __future__ import annotations

import time
from collections import deque
from types import TracebackType

from prontodb.protocol import (
    NEED_DATA,
    ConnectionClosed,
    ErrorCode,
    Goodbye,
    ProntoError,
    Push,
    RemoteProtocolError,
    Request,
    Response,
)

from .. import _anyio_backend as backend
from .._types import WatchEvent

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any

    from ._pipeline import Pipeline

_CHUNK = 64 * 1024
_WATCH_ID = 1  # the one request on a watch's connection
_BACKOFF_FIRST = 0.05  # seconds before the first reconnect attempt; doubles up to _BACKOFF_MAX
_BACKOFF_MAX = 1.0


class Watch:
    """Every change under ``prefix``, as :class:`WatchEvent`, in revision order; get one from
    ``client.watch(...)``.

    Iterate it (``async for event in watch``), or call :meth:`next_event` with a timeout. The
    connection opens on first use; ``async with client.watch(...) as watch:`` opens it on entry,
    so that a write made inside the block is seen, and closes it on exit.

    ``next_rev`` is where the watch would resume: pass it as ``from_rev`` to a later watch to go on
    from here. ``start_rev`` is the revision the watch started at, and ``head_rev`` the
    database's last durable revision then (both known once it is open): a ``from_rev`` past
    ``head_rev + 1`` waits for revisions that do not exist yet.

    Raises ProntoError ``compacted`` (the start is older than the broker's history; details
    ``oldest_rev``), ``overflow`` (the consumer fell behind the history window; details
    ``next_rev``), or ``unavailable`` once the broker has been unreachable for ``reconnect``
    seconds.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Pipeline]],
        prefix: str,
        *,
        from_rev: int | None,
        cursor: str,
        reconnect: float,
    ) -> None:
        """Private: use ``client.watch()``."""
        self.prefix = prefix
        self.cursor = cursor
        self.next_rev = from_rev
        self.start_rev: int | None = None
        self.head_rev: int | None = None
        self._connect = connect
        self._reconnect = reconnect
        self._pipeline: Pipeline | None = None  # its own connection, once open
        self._events: deque[WatchEvent] = deque()
        # Resuming inside a revision that was split across pushes: the broker sends it again
        # from its first event, and the events of it this watch already had are dropped.
        self._have_rev = 0  # the latest revision events were taken from
        self._have = 0  # how many of its events were taken
        self._arrived_rev = 0  # the revision the current connection is sending
        self._arrived = 0  # its events received on this connection
        self._lost_at: float | None = None  # when the connection was lost (None: it is not)
        self._confirmed = False  # the broker has started the watch on this connection
        self._done = False

    # -- opening and closing ---------------------------------------------------------------

    async def open(self) -> None:
        """Connect and start the watch, if that is not done yet; return once the broker has it
        in place (a change made after this is seen)."""
        while not self._confirmed:
            if self._done:
                raise ProntoError(ErrorCode.UNAVAILABLE, "This watch is closed; start another.")
            if self._pipeline is None:
                await self._resume()
            else:
                await self._receive(self._pipeline, None)

    async def aclose(self) -> None:
        """End the watch and close its connection; closing twice does nothing."""
        self._done = True
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            await pipeline.aclose()

    async def __aenter__(self) -> Watch:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- events ----------------------------------------------------------------------------

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        event = await self.next_event()
        assert event is not None  # no timeout: it waits for one
        return event

    async def next_event(self, timeout: float | None = None) -> WatchEvent | None:  # noqa: ASYNC109
        """The next event, waiting at most ``timeout`` seconds for it (None: as long as it takes);
        None when the time ran out. Raises StopAsyncIteration once the watch is closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._events:
            if self._done:
                raise StopAsyncIteration
            if self._pipeline is None:
                await self._resume()
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            await self._receive(self._pipeline, remaining)
        return self._events.popleft()

    # -- the connection --------------------------------------------------------------------

    async def _resume(self) -> None:
        """Connect and send the watch from ``next_rev``; after a loss, try until ``reconnect``
        seconds have passed since it."""
        backoff = _BACKOFF_FIRST
        while True:
            try:
                pipeline = await self._connect()
                break
            except ProntoError as exc:
                if self._lost_at is None or exc.code is not ErrorCode.UNAVAILABLE:
                    raise
                if time.monotonic() - self._lost_at > self._reconnect:
                    raise ProntoError(
                        ErrorCode.UNAVAILABLE,
                        f"The broker has been unreachable for {self._reconnect:g} s; watch "
                        f"again from revision {self.next_rev} once it is back.",
                        {"next_rev": self.next_rev},
                    ) from exc
            await backend.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)
        args: dict[str, Any] = {"cursor": self.cursor, "prefix": self.prefix}
        if self.next_rev is not None:
            args["from_rev"] = self.next_rev
        try:
            await pipeline.stream.send_all(pipeline.conn.send(Request(_WATCH_ID, "watch", args)))
        except OSError:
            await pipeline.aclose()
            if self._lost_at is None:
                self._lost_at = time.monotonic()
            return  # lost again at once: the next round tries again
        except BaseException:
            await pipeline.aclose()
            raise
        self._pipeline = pipeline
        self._confirmed = False
        self._arrived_rev = self._arrived = 0

    async def _receive(self, pipeline: Pipeline, timeout: float | None) -> None:  # noqa: ASYNC109
        """Read what the broker sent within ``timeout`` seconds and take its events."""
        stream = pipeline.stream
        try:
            with stream.deadline(timeout):
                data = await stream.receive_some(_CHUNK)
        except TimeoutError:
            return
        except OSError:
            data = b""
        conn = pipeline.conn
        try:
            if not data:
                await self._lose()
                return
            conn.receive_data(data)
            while True:
                message = conn.next_event()
                if message is NEED_DATA:
                    return
                if isinstance(message, Push) and message.stream == _WATCH_ID:
                    self._take(message.event)
                elif isinstance(message, Response) and message.id == _WATCH_ID:
                    await self._end(message)
                    return
                elif isinstance(message, Goodbye | ConnectionClosed):
                    await self._lose()
                    return
        except RemoteProtocolError:
            await self._lose()

    def _take(self, push: dict[str, Any]) -> None:
        for fields in push["events"]:
            rev = fields["rev"]
            if rev != self._arrived_rev:
                self._arrived_rev, self._arrived = rev, 0
            self._arrived += 1
            if rev == self._have_rev and self._arrived <= self._have:
                continue  # had before the connection was lost
            if rev != self._have_rev:
                self._have_rev, self._have = rev, 0
            self._have += 1
            self._events.append(_event(fields))
        self.next_rev = push["next_rev"]
        self._confirmed = True
        if self.start_rev is None:
            self.start_rev = self.next_rev
            self.head_rev = push.get("head_rev")
        self._lost_at = None

    async def _end(self, response: Response) -> None:
        """The broker ended the stream: resume if it only lost the database for a moment."""
        error = response.error
        if error is not None and error.get("code") == ErrorCode.UNAVAILABLE:
            await self._lose()
            return
        await self.aclose()
        response.raise_for_error()  # overflow, compacted, ...; a plain end just stops

    async def _lose(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if self._lost_at is None:
            self._lost_at = time.monotonic()
        if pipeline is not None:
            await pipeline.aclose()


def _event(fields: dict[str, Any]) -> WatchEvent:
    return WatchEvent(
        fields["rev"],
        fields["type"],
        fields["key"],
        fields.get("value"),
        fields.get("by", ""),
        fields.get("time", 0.0),
        fields.get("version"),
        fields.get("create_rev"),
        fields.get("mod_rev"),
        fields.get("expires"),
        fields.get("session"),
    )
