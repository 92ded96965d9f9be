"""The Storage protocol: what the database needs from a backend, whatever keeps the bytes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from ._options import StorageStats


class WriteObserver(Protocol):
    """Told of each write as it happens, for metrics: called from whichever thread writes
    (the broker's event loop, or a writer thread), so it must be thread-safe and quick."""

    def fsynced(self, seconds: float) -> None:
        """A data fsync of a segment took ``seconds``."""
        ...

    def committed(self, records: int) -> None:
        """A group commit wrote ``records`` records as one append (one write, one fsync under
        ``always``)."""
        ...


class Storage(Protocol):
    """An ordered, durable log of ``(kind, payload)`` records with snapshot compaction.

    Records are opaque to storage: kind 1..255 and payload bytes are the engine's business.
    One writer thread appends; one other caller may compact at the same time.
    """

    @property
    def max_record_size(self) -> int:
        """The largest payload :meth:`append` accepts."""
        ...

    def replay(self) -> Iterator[tuple[int, bytes]]:
        """Every record in order, snapshot first; exhaust it before the first append."""
        ...

    def append(self, records: Sequence[tuple[int, bytes]]) -> None:
        """Write one batch; on return it is as durable as the fsync policy promises."""
        ...

    def roll(self) -> int:
        """Seal the active segment now and start a new one; return the sealed number."""
        ...

    def sync(self) -> None:
        """Force everything appended so far to disk."""
        ...

    def sync_due_at(self) -> float | None:
        """The ``time.monotonic()`` at which unsynced data should be synced, or None."""
        ...

    def close(self) -> None:
        """Sync and release the files; further calls raise StorageError."""
        ...

    def stats(self) -> StorageStats:
        """Sizes and counters of the live files."""
        ...

    def install_snapshot(self, through_segment: int, records: Iterable[tuple[int, bytes]]) -> None:
        """Replace every segment up to ``through_segment`` (sealed) by a snapshot of ``records``."""
        ...

    def should_compact(self, live_bytes: int) -> bool:
        """Whether the files hold enough garbage, given the live state's size, to compact."""
        ...
