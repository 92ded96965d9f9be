"""The sessions of one database: leases with an id, a TTL and the keys attached to them.

Pure bookkeeping, like the claim book: the engine decides, logs and calls these methods. A session's
deadline is not logged (a keep-alive would cost a record), so sessions rebuilt by replay have none
until the engine is first told the time (:meth:`SessionBook.due`), which gives each its full TTL
again from then (docs/FORMAT.md, "Sessions").
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import NamedTuple


class SessionInfo(NamedTuple):
    """One live session as ``status`` lists it: its id, the user it was granted to, its TTL,
    its deadline (None: restored and not started yet) and how many keys are attached to it."""

    id: int
    owner: str
    ttl: float
    deadline: float | None
    keys: int


@dataclass(slots=True)
class Session:
    """A live session."""

    owner: str
    ttl: float
    deadline: float | None  # None: replayed, waiting for the clock to start again
    keys: set[str] = field(default_factory=set)
    # The broker's number of the connection it is bound to (it ends when that closes). Not
    # logged: after a restart no connection holds it, and its TTL ends it.
    bound: int | None = None


class SessionBook:
    """Live sessions, the next id and a heap of their deadlines; driven by the engine only."""

    def __init__(self) -> None:
        self.next_id = 1  # ids are never reused: the log and snapshots carry this counter
        self.sessions: dict[int, Session] = {}
        # (deadline, id), pruned lazily: an entry whose session ended or was renewed since is
        # skipped when it surfaces.
        self._heap: list[tuple[float, int]] = []
        self._waiting: set[int] = set()  # replayed sessions whose clocks have not started

    def grant(self, owner: str, ttl: float, deadline: float, bound: int | None = None) -> int:
        """A new session, alive until ``deadline`` (and, if ``bound``, while that connection
        is open); its id."""
        session = self.next_id
        self.add(session, owner, ttl, deadline)
        self.sessions[session].bound = bound
        return session

    def bound_to(self, connection: int) -> list[int]:
        """The sessions bound to ``connection``, by id."""
        return sorted(i for i, s in self.sessions.items() if s.bound == connection)

    def add(self, session: int, owner: str, ttl: float, deadline: float | None) -> None:
        """Take ``session`` (replay: ``deadline`` None, started by the next :meth:`due`)."""
        if session < self.next_id:
            raise ValueError(f"session {session} is not above the last one granted")
        self.next_id = session + 1
        self.sessions[session] = Session(owner, ttl, deadline)
        if deadline is None:
            self._waiting.add(session)
        else:
            self._push(deadline, session)

    def load(self, next_id: int, sessions: list[tuple[int, str, float]]) -> None:
        """Take a snapshot's sessions (in chunks, each with the next id), clocks not started."""
        for session, owner, ttl in sessions:
            if session >= next_id or session in self.sessions:
                raise ValueError(f"session {session} is listed twice or above the next id")
            self.sessions[session] = Session(owner, ttl, None)
            self._waiting.add(session)
        self.next_id = max(self.next_id, next_id)

    def renew(self, session: int, deadline: float) -> None:
        """Move ``session``'s deadline."""
        self.sessions[session].deadline = deadline
        self._waiting.discard(session)
        self._push(deadline, session)

    def end(self, session: int) -> Session:
        """Forget ``session`` (its keys are the engine's to remove)."""
        self._waiting.discard(session)
        return self.sessions.pop(session)

    def attach(self, key: str, session: int | None) -> None:
        """``key`` now belongs to ``session`` (None: to none)."""
        if session is not None:
            self.sessions[session].keys.add(key)

    def detach(self, key: str, session: int | None) -> None:
        """``key`` no longer belongs to ``session`` (which may have ended already)."""
        if session is not None:
            held = self.sessions.get(session)
            if held is not None:
                held.keys.discard(key)

    def due(self, now: float) -> list[int]:
        """The sessions whose deadline is ``now`` or earlier, by deadline (then id). Sessions
        waiting since replay start first, with their full TTL from ``now``."""
        for session in sorted(self._waiting):
            self.renew(session, now + self.sessions[session].ttl)
        due: dict[int, None] = {}  # ordered, and a session pushed twice is listed once
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, session = heapq.heappop(heap)
            live = self.sessions.get(session)
            if live is not None and live.deadline == deadline:
                due[session] = None
        return list(due)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a live session (minus infinity while replayed sessions wait
        for their clocks to start: :meth:`due` has work at once), or None."""
        if self._waiting:
            return -math.inf
        heap = self._heap
        while heap:
            deadline, session = heap[0]
            held = self.sessions.get(session)
            if held is not None and held.deadline == deadline:
                return deadline
            heapq.heappop(heap)  # stale: renewed or ended since
        return None

    def info(self) -> list[SessionInfo]:
        """Every live session, by id."""
        return [
            SessionInfo(session, s.owner, s.ttl, s.deadline, len(s.keys))
            for session, s in sorted(self.sessions.items())
        ]

    def _push(self, deadline: float, session: int) -> None:
        heapq.heappush(self._heap, (deadline, session))
        if len(self._heap) > 2 * len(self.sessions) + 1024:  # mostly stale: keep-alives
            self._heap = [
                (s.deadline, i) for i, s in self.sessions.items() if s.deadline is not None
            ]
            heapq.heapify(self._heap)
