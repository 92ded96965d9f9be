"""The state machine of one database.

Deterministic and free of I/O: every method takes the caller's clock as ``now`` and returns an
:class:`Applied` — the result, the records storage must make durable before the caller answers, and the
changes to publish. The engine is driven by one task at a time, which is where atomicity comes from.
"""

from __future__ import annotations

import collections
import enum
import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from sortedcontainers import SortedList

from prontodb.protocol import INT64_MAX, INT64_MIN, ErrorCode, ProntoError

from . import _quotas as quotas
from . import _records as rec
from ._claims import DEFAULT_PRIORITY, Claim, ClaimBook, parent_of
from ._conditions import Compare, OpKind, Target, TxnOp, TxnResult
from ._entry import Entry
from ._history import Change, History, HistoryLimits
from ._keys import SEPARATOR, descendant_range, validate_key, validate_prefix
from ._queues import ItemOptions, QueueConfig, backoff_delay, priority_of
from ._quotas import Quota, Usage
from ._records import Record, ReplayError
from ._sessions import Session, SessionBook, SessionInfo
from ._values import is_integer, pack_value

T = TypeVar("T")

# Bytes one live key costs in a snapshot beyond its key, writer and value: the entry's array
# header, three revision numbers, the time and the string headers (an upper estimate, so that the
# garbage estimate errs towards compacting later).
_ENTRY_OVERHEAD = 36


class _Missing(enum.Enum):
    MISSING = enum.auto()


MISSING = _Missing.MISSING
"""Marks an absent optional value argument (None is not a storable value, but stay explicit)."""


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """Bounds the engine enforces on every write."""

    max_key_len: int = 1024
    max_value_size: int = 1 << 20  # bytes of the msgpack-encoded value
    max_value_depth: int = 20  # nesting of lists and maps inside one value
    max_txn_ops: int = 128  # compares and operations, each
    max_session_ttl: float = 86_400.0  # a session's TTL, in seconds: a day at most
    # Keys attached to one session: all of them go in one record when it ends, which must fit
    # max_record_size even with keys of max_key_len.
    max_session_keys: int = 10_000
    # Largest record the engine hands to storage; must not exceed storage's max_record_size, so
    # that a change the engine has applied can always be written.
    max_record_size: int = 16 << 20
    history: HistoryLimits = field(
        default_factory=HistoryLimits
    )  # what watchers starting in the past can have


class ChangeKind(enum.StrEnum):
    """What happened to a key (watch events; claim kinds come with claims)."""

    PUT = "put"
    DELETE = "delete"
    EXPIRE = "expire"
    CLAIM = "claim"
    ACK = "ack"
    RELEASE = "release"


DEAD_PREFIX = "dead"
DEFAULT_LEASE = 60.0  # seconds a claim holds its item when neither claimer nor queue says
"""Where an item that reached its claim's ``max_deliveries`` goes: ``jobs.j1`` -> ``dead.jobs.j1``."""


class Claimed(NamedTuple):
    """What a claim hands out: the item, the fencing token that proves the claim, the lease's
    deadline and how many times the item has been handed out (1 the first time)."""

    key: str
    value: Any
    token: int
    lease: float
    deliveries: int


@dataclass(frozen=True, slots=True)
class Applied(Generic[T]):
    """What an operation did: its result, the records to make durable, the changes to publish."""

    result: T
    records: list[Record]
    changes: list[Change]


# A transaction's pending state for one key: (encoded value, new entry), or None for a delete.
_Staged = tuple[bytes, Entry] | None


@dataclass(slots=True)
class EngineCounters:
    """What one engine did since it was made (not logged, not replayed): the broker's metrics
    read them, and carry them over when it reopens the database."""

    claims: int = 0  # items handed out
    redeliveries: int = 0  # of those, items handed out before (their delivery count above 1)
    dead_letters: int = 0  # items moved to dead.<key> after their max_deliveries
    expired_leases: int = 0  # claims whose lease ran out, their items given back


class Engine:
    """Keys, values, revisions; conditional writes, counters and transactions; TTLs.

    Deadlines are absolute (seconds since the epoch, on the caller's clock). The engine removes an
    expired key only when told the time: call :meth:`expire_due` before serving a request (the
    broker does, so no reader ever sees a key past its deadline) and when :meth:`next_deadline`
    comes.
    """

    def __init__(self, limits: EngineLimits | None = None) -> None:
        self.limits = limits or EngineLimits()
        self.revision = 0
        self.live_bytes = 0  # estimate of what a snapshot of the live keys takes on disk
        self._entries: dict[str, Entry] = {}
        self._index: SortedList = SortedList()
        self._loading = False
        self._names: dict[str, str] = {}  # users met by replay, one string object each
        # Replay's changes, newest last, and the revision of the newest it had to drop.
        self._replayed_changes: collections.deque[tuple[list[Change], float]] = collections.deque()
        self._dropped: int | None = None
        # TTL: a heap of (deadline, key), pruned lazily (an entry whose key no longer has that
        # deadline is skipped when it surfaces), and the default TTL of each cache prefix.
        self._deadlines: list[tuple[float, str]] = []
        self._expiring = 0  # live keys with a deadline
        self._caches: dict[str, float] = {}
        self._queue_configs: dict[str, QueueConfig] = {}
        self._quotas: dict[str, Quota] = {}
        # What each writer owns: kept only once some user has a quota (None until then), so
        # that a database without quotas pays nothing for them.
        self._usage: Usage | None = None
        self._book = ClaimBook()
        self._sessions = SessionBook()
        self.history = History(self.limits.history)
        self.counters = EngineCounters()

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """The key's entry, or None if it does not exist."""
        return self._entries.get(self._key(key))

    def keys(
        self, prefix: str = "", *, after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """Keys equal to or below ``prefix`` in sorted order, after ``after``, at most ``limit``."""
        prefix = self._prefix(prefix)
        if after is not None and not isinstance(after, str):
            raise ProntoError(ErrorCode.BAD_REQUEST, "'after' must be a key (a string).")
        if limit is not None and (not is_integer(limit) or limit < 0):
            raise ProntoError(ErrorCode.BAD_REQUEST, "'limit' must be a whole number, 0 or more.")
        return list(itertools.islice(self._iter_prefix(prefix, after), limit))

    def scan(
        self, prefix: str = "", *, after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, Entry]]:
        """Like :meth:`keys`, with each key's entry."""
        entries = self._entries
        return [(key, entries[key]) for key in self.keys(prefix, after=after, limit=limit)]

    def count(self, prefix: str = "") -> int:
        """How many keys are equal to or below ``prefix``."""
        prefix = self._prefix(prefix)
        if not prefix:
            return len(self._entries)
        low, high = descendant_range(prefix)
        below: int = self._index.bisect_left(high) - self._index.bisect_left(low)
        return below + (prefix in self._entries)

    def _iter_prefix(self, prefix: str, after: str | None) -> Iterator[str]:
        if not prefix:
            yield from self._index.irange(minimum=after, inclusive=(False, False))
            return
        if prefix in self._entries and (after is None or prefix > after):
            yield prefix
        low, high = descendant_range(prefix)
        if after is not None and after >= low:
            yield from self._index.irange(after, high, inclusive=(False, False))
        else:
            yield from self._index.irange(low, high, inclusive=(True, False))

    # -- writes --------------------------------------------------------------------------------

    def set(
        self,
        key: str,
        value: Any,
        *,
        writer: str,
        now: float,
        if_absent: bool = False,
        if_rev: int | None = None,
        if_value: Any = MISSING,
        ttl: float | None = None,
        session: int | None = None,
        item: ItemOptions | None = None,
    ) -> Applied[Entry]:
        """Write ``value`` at ``key``, optionally only if it is absent, at a modify revision, or
        holds ``if_value`` (compare-and-set). A failed condition raises compare_failed.

        With ``item`` the key is a queue item with those options: its priority, the time it may
        be claimed from, and the keys it waits for (those that exist now); they stay with the key
        until a write with other options, whatever is written in between.

        The key expires ``ttl`` seconds from ``now``; without ``ttl``, after its cache's TTL if it
        is under a cache prefix, else never. A set always restarts the clock.

        With ``session`` the key is attached to that session instead (no TTL, no cache's): it is
        deleted when the session ends. A set without ``session`` detaches it."""
        key = self._key(key)
        packed = self._pack(value)
        if session is None:
            expires = self._deadline(key, ttl, now)
        else:
            self._attachable(key, session, ttl, now)
            expires = None
        prev = self._entries.get(key)
        self._require(key, prev, self._conditions(key, if_absent, if_rev, if_value))
        if item is None:
            return self._put(key, prev, value, packed, writer, now, expires, session)
        if session is not None:
            raise ProntoError(
                ErrorCode.BAD_REQUEST,
                "A queue item is not attached to a session: give the queue options or 'session'.",
            )
        return self._put(key, prev, value, packed, writer, now, expires, item=item)

    def _configure(
        self, key: str, entry: Entry, priority: int, not_before: float | None, after: list[str]
    ) -> None:
        waits_for = [k for k in after if k in self._entries and k != key]
        self._book.configure(key, entry, priority, not_before, waits_for)

    def delete(
        self,
        key: str,
        *,
        writer: str,
        now: float,
        if_rev: int | None = None,
        if_value: Any = MISSING,
    ) -> Applied[bool]:
        """Delete ``key``; the result says whether it existed. Deleting nothing changes nothing."""
        key = self._key(key)
        prev = self._entries.get(key)
        self._require(key, prev, self._conditions(key, False, if_rev, if_value))
        if prev is None:
            return Applied(False, [], [])
        rev = self.revision + 1
        self.revision = rev
        self._remove(key)
        record = rec.Delete(rev, writer, now, key).encode()
        changes = [Change(rev, ChangeKind.DELETE, key, None, writer)]
        self.history.add(changes, now)
        return Applied(True, [record], changes)

    def incr(self, key: str, by: int = 1, *, writer: str, now: float) -> Applied[int]:
        """Add ``by`` to the integer at ``key`` (a missing key counts as 0); the result is the sum."""
        key = self._key(key)
        prev = self._entries.get(key)
        total = _incremented(prev, by)
        # An existing key keeps its deadline (a fixed window) and its session; a new one takes
        # its cache's TTL.
        if prev is None:
            expires, session = self._deadline(key, None, now), None
        else:
            expires, session = prev.expires, prev.session
        applied = self._put(key, prev, total, self._pack(total), writer, now, expires, session)
        return Applied(total, applied.records, applied.changes)

    def decr(self, key: str, by: int = 1, *, writer: str, now: float) -> Applied[int]:
        """Subtract ``by`` from the integer at ``key``: :meth:`incr` by ``-by``."""
        if not is_integer(by):
            raise ProntoError(ErrorCode.BAD_REQUEST, "The decrement must be an integer.")
        return self.incr(key, -by, writer=writer, now=now)

    def _put(
        self,
        key: str,
        prev: Entry | None,
        value: Any,
        packed: bytes,
        writer: str,
        now: float,
        expires: float | None,
        session: int | None = None,
        item: ItemOptions | None = None,
    ) -> Applied[Entry]:
        """Write one key at the next revision (a queue item with ``item``'s options);
        everything that can fail is checked first."""
        if writer in self._quotas:
            self._within_quota(writer, [(prev, len(packed))])
        rev = self.revision + 1
        entry = _next_entry(
            prev, _owned(value, packed), len(packed), rev, writer, now, expires, session
        )
        if item is None:
            record = self._fits(rec.encode_put(rev, writer, now, key, packed, entry))
        else:
            options = (item.priority, item.not_before, list(item.after))
            fields = (rev, writer, now, key, entry.create_rev, entry.version, expires)
            record = self._fits(rec.PutItem(*fields, *options, value).encode(packed))
        self.revision = rev
        self._store(key, entry)
        if item is not None:
            self._configure(key, entry, *options)
        changes = [Change(rev, ChangeKind.PUT, key, entry, writer)]
        self.history.add(changes, now)
        return Applied(entry, [record], changes)

    # -- TTL -----------------------------------------------------------------------------------

    def expire(self, key: str, seconds: float, *, writer: str, now: float) -> Applied[bool]:
        """Give ``key`` a deadline ``seconds`` from ``now`` (0 or less: it expires now). The
        result says whether the key existed. Like a set of the same value, it takes a revision."""
        key = self._key(key)
        seconds = _seconds(seconds, "seconds", allow_past=True)
        prev = self._entries.get(key)
        if prev is None:
            return Applied(False, [], [])
        if seconds <= 0:
            return Applied(True, *self._expire_keys([key], now))
        if prev.session is not None:
            raise ProntoError(
                ErrorCode.BAD_REQUEST,
                f"{key!r} is attached to session {prev.session}, which decides when it goes; "
                "set it again without the session to give it a TTL.",
            )
        applied = self._put(
            key, prev, prev.value, self._pack(prev.value), writer, now, now + seconds
        )
        return Applied(True, applied.records, applied.changes)

    def persist(self, key: str, *, writer: str, now: float) -> Applied[bool]:
        """Remove ``key``'s deadline; the result says whether it had one (else nothing changes)."""
        key = self._key(key)
        prev = self._entries.get(key)
        if prev is None or prev.expires is None:
            return Applied(False, [], [])
        applied = self._put(key, prev, prev.value, self._pack(prev.value), writer, now, None)
        return Applied(True, applied.records, applied.changes)

    def expire_due(self, now: float) -> Applied[list[str]]:
        """Remove every key whose deadline is ``now`` or earlier, at one new revision (one EXPIRE
        record), then end every session whose deadline is, each as :meth:`session_revoke` would
        but with its keys expiring (by ""); the result lists the keys gone, in that order (each
        session's sorted). Nothing due: nothing changes.

        The first call after a restore also starts the clock of every replayed session: each has
        its full TTL from ``now`` (keep-alives are not logged)."""
        due: dict[str, None] = {}  # ordered, and a key pushed twice is listed once
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            entry = self._entries.get(key)
            if entry is not None and entry.expires == deadline:
                due[key] = None
        keys = list(due)
        records, changes = self._expire_keys(keys, now) if keys else ([], [])
        ended = self._end_sessions(self._sessions.due(now), now, expired=True)
        return Applied(keys + ended.result, records + ended.records, changes + ended.changes)

    def _expire_keys(self, keys: list[str], now: float) -> tuple[list[Record], list[Change]]:
        rev = self.revision + 1
        record = self._fits(rec.Expire(rev, now, keys).encode())
        self.revision = rev
        for key in keys:
            self._remove(key)
        changes = [Change(rev, ChangeKind.EXPIRE, key, None) for key in keys]
        self.history.add(changes, now)
        return [record], changes

    def next_deadline(self) -> float | None:
        """The earliest deadline of a live key or session, or None: when :meth:`expire_due` has
        work (minus infinity after a restore with sessions, until it starts their clocks)."""
        heap = self._deadlines
        key_deadline = None
        while heap:
            deadline, key = heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry.expires == deadline:
                key_deadline = deadline
                break
            heapq.heappop(heap)  # stale: the key was rewritten, persisted or deleted since
        session_deadline = self._sessions.next_deadline()
        if key_deadline is None or session_deadline is None:
            return key_deadline if session_deadline is None else session_deadline
        return min(key_deadline, session_deadline)

    def next_timer(self) -> float | None:
        """The earliest moment either :meth:`expire_due` or :meth:`claims_due` has work."""
        times = [t for t in (self.next_deadline(), self._book.next_timer()) if t is not None]
        return min(times, default=None)

    def deadline(self, key: str) -> tuple[bool, float | None]:
        """Whether ``key`` exists, and its deadline (None: it has none)."""
        entry = self._entries.get(self._key(key))
        return entry is not None, None if entry is None else entry.expires

    def create_cache(self, prefix: str, seconds: float) -> Applied[None]:
        """Make ``prefix`` a cache: every key set under it later, without a TTL of its own,
        expires ``seconds`` after that set. Redefining a cache changes its TTL; keys already
        there keep their deadlines."""
        prefix = self._cache_prefix(prefix)
        seconds = _seconds(seconds, "seconds")
        self._caches[prefix] = seconds
        return Applied(None, [rec.Cache(prefix, seconds).encode()], [])

    def drop_cache(self, prefix: str) -> Applied[bool]:
        """Stop ``prefix`` being a cache (keys there keep their deadlines); whether it was one."""
        prefix = self._cache_prefix(prefix)
        if self._caches.pop(prefix, None) is None:
            return Applied(False, [], [])
        return Applied(True, [rec.Cache(prefix, None).encode()], [])

    def caches(self) -> dict[str, float]:
        """Every cache prefix with its TTL in seconds, sorted by prefix."""
        return dict(sorted(self._caches.items()))

    # -- sessions ------------------------------------------------------------------------------

    def session_grant(
        self, ttl: float, *, owner: str, now: float, bound: int | None = None
    ) -> Applied[int]:
        """A new session for ``owner``, alive ``ttl`` seconds from ``now`` and from each
        keep-alive; the result is its id (ids are never reused). Logged without a revision.
        ``bound``: the connection it is bound to too (:meth:`end_bound_sessions`; not logged)."""
        ttl = _seconds(ttl, "ttl")
        limit = self.limits.max_session_ttl
        if ttl > limit:
            raise ProntoError(
                ErrorCode.BAD_REQUEST,
                f"A session's 'ttl' is at most {limit:g} seconds; keep it alive more often instead.",
            )
        session = self._sessions.grant(owner, ttl, now + ttl, bound)
        return Applied(session, [rec.SessionGrant(session, owner, ttl, now).encode()], [])

    def session_keepalive(self, session: int, *, now: float) -> Applied[float]:
        """Keep ``session`` alive for its TTL from ``now``; the result is its new deadline. Not
        logged: a restart gives every session its full TTL again instead."""
        held = self._live_session(session, now)
        deadline = now + held.ttl
        self._sessions.renew(session, deadline)
        return Applied(deadline, [], [])

    def session_revoke(self, session: int, *, writer: str, now: float) -> Applied[list[str]]:
        """End ``session`` now: every key attached to it is deleted at one new revision (none if
        it had no keys), as deletes by ``writer``; the result lists them, sorted."""
        if not is_integer(session) or session not in self._sessions.sessions:
            raise _no_session(session)
        return self._end_session(session, writer, now, expired=False)

    def end_bound_sessions(self, connection: int, *, now: float) -> Applied[list[str]]:
        """Connection ``connection`` closed: revoke the sessions bound to it (as the broker,
        writer ""), each at a revision of its own; the result lists the keys deleted."""
        return self._end_sessions(self._sessions.bound_to(connection), now, expired=False)

    def _end_sessions(
        self, sessions: list[int], now: float, *, expired: bool
    ) -> Applied[list[str]]:
        """End each of ``sessions`` in turn, by the broker (writer ""): their keys, records and
        changes together."""
        keys: list[str] = []
        records: list[Record] = []
        changes: list[Change] = []
        for session in sessions:
            ended = self._end_session(session, "", now, expired=expired)
            keys += ended.result
            records += ended.records
            changes += ended.changes
        return Applied(keys, records, changes)

    def session_owner(self, session: Any) -> str | None:
        """The user ``session`` was granted to, or None if it is not live."""
        held = self._sessions.sessions.get(session) if is_integer(session) else None
        return None if held is None else held.owner

    def sessions(self) -> list[SessionInfo]:
        """Every live session, by id."""
        return self._sessions.info()

    def attached_keys(self) -> Iterator[str]:
        """Every key attached to a live session (in no order)."""
        for session in self._sessions.sessions.values():
            yield from session.keys

    @property
    def next_session(self) -> int:
        """The id the next session will get."""
        return self._sessions.next_id

    def _live_session(self, session: Any, now: float) -> Session:
        """The session ``session``, refused (not_found) if it ended or its deadline has passed
        (it ends at the next :meth:`expire_due`)."""
        held = self._sessions.sessions.get(session) if is_integer(session) else None
        if held is None or (held.deadline is not None and held.deadline <= now):
            raise _no_session(session)
        return held

    def _attachable(self, key: str, session: int, ttl: float | None, now: float) -> None:
        """Check that ``key`` may be attached to ``session`` now (it then has no deadline: the
        session, not a clock, decides when it goes)."""
        if ttl is not None:
            raise ProntoError(
                ErrorCode.BAD_REQUEST,
                "A key attached to a session lives as long as the session: give 'ttl' or "
                "'session', not both.",
            )
        held = self._live_session(session, now)
        limit = self.limits.max_session_keys
        if len(held.keys) >= limit and key not in held.keys:
            raise ProntoError(
                ErrorCode.TOO_LARGE,
                f"Session {session} holds {limit} keys, the most one may; "
                "grant another session for more.",
            )

    def _end_session(
        self, session: int, writer: str, now: float, *, expired: bool
    ) -> Applied[list[str]]:
        keys = sorted(self._sessions.sessions[session].keys)
        rev = self.revision + 1 if keys else None
        record = self._fits(rec.SessionEnd(rev, writer, now, session, expired, keys).encode())
        self._sessions.end(session)
        if rev is None:
            return Applied(keys, [record], [])
        self.revision = rev
        for key in keys:
            self._remove(key)
        kind = ChangeKind.EXPIRE if expired else ChangeKind.DELETE
        changes = [Change(rev, kind, key, None, writer) for key in keys]
        self.history.add(changes, now)
        return Applied(keys, [record], changes)

    # -- claims --------------------------------------------------------------------------------

    def claim(
        self,
        prefix: str,
        *,
        holder: str,
        now: float,
        lease: float | None = None,
        bound: int | None = None,
        max_deliveries: int | None = None,
    ) -> Applied[Claimed | None]:
        """Hand out the most urgent claimable direct child of ``prefix`` (lowest priority, then
        oldest by create revision) for ``lease`` seconds (None: the queue's configured lease, else
        DEFAULT_LEASE), or None if there is none. An item already handed out ``max_deliveries``
        times (None: the queue's setting) goes to ``dead.<key>`` instead, as beanstalkd buries a
        job. ``bound`` ties the claim to a connection (see :meth:`return_bound`)."""
        prefix = self._prefix(prefix)
        config = self._queue_configs.get(prefix)
        if lease is None:
            lease = DEFAULT_LEASE if config is None or config.lease is None else config.lease
        if max_deliveries is None and config is not None:
            max_deliveries = config.max_deliveries
        lease = _seconds(lease, "lease")
        if self.claims_left(holder) == 0:
            quota = self._quotas[holder]
            raise quotas.exceeded(
                holder, "max_claims", quota.max_claims or 0, "it holds that many claims"
            )
        if max_deliveries is not None and (not is_integer(max_deliveries) or max_deliveries < 1):
            raise ProntoError(ErrorCode.BAD_REQUEST, "'max_deliveries' must be 1 or more.")
        ready = self._book.queue(prefix, self.children(prefix))
        records: list[Record] = []
        changes: list[Change] = []
        while ready:
            key = ready[0][2]
            entry = self._entries[key]
            delivered = self._book.deliveries.get(key, 0)
            if max_deliveries is not None and delivered >= max_deliveries:
                buried = self._bury(key, entry, now)
                records += buried.records
                changes += buried.changes
                continue
            rev = self.revision + 1
            claim = Claim(holder, self._book.fence + 1, now + lease, bound)
            record = rec.Claim(
                rev, holder, now, key, claim.token, claim.lease, delivered + 1, bound
            ).encode()
            self.revision = rev
            count = self._book.take(key, entry, claim)
            counters = self.counters
            counters.claims += 1
            if count > 1:
                counters.redeliveries += 1
            records.append(record)
            changes.append(Change(rev, ChangeKind.CLAIM, key, entry, holder))
            self.history.add(changes, now)
            return Applied(
                Claimed(key, entry.value, claim.token, claim.lease, count), records, changes
            )
        self.history.add(changes, now)
        return Applied(None, records, changes)

    def _dead_letters(self, writes: list[tuple[str, bool]]) -> None:
        """A transaction that deletes K and writes ``dead.K`` (a bury is one) moves K: whatever
        waited for K waits for its dead letter. (A rule of the transaction's shape, so that
        replay, which sees only the shape, does the same.)"""
        deleted = {key for key, gone in writes if gone}
        for key, gone in writes:
            if not gone and key.startswith(DEAD_PREFIX + SEPARATOR):
                source = key[len(DEAD_PREFIX) + 1 :]
                if source in deleted:
                    self._book.moved(source, key)

    def _bury(self, key: str, entry: Entry, now: float) -> Applied[None]:
        # Not validated: the item's key is, and the prefix may take it 5 characters over the
        # length limit, which must not make the move (and the claim) fail half-way.
        dead = f"{DEAD_PREFIX}{SEPARATOR}{key}"
        packed = self._pack(entry.value)
        rev = self.revision + 1
        moved = _next_entry(
            self._entries.get(dead), entry.value, len(packed), rev, "prontodb", now, None
        )
        record = self._fits(
            rec.encode_txn(rev, "prontodb", now, [(key, None, None), (dead, packed, moved)])
        )
        self.revision = rev
        self.counters.dead_letters += 1
        self._dead_letters([(key, True), (dead, False)])
        self._remove(key)
        self._store(dead, moved)
        changes = [
            Change(rev, ChangeKind.DELETE, key, None, "prontodb"),
            Change(rev, ChangeKind.PUT, dead, moved, "prontodb"),
        ]
        return Applied(None, [record], changes)

    def ack(self, key: str, token: int, *, writer: str, now: float) -> Applied[None]:
        """Finish the claimed ``key``: delete it. A stale ``token`` is compare_failed."""
        key, _ = self._held(key, token)
        rev = self.revision + 1
        record = rec.Ack(rev, writer, now, key).encode()
        self.revision = rev
        self._remove(key)
        changes = [Change(rev, ChangeKind.ACK, key, None, writer)]
        self.history.add(changes, now)
        return Applied(None, [record], changes)

    def release(
        self,
        key: str,
        token: int,
        *,
        writer: str,
        now: float,
        delay: float | None = None,
        priority: int | None = None,
    ) -> Applied[None]:
        """Give the claimed ``key`` back to its queue after ``delay`` seconds (None: after its
        queue's backoff, if it has one, else at once), with a new ``priority`` if given."""
        key, entry = self._held(key, token)
        if priority is not None:
            priority = priority_of(priority)
        if delay is None:
            not_before = self._backoff(key, now)
        else:
            not_before = None if not delay else now + _seconds(delay, "delay")
        rev = self.revision + 1
        record = rec.Release(rev, writer, now, key, not_before, priority).encode()
        self.revision = rev
        if priority is not None:
            self._book.reprioritize(key, priority)
        self._book.give_back(key, entry, not_before)
        changes = [Change(rev, ChangeKind.RELEASE, key, entry, writer)]
        self.history.add(changes, now)
        return Applied(None, [record], changes)

    def extend(self, key: str, token: int, lease: float, *, now: float) -> Applied[float]:
        """Renew the claim on ``key`` for ``lease`` seconds from ``now``; the new deadline."""
        key, _ = self._held(key, token)
        deadline = now + _seconds(lease, "lease")
        self._book.extend(key, deadline)
        return Applied(deadline, [rec.Extend(key, token, deadline).encode()], [])

    def claims_due(self, now: float) -> Applied[list[str]]:
        """Return expired leases to their queues (one logged change) and end delays that are
        over; the result lists the keys that became claimable."""
        leases, delays = self._book.due(now)
        for key in delays:
            self._book.ready_again(key, self._entries[key])
        if not leases:
            return Applied(delays, [], [])
        self.counters.expired_leases += len(leases)
        return Applied(delays + leases, *self._return(leases, now))

    def return_bound(self, now: float, session: int | None = None) -> Applied[list[str]]:
        """Return the claims bound to connection ``session`` (None: to any connection, which is
        what a broker does when it opens a database: none of those connections exists now)."""
        keys = [
            k
            for k, c in self._book.claims.items()
            if c.bound is not None and (session is None or c.bound == session)
        ]
        if not keys:
            return Applied(keys, [], [])
        return Applied(keys, *self._return(keys, now))

    def _return(self, keys: list[str], now: float) -> tuple[list[Record], list[Change]]:
        rev = self.revision + 1
        later = [self._backoff(key, now) for key in keys]
        logged = later if any(t is not None for t in later) else None
        record = self._fits(rec.Returned(rev, now, keys, logged).encode())
        self.revision = rev
        changes = []
        for key, not_before in zip(keys, later, strict=True):
            entry = self._entries[key]
            self._book.give_back(key, entry, not_before)
            changes.append(Change(rev, ChangeKind.RELEASE, key, entry))
        self.history.add(changes, now)
        return [record], changes

    def _backoff(self, key: str, now: float) -> float | None:
        """When ``key``, back from a claim, may be claimed again under its queue's backoff."""
        config = self._queue_configs.get(parent_of(key))
        delay = backoff_delay(config, key, self._book.deliveries.get(key, 0))
        return None if delay is None else now + delay

    # -- queues --------------------------------------------------------------------------------

    def queue_config(self, prefix: str, config: QueueConfig | None) -> Applied[QueueConfig | None]:
        """Set (None: clear) the settings of the queue ``prefix``; logged without a revision,
        like a cache."""
        prefix = self._prefix(prefix)
        if config is None or config == QueueConfig():
            self._queue_configs.pop(prefix, None)
            return Applied(None, [rec.QueueConfig(prefix, None).encode()], [])
        self._queue_configs[prefix] = config
        return Applied(config, [rec.QueueConfig(prefix, config.as_map()).encode()], [])

    def queue_configs(self) -> dict[str, QueueConfig]:
        """Every configured queue prefix with its settings, sorted by prefix."""
        return dict(sorted(self._queue_configs.items()))

    # -- quotas --------------------------------------------------------------------------------

    def set_quota(self, user: str, quota: Quota | None) -> Applied[Quota | None]:
        """Give ``user`` ``quota`` in this database (None, or no limit at all: none); logged
        without a revision. Use already past a new limit stays (nothing is deleted): the next
        write that would add to it is refused."""
        if quota is None or quota == Quota():
            self._quotas.pop(user, None)
            return Applied(None, [rec.QuotaRecord(user, None).encode()], [])
        self._quotas[user] = quota
        if self._usage is None:
            self._count_usage()
        return Applied(quota, [rec.QuotaRecord(user, quota.as_map()).encode()], [])

    def quotas(self) -> dict[str, Quota]:
        """Every user with a quota here, sorted by name."""
        return dict(sorted(self._quotas.items()))

    def usage(self, user: str) -> dict[str, int]:
        """What ``user`` has now in this database: keys (last written by it), their bytes, and
        the claims it holds."""
        if self._usage is None:
            self._count_usage()
        assert self._usage is not None
        keys, size = self._usage.of(user)
        return {"keys": keys, "bytes": size, "claims": self._book.claims_of(user)}

    def claims_left(self, holder: str) -> int | None:
        """How many more claims ``holder`` may hold under its quota (None: no limit)."""
        quota = self._quotas.get(holder)
        if quota is None or quota.max_claims is None:
            return None
        return max(quota.max_claims - self._book.claims_of(holder), 0)

    def _count_usage(self) -> None:
        usage = self._usage = Usage()
        for entry in self._entries.values():
            usage.add(entry.writer, entry.size, 1)

    def _within_quota(self, writer: str, writes: list[tuple[Entry | None, int | None]]) -> None:
        """Refuse (quota_exceeded) writes by ``writer`` of keys whose entries are now ``prev``
        with new sizes (None: deleted) that would take it past its quota."""
        if self._usage is None:
            self._count_usage()
        assert self._usage is not None
        before = keys, size = self._usage.of(writer)
        for prev, new_size in writes:
            if prev is not None and prev.writer == writer:
                keys -= 1
                size -= prev.size
            if new_size is not None:
                keys += 1
                size += new_size
        quotas.check(self._quotas[writer], writer, before, (keys, size))

    def item_of(self, key: str) -> dict[str, Any]:
        """``key``'s queue options as ``get --meta`` shows them: its priority, the time it may
        be claimed from (None: now) and the keys it still waits for."""
        book = self._book
        return {
            "priority": book.priority.get(key, DEFAULT_PRIORITY),
            "ready_at": book.delayed.get(key),
            "after": sorted(book.after.get(key, ())),
        }

    def claim_of(self, key: str) -> tuple[Claim | None, int]:
        """``key``'s current claim (None: not held) and how many times it was handed out."""
        key = self._key(key)
        return self._book.claims.get(key), self._book.deliveries.get(key, 0)

    def claims(self, prefix: str = "") -> list[tuple[str, Claim]]:
        """The held claims at and below ``prefix``, by key."""
        prefix = self._prefix(prefix)
        return [
            (k, self._book.claims[k])
            for k in self._iter_prefix(prefix, None)
            if k in self._book.claims
        ]

    def soonest_claims(
        self, limit: int, keep: Callable[[str], bool] | None = None
    ) -> list[tuple[str, Claim, int]]:
        """At most ``limit`` held claims (of the keys ``keep`` keeps, if given), the soonest lease
        deadline first, each with how many times its item was handed out: one pass over the
        claims, not over the keys."""
        book = self._book
        items: Iterable[tuple[str, Claim]] = book.claims.items()
        if keep is not None:
            items = (kc for kc in items if keep(kc[0]))
        held = heapq.nsmallest(limit, items, key=lambda kc: (kc[1].lease, kc[0]))
        return [(key, claim, book.deliveries.get(key, 0)) for key, claim in held]

    def queues(
        self, prefix: str | None = None, now: float | None = None
    ) -> dict[str, dict[str, Any]]:
        """Every queue (a prefix claimed from since the open, configured, or holding an item
        written with queue options) at or below ``prefix`` (None: all), with its
        :meth:`queue_counts`."""
        book = self._book
        known = set(book.queue_prefixes()) | set(self._queue_configs)
        known |= {parent_of(k) for k in itertools.chain(book.priority, book.after, book.delayed)}
        if prefix:
            known = {q for q in known if q == prefix or q.startswith(prefix + SEPARATOR)}
        return {q: self.queue_counts(q, now) for q in sorted(known)}

    def queue_counts(self, prefix: str, now: float | None = None) -> dict[str, Any]:
        """Direct children of ``prefix`` that are ready, claimed, delayed, waiting for other
        keys; buried ones; their redeliveries; and (given ``now``) the age in seconds of the
        oldest ready one by its last write (None: none ready)."""
        prefix = self._prefix(prefix)
        counts: dict[str, Any] = self._book.counts(prefix, self.children(prefix))
        dead = f"{DEAD_PREFIX}{SEPARATOR}{prefix}" if prefix else DEAD_PREFIX
        counts["dead"] = sum(1 for k in self._iter_prefix(dead, None) if parent_of(k) == dead)
        if now is not None:
            self._book.queue(prefix, self.children(prefix))  # indexed, if it was not yet
            oldest = self._book.oldest_ready(prefix)
            counts["oldest_ready_age"] = (
                None if oldest is None else max(now - self._entries[oldest].time, 0.0)
            )
        return counts

    def children(self, prefix: str) -> Iterator[tuple[str, Entry]]:
        """The keys exactly one segment below ``prefix``, with their entries, in key order."""
        entries = self._entries
        for key in self._iter_prefix(prefix, None):
            if key != prefix and parent_of(key) == prefix:
                yield key, entries[key]

    def _held(self, key: str, token: int) -> tuple[str, Entry]:
        key = self._key(key)
        claim = self._book.claims.get(key)
        entry = self._entries.get(key)
        if claim is None or entry is None or claim.token != token:
            raise ProntoError(
                ErrorCode.COMPARE_FAILED,
                f"{_why_not_held(key, token, entry, claim)}; do not finish or change that work.",
                {"key": key, "token": None if claim is None else claim.token},
            )
        return key, entry

    def _cache_prefix(self, prefix: str) -> str:
        prefix = self._prefix(prefix)
        if not prefix:
            raise ProntoError(
                ErrorCode.BAD_REQUEST, "A cache needs a prefix (like sessions.active)."
            )
        return prefix

    def _deadline(self, key: str, ttl: float | None, now: float) -> float | None:
        """The deadline of a key written now: ``ttl`` if given, else its nearest cache's."""
        if ttl is not None:
            return now + _seconds(ttl, "ttl")
        if self._caches:
            prefix = key
            while prefix:
                seconds = self._caches.get(prefix)
                if seconds is not None:
                    return now + seconds
                prefix = prefix.rpartition(SEPARATOR)[0]
        return None

    def txn(
        self, compares: Sequence[Compare], ops: Sequence[TxnOp], *, writer: str, now: float
    ) -> Applied[TxnResult]:
        """If every compare holds, apply every operation at one new revision; else apply nothing.

        Operations see the effects of the ones before them. Any invalid operation (a bad key, a
        value too large, incr of a non-integer) raises and leaves the database as it was.
        """
        limit = self.limits.max_txn_ops
        if len(compares) > limit or len(ops) > limit:
            raise ProntoError(
                ErrorCode.TOO_LARGE,
                f"A transaction takes at most {limit} compares and {limit} operations.",
            )
        for compare in compares:
            self._key(compare.key)
        for op in ops:
            self._key(op.key)
        failed = [i for i, c in enumerate(compares) if not c.holds(self._entries.get(c.key))]
        if failed:
            return Applied(TxnResult(False, self.revision, failed=failed), [], [])

        rev = self.revision + 1
        staged: dict[str, _Staged] = {}
        results = [self._stage(op, staged, rev, writer, now) for op in ops]
        # Deleting a key the transaction itself created leaves nothing to record.
        writes = [(k, s) for k, s in staged.items() if s is not None or k in self._entries]
        if not writes:
            return Applied(TxnResult(True, self.revision, results), [], [])

        if writer in self._quotas:
            self._within_quota(
                writer,
                [(self._entries.get(k), None if s is None else s[1].size) for k, s in writes],
            )
        logged = [(k, None, None) if s is None else (k, *s) for k, s in writes]
        record = self._fits(rec.encode_txn(rev, writer, now, logged))
        # Nothing below can fail: the transaction is applied whole.
        self.revision = rev
        self._dead_letters([(k, s is None) for k, s in writes])
        changes: list[Change] = []
        for key, staged_write in writes:
            if staged_write is None:
                self._remove(key)
                changes.append(Change(rev, ChangeKind.DELETE, key, None, writer))
            else:
                self._store(key, staged_write[1])
                changes.append(Change(rev, ChangeKind.PUT, key, staged_write[1], writer))
        self.history.add(changes, now)
        return Applied(TxnResult(True, rev, results), [record], changes)

    def _stage(
        self, op: TxnOp, staged: dict[str, _Staged], rev: int, writer: str, now: float
    ) -> Any:
        if op.key in staged:
            pending = staged[op.key]
            current = None if pending is None else pending[1]
        else:
            current = self._entries.get(op.key)
        if op.kind is OpKind.GET:
            return current
        if op.kind is OpKind.DELETE:
            if current is not None:
                staged[op.key] = None
            return current is not None
        if op.kind is OpKind.INCR:  # as incr outside a transaction: a key keeps TTL and session
            value = _incremented(current, op.by)
            if current is None:
                expires, session = self._deadline(op.key, None, now), None
            else:
                expires, session = current.expires, current.session
        else:
            value, session = op.value, op.session
            if session is None:
                expires = self._deadline(op.key, None, now)
            else:
                self._attachable(op.key, session, None, now)
                expires = None
        packed = self._pack(value)
        stored = _owned(value, packed)
        entry = _next_entry(current, stored, len(packed), rev, writer, now, expires, session)
        staged[op.key] = (packed, entry)
        return value if op.kind is OpKind.INCR else rev

    # -- recovery and snapshots ----------------------------------------------------------------

    @classmethod
    def restore(cls, records: Iterable[Record], limits: EngineLimits | None = None) -> Engine:
        """Rebuild an engine from its records in log order (a snapshot's first, if any)."""
        engine = cls(limits)
        engine._loading = True
        engine._replayed_changes = collections.deque(maxlen=engine.limits.history.revisions)
        try:
            for kind, payload in records:
                engine.apply_record(kind, payload)
        except ReplayError as exc:
            # A source that is a generator (storage's replay) is told which record failed, so
            # that its error can say where that record lies (file and offset).
            throw = getattr(records, "throw", None)
            if throw is not None:
                throw(exc)
            raise
        engine._loading = False
        engine._names = {}
        if engine._dropped is not None:  # so were the snapshot's batches, which came before
            engine.history.reset(engine._dropped + 1)
        for changes, time in engine._replayed_changes:
            engine.history.add(changes, time)
        engine._replayed_changes.clear()
        # One sort instead of a million inserts (and snapshots come in key order, so it is cheap).
        engine._index = SortedList(engine._entries)
        engine._rebuild_deadlines()
        engine._book.rebuild(engine._entries)
        if engine._quotas:
            engine._count_usage()
        return engine

    def apply_record(self, kind: int, payload: bytes) -> None:
        """Apply one logged record; raises ReplayError if it cannot be."""
        try:
            record = rec.decode_record(kind, payload)
            _REPLAY[type(record)](self, record)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise ReplayError(f"a record of kind {kind} is malformed: {exc}") from exc

    # Replay, one method per record type (the table _REPLAY, after the class, maps them). A
    # change is checked to follow the revision before it, applied, then kept in the history.

    def _follows(self, rev: Any) -> int:
        if not is_integer(rev) or rev <= self.revision:
            raise ReplayError(f"revision {rev!r} does not follow {self.revision}")
        return int(rev)

    def _replayed(self, rev: int, changes: list[Change], time: float) -> None:
        self.revision = rev
        if not self._loading:
            self.history.add(changes, time)
        elif changes:
            # Kept aside, only the newest (the window cannot hold more): the history takes them
            # when replay ends, so a long log does not build and prune a batch per record.
            replayed = self._replayed_changes
            if len(replayed) == replayed.maxlen:
                self._dropped = replayed[0][0][0].revision
            replayed.append((changes, time))

    def _replay_put(self, record: rec.Put | rec.PutTtl | rec.PutSession) -> None:
        rev = self._follows(record.rev)
        key, writer = record.key, self._names.setdefault(record.writer, record.writer)
        entry = self._replay_entry(key, record, rev, writer, record.time)
        self._replayed(rev, [Change(rev, ChangeKind.PUT, key, entry, writer)], record.time)

    def _replay_delete(self, record: rec.Delete | rec.Ack) -> None:
        rev = self._follows(record.rev)
        self._remove(record.key)
        kind = ChangeKind.DELETE if type(record) is rec.Delete else ChangeKind.ACK
        self._replayed(rev, [Change(rev, kind, record.key, None, record.writer)], record.time)

    def _replay_txn(self, record: rec.Txn) -> None:
        rev = self._follows(record.rev)
        writer, time = record.writer, record.time
        self._dead_letters([(w.key, isinstance(w, rec.TxnDelete)) for w in record.writes])
        changes = []
        for write in record.writes:
            key = write.key
            if isinstance(write, rec.TxnDelete):
                self._remove(key)
                changes.append(Change(rev, ChangeKind.DELETE, key, None, writer))
            else:
                entry = self._replay_entry(key, write, rev, writer, time)
                changes.append(Change(rev, ChangeKind.PUT, key, entry, writer))
        self._replayed(rev, changes, time)

    def _replay_expire(self, record: rec.Expire) -> None:
        rev = self._follows(record.rev)
        for key in record.keys:
            self._remove(key)
        changes = [Change(rev, ChangeKind.EXPIRE, key, None) for key in record.keys]
        self._replayed(rev, changes, record.time)

    def _replay_session_grant(self, record: rec.SessionGrant) -> None:
        self._sessions.add(record.session, record.owner, record.ttl, None)

    def _replay_session_end(self, record: rec.SessionEnd) -> None:
        if record.session not in self._sessions.sessions:
            raise ReplayError(f"session {record.session} ends, but it is not live")
        self._sessions.end(record.session)
        if record.rev is None:
            if record.keys:
                raise ReplayError(f"session {record.session} ends with keys but no revision")
            return
        rev = self._follows(record.rev)
        for key in record.keys:
            self._remove(key)
        kind = ChangeKind.EXPIRE if record.expired else ChangeKind.DELETE
        changes = [Change(rev, kind, key, None, record.writer) for key in record.keys]
        self._replayed(rev, changes, record.time)

    def _replay_claim(self, record: rec.Claim) -> None:
        rev = self._follows(record.rev)
        key, holder = record.key, record.holder
        claim = Claim(holder, record.token, record.lease, record.bound)
        self._book.take(key, self._entries[key], claim)
        self._book.deliveries[key] = record.deliveries
        self._replayed(
            rev, [Change(rev, ChangeKind.CLAIM, key, self._entries[key], holder)], record.time
        )

    def _replay_put_item(self, record: rec.PutItem) -> None:
        rev = self._follows(record.rev)
        key, writer = record.key, self._names.setdefault(record.writer, record.writer)
        entry = self._replay_entry(key, record, rev, writer, record.time)
        self._configure(key, entry, record.priority, record.not_before, list(record.after))
        self._replayed(rev, [Change(rev, ChangeKind.PUT, key, entry, writer)], record.time)

    def _replay_queue_config(self, record: rec.QueueConfig) -> None:
        if record.config is None:
            self._queue_configs.pop(record.prefix, None)
        else:
            self._queue_configs[record.prefix] = QueueConfig.from_map(record.config)

    def _replay_quota(self, record: rec.QuotaRecord) -> None:
        if record.quota is None:
            self._quotas.pop(record.user, None)
        else:
            self._quotas[record.user] = Quota.from_map(record.quota)

    def _replay_snapshot_quotas(self, record: rec.SnapshotQuotas) -> None:
        for user, quota in record.quotas.items():
            self._quotas[user] = Quota.from_map(quota)

    def _replay_snapshot_queues(self, record: rec.SnapshotQueues) -> None:
        for prefix, config in record.queues.items():
            self._queue_configs[prefix] = QueueConfig.from_map(config)

    def _replay_snapshot_items(self, record: rec.SnapshotItems) -> None:
        for key, priority, after in record.items:
            self._configure(key, self._entries[key], priority, None, after)

    def _replay_release(self, record: rec.Release) -> None:
        rev = self._follows(record.rev)
        key = record.key
        if record.priority is not None:
            self._book.reprioritize(key, record.priority)
        self._book.give_back(key, self._entries[key], record.not_before)
        change = Change(rev, ChangeKind.RELEASE, key, self._entries[key], record.writer)
        self._replayed(rev, [change], record.time)

    def _replay_returned(self, record: rec.Returned) -> None:
        rev = self._follows(record.rev)
        changes = []
        later = record.not_before or [None] * len(record.keys)
        for key, not_before in zip(record.keys, later, strict=True):
            self._book.give_back(key, self._entries[key], not_before)
            changes.append(Change(rev, ChangeKind.RELEASE, key, self._entries[key]))
        self._replayed(rev, changes, record.time)

    def _replay_extend(self, record: rec.Extend) -> None:
        claim = self._book.claims.get(record.key)
        if claim is not None and claim.token == record.token:
            self._book.extend(record.key, record.lease)

    def _replay_cache(self, record: rec.Cache) -> None:
        self._set_caches({record.prefix: record.seconds})

    def _replay_snapshot_caches(self, record: rec.SnapshotCaches) -> None:
        self._set_caches(record.caches)

    def _set_caches(self, caches: Mapping[str, float | None]) -> None:
        for prefix, seconds in caches.items():
            if seconds is None:
                self._caches.pop(prefix, None)
            else:
                self._caches[prefix] = seconds

    def _replay_snapshot_meta(self, record: rec.SnapshotMeta) -> None:
        if record.format not in rec.SNAPSHOT_FORMATS:
            raise ReplayError(f"snapshot format {record.format} is not one this version reads")
        if self._entries or self.revision:
            raise ReplayError("a snapshot must come first in the log")
        self.revision = record.revision
        self.history.reset(record.revision + 1)

    def _replay_snapshot_entries(self, record: rec.SnapshotEntries) -> None:
        # The hot loop of opening a big database: a snapshot holds each key once, in an engine
        # that starts empty, so it skips _store's bookkeeping for overwrites and the index.
        entries = self._entries
        live = 0
        for key, entry in record.entries:
            entries[key] = entry
            live += _footprint(key, entry)
        self.live_bytes += live

    def _replay_snapshot_columns(self, record: rec.SnapshotColumns) -> None:
        # As _replay_snapshot_entries, in bulk: the footprints are summed column by column.
        keys, chunk = record.keys, record.entries
        self._entries.update(zip(keys, chunk, strict=True))
        self.live_bytes += (
            sum(map(len, keys))
            + sum(len(e.writer) + e.size for e in chunk)
            + _ENTRY_OVERHEAD * len(keys)
        )

    def _replay_snapshot_expiring(self, record: rec.SnapshotExpiring) -> None:
        for key, expires in record.deadlines:
            self._store(key, self._entries[key]._replace(expires=expires))

    def _replay_snapshot_claims(self, record: rec.SnapshotClaims) -> None:
        book = self._book
        book.fence = record.fence
        book.claims.update(record.claims)
        book.deliveries.update(record.deliveries)
        book.delayed.update(record.delayed)

    def _replay_snapshot_history(self, record: rec.SnapshotHistory) -> None:
        self.history.load(record.first, record.decoded(self._entries, self._names))

    def _replay_snapshot_sessions(self, record: rec.SnapshotSessions) -> None:
        self._sessions.load(record.next_id, record.sessions)

    def _replay_snapshot_attached(self, record: rec.SnapshotAttached) -> None:
        for key, session in record.keys:
            if session not in self._sessions.sessions:
                raise ReplayError(f"{key!r} is attached to session {session}, which is not live")
            self._store(key, self._entries[key]._replace(session=session))

    def _replay_entry(
        self,
        key: str,
        write: rec.Put
        | rec.PutTtl
        | rec.PutSession
        | rec.PutItem
        | rec.TxnPut
        | rec.TxnPutTtl
        | rec.TxnPutSession,
        rev: int,
        writer: str,
        time: float,
    ) -> Entry:
        value = write.value
        size = len(rec.pack(value))
        session = write.session
        if session is not None and session not in self._sessions.sessions:
            raise ReplayError(f"{key!r} is attached to session {session}, which is not live")
        entry = Entry(
            value, write.create_rev, rev, write.version, writer, time, size, write.expires, session
        )
        self._store(key, entry)
        return entry

    def snapshot(self) -> Iterator[Record]:
        """The live state as records, frozen now; safe to encode later while the engine moves on."""
        keys = list(self._index)
        entries = self._entries.copy()
        pairs = ((k, entries[k]) for k in keys)
        book = self._book
        claims = None
        if book.fence or book.claims or book.deliveries or book.delayed:
            claims = rec.SnapshotClaims(
                book.fence,
                list(book.claims.items()),
                list(book.deliveries.items()),
                list(book.delayed.items()),
            )
        history = self.history
        sessions = None
        if self._sessions.next_id > 1:  # the counter outlives the sessions: ids are not reused
            sessions = rec.SnapshotSessions(
                self._sessions.next_id,
                [(info.id, info.owner, info.ttl) for info in self._sessions.info()],
            )
        items = [
            (key, book.priority.get(key, DEFAULT_PRIORITY), sorted(book.after.get(key, ())))
            for key in sorted(set(book.priority) | set(book.after))
        ]
        queues = {prefix: c.as_map() for prefix, c in self._queue_configs.items()}
        return rec.encode_snapshot(
            self.revision,
            pairs,
            len(keys),
            dict(self._caches),
            claims,
            (history.first, history.batches()),
            sessions,
            items,
            queues,
            {user: q.as_map() for user, q in self._quotas.items()},
            entries,
        )

    def rebase(self, revision: int, next_session: int = 1) -> None:
        """Go on from ``revision`` (if above the current one) with no history before it: what a
        database restored from a backup does, so that no old resume point reads as valid. New
        sessions get ids from ``next_session`` up (if above), so that none reuses the id of a
        session the replaced database had."""
        self.revision = max(self.revision, revision)
        self._sessions.next_id = max(self._sessions.next_id, next_session)
        self.history.reset(self.revision + 1)

    def statistics(self) -> dict[str, int]:
        """Revision, key count and the live-bytes estimate (for compaction and ``status``)."""
        return {
            "revision": self.revision,
            "keys": len(self._entries),
            "expiring": self._expiring,
            "sessions": len(self._sessions.sessions),
            "live_bytes": self.live_bytes,
            "history_first": self.history.first,
            "history_bytes": self.history.bytes,
            "claims": len(self._book.claims),
        }

    @property
    def snapshot_bytes(self) -> int:
        """Estimate of what a snapshot takes on disk: the live keys and the history window."""
        return self.live_bytes + self.history.bytes

    # -- helpers -------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return validate_key(key, self.limits.max_key_len)

    def _prefix(self, prefix: str) -> str:
        return validate_prefix(prefix, self.limits.max_key_len)

    def _fits(self, record: Record) -> Record:
        limit = self.limits.max_record_size
        size = len(record[1])
        if size > limit:
            raise ProntoError(
                ErrorCode.TOO_LARGE,
                f"The change takes {size} bytes in the log; the limit is {limit}. "
                "Split the transaction or store smaller values.",
            )
        return record

    def _pack(self, value: Any) -> bytes:
        return pack_value(value, self.limits.max_value_size, self.limits.max_value_depth)

    @staticmethod
    def _conditions(key: str, if_absent: bool, if_rev: int | None, if_value: Any) -> list[Compare]:
        conditions = []
        if if_absent:
            conditions.append(Compare(key, Target.EXISTS, "==", False))
        if if_rev is not None:
            conditions.append(Compare(key, Target.MOD_REV, "==", if_rev))
        if if_value is not MISSING:
            conditions.append(Compare(key, Target.VALUE, "==", if_value))
        return conditions

    @staticmethod
    def _require(key: str, entry: Entry | None, conditions: list[Compare]) -> None:
        for condition in conditions:
            if not condition.holds(entry):
                raise ProntoError(
                    ErrorCode.COMPARE_FAILED,
                    f"The condition on {key!r} ({condition.target.value} {condition.op} "
                    f"{condition.value!r}) did not hold, so nothing was changed; re-read it and retry.",
                    {"key": key, "mod_rev": entry.mod_rev if entry else 0},
                )

    def _store(self, key: str, entry: Entry) -> None:
        prev = self._entries.get(key)
        usage = self._usage
        if usage is not None and not self._loading:
            if prev is not None:
                usage.add(prev.writer, prev.size, -1)
            usage.add(entry.writer, entry.size, 1)
        if prev is None:
            if not self._loading:
                self._index.add(key)
        else:
            self.live_bytes -= _footprint(key, prev)
            self._expiring -= prev.expires is not None
            if prev.session != entry.session:
                self._sessions.detach(key, prev.session)
        self._sessions.attach(key, entry.session)
        self._entries[key] = entry
        self.live_bytes += _footprint(key, entry)
        recreated = prev is not None and prev.create_rev != entry.create_rev
        if prev is not None and recreated:  # deleted and set again in one txn: a new item
            for item in self._book.removed(key, prev):
                self._book.ready_again(item, self._entries[item])
        if not self._loading:
            self._book.stored(key, entry, prev is None or recreated)
        if entry.expires is not None:
            self._expiring += 1
            if not self._loading:
                heapq.heappush(self._deadlines, (entry.expires, key))
                if len(self._deadlines) > 2 * self._expiring + 1024:
                    self._rebuild_deadlines()  # mostly stale: rewritten keys left old deadlines

    def _remove(self, key: str) -> None:
        prev = self._entries.pop(key, None)
        if prev is not None:
            if self._usage is not None and not self._loading:
                self._usage.add(prev.writer, prev.size, -1)
            if not self._loading:
                self._index.remove(key)
            self.live_bytes -= _footprint(key, prev)
            self._expiring -= prev.expires is not None
            self._sessions.detach(key, prev.session)
            for item in self._book.removed(key, prev):  # they waited for it alone
                self._book.ready_again(item, self._entries[item])

    def _rebuild_deadlines(self) -> None:
        self._deadlines = [
            (e.expires, k) for k, e in self._entries.items() if e.expires is not None
        ]
        heapq.heapify(self._deadlines)


# Which method replays each type of record.
_REPLAY: dict[type[Any], Callable[[Engine, Any], None]] = {
    rec.Put: Engine._replay_put,
    rec.PutTtl: Engine._replay_put,
    rec.Delete: Engine._replay_delete,
    rec.Ack: Engine._replay_delete,
    rec.Txn: Engine._replay_txn,
    rec.Expire: Engine._replay_expire,
    rec.Claim: Engine._replay_claim,
    rec.Release: Engine._replay_release,
    rec.Returned: Engine._replay_returned,
    rec.Extend: Engine._replay_extend,
    rec.SessionGrant: Engine._replay_session_grant,
    rec.SessionEnd: Engine._replay_session_end,
    rec.PutSession: Engine._replay_put,
    rec.Cache: Engine._replay_cache,
    rec.SnapshotMeta: Engine._replay_snapshot_meta,
    rec.SnapshotEntries: Engine._replay_snapshot_entries,
    rec.SnapshotColumns: Engine._replay_snapshot_columns,
    rec.SnapshotExpiring: Engine._replay_snapshot_expiring,
    rec.SnapshotCaches: Engine._replay_snapshot_caches,
    rec.SnapshotClaims: Engine._replay_snapshot_claims,
    rec.SnapshotHistory: Engine._replay_snapshot_history,
    rec.SnapshotSessions: Engine._replay_snapshot_sessions,
    rec.SnapshotAttached: Engine._replay_snapshot_attached,
    rec.PutItem: Engine._replay_put_item,
    rec.QueueConfig: Engine._replay_queue_config,
    rec.SnapshotItems: Engine._replay_snapshot_items,
    rec.SnapshotQueues: Engine._replay_snapshot_queues,
    rec.QuotaRecord: Engine._replay_quota,
    rec.SnapshotQuotas: Engine._replay_snapshot_quotas,
}


def _footprint(key: str, entry: Entry) -> int:
    return len(key) + len(entry.writer) + entry.size + _ENTRY_OVERHEAD


def _owned(value: Any, packed: bytes) -> Any:
    """The engine's own copy of a list or map (decoded from its encoding), so that a caller who
    keeps and mutates the object it passed in cannot change the stored state behind the log."""
    return rec.decode(packed) if isinstance(value, list | dict) else value


def _next_entry(
    prev: Entry | None,
    value: Any,
    size: int,
    rev: int,
    writer: str,
    now: float,
    expires: float | None,
    session: int | None = None,
) -> Entry:
    if prev is None:
        return Entry(value, rev, rev, 1, writer, now, size, expires, session)
    return Entry(value, prev.create_rev, rev, prev.version + 1, writer, now, size, expires, session)


def _seconds(value: Any, name: str, *, allow_past: bool = False) -> float:
    """A duration in seconds: a finite number above 0 (any, with ``allow_past``: 0 or less means
    now)."""
    if not (is_integer(value) or isinstance(value, float)) or not math.isfinite(value):
        raise ProntoError(ErrorCode.BAD_REQUEST, f"{name!r} must be a number of seconds.")
    if value <= 0 and not allow_past:
        raise ProntoError(ErrorCode.BAD_REQUEST, f"{name!r} must be more than 0 seconds.")
    return float(value)


def _no_session(session: Any) -> ProntoError:
    return ProntoError(
        ErrorCode.NOT_FOUND,
        f"There is no session {session!r}: it ended (it expired or was revoked) or was never "
        "granted. Grant a new session, and attach its keys again.",
    )


def _incremented(entry: Entry | None, by: int) -> int:
    if not is_integer(by):
        raise ProntoError(ErrorCode.BAD_REQUEST, "The increment must be an integer.")
    current = 0 if entry is None else entry.value
    if not is_integer(current):
        raise ProntoError(
            ErrorCode.WRONG_TYPE,
            f"The value is a {type(current).__name__}, not an integer, so it cannot be incremented; "
            "set an integer first.",
        )
    total: int = current + by
    if not INT64_MIN <= total <= INT64_MAX:
        raise ProntoError(
            ErrorCode.OUT_OF_RANGE, "The result would leave the signed 64-bit integer range."
        )
    return total


def _why_not_held(key: str, token: int, entry: Entry | None, claim: Claim | None) -> str:
    """What became of the claim on ``key`` under ``token``, which no longer holds it."""
    if entry is None:
        return (
            f"There is no item {key!r} (it was never set, or it was acked or deleted since), so "
            f"no claim with token {token!r} holds it"
        )
    if claim is None:
        return (
            f"{key!r} is not claimed: the claim with token {token!r} is over (its lease ran out, "
            "or it was released) and the item is back in its queue"
        )
    return (
        f"The claim on {key!r} with token {token!r} is not held any more: its lease ran out, and "
        f"another claim (token {claim.token}) holds it now"
    )
