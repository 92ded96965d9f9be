"""The connections a broker serves now: what a catalog change reaches (a revoke ends the waits
it no longer allows; a removed user's connections end), and what a shutdown waits for."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

import trio

from prontodb.protocol import ErrorCode, Goodbye, ProntoError


class Connected(Protocol):
    """What the registry needs of a connection (a Session)."""

    user: str
    authenticate: bool

    def stop_reading(self, farewell: Goodbye | None = None) -> None: ...

    def end_waits(self, error: ProntoError) -> None: ...

    def recheck_waits(self) -> None: ...


S = TypeVar("S", bound=Connected)


class Sessions(Generic[S]):
    """The live connections, numbered in the order they came."""

    def __init__(self) -> None:
        self._live: set[S] = set()
        self._numbers = 0
        self._changed = trio.Event()

    def __len__(self) -> int:
        return len(self._live)

    def live(self) -> list[S]:
        return list(self._live)

    def next_number(self) -> int:
        self._numbers += 1
        return self._numbers

    def add(self, session: S) -> None:
        self._live.add(session)
        self._signal_change()

    def discard(self, session: S) -> None:
        self._live.discard(session)
        self._signal_change()

    def _signal_change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Until a connection comes or ends."""
        await self._changed.wait()

    def stop_reading(self) -> None:
        """Every connection takes no more requests (a shutdown)."""
        for session in self.live():
            session.stop_reading()

    def end_sessions_of(self, user: str, reason: str) -> None:
        """End the authenticated connections of ``user`` (removed, or given a new token)."""
        farewell = Goodbye(
            ErrorCode.UNAUTHENTICATED, f"The broker ended this connection: {reason}."
        )
        error = ProntoError(ErrorCode.UNAUTHENTICATED, farewell.message)
        for session in self.live():
            if session.authenticate and session.user == user:
                session.end_waits(error)  # now: no write may serve them meanwhile
                session.stop_reading(farewell)

    def recheck_waits(self) -> None:
        """The catalog changed: end the waits (blocked claims, watches) it no longer allows."""
        for session in self.live():
            session.recheck_waits()
