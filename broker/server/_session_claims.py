"""A session's claims: a claim that blocks until an item is ready (answered by a task of its own,
in any order with the connection's other answers), its ``cancel``, and the items given back when
their answers never reach the client."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import trio

from prontodb.protocol import ProntoError, Request, Response

from ..engine import Claimed
from ._access import Level, nothing, on_prefix
from ._args import Arg, Kind
from ._claim_waiters import Waiter
from ._database_ops import CLAIM_ARGS, Call, claim_args, claim_wait, claimed_map
from ._databases import OpenDatabase
from ._outbox import Answer
from ._registry import Layer, op
from ._session_base import SessionBase

logger = logging.getLogger("prontodb.server")

# Claims whose answers went out, by request id, remembered for a `cancel` that crosses its answer
# on the wire (the client gave up before reading it): the item is then given back. The oldest are
# forgotten first; an item whose answer is forgotten waits for its lease, as without `cancel`.
ANSWERED_CLAIMS = 64
CANCEL_NEEDS_ID = "cancel needs 'id': the claim's request id."


class SessionClaims(SessionBase):
    """The claim operations of a session."""

    @op(
        "claim",
        Layer.SESSION,
        access=on_prefix(Level.WRITE),
        args=CLAIM_ARGS,
        writes=True,  # and it creates its database when it waits (not declared: it decides)
        summary="Take the next ready item under a prefix, under a lease; wait for one if asked.",
    )
    async def _claim(self, request: Request) -> Answer | None:
        """``claim``: answer at once, or leave a waiter and answer from a task of its own (the
        connection's other requests go on meanwhile; answers may come in any order)."""
        args = request.args
        name = self._cursor(request)
        wait = claim_wait(args)
        db = await self.ctx.databases.get(name, create=wait > 0, user=self.user)
        self._authorize(request)
        call = Call(args, self.user, self.ctx.clock())
        prefix, lease, bind, max_deliveries = claim_args(args)
        if db is None:
            return Answer(Response(request.id, None, None))
        db.expire_due(call.now)
        bound = self.number if bind else None
        if not db.waiters.queued(prefix):  # nobody came first: try now
            applied = db.engine.claim(
                prefix,
                holder=self.user,
                now=call.now,
                lease=lease,
                bound=bound,
                max_deliveries=max_deliveries,
            )
            ticket = db.submit(applied) if applied.records else db.database.last_ticket
            if applied.records:
                db.deadlines_changed()
            if applied.result is not None or wait <= 0:
                answer = Response(request.id, None, claimed_map(applied.result))
                return Answer(answer, db, ticket, claim=applied.result)
        waiter = Waiter(prefix, self.user, lease, bound, max_deliveries)
        waiter.served = self._answer_when_served(request.id, db)
        db.waiters.add(waiter)
        self._claim_waits[request.id] = (waiter, db, dict(args))
        self._waits.start_soon(self._wait_for_claim, request.id, db, waiter, wait, name)
        return None

    def _answer_when_served(self, request_id: int, db: OpenDatabase) -> Callable[[Waiter], None]:
        """What a waiter does when served: queue its answer behind the write that served it (it
        goes out from that write's flush), then wake its task, which has nothing left to do."""

        def served(waiter: Waiter) -> None:
            answer = Response(request_id, None, claimed_map(waiter.result))
            self.outbox.queue.append(
                Answer(answer, db, waiter.ticket, claim=waiter.result, op="claim")
            )
            self.outbox.pump()
            db.when_durable(waiter.ticket, waiter.event.set)

        return served

    async def _wait_for_claim(
        self, request_id: int, db: OpenDatabase, waiter: Waiter, wait: float, name: str
    ) -> None:
        deadline = trio.current_time() + wait
        error: ProntoError | None = None
        try:
            while True:
                with trio.move_on_at(deadline):
                    await waiter.event.wait()
                if waiter.result is not None or not db.retired:
                    break
                if trio.current_time() >= deadline or request_id not in self._claim_waits:
                    break  # ran out, or cancelled or ended meanwhile (that takes the entry)
                # The database was closed (restored, reopened): wait on its next object.
                db.waiters.remove(waiter)
                try:
                    reopened = await self.ctx.databases.get(name, create=True, user=self.user)
                except ProntoError as err:  # it cannot be opened again (damaged, failing disk)
                    error = err
                    break
                assert reopened is not None
                db = reopened
                entry = self._claim_waits.get(request_id)
                if entry is None:
                    break  # cancelled or ended while the database opened
                waiter.event = trio.Event()
                waiter.served = self._answer_when_served(request_id, db)
                db.waiters.add(waiter)
                self._claim_waits[request_id] = (waiter, db, entry[2])
                db.serve_waiters(self.ctx.clock())
            if waiter.result is None:  # not served (a served waiter is answered already)
                error = self._refused.pop(request_id, None) or error
                if error is not None:  # ended by a revoke, or its database is gone
                    self.outbox.queue.append(Answer(Response.fail(request_id, error), op="claim"))
                else:  # the wait ran out, or was cancelled
                    answer = Response(request_id, None, None)
                    last = db.database.last_ticket
                    self.outbox.queue.append(Answer(answer, db, last, op="claim"))
                self.outbox.pump()
        finally:
            db.waiters.remove(waiter)
            self._claim_waits.pop(request_id, None)

    @op(
        "cancel",
        Layer.SESSION,
        access=nothing,
        args=(Arg("id", Kind.UINT, required=True, missing=CANCEL_NEEDS_ID),),
        writes=True,  # an item claimed for it goes back
        client=None,
        cli=None,
        cursor=False,
        summary="Give up a claim request of this connection: stop its wait, or give its item back.",
    )
    async def _cancel(self, request: Request) -> Answer:
        """``cancel``: the client gave up on its claim request ``id``. A claim still waiting
        stops waiting (its answer: nil); an item already claimed for it is given back, its answer
        turned into nil if it has not gone yet. True if there was something to undo."""
        request_id: int = request.args["id"]
        if self._stop_claim_wait(request_id) or self._stop_recipe_wait(request_id):
            # still waiting: its task answers nil
            return Answer(Response(request.id, None, True))
        for out in self.outbox.unsent():  # claimed, answer not gone
            message = out.message
            if isinstance(message, Response) and message.id == request_id:
                if out.claim is None or out.db is None:
                    break  # answered nil, or an error: nothing to give back
                directory, claim = out.db.directory, out.claim
                out.message, out.data, out.claim = Response(request_id, None, None), None, None
                returned = self._give_back_claim(directory, claim.key, claim.token)
                return self._cancelled(request, returned)
        else:  # no answer to it waits here: it may have gone already
            answered = self._answered_claims.pop(request_id, None)
            if answered is not None:  # its answer crossed the cancel on the wire
                return self._cancelled(request, self._give_back_claim(*answered))
        return Answer(Response(request.id, None, False))

    def _cancelled(self, request: Request, db: OpenDatabase | None) -> Answer:
        """The answer to a ``cancel`` that gave an item back to ``db`` (once that is durable)."""
        if db is None:  # not open, or failed: nothing was given back
            return Answer(Response(request.id, None, False))
        return Answer(Response(request.id, None, True), db, db.database.last_ticket)

    def _stop_claim_wait(self, request_id: int) -> bool:
        """Take the blocked claim ``request_id`` out of its queue at once, so that no write can
        serve it any more, and wake its task to answer; False if it is not waiting."""
        entry = self._claim_waits.get(request_id)
        if entry is None or entry[0].result is not None:
            return False
        del self._claim_waits[request_id]
        waiter, db, _args = entry
        db.waiters.remove(waiter)
        waiter.event.set()
        return True

    # -- the items of claims whose answers never reach the client ----------------------------

    def _give_back(self, answer: Answer) -> None:
        """Return the item ``answer`` hands out, if any: it will never reach the client."""
        if answer.claim is not None and answer.db is not None:
            self._give_back_claim(answer.db.directory, answer.claim.key, answer.claim.token)

    def _give_back_claim(self, directory: Path, key: str, token: int) -> OpenDatabase | None:
        """Return the item ``key`` claimed under ``token`` to its queue in the database open
        at ``directory`` (the claim's, or the one that replaced it: a restore keeps claims):
        nobody will work on it under this claim. The database if it went back; None if the
        claim had ended, or no database that can write is open there (its lease returns it)."""
        db = self.ctx.databases.open_at(directory)
        if db is None or db.failure is not None:
            return None
        try:
            returned = db.give_back(key, token, self.user, self.ctx.clock())
        except Exception:
            logger.exception("session %d: giving back %s failed", self.number, key)
            return None
        return db if returned else None

    def _remember_claim(self, answer: Response, db: OpenDatabase, claim: Claimed) -> None:
        """A claim's answer went out: a ``cancel`` crossing it on the wire may still give the
        item back (see ANSWERED_CLAIMS)."""
        answered = self._answered_claims
        answered[answer.id] = (db.directory, claim.key, claim.token)
        answered.move_to_end(answer.id)
        if len(answered) > ANSWERED_CLAIMS:
            answered.popitem(last=False)
