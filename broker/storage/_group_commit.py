"""Group commit: one thread writes what many callers submitted as one batch, one fsync."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._errors import StorageError
from ._interface import Storage, WriteObserver
from ._records import encoded_size

logger = logging.getLogger("prontodb.storage")


@dataclass(slots=True)
class RollTicket:
    """A roll marker's place in the submission order.

    ``sealed_segment`` is filled in by the writer (before ``ticket`` becomes durable) with the
    number of the segment it sealed: everything submitted before the marker is in it or earlier.
    """

    ticket: int
    sealed_segment: int | None = None


@dataclass(frozen=True, slots=True)
class GroupCommitStatistics:
    """Counters of a :class:`GroupCommitWriter` since it started."""

    submitted: int
    """Tickets handed out (record batches and roll markers)."""
    durable_ticket: int
    """Highest ticket written (and synced per the fsync policy)."""
    batches: int
    """``storage.append`` calls: each is one write."""
    records: int
    """Records written."""
    fsyncs: int
    """Data fsyncs the storage made since this writer started (appends, rolls, timer, final)."""
    rolls: int
    """Roll markers carried out."""
    backlog_bytes: int
    """Encoded bytes submitted but not yet written."""


@dataclass(slots=True)
class _Entry:
    ticket: int
    records: Sequence[tuple[int, bytes]]
    size: int
    roll: RollTicket | None = None


class GroupCommitWriter:
    """Feed one :class:`Storage` from many callers, one write and one fsync per batch.

    :meth:`submit` queues a batch of records and returns a ticket at once (it never blocks on
    I/O). The writer takes everything pending, writes it as one ``storage.append`` (one write,
    one fsync under ``always``), marks those tickets durable, calls ``on_durable(highest)`` and
    wakes :meth:`wait`-ers. Tickets become durable in order.

    Who writes: by default a background thread. With ``threaded=False`` there is no thread and
    the owner calls :meth:`write_pending` itself; the broker does, from its event loop once per
    turn, because on the machines we measured a hand-off to a thread and back cost more than the
    fdatasync it would hide (see docs/BENCHMARKS.md). :meth:`wait` must then be called only from
    other threads (a compaction waiting for its roll marker).

    ``observer`` (if given) hears of each append's record count: the size of each group commit.

    If a write or fsync fails the writer stops for good: waiters get StorageError, later submits
    raise it, and ``on_error`` (if given) is called once from the writer thread. The database
    must not keep acknowledging writes it cannot make durable.

    The queue is bounded by the caller: apply backpressure on :attr:`backlog_bytes`.
    """

    def __init__(
        self,
        storage: Storage,
        on_durable: Callable[[int], None] | None = None,
        *,
        on_error: Callable[[StorageError], None] | None = None,
        threaded: bool = True,
        observer: WriteObserver | None = None,
    ) -> None:
        self._storage = storage
        self._observer = observer
        self._on_durable = on_durable
        self._on_error = on_error
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here for entries
        self._done = threading.Condition(self._lock)  # waiters wait here for durability
        self._pending: list[_Entry] = []
        self._last_ticket = 0
        self._durable = 0
        self._backlog = 0
        self._error: StorageError | None = None
        self._closing = False
        self._batches = 0
        self._records = 0
        # The writer is the storage's only writer, so its fsyncs are the storage's since now.
        self._fsyncs_before = storage.stats().fsyncs
        self._rolls = 0
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(
                target=self._run, name="prontodb-group-commit", daemon=True
            )
            self._thread.start()

    # -- callers ------------------------------------------------------------------------------

    def submit(self, records: Sequence[tuple[int, bytes]]) -> int:
        """Queue ``records`` to be written together; return their ticket. Never blocks on I/O.

        ValueError for a bad kind or an oversized payload (checked here, so one bad batch cannot
        fail the others it would be written with). StorageError once the writer failed or closed.
        """
        records = tuple(records)
        size = encoded_size(records, self._storage.max_record_size)
        with self._lock:
            ticket = self._enqueue(records, size, None)
        return ticket

    def submit_roll(self) -> RollTicket:
        """Queue a roll marker: what was submitted before it lands in the segment it seals,
        what is submitted after it in the next one."""
        with self._lock:
            roll = RollTicket(self._last_ticket + 1)
            self._enqueue((), 0, roll)
        return roll

    def _enqueue(
        self, records: Sequence[tuple[int, bytes]], size: int, roll: RollTicket | None
    ) -> int:
        self._raise_if_unusable()
        self._last_ticket += 1
        self._pending.append(_Entry(self._last_ticket, records, size, roll))
        self._backlog += size
        self._work.notify()
        return self._last_ticket

    def wait(self, ticket: int, timeout: float | None = None) -> bool:
        """Block until ``ticket`` is durable: True, or False if ``timeout`` seconds pass first.

        Raises StorageError if the writer failed before writing it.
        """
        with self._lock:
            if not 0 <= ticket <= self._last_ticket:
                raise ValueError(f"ticket {ticket} was never handed out")
            self._done.wait_for(lambda: self._durable >= ticket or self._error is not None, timeout)
            if self._durable >= ticket:
                return True
            if self._error is not None:
                raise StorageError(str(self._error)) from self._error
            return False

    @property
    def durable_ticket(self) -> int:
        """The highest ticket that is durable; every lower one is too."""
        with self._lock:
            return self._durable

    @property
    def backlog_bytes(self) -> int:
        """Encoded bytes submitted but not yet written: the measure for backpressure."""
        with self._lock:
            return self._backlog

    @property
    def error(self) -> StorageError | None:
        """The failure that stopped the writer, if any."""
        with self._lock:
            return self._error

    def statistics(self) -> GroupCommitStatistics:
        """A snapshot of the writer's counters."""
        fsyncs = self._storage.stats().fsyncs - self._fsyncs_before
        with self._lock:
            return GroupCommitStatistics(
                submitted=self._last_ticket,
                durable_ticket=self._durable,
                batches=self._batches,
                records=self._records,
                fsyncs=fsyncs,
                rolls=self._rolls,
                backlog_bytes=self._backlog,
            )

    def close(self) -> None:
        """Write everything pending, sync, and stop the thread. The storage stays open."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("close() cannot be called from the writer thread (on_durable)")
        with self._lock:
            self._closing = True
            self._work.notify()
        if self._thread is not None:
            self._thread.join()
            return
        with self._lock:
            batch, self._pending = self._pending, []
        if batch and self._error is None:
            try:
                self._write(batch)
            except Exception as exc:
                self._fail(exc)

    def write_pending(self) -> int:
        """Without a thread: write everything submitted so far as one batch (blocking), and sync
        trailing data whose ``interval`` has passed; return the highest durable ticket.

        Raises StorageError if the write fails (the writer is then failed for good, as a thread's
        would be) or has failed before.
        """
        if self._thread is not None:
            raise RuntimeError("write_pending() is for a writer made with threaded=False")
        with self._lock:
            if self._error is not None:
                raise StorageError(str(self._error)) from self._error
            batch, self._pending = self._pending, []
        try:
            if batch:
                self._write(batch)
            else:
                due = self._storage.sync_due_at()
                if due is not None and due <= time.monotonic():
                    self._storage.sync()
        except Exception as exc:
            self._fail(exc)
            raise StorageError(str(self._error)) from exc
        return self._durable

    def sync_due_at(self) -> float | None:
        """When trailing data must be synced under ``interval`` (``time.monotonic()``), or None."""
        return self._storage.sync_due_at()

    def _raise_if_unusable(self) -> None:
        if self._error is not None:
            raise StorageError(str(self._error)) from self._error
        if self._closing:
            raise StorageError("the group-commit writer is closed")

    # -- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        storage = self._storage
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    due = storage.sync_due_at()
                    if due is None:
                        self._work.wait()
                        continue
                    delay = due - time.monotonic()
                    if delay <= 0:
                        break  # the interval passed with nothing new: sync the trailing data
                    self._work.wait(delay)
                batch, self._pending = self._pending, []
                closing = self._closing
            try:
                if batch:
                    self._write(batch)
                    continue
                storage.sync()
            except Exception as exc:
                self._fail(exc)
                return
            if closing:
                return

    def _write(self, batch: list[_Entry]) -> None:
        """Write ``batch`` in order: one append per run of records between roll markers."""
        before = self.durable_ticket
        records: list[tuple[int, bytes]] = []
        size = last = 0
        try:
            for entry in batch:
                if entry.roll is None:
                    records.extend(entry.records)
                    size += entry.size
                    last = entry.ticket
                    continue
                self._append(records, last, size)
                records, size, last = [], 0, 0
                entry.roll.sealed_segment = self._storage.roll()
                self._advance(entry.ticket, rolled=True)
            self._append(records, last, size)
        finally:
            self._notify_durable(before)

    def _append(self, records: list[tuple[int, bytes]], ticket: int, size: int) -> None:
        if not ticket:
            return
        if records:
            self._storage.append(records)
            if self._observer is not None:
                self._observer.committed(len(records))
        self._advance(ticket, records=len(records), size=size, appended=bool(records))

    def _advance(
        self,
        ticket: int,
        *,
        records: int = 0,
        size: int = 0,
        appended: bool = False,
        rolled: bool = False,
    ) -> None:
        """Mark every ticket up to ``ticket`` durable and release its backlog."""
        with self._lock:
            self._durable = ticket
            self._records += records
            self._backlog -= size
            self._batches += appended
            self._rolls += rolled
            self._done.notify_all()

    def _notify_durable(self, before: int) -> None:
        durable = self.durable_ticket
        if durable > before and self._on_durable is not None:
            try:
                self._on_durable(durable)
            except Exception:
                logger.exception("on_durable(%d) raised; the writer carries on", durable)

    def _fail(self, exc: Exception) -> None:
        error = exc if isinstance(exc, StorageError) else StorageError(f"the writer failed: {exc}")
        with self._lock:
            self._error = error
            self._pending.clear()
            self._backlog = 0
            self._done.notify_all()
        # Not logged here: every waiter and every later submit gets it, and on_error too.
        if self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:
                logger.exception("on_error raised")
