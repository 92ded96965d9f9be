"""One database: an engine rebuilt from, and writing through, a storage.

This is the glue the server drives, kept free of trio so it can be tested (and used by tools) on its
own: the engine decides, storage makes it durable, the group-commit writer batches the fsyncs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .engine import Applied, Engine, EngineLimits
from .storage import (
    DirectoryLock,
    GroupCommitWriter,
    SegmentStorage,
    Storage,
    StorageError,
    StorageOptions,
    WriteObserver,
)

T = TypeVar("T")

logger = logging.getLogger("prontodb.database")


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
        self._retry_compaction_at = 0  # after a failed compaction: total bytes to wait for

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        options: StorageOptions | None = None,
        limits: EngineLimits | None = None,
        on_durable: Callable[[int], None] | None = None,
        on_error: Callable[[StorageError], None] | None = None,
        threaded_writer: bool = True,
        lock: DirectoryLock | None = None,
        observer: WriteObserver | None = None,
    ) -> Database:
        """Open (or create) the database in ``directory``, replaying its snapshot and log.

        The directory is this object's until :meth:`close`: a second opener, in this process or
        another, gets :class:`~prontodb.broker.storage.DirectoryLocked` naming the holder's pid.
        Pass ``lock`` to open under a :class:`~prontodb.broker.storage.DirectoryLock` the caller
        already holds on ``directory`` (it stays held after :meth:`close`).

        ``on_durable`` and ``on_error`` are the group-commit writer's callbacks (called from its
        thread): the highest durable ticket, and the failure that stopped the writer. With
        ``threaded_writer=False`` the caller drives the writer (``writer.write_pending()``).
        ``observer`` hears how long each fsync took and how many records each group commit
        wrote (the broker's metrics).
        """
        options = options or StorageOptions()
        limits = limits or EngineLimits()
        if limits.max_record_size > options.max_record_size:
            raise ValueError(
                f"the engine may produce records of {limits.max_record_size} bytes, more than "
                f"storage's max_record_size of {options.max_record_size}"
            )
        storage = SegmentStorage.open(Path(directory), options, lock=True if lock is None else lock)
        try:
            engine = Engine.restore(storage.replay(), limits)
        except BaseException:
            storage.close()
            raise
        storage.observer = observer
        writer = GroupCommitWriter(
            storage,
            on_durable=on_durable,
            on_error=on_error,
            threaded=threaded_writer,
            observer=observer,
        )
        return cls(engine, storage, writer)

    def submit(self, applied: Applied[Any]) -> int:
        """Queue the records of ``applied``; return the ticket to wait for before answering.

        With nothing to write, the ticket is that of the last write, so even a read or a no-op
        answers only once everything it could have observed is durable.

        The engine has already applied the change. If the writer has failed (StorageError, here
        or from the wait) the engine is ahead of the disk: answer nothing more from this object,
        close it and open the database again, which replays exactly what is durable.
        """
        if applied.records:
            self._last_ticket = self.writer.submit(applied.records)
        return self._last_ticket

    @property
    def last_ticket(self) -> int:
        """The ticket of the latest write: a read answers once it is durable."""
        return self._last_ticket

    def write(self, applied: Applied[T]) -> T:
        """Submit and block until durable; returns the operation's result. For sync callers.

        Compacts in line once enough of the log is garbage (:attr:`wants_compaction`); the
        server instead runs :meth:`start_compaction`'s slow part in a thread.
        """
        self.writer.wait(self.submit(applied))
        if applied.records and self.wants_compaction:
            try:
                self.compact()
            except Exception:
                # The write itself is durable, so it must not be reported as failed (a retry
                # would apply it twice).
                self.compaction_failed()
        return applied.result

    def compaction_failed(self) -> None:
        """Log the failure of a compaction (call from an ``except`` block) and back off: the next
        one waits until the files have grown as much once more."""
        self._retry_compaction_at = 2 * self.storage.stats().total_bytes
        failure = sys.exc_info()[1]
        if isinstance(failure, StorageError | OSError):  # the disk's doing: one line
            logger.error("compaction failed (%s); the database carries on without it", failure)
        else:  # a bug of ours
            logger.exception("compaction failed; the database carries on without it")

    @property
    def wants_compaction(self) -> bool:
        """Whether a compaction pays now: none is running, storage judges enough of the files to
        be garbage, and the log has grown by at least half the snapshot since the last one.

        The last rule bounds the cost: however the garbage estimate errs, compaction rewrites at
        most about twice what was appended.
        """
        if self._compacting:
            return False
        stats = self.storage.stats()
        return (
            stats.total_bytes >= self._retry_compaction_at
            and 2 * stats.bytes_since_compaction >= stats.snapshot_bytes
            and self.storage.should_compact(self.engine.snapshot_bytes)
        )

    def start_compaction(self) -> Callable[[], None]:
        """Seal the log and freeze the live state now; return the slow rest, to run in a thread.

        The roll marker and the frozen state are taken at the same instant (no engine change can
        come between them on the driving thread), so the snapshot is exactly the sealed segments.
        """
        if self._compacting:
            raise RuntimeError("a compaction is already running")
        roll = self.writer.submit_roll()
        snapshot = self.engine.snapshot()
        self._compacting = True

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
