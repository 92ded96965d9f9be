"""The dashboard's figures (``/api/fleet``): the broker's snapshot, the claims in flight with their
holders and lease deadlines, the first dead letters, and each queue's depth over the last minutes.

The depths come from a small ring the broker keeps while it serves HTTP (:class:`DepthHistory`,
sampled every :data:`SAMPLE_EVERY` seconds), so that a page opened after something went wrong
shows what led up to it, and any number of open pages share one sampler. Everything listed is
bounded (the constants below, in docs/DASHBOARD.md). Keys are shown only to a viewer who may read
them; counts and queue names, like ``/metrics``, to any known user.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from prontodb.protocol import ProntoError

from ..engine import DEAD_PREFIX
from ._access import Grant, Level, Need, check, token_matches
from ._databases import OpenDatabase

logger = logging.getLogger("prontodb.server")

SAMPLE_EVERY = 5.0  # seconds between two depth samples
SAMPLES = 120  # samples kept: 10 minutes of depths
HISTORY_QUEUES = 50  # queues with a depth series: the deepest at each sample
CLAIMS_LISTED = 100  # claims listed, the soonest lease deadline first
DEAD_LISTED = 20  # dead letters listed per database, by key
# A depth sample: (ready, delayed, claimed, dead) by (cursor, queue).
Depths = dict[tuple[str, str], tuple[int, int, int, int]]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks, off loopback: a known user and the token it showed. On loopback there is no
    viewer (None): anyone on the machine sees everything, as with ``--insecure``."""

    user: str
    token: str

    def may_read(self, grants: Iterable[Grant], cursor: str, key: str) -> bool:
        """Whether this user may read ``key`` (or the prefix ``key``) in ``cursor``."""
        try:
            check(grants, self.user, [Need(Level.READ, cursor, key)])
        except ProntoError:
            return False
        return True

    def still_valid(self, users: Mapping[str, Any]) -> bool:
        """Whether the user still exists and its token is still its own (not replaced)."""
        known = users.get(self.user)
        return known is not None and token_matches(self.token, known.salt, known.hash)


class DepthHistory:
    """The last ``size`` depth samples of the deepest ``queues`` queues (bounded in both)."""

    def __init__(
        self, every: float = SAMPLE_EVERY, size: int = SAMPLES, queues: int = HISTORY_QUEUES
    ) -> None:
        self.every = every
        self.queues = queues
        self.samples: deque[tuple[float, Depths]] = deque(maxlen=size)
        self.span = every * size  # seconds of history when the ring is full

    def record(self, now: float, databases: Mapping[str, Mapping[str, Any]]) -> None:
        """Keep the depths of a snapshot's ``databases`` at ``now``."""
        depths: Depths = {}
        for cursor, figures in databases.items():
            for queue, c in figures["queues"].items():
                depths[(cursor, queue)] = (c["ready"], c["delayed"], c["claimed"], c["dead"])
        if len(depths) > self.queues:
            deepest = heapq.nlargest(self.queues, depths.items(), key=lambda kv: sum(kv[1]))
            depths = dict(deepest)
        self.samples.append((now, depths))

    def series(self) -> list[dict[str, Any]]:
        """``[{cursor, queue, points: [[time, ready, delayed, claimed, dead], ...]}]``, one per
        queue sampled, its points oldest first."""
        points: dict[tuple[str, str], list[list[float]]] = {}
        for time, depths in self.samples:
            for name, (ready, delayed, claimed, dead) in depths.items():
                points.setdefault(name, []).append([time, ready, delayed, claimed, dead])
        return [{"cursor": c, "queue": q, "points": p} for (c, q), p in sorted(points.items())]

    async def run(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Sample every ``every`` seconds until cancelled (each sample costs one scrape). A
        sample that fails is logged (the first of a run of failures) and skipped: the broker
        serves on."""
        failing = False
        while True:
            try:
                figures = snapshot()
                self.record(figures["time"], figures["databases"])
                failing = False
            except Exception:
                if not failing:
                    logger.exception("dashboard: a depth sample failed")
                failing = True
            await trio.sleep(self.every)


def fleet(
    figures: dict[str, Any],
    databases: Iterable[OpenDatabase],
    history: DepthHistory,
    viewer: Viewer | None,
    grants: Iterable[Grant],
    streams: dict[str, int],
) -> bytes:
    """``/api/fleet``'s JSON: the snapshot ``figures`` (without the paths of the databases), the
    claims and dead letters ``viewer`` may read, the depth series and the open ``streams``."""
    grants = list(grants)

    def readable(cursor: str) -> Callable[[str], bool]:
        if viewer is None:
            return lambda key: True
        return lambda key: viewer.may_read(grants, cursor, key)

    claims: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    for db in databases:
        if db.failure is not None:
            continue
        claims += _claims(db, readable(db.name))
        dead += _dead(db, readable(db.name))
    claims = heapq.nsmallest(CLAIMS_LISTED, claims, key=lambda c: (c["lease"], c["key"]))
    listed = {
        name: {k: v for k, v in db.items() if k != "path"}
        for name, db in figures["databases"].items()
    }
    answer = {
        "time": figures["time"],
        "uptime": figures["uptime"],
        "viewer": None if viewer is None else viewer.user,
        "databases": listed,
        "databases_untracked": figures["databases_untracked"],
        "connections": figures["connections"],
        "claims": claims,
        "dead": dead,
        "history": {"every": history.every, "span": history.span, "series": history.series()},
        "streams": streams,
        "caps": {
            **figures["caps"],
            "claims": CLAIMS_LISTED,
            "dead": DEAD_LISTED,
            "history_queues": history.queues,
        },
    }
    return json.dumps(answer, separators=(",", ":"), default=str).encode()


def _claims(db: OpenDatabase, readable: Callable[[str], bool]) -> list[dict[str, Any]]:
    held = db.engine.soonest_claims(CLAIMS_LISTED, keep=readable)
    return [
        {
            "cursor": db.name,
            "key": key,
            "holder": claim.holder,
            "lease": claim.lease,  # the deadline, epoch seconds on the broker's clock
            "deliveries": deliveries,
        }
        for key, claim, deliveries in held
    ]


def _dead(db: OpenDatabase, readable: Callable[[str], bool]) -> list[dict[str, Any]]:
    return [
        {"cursor": db.name, "key": key, "time": entry.time, "by": entry.writer}
        for key, entry in db.engine.scan(DEAD_PREFIX, limit=DEAD_LISTED)
        if readable(key)
    ]
