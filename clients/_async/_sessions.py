"""The client's operations on sessions: leases with an id and a TTL whose attached keys are
deleted when they end (by expiry, by revoke, or by the close of the connection they are bound
to). Keys are attached with ``set(..., session=id)``."""

from __future__ import annotations

from contextlib import asynccontextmanager

from prontodb.protocol import ErrorCode, ProntoError

from .. import _anyio_backend as backend
from .._types import SessionInfo, SessionLost
from ._base import ClientBase

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import Any


class SessionOperations(ClientBase):
    """Granting, keeping alive and ending sessions (a part of the client: see ``AsyncClient``)."""

    async def session_grant(
        self, ttl: float, *, bound: bool = False, cursor: str | None = None
    ) -> int:
        """A new session, alive ``ttl`` seconds from now and from each :meth:`session_keepalive`;
        its id. With ``bound`` it also ends when this client's connection closes (its TTL still
        applies: keep it alive)."""
        args = self._args(cursor, ttl=ttl)
        if bound:
            args["bound"] = True
        granted = await self._call("session_grant", args)
        session: int = granted["id"]
        return session

    @asynccontextmanager
    async def keep_session(
        self, ttl: float, *, bound: bool = False, cursor: str | None = None
    ) -> AsyncIterator[int]:
        """A session for the ``with`` block (its id), kept alive every ``ttl``/3 seconds in
        the background and revoked when the block ends (its keys are deleted).

        A keep-alive that fails (the session ended: ``not_found``; the connection is gone:
        ``unavailable``) means the keys may be gone: the async client cancels the block at once,
        the sync client's block runs on (a thread cannot stop it) but every call of the client
        raises :class:`SessionLost` until the block ends; either way the block's end raises
        :class:`SessionLost`."""
        session = await self.session_grant(ttl, bound=bound, cursor=cursor)
        call = self._call

        async def renew() -> None:
            await self.session_keepalive(session, cursor=cursor)

        def lost(failure: Exception) -> Exception:
            # From now until the block ends, every call of this client refuses: whatever it
            # would do relied on what the session held.
            error = SessionLost(session, failure)

            async def refuse(op: str, args: dict[str, Any]) -> Any:
                raise error

            self._call = refuse
            return error

        try:
            async with backend.Renewing(renew, ttl / 3, lost):
                yield session
        finally:
            # The renewals have stopped: none can cross the revoke and report it as a loss.
            self._call = call
            with backend.shielded():
                await self._revoke_quietly(session, cursor)

    async def _revoke_quietly(self, session: int, cursor: str | None) -> None:
        """Revoke ``session``, if it is still there to revoke."""
        try:
            await self.session_revoke(session, cursor=cursor)
        except ProntoError as err:
            if err.code not in (ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE):
                raise

    async def session_keepalive(self, session: int, *, cursor: str | None = None) -> float:
        """Keep ``session`` alive for its TTL from now; its new deadline (seconds since the
        epoch). ``not_found`` if it has ended."""
        renewed = await self._call("session_keepalive", self._args(cursor, id=session))
        deadline: float = renewed["deadline"]
        return deadline

    async def session_revoke(self, session: int, *, cursor: str | None = None) -> list[str]:
        """End ``session`` now; the keys that were attached to it (deleted), sorted."""
        ended = await self._call("session_revoke", self._args(cursor, id=session))
        keys: list[str] = ended["keys"]
        return keys

    async def sessions(self, *, cursor: str | None = None) -> list[SessionInfo]:
        """The live sessions, by id."""
        live = await self._call("sessions", self._args(cursor))
        return [SessionInfo(s["id"], s["owner"], s["ttl"], s["deadline"], s["keys"]) for s in live]
