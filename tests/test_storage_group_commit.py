"""GroupCommitWriter: shared fsyncs, tickets, ordering, roll markers, failures, closing."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from prontodb.broker.storage import (
    FsyncPolicy,
    GroupCommitWriter,
    SegmentStorage,
    StorageError,
    StorageOptions,
)

from storage_files import Record, file_records, opened, reopen

TIMEOUT = 10.0  # generous: only ever reached when a test is about to fail


class Gate:
    """An on_durable callback that holds the writer thread inside its first call until opened,
    so that submissions pile up meanwhile: a real way to make the next drain a big batch."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.calls: list[int] = []

    def __call__(self, ticket: int) -> None:
        self.calls.append(ticket)
        if len(self.calls) == 1:
            self.entered.set()
            assert self.opened.wait(TIMEOUT)

    def hold(self, writer: GroupCommitWriter) -> int:
        """Submit a first record and return once the writer is stuck behind it."""
        ticket = writer.submit([(1, b"first")])
        assert self.entered.wait(TIMEOUT)
        return ticket


@contextmanager
def writer_for(
    path: Path, options: StorageOptions | None = None, **kwargs: Any
) -> Iterator[tuple[SegmentStorage, GroupCommitWriter]]:
    storage, replayed = opened(path, options)
    assert replayed == []  # every test starts from a new directory
    writer = GroupCommitWriter(storage, **kwargs)
    try:
        yield storage, writer
    finally:
        writer.close()
        storage.close()


def test_tickets_become_durable_in_order_and_replay_in_order(tmp_path: Path) -> None:
    calls: list[int] = []
    with writer_for(tmp_path, on_durable=calls.append) as (_, writer):
        tickets = [writer.submit([(1, b"%d" % i), (2, b"x")]) for i in range(200)]
        assert tickets == list(range(1, 201))
        assert writer.wait(tickets[-1])
        assert writer.durable_ticket == 200
        assert writer.wait(tickets[0])  # long durable: returns at once
    assert calls == sorted(calls)
    assert calls[-1] == 200
    assert reopen(tmp_path) == [r for i in range(200) for r in ((1, b"%d" % i), (2, b"x"))]


def test_fifty_concurrent_submits_share_one_write_and_one_fsync(tmp_path: Path) -> None:
    gate = Gate()
    with writer_for(tmp_path, on_durable=gate) as (storage, writer):
        gate.hold(writer)
        start = threading.Barrier(50)
        tickets: dict[int, int] = {}

        def submitter(n: int) -> None:
            start.wait()
            tickets[n] = writer.submit([(2, b"worker-%d" % n)])

        threads = [threading.Thread(target=submitter, args=(n,)) for n in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert writer.durable_ticket == 1
        gate.opened.set()
        assert all(writer.wait(ticket, TIMEOUT) for ticket in tickets.values())
        stats = writer.statistics()
        assert (stats.submitted, stats.durable_ticket, stats.records) == (51, 51, 51)
        assert (stats.batches, stats.fsyncs) == (2, 2)  # the first record, then the other 50
        assert storage.stats().fsyncs == 2
    order = sorted(tickets, key=tickets.__getitem__)
    assert reopen(tmp_path) == [(1, b"first")] + [(2, b"worker-%d" % n) for n in order]


def test_many_threads_submitting_and_waiting_keep_ticket_order(tmp_path: Path) -> None:
    written: list[tuple[int, Record]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(25):
            record = (3, b"%d:%d" % (n, i))
            with lock:  # so that `written` knows each ticket's record
                ticket = writer.submit([record])
                written.append((ticket, record))
            assert writer.wait(ticket, TIMEOUT)

    with writer_for(tmp_path) as (_, writer):
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = writer.statistics()
        assert stats.records == 200
        assert stats.fsyncs == stats.batches <= 200
    assert reopen(tmp_path) == [record for _, record in sorted(written)]


@pytest.mark.parametrize("in_one_drain", [False, True])
def test_roll_markers_split_the_segments_exactly(tmp_path: Path, in_one_drain: bool) -> None:
    gate = Gate()
    a, b, c = [(1, b"a1"), (1, b"a2")], [(2, b"b1")], [(3, b"c1"), (3, b"c2")]
    with writer_for(tmp_path, on_durable=gate) as (_, writer):
        if in_one_drain:
            gate.hold(writer)
        else:
            gate.opened.set()
            writer.wait(writer.submit([(1, b"first")]))
        writer.submit(a)
        first_roll = writer.submit_roll()
        writer.submit(b)
        second_roll = writer.submit_roll()
        last = writer.submit(c)
        if in_one_drain:
            assert first_roll.sealed_segment is None  # still queued behind the gate
        gate.opened.set()
        assert writer.wait(last, TIMEOUT)
        assert (first_roll.sealed_segment, second_roll.sealed_segment) == (1, 2)
        assert writer.statistics().rolls == 2
    assert file_records(tmp_path / "seg-00000001.log") == [(1, b"first"), *a]
    assert file_records(tmp_path / "seg-00000002.log") == b
    assert file_records(tmp_path / "seg-00000003.log") == c


def test_a_roll_ticket_is_filled_before_it_is_durable(tmp_path: Path) -> None:
    seen: list[int | None] = []
    with writer_for(tmp_path) as (_, writer):
        roll = writer.submit_roll()
        assert writer.wait(roll.ticket, TIMEOUT)
        seen.append(roll.sealed_segment)
    assert seen == [1]


def test_wait_times_out_while_the_writer_is_busy(tmp_path: Path) -> None:
    gate = Gate()
    with writer_for(tmp_path, on_durable=gate) as (_, writer):
        gate.hold(writer)
        ticket = writer.submit([(1, b"queued")])
        assert writer.wait(ticket, timeout=0.01) is False
        assert writer.backlog_bytes == 9 + len(b"queued")
        gate.opened.set()
        assert writer.wait(ticket, TIMEOUT) is True
        assert writer.backlog_bytes == 0
        with pytest.raises(ValueError, match="never handed out"):
            writer.wait(ticket + 1)


def test_bad_records_are_refused_at_submit_without_harming_others(tmp_path: Path) -> None:
    options = StorageOptions(max_record_size=8)
    with writer_for(tmp_path, options) as (_, writer):
        good = writer.submit([(1, b"fine")])
        with pytest.raises(ValueError, match="max_record_size"):
            writer.submit([(1, b"much too long")])
        with pytest.raises(ValueError, match="kind"):
            writer.submit([(0, b"")])
        assert writer.wait(writer.submit([(2, b"also")]), TIMEOUT)
        assert writer.wait(good)
    assert reopen(tmp_path) == [(1, b"fine"), (2, b"also")]


def test_close_writes_everything_pending(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path, StorageOptions(fsync=FsyncPolicy.NEVER))
    writer = GroupCommitWriter(storage)
    for i in range(100):
        writer.submit([(1, b"%d" % i)])
    writer.close()
    assert writer.durable_ticket == 100
    assert storage.stats().unsynced_bytes == 0  # close syncs, whatever the policy
    with pytest.raises(StorageError, match="closed"):
        writer.submit([(1, b"late")])
    storage.close()
    assert len(reopen(tmp_path)) == 100


class SignallingStorage(SegmentStorage):
    """A real storage that also sets an event after each explicit sync, so a test can wait for
    the interval timer's sync on an event instead of polling the clock."""

    synced = threading.Event()

    def sync(self) -> None:
        super().sync()
        self.synced.set()


def test_interval_policy_syncs_trailing_data_on_a_timer(tmp_path: Path) -> None:
    options = StorageOptions(fsync=FsyncPolicy.INTERVAL, fsync_interval=0.02)
    storage = SignallingStorage.open(tmp_path, options)
    assert list(storage.replay()) == []
    storage.synced = threading.Event()
    writer = GroupCommitWriter(storage)
    try:
        # An append that comes late in the interval syncs by itself; retry until one leaves
        # unsynced data behind, which only the writer's timer can then sync.
        for attempt in range(100):
            storage.synced.clear()
            assert writer.wait(writer.submit([(1, b"%d" % attempt)]), TIMEOUT)
            if storage.stats().unsynced_bytes:
                break
        assert storage.synced.wait(TIMEOUT)
        assert storage.stats().unsynced_bytes == 0
        assert storage.stats().fsyncs >= 1
    finally:
        writer.close()
        storage.close()


def test_a_failed_write_fails_every_waiter_and_every_later_submit(tmp_path: Path) -> None:
    gate = Gate()
    errors: list[StorageError] = []
    with writer_for(tmp_path, on_durable=gate, on_error=errors.append) as (storage, writer):
        durable = gate.hold(writer)
        # A real failure: the segment's descriptor is swapped for a read-only one.
        read_only = os.open(tmp_path / "seg-00000001.log", os.O_RDONLY)
        os.dup2(read_only, storage._fd)
        os.close(read_only)
        doomed = [writer.submit([(1, b"never")]) for _ in range(3)]
        gate.opened.set()
        for ticket in doomed:
            with pytest.raises(StorageError, match="could not write to"):
                writer.wait(ticket, TIMEOUT)
        assert writer.wait(durable)  # written before the failure: still durable
        with pytest.raises(StorageError, match="could not write to"):
            writer.submit([(1, b"after")])
        with pytest.raises(StorageError):
            writer.submit_roll()
        assert writer.error is not None
        assert writer.durable_ticket == durable
    assert len(errors) == 1  # called from the writer thread, which close() has joined
    assert reopen(tmp_path) == [(1, b"first")]


# -- without a thread (the broker drives the writer from its event loop) ------------------------


def test_inline_writer_writes_each_call_as_one_batch(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path)
    writer = GroupCommitWriter(storage, threaded=False)
    tickets = [writer.submit([(1, f"r{i}".encode())]) for i in range(5)]
    assert writer.durable_ticket == 0  # nothing is written until the owner asks
    assert writer.write_pending() == tickets[-1]
    stats = writer.statistics()
    assert (stats.batches, stats.records, stats.fsyncs) == (1, 5, 1)
    assert writer.write_pending() == tickets[-1]  # nothing new: no write, same answer
    writer.submit([(1, b"last")])
    writer.close()  # close writes what is still queued
    storage.close()
    assert [payload for _, payload in reopen(tmp_path)] == [
        b"r0",
        b"r1",
        b"r2",
        b"r3",
        b"r4",
        b"last",
    ]


def test_inline_writer_syncs_trailing_data_once_its_interval_passed(tmp_path: Path) -> None:
    options = StorageOptions(fsync=FsyncPolicy.INTERVAL, fsync_interval=0.0)
    storage, _ = opened(tmp_path, options)
    writer = GroupCommitWriter(storage, threaded=False)
    writer.submit([(1, b"x")])
    writer.write_pending()
    assert writer.sync_due_at() is None  # an interval of 0 syncs with the write itself
    writer.close()
    storage.close()


def test_inline_writer_failure_is_final(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path)
    errors: list[StorageError] = []
    writer = GroupCommitWriter(storage, threaded=False, on_error=errors.append)
    writer.submit([(1, b"x")])
    storage.close()  # the next append fails
    with pytest.raises(StorageError):
        writer.write_pending()
    assert len(errors) == 1
    with pytest.raises(StorageError):
        writer.write_pending()
    with pytest.raises(StorageError):
        writer.submit([(1, b"y")])
