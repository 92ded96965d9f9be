"""The recent changes of one database, kept so that a watcher can start from a past revision.

A bounded window of batches, one per revision, oldest first. It lives in the engine because it is
part of the database's state: replay rebuilds it from the log, and a snapshot carries it, so
compaction does not shorten it (docs/FORMAT.md, "History").
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._entry import Entry

# What one change costs beyond its key and value: the Change object, its slot in the batch and
# the batch's share (an estimate, used only to bound the window).
_CHANGE_OVERHEAD = 120
# The list drops its pruned head in one go once that many batches are dead (an O(n) move made
# rarely, instead of a deque that cannot be searched by revision). A pruned batch is emptied at
# once, so what waits for the trim is a few hundred bytes each, never the values it held.
_TRIM_AT = 4096


@dataclass(frozen=True, slots=True)
class Change:
    """One key's change at one revision; ``entry`` is the new state (None when the key went),
    ``by`` the user who made the change ("" for the broker's own: expiry, a lease running out)."""

    revision: int
    kind: str  # a ChangeKind
    key: str
    entry: Entry | None
    by: str = ""


class Batch(NamedTuple):
    """Every change of one revision, in the order they were made, and the revision's time."""

    revision: int
    time: float
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """How much history a database keeps: the last ``revisions`` revisions, at most ``bytes`` of
    keys and values, and (if ``seconds`` is set) nothing older than that. The first bound reached
    wins."""

    revisions: int = 100_000
    bytes: int = 64 << 20
    seconds: float | None = None


class History:
    """The window of recent batches; :attr:`first` is the oldest revision it still holds whole
    (every revision from there on is kept, so a watcher may start anywhere at or after it)."""

    def __init__(self, limits: HistoryLimits | None = None) -> None:
        self.limits = limits or HistoryLimits()
        self.first = 1
        self.bytes = 0
        self._batches: list[Batch] = []
        self._start = 0  # batches before this index are pruned
        self._reset = False  # reset() ran and no snapshot chunk has come since

    def __len__(self) -> int:
        return len(self._batches) - self._start

    def reset(self, first: int) -> None:
        """Forget everything; the next change kept will be at ``first`` or later."""
        self._batches = []
        self._start = 0
        self.bytes = 0
        self.first = first
        self._reset = True

    def add(self, changes: Sequence[Change], time: float) -> None:
        """Keep ``changes`` (one operation's, in revision order) made at ``time``."""
        if len(changes) == 1:  # most operations (and every replayed PUT): one change, one batch
            change = changes[0]
            self._batches.append(Batch(change.revision, time, (change,)))
            self.bytes += change_cost(change)
        elif changes:
            start = 0
            for i in range(1, len(changes) + 1):
                if i == len(changes) or changes[i].revision != changes[start].revision:
                    self._append(Batch(changes[start].revision, time, tuple(changes[start:i])))
                    start = i
        else:
            return
        limits = self.limits
        if (
            len(self._batches) - self._start > limits.revisions
            or self.bytes > limits.bytes
            or limits.seconds is not None
        ):
            self._prune(time)

    def load(self, first: int, batches: Iterable[Batch]) -> None:
        """Take batches a snapshot kept (oldest first), ahead of anything added later."""
        if self._reset:  # the snapshot's first chunk (a later one may find everything pruned)
            self.first = first
            self._reset = False
        for batch in batches:
            self._append(batch)
        if self:
            self._prune(self._batches[-1].time)

    def batches(self) -> list[Batch]:
        """Every batch kept, oldest first (a copy: safe to read while the engine moves on)."""
        return self._batches[self._start :]

    def read(
        self, revision: int, through: int, prefix: str, *, max_bytes: int, max_batches: int
    ) -> tuple[list[Batch], int]:
        """The batches from ``revision`` to ``through`` with their changes at or under
        ``prefix`` (batches with none are left out), and the revision to read from next.

        Stops after about ``max_bytes`` of matching changes (at least one batch) or after looking
        at ``max_batches`` batches, so that one call never holds the caller up for long. The
        caller checks ``revision >= first`` first: older revisions are gone.
        """
        batches = self._batches
        index = bisect.bisect_left(batches, revision, lo=self._start, key=_revision)
        found: list[Batch] = []
        size = scanned = 0
        below = prefix + "." if prefix else ""
        while index < len(batches):
            batch = batches[index]
            if batch.revision > through:
                break
            index += 1
            scanned += 1
            if prefix:
                matching = tuple(
                    c for c in batch.changes if c.key == prefix or c.key.startswith(below)
                )
                if len(matching) != len(batch.changes):
                    batch = batch._replace(changes=matching)
            if batch.changes:
                found.append(batch)
                size += sum(change_cost(c) for c in batch.changes)
            if size >= max_bytes or scanned >= max_batches:
                return found, batch.revision + 1
        return found, max(revision, through + 1)

    def _append(self, batch: Batch) -> None:
        self._batches.append(batch)
        self.bytes += sum(change_cost(c) for c in batch.changes)

    def _prune(self, now: float) -> None:
        limits = self.limits
        oldest = None if limits.seconds is None else now - limits.seconds
        batches = self._batches
        while self._start < len(batches):
            batch = batches[self._start]
            if (
                len(batches) - self._start <= limits.revisions
                and self.bytes <= limits.bytes
                and (oldest is None or batch.time >= oldest)
            ):
                break
            self.bytes -= sum(change_cost(c) for c in batch.changes)
            self.first = batch.revision + 1
            batches[self._start] = _PRUNED
            self._start += 1
        if self._start >= _TRIM_AT and self._start * 2 >= len(batches):
            del batches[: self._start]
            self._start = 0


# What a pruned slot holds until the trim: nothing a search below ``_start`` would look at.
_PRUNED = Batch(0, 0.0, ())


def _revision(batch: Batch) -> int:
    return batch.revision


def change_cost(change: Change) -> int:
    """What keeping (or sending) ``change`` costs, estimated in bytes: its key, its value and
    a fixed overhead."""
    entry = change.entry
    return len(change.key) + _CHANGE_OVERHEAD + (0 if entry is None else entry.size)


def encode_batch(batch: Batch, live: Mapping[str, Entry] | None = None) -> list[Any]:
    """A batch as a snapshot keeps it: ``[rev, time, [[kind, key, by, entry or nil], ...]]``,
    entry = ``[value, create_rev, mod_rev, version, writer, time, size, expires(, session)]``,
    or ``true`` when it is the key's live entry in ``live`` (snapshot format 2): most recent
    changes are the keys' current state, which the snapshot's entries hold already."""
    return [
        batch.revision,
        batch.time,
        [[c.kind, c.key, c.by, _encode_entry(c.key, c.entry, live)] for c in batch.changes],
    ]


def _encode_entry(
    key: str, entry: Entry | None, live: Mapping[str, Entry] | None
) -> list[Any] | bool | None:
    """An entry's fields; the session only when there is one, so that every other entry keeps
    the eight fields older versions wrote (and read)."""
    if entry is None:
        return None
    if live is not None and live.get(key) is entry:
        return True
    return list(entry) if entry.session is not None else list(entry[:-1])


# Change kinds and users repeat over and over: one string object each, not one per change.
_KINDS = {kind: kind for kind in ("put", "delete", "expire", "claim", "ack", "release")}


def decode_batch(fields: list[Any], live: Mapping[str, Entry], names: dict[str, str]) -> Batch:
    """The inverse of :func:`encode_batch`: ``true`` is the key's entry in ``live`` (the same
    object, so the history costs no second copy); ``names`` interns the users."""
    revision, time, changes = fields
    return Batch(
        revision,
        time,
        tuple(
            Change(
                revision,
                _KINDS.get(kind, kind),
                key,
                live[key] if entry is True else _decode_entry(key, entry, live, names),
                names.setdefault(by, by),
            )
            for kind, key, by, entry in changes
        ),
    )


def _decode_entry(
    key: str, fields: list[Any] | bool | None, live: Mapping[str, Entry], names: dict[str, str]
) -> Entry | None:
    if fields is None:
        return None
    if fields is True:
        entry = live.get(key)
        if entry is None:
            raise ValueError(f"the history refers to the live entry of {key!r}, which has none")
        return entry
    if not isinstance(fields, list):
        raise TypeError(f"a history entry is a list, not {type(fields).__name__}")
    value, create_rev, mod_rev, version, writer, *rest = fields
    return Entry(value, create_rev, mod_rev, version, names.setdefault(writer, writer), *rest)
