"""One database: an engine rebuilt from, and writing through, a storage.

This is the glue the server drives, kept free of trio so it can be tested (and used by tools) on its
own: the engine decides, storage makes it durable, the group-commit writer batches the fsyncs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .engine import Applied, Engine, EngineLimits
from .storage import GroupCommitWriter, SegmentStorage, Storage, StorageOptions

T = TypeVar("T")


class Database:
    """An engine plus its storage and writer. Drive it from one thread (the server's event loop).

    Write path: call an engine method, hand its :class:`Applied` to :meth:`submit`, and answer the
    caller only once the returned ticket is durable (``writer.wait`` or the ``on_durable`` callback).
    """

    def __init__(self, engine: Engine, storage: Storage, writer: GroupCommitWriter) -> None:
        self.engine = engine
        self.storage = storage
        self.writer = writer
        self._last_ticket = 0
        self._compacting = False

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        options: StorageOptions | None = None,
        limits: EngineLimits | None = None,
        on_durable: Callable[[int], None] | None = None,
    ) -> Database:
        """Open (or create) the database in ``directory``, replaying its snapshot and log."""
        storage = SegmentStorage.open(Path(directory), options or StorageOptions())
        try:
            engine = Engine.restore(storage.replay(), limits)
        except BaseException:
            storage.close()
            raise
        return cls(engine, storage, GroupCommitWriter(storage, on_durable=on_durable))

    def submit(self, applied: Applied[Any]) -> int:
        """Queue the records of ``applied``; return the ticket to wait for before answering.

        With nothing to write, the ticket is that of the last write, so even a read or a no-op
        answers only once everything it could have observed is durable.
        """
        if applied.records:
            self._last_ticket = self.writer.submit(applied.records)
        return self._last_ticket

    def write(self, applied: Applied[T]) -> T:
        """Submit and block until durable; returns the operation's result. For sync callers.

        Compacts in line once enough of the log is garbage (:attr:`wants_compaction`); the
        server instead runs :meth:`start_compaction`'s slow part in a thread.
        """
        self.writer.wait(self.submit(applied))
        if applied.records and self.wants_compaction:
            self.compact()
        return applied.result

    @property
    def wants_compaction(self) -> bool:
        """Whether enough of the log is garbage that a compaction pays (and none is running)."""
        return not self._compacting and self.storage.should_compact(self.engine.live_bytes)

    def start_compaction(self) -> Callable[[], None]:
        """Seal the log and freeze the live state now; return the slow rest, to run in a thread.

        The roll marker and the frozen state are taken at the same instant (no engine change can
        come between them on the driving thread), so the snapshot is exactly the sealed segments.
        """
        if self._compacting:
            raise RuntimeError("a compaction is already running")
        self._compacting = True
        roll = self.writer.submit_roll()
        snapshot = self.engine.snapshot()

        def finish() -> None:
            try:
                self.writer.wait(roll.ticket)
                assert roll.sealed_segment is not None
                self.storage.install_snapshot(roll.sealed_segment, snapshot)
            finally:
                self._compacting = False

        return finish

    def compact(self) -> None:
        """Compact now and wait for it to finish."""
        self.start_compaction()()

    def close(self) -> None:
        """Make everything submitted durable, then close the files."""
        try:
            self.writer.close()
        finally:
            self.storage.close()
