"""A session's watches: ``watch`` streams from a task of its own until ``unwatch``, an overflow,
or the end of its database; the stream itself is ``_watches.stream``."""

from __future__ import annotations

import trio

from prontodb.protocol import ErrorCode, ProntoError, ProtocolError, Request, Response

from ._access import Level, nothing, on_prefix
from ._args import Arg, Kind
from ._databases import OpenDatabase, WatchPosition
from ._outbox import Answer
from ._registry import Layer, op
from ._session_base import SessionBase
from ._watches import WATCH_ARGS, once_it_exists, start_revision, stream, watch_args


class SessionWatches(SessionBase):
    """The watch operations of a session."""

    @op(
        "watch",
        Layer.SESSION,
        access=on_prefix(Level.READ),
        args=WATCH_ARGS,
        summary="A stream of every durable change under a prefix, from a revision or from now.",
    )
    async def _watch(self, request: Request) -> Answer | None:
        """``watch``: check the start, then stream from a task of its own; the Response comes
        last, when the stream ends (unwatch, overflow, a failed database)."""
        args = request.args
        name = self._cursor(request)
        prefix, from_rev = watch_args(args)
        # A database that does not exist yet is at revision 0: the watch waits for it.
        db = await self.ctx.databases.get(name, create=False, user=self.user)
        self._authorize(request)
        start = (from_rev or 1) if db is None else start_revision(db, from_rev)
        scope = trio.CancelScope()
        self._watches[request.id] = (
            scope,
            dict(args),
            self.ctx.databases.locate(name, self.user),
        )
        self._waits.start_soon(self._run_watch, request.id, db, name, prefix, start, scope)
        return None

    async def _run_watch(
        self,
        request_id: int,
        db: OpenDatabase | None,
        name: str,
        prefix: str,
        start: int,
        scope: trio.CancelScope,
    ) -> None:
        resume = start

        async def send(packed: bytes, next_rev: int) -> None:
            nonlocal resume
            self.outbox.emit(self.conn.send_push(request_id, packed))
            # The socket is full: the watcher's reading sets the pace. The writer task writes;
            # this only waits, so an unwatch (a cancel) never cuts a frame in half.
            await self.outbox.wait_drained()
            resume = next_rev

        watching: OpenDatabase | None = None
        position = WatchPosition(self.user, prefix, start)
        try:
            try:
                with scope:
                    announced = db is None
                    if db is None:
                        db = await once_it_exists(
                            self.ctx.databases, name, self.user, start, send, self.conn.pack_event
                        )
                    watching = db
                    db.watching.add(position)
                    await stream(
                        db,
                        prefix,
                        start,
                        send,
                        self.conn.pack_event,
                        announced=announced,
                        position=position,
                    )
                answer = Response(request_id, None, {"next_rev": resume})  # unwatched
                refused = self._refused.pop(request_id, None)
                if refused is not None:
                    answer = Response.fail(request_id, refused)
            except ProntoError as err:
                answer = Response.fail(request_id, err)
                if err.code is ErrorCode.OVERFLOW and watching is not None:
                    self.ctx.stats.overflowed(watching.name)
            # Over before its last answer goes: a client that has it may ask about it again.
            del self._watches[request_id]
            code = "ok" if answer.error is None else str(answer.error.get("code"))
            self.ctx.stats.answered("watch", code, None)  # not timed: its time is the stream's
            await self.outbox.write(self.conn.send(answer))
        except ProtocolError:
            pass  # the peer broke the protocol: the connection is ending, with no more to say
        finally:
            if watching is not None:
                watching.watching.discard(position)
            self._watches.pop(request_id, None)

    @op(
        "unwatch",
        Layer.SESSION,
        access=nothing,
        args=(Arg("stream", Kind.UINT, doc="the watch's request id"),),
        client=None,
        cli=None,
        cursor=False,
        summary="End a watch of this connection; whether it was running.",
    )
    async def _unwatch(self, request: Request) -> Answer:
        """``unwatch``: end the watch opened by request ``stream``; False if none is running."""
        running = self._watches.get(request.args.get("stream") or 0)
        if running is not None:
            running[0].cancel()
        return Answer(Response(request.id, None, running is not None))
