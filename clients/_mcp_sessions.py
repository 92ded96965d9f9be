"""The sessions that ``prontodb mcp``'s locks, semaphores, elections and barriers go with.

A membership in a recipe needs a session that something keeps alive: here the MCP server does,
for its agent, which cannot. One session per database, granted on the first ``lock`` (or
``semaphore``, ``elect``, ``barrier``) there, bound to the server's broker connection and kept
alive every TTL/3 in the server's task group. So an agent's locks last until it unlocks them or
its server goes: a server that exits, or is killed, closes its connection, and the broker ends
the session and frees the locks at once (the TTL covers a connection that hangs instead). A
session lost while the server runs (the broker restarted) is forgotten with a line on stderr;
the locks went with it, and the next lock takes a new session.
"""

from __future__ import annotations

import logging

import anyio
from anyio.abc import TaskGroup

from prontodb.protocol import ProntoError

from ._async.client import AsyncClient

log = logging.getLogger("prontodb.mcp")

# Seconds a session outlives its last keep-alive (one is sent every third of it).
SESSION_TTL = 15.0


class Sessions:
    """The server's sessions, by database (cursor), each kept alive in ``group``."""

    def __init__(self, group: TaskGroup, ttl: float = SESSION_TTL) -> None:
        self._group = group
        self._ttl = ttl
        self._held: dict[str, tuple[AsyncClient, int]] = {}
        self._lock = anyio.Lock()

    async def session(self, client: AsyncClient, cursor: str) -> int:
        """The id of the session for ``cursor``'s database on ``client``'s connection, granted
        now if there is none (or the one there was is of a connection that is gone)."""
        async with self._lock:
            held = self._held.get(cursor)
            if held is not None and held[0] is client:
                return held[1]
            session = await client.session_grant(self._ttl, bound=True, cursor=cursor)
            self._held[cursor] = (client, session)
            self._group.start_soon(self._keep, client, cursor, session)
            return session

    async def _keep(self, client: AsyncClient, cursor: str, session: int) -> None:
        try:
            while True:
                await anyio.sleep(self._ttl / 3)
                await client.session_keepalive(session, cursor=cursor)
        except ProntoError as exc:
            log.warning(
                "the session of this server's locks on %s ended (%s): they were released",
                cursor,
                exc.message,
            )
        if self._held.get(cursor) == (client, session):
            del self._held[cursor]
