"""A session's joins of locks, semaphores, elections and barriers: ``acquire`` answers at once
when the party holds (or, with no wait, cannot), else waits in line from a task of its own until
its turn comes, its wait runs out, the client cancels it, or its session ends."""

from __future__ import annotations

import trio

from prontodb.protocol import ErrorCode, ProntoError, Request, Response

from ..engine import recipes
from ._access import Level, on_key
from ._args import Arg, Kind, bad
from ._database_ops import VALUE, claim_wait
from ._databases import OpenDatabase
from ._outbox import Answer
from ._recipe_ops import NAME, member_map
from ._recipe_waiters import RecipeWaiter
from ._registry import Layer, op
from ._session_base import SessionBase

ACQUIRE_ARGS = (
    NAME,
    Arg("recipe", Kind.TEXT, required=True, doc="lock, semaphore, election or barrier"),
    Arg("limit", Kind.UINT, doc="holders (semaphore) or parties (barrier); default 1"),
    Arg("session", Kind.UINT, required=True, doc="the session the membership goes with"),
    Arg(VALUE.name, VALUE.kind, doc="the member's value (an election's candidate)"),
    Arg("wait", Kind.SECONDS, doc="seconds to wait in line, default 0: try once"),
)


class SessionRecipes(SessionBase):
    """The recipe operations of a session that may wait."""

    @op(
        "acquire",
        Layer.SESSION,
        access=on_key(Level.WRITE, "name"),
        args=ACQUIRE_ARGS,
        writes=True,
        cli="lock",
        summary="Join a lock, semaphore, election or barrier with a session; wait for the turn.",
    )
    async def _acquire(self, request: Request) -> Answer | None:
        """``acquire``: the member once it holds (or nil: the wait ran out, or was cancelled);
        a party that gives up leaves the line, so it never holds later unasked."""
        args = request.args
        wait = claim_wait(args)
        kind = args["recipe"]
        if not isinstance(kind, str):
            raise bad("'recipe' must be one of lock, semaphore, election, barrier.")
        db = await self.ctx.databases.get(self._cursor(request), create=True, user=self.user)
        assert db is not None
        self._authorize(request)
        now = self.ctx.clock()
        db.expire_due(now)
        name = args["name"]
        limit = args.get("limit") or 1
        applied = recipes.join(
            db.engine,
            name,
            kind,
            limit,
            args["session"],
            args.get("value"),
            writer=self.user,
            now=now,
            try_only=wait <= 0,
        )
        ticket = db.submit(applied) if applied.records else db.database.last_ticket
        member = applied.result
        if member is None or member.holding:
            return Answer(Response(request.id, None, member_map(member)), db, ticket)
        scope = trio.CancelScope(deadline=trio.current_time() + wait)
        self._recipe_waits[request.id] = (scope, dict(args), db.directory)
        waiter = RecipeWaiter(member.token)
        db.recipe_waiters.add(name, waiter)
        self._waits.start_soon(self._wait_in_line, request.id, db, name, waiter, scope)
        return None

    async def _wait_in_line(
        self,
        request_id: int,
        db: OpenDatabase,
        name: str,
        waiter: RecipeWaiter,
        scope: trio.CancelScope,
    ) -> None:
        answer: Response | None = None
        try:
            with scope:
                await waiter.event.wait()
            refused = self._refused.pop(request_id, None)
            if waiter.member is not None:
                answer = Response(request_id, None, member_map(waiter.member))
            elif refused is not None:
                answer = Response.fail(request_id, refused)
            elif waiter.event.is_set():
                answer = Response.fail(request_id, _lost(db, name))
            else:  # the wait ran out, or the client cancelled it
                answer = Response(request_id, None, None)
        finally:
            db.recipe_waiters.remove(name, waiter)
            self._recipe_waits.pop(request_id, None)
            if waiter.member is None:
                self._leave_line(db, name, waiter.token)
        ticket = waiter.ticket if waiter.member is not None else db.database.last_ticket
        self.outbox.queue.append(Answer(answer, db, ticket, op="acquire"))
        self.outbox.pump()

    def _leave_line(self, db: OpenDatabase, name: str, token: int) -> None:
        """Take a party that stopped waiting out of the line (if its session has not taken it
        already), so that it never holds unasked."""
        if db.retired or db.failure is not None:
            return  # the line is gone with the database's object; its session ends it later
        now = self.ctx.clock()
        left = recipes.leave(db.engine, name, token, writer=self.user, now=now)
        if left.records:
            db.submit(left)


def _lost(db: OpenDatabase, name: str) -> ProntoError:
    """Why a party stopped waiting with no turn and no timeout: its place went."""
    if db.retired:
        return ProntoError(
            ErrorCode.UNAVAILABLE,
            f"The database was closed (restored or reopened) while waiting for {name!r}; "
            "acquire again.",
        )
    return ProntoError(
        ErrorCode.NOT_FOUND,
        f"The place in line for {name!r} is gone: its session ended (expired or revoked) while "
        "it waited; keep the session alive, or grant a new one and acquire again.",
    )
