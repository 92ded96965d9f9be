"""The state machine of one database.

Deterministic and free of I/O: every method takes the caller's clock as ``now`` and returns an
:class:`Applied` — the result, the records storage must make durable before the caller answers, and the
changes to publish. The engine is driven by one task at a time, which is where atomicity comes from.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sortedcontainers import SortedList

from prontodb.protocol import ErrorCode, ProntoError

from . import _records as rec
from ._conditions import Compare, OpKind, Target, TxnOp, TxnResult
from ._entry import Entry
from ._keys import descendant_range, validate_key, validate_prefix
from ._records import Record, RecordKind
from ._values import INT64_MAX, INT64_MIN, is_integer, pack_value

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
    # Largest record the engine hands to storage; must not exceed storage's max_record_size, so
    # that a change the engine has applied can always be written.
    max_record_size: int = 16 << 20


class ChangeKind(enum.StrEnum):
    """What happened to a key (watch events; expire and claim kinds come with TTL and claims)."""

    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Change:
    """One key's change at one revision; ``entry`` is the new state (None after a delete)."""

    revision: int
    kind: ChangeKind
    key: str
    entry: Entry | None


@dataclass(frozen=True, slots=True)
class Applied(Generic[T]):
    """What an operation did: its result, the records to make durable, the changes to publish."""

    result: T
    records: list[Record]
    changes: list[Change]


class ReplayError(Exception):
    """A record could not be applied on open (unknown kind, bad payload, or out of order)."""


# A transaction's pending state for one key: (encoded value, new entry), or None for a delete.
_Staged = tuple[bytes, Entry] | None


class Engine:
    """Keys, values, revisions; conditional writes, counters and transactions."""

    def __init__(self, limits: EngineLimits | None = None) -> None:
        self.limits = limits or EngineLimits()
        self.revision = 0
        self.live_bytes = 0  # estimate of what a snapshot of the live keys takes on disk
        self._entries: dict[str, Entry] = {}
        self._index: SortedList = SortedList()
        self._loading = False

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
    ) -> Applied[Entry]:
        """Write ``value`` at ``key``, optionally only if it is absent, at a modify revision, or
        holds ``if_value`` (compare-and-set). A failed condition raises compare_failed."""
        key = self._key(key)
        packed = self._pack(value)
        prev = self._entries.get(key)
        self._require(key, prev, self._conditions(key, if_absent, if_rev, if_value))
        return self._put(key, prev, value, packed, writer, now)

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
        payload = rec.encode_delete(rev, writer, now, key)
        return Applied(
            True, [(RecordKind.DELETE, payload)], [Change(rev, ChangeKind.DELETE, key, None)]
        )

    def incr(self, key: str, by: int = 1, *, writer: str, now: float) -> Applied[int]:
        """Add ``by`` to the integer at ``key`` (a missing key counts as 0); the result is the sum."""
        key = self._key(key)
        prev = self._entries.get(key)
        total = _incremented(prev, by)
        applied = self._put(key, prev, total, self._pack(total), writer, now)
        return Applied(total, applied.records, applied.changes)

    def decr(self, key: str, by: int = 1, *, writer: str, now: float) -> Applied[int]:
        """Subtract ``by`` from the integer at ``key``: :meth:`incr` by ``-by``."""
        if not is_integer(by):
            raise ProntoError(ErrorCode.BAD_REQUEST, "The decrement must be an integer.")
        return self.incr(key, -by, writer=writer, now=now)

    def _put(
        self, key: str, prev: Entry | None, value: Any, packed: bytes, writer: str, now: float
    ) -> Applied[Entry]:
        """Write one key at the next revision; everything that can fail is checked first."""
        rev = self.revision + 1
        entry = _next_entry(prev, _owned(value, packed), len(packed), rev, writer, now)
        payload = self._fits(rec.encode_put(rev, writer, now, key, packed, entry))
        self.revision = rev
        self._store(key, entry)
        return Applied(
            entry, [(RecordKind.PUT, payload)], [Change(rev, ChangeKind.PUT, key, entry)]
        )

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

        logged = [(k, None, None) if s is None else (k, *s) for k, s in writes]
        payload = self._fits(rec.encode_txn(rev, writer, now, logged))
        # Nothing below can fail: the transaction is applied whole.
        self.revision = rev
        changes: list[Change] = []
        for key, staged_write in writes:
            if staged_write is None:
                self._remove(key)
                changes.append(Change(rev, ChangeKind.DELETE, key, None))
            else:
                self._store(key, staged_write[1])
                changes.append(Change(rev, ChangeKind.PUT, key, staged_write[1]))
        return Applied(TxnResult(True, rev, results), [(RecordKind.TXN, payload)], changes)

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
        value = _incremented(current, op.by) if op.kind is OpKind.INCR else op.value
        packed = self._pack(value)
        stored = _owned(value, packed)
        staged[op.key] = (packed, _next_entry(current, stored, len(packed), rev, writer, now))
        return value if op.kind is OpKind.INCR else rev

    # -- recovery and snapshots ----------------------------------------------------------------

    @classmethod
    def restore(cls, records: Iterable[Record], limits: EngineLimits | None = None) -> Engine:
        """Rebuild an engine from its records in log order (a snapshot's first, if any)."""
        engine = cls(limits)
        engine._loading = True
        for kind, payload in records:
            engine.apply_record(kind, payload)
        engine._loading = False
        # One sort instead of a million inserts (and snapshots come in key order, so it is cheap).
        engine._index = SortedList(engine._entries)
        return engine

    def apply_record(self, kind: int, payload: bytes) -> None:
        """Apply one logged record; raises ReplayError if it cannot be."""
        try:
            fields = rec.decode(payload)
            if kind == RecordKind.SNAPSHOT_META:
                fmt, revision, _count = fields
                if fmt != rec.SNAPSHOT_FORMAT:
                    raise ReplayError(f"snapshot format {fmt} is not one this version reads")
                if self._entries or self.revision:
                    raise ReplayError("a snapshot must come first in the log")
                self.revision = revision
            elif kind == RecordKind.SNAPSHOT_ENTRIES:
                self._load_snapshot_entries(fields)
            else:
                self._apply_change(kind, fields)
        except ReplayError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise ReplayError(f"a record of kind {kind} is malformed: {exc}") from exc

    def _load_snapshot_entries(self, fields: list[Any]) -> None:
        # The hot loop of opening a big database: a snapshot holds each key once, in an engine
        # that starts empty, so it skips _store's bookkeeping for overwrites and the index.
        entries = self._entries
        pack = rec.pack
        live = 0
        for key, value, create_rev, mod_rev, version, writer, time in fields:
            size = len(pack(value))
            entries[key] = Entry(value, create_rev, mod_rev, version, writer, time, size)
            live += _footprint(key, entries[key])
        self.live_bytes += live

    def _apply_change(self, kind: int, fields: list[Any]) -> None:
        rev, writer, time = fields[0], fields[1], fields[2]
        if not is_integer(rev) or rev <= self.revision:
            raise ReplayError(f"revision {rev!r} does not follow {self.revision}")
        if kind == RecordKind.PUT:
            _, _, _, key, create_rev, version, value = fields
            self._replay_put(key, value, create_rev, rev, version, writer, time)
        elif kind == RecordKind.DELETE:
            self._remove(fields[3])
        elif kind == RecordKind.TXN:
            for op in fields[3]:
                if op[0] == rec.TXN_PUT:
                    _, key, create_rev, version, value = op
                    self._replay_put(key, value, create_rev, rev, version, writer, time)
                elif op[0] == rec.TXN_DELETE:
                    self._remove(op[1])
                else:
                    raise ReplayError(f"unknown transaction operation {op[0]!r}")
        else:
            raise ReplayError(
                f"record kind {kind} is unknown; was this database written by a newer ProntoDB?"
            )
        self.revision = rev

    def _replay_put(
        self,
        key: str,
        value: Any,
        create_rev: int,
        rev: int,
        version: int,
        writer: str,
        time: float,
    ) -> None:
        size = len(rec.pack(value))
        self._store(key, Entry(value, create_rev, rev, version, writer, time, size))

    def snapshot(self) -> Iterator[Record]:
        """The live state as records, frozen now; safe to encode later while the engine moves on."""
        keys = list(self._index)
        entries = self._entries.copy()
        return rec.encode_snapshot(self.revision, ((k, entries[k]) for k in keys), len(keys))

    def statistics(self) -> dict[str, int]:
        """Revision, key count and the live-bytes estimate (for compaction and ``status``)."""
        return {
            "revision": self.revision,
            "keys": len(self._entries),
            "live_bytes": self.live_bytes,
        }

    # -- helpers -------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return validate_key(key, self.limits.max_key_len)

    def _prefix(self, prefix: str) -> str:
        return validate_prefix(prefix, self.limits.max_key_len)

    def _fits(self, payload: bytes) -> bytes:
        limit = self.limits.max_record_size
        if len(payload) > limit:
            raise ProntoError(
                ErrorCode.TOO_LARGE,
                f"The change takes {len(payload)} bytes in the log; the limit is {limit}. "
                "Split the transaction or store smaller values.",
            )
        return payload

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
        if prev is None:
            if not self._loading:
                self._index.add(key)
        else:
            self.live_bytes -= _footprint(key, prev)
        self._entries[key] = entry
        self.live_bytes += _footprint(key, entry)

    def _remove(self, key: str) -> None:
        prev = self._entries.pop(key, None)
        if prev is not None:
            if not self._loading:
                self._index.remove(key)
            self.live_bytes -= _footprint(key, prev)


def _footprint(key: str, entry: Entry) -> int:
    return len(key) + len(entry.writer) + entry.size + _ENTRY_OVERHEAD


def _owned(value: Any, packed: bytes) -> Any:
    """The engine's own copy of a list or map (decoded from its encoding), so that a caller who
    keeps and mutates the object it passed in cannot change the stored state behind the log."""
    return rec.decode(packed) if isinstance(value, list | dict) else value


def _next_entry(
    prev: Entry | None, value: Any, size: int, rev: int, writer: str, now: float
) -> Entry:
    if prev is None:
        return Entry(value, rev, rev, 1, writer, now, size)
    return Entry(value, prev.create_rev, rev, prev.version + 1, writer, now, size)


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
