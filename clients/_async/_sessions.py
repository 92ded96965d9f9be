"""The client's operations on sessions: leases with an id and a TTL whose attached keys are
deleted when they end (by expiry, by revoke, or by the close of the connection they are bound
to). Keys are attached with ``set(..., session=id)``."""

from __future__ import annotations

from .._types import SessionInfo
from ._base import ClientBase


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
