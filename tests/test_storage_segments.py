"""SegmentStorage: appending, rolling, reopening, fsync policies and the rules of use."""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from prontodb.broker.storage import (
    FaultPoints,
    FsyncPolicy,
    SegmentStorage,
    Storage,
    StorageError,
    StorageOptions,
)
from prontodb.broker.storage._records import encode_records, encoded_size

from storage_files import Record, file_records, opened, reopen


def make_batches(seed: int, count: int) -> list[list[Record]]:
    rng = random.Random(seed)
    return [
        [(rng.randint(1, 255), rng.randbytes(rng.randint(0, 60))) for _ in range(rng.randint(1, 5))]
        for _ in range(count)
    ]


def test_a_new_directory_gets_a_manifest_and_segment_1(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "db"
    storage, replayed = opened(path)
    storage.close()
    assert replayed == []
    assert sorted(os.listdir(path)) == ["MANIFEST", "seg-00000001.log"]
    head = (path / "seg-00000001.log").read_bytes()
    assert len(head) == 32
    assert head[:12] == b"PRONTODB\x01\x00\x01\x00"
    assert (path / "MANIFEST").read_bytes().startswith(b'{"format":2,"snapshot":null,')


@pytest.mark.parametrize("policy", list(FsyncPolicy))
def test_many_batches_round_trip_across_segments(tmp_path: Path, policy: FsyncPolicy) -> None:
    options = StorageOptions(fsync=policy, segment_size=300)
    batches = make_batches(seed=1, count=60)
    storage, _ = opened(tmp_path, options)
    for batch in batches:
        storage.append(batch)
    stats = storage.stats()
    storage.close()

    expected = [record for batch in batches for record in batch]
    again, replayed = opened(tmp_path, options)
    assert replayed == expected
    assert stats.segments > 5
    assert again.stats().segments == stats.segments
    names = sorted(name for name in os.listdir(tmp_path) if name.startswith("seg-"))
    assert names == [f"seg-{n:08d}.log" for n in range(1, stats.segments + 1)]
    # Each file holds whole batches, in order: concatenated they are the log.
    assert [r for name in names for r in file_records(tmp_path / name)] == expected
    assert stats.total_bytes == sum((tmp_path / name).stat().st_size for name in names)
    again.close()


def test_appending_after_reopen_continues_the_log(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path)
    storage.append([(1, b"first")])
    storage.close()
    storage, _ = opened(tmp_path)
    storage.append([(2, b"second")])
    storage.close()
    storage, replayed = opened(tmp_path)
    storage.close()
    assert replayed == [(1, b"first"), (2, b"second")]


def test_a_record_larger_than_the_read_chunk_round_trips(tmp_path: Path) -> None:
    big = random.Random(2).randbytes(5 * 1024 * 1024)
    storage, _ = opened(tmp_path)
    storage.append([(7, b"a"), (8, big), (9, b"z")])
    storage.close()
    storage, replayed = opened(tmp_path)
    storage.close()
    assert replayed == [(7, b"a"), (8, big), (9, b"z")]


def test_append_roll_and_compaction_wait_for_replay(tmp_path: Path) -> None:
    storage = SegmentStorage.open(tmp_path)
    with pytest.raises(StorageError, match="replay"):
        storage.append([(1, b"x")])
    with pytest.raises(StorageError, match="replay"):
        storage.roll()
    records = storage.replay()
    with pytest.raises(StorageError, match="replay"):
        storage.append([(1, b"x")])  # started but not exhausted is not enough
    assert list(records) == []
    storage.append([(1, b"x")])
    with pytest.raises(StorageError, match="before the first append"):
        storage.replay()
    storage.close()


def test_bad_records_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path, StorageOptions(max_record_size=10))
    before = storage.stats()
    for bad in ([(0, b"")], [(256, b"")], [(1, b"ok"), (1, b"x" * 11)]):
        with pytest.raises(ValueError, match=r"kind|max_record_size"):
            storage.append(bad)
    storage.append([(255, b"x" * 10)])
    assert storage.stats().total_bytes == before.total_bytes + 9 + 10
    storage.close()


def test_sizing_and_framing_agree_and_refuse_alike() -> None:
    """submit sizes a batch with encoded_size, append frames it with encode_records: one check."""
    rng = random.Random(8)
    for batch in make_batches(seed=3, count=20):
        salt = rng.getrandbits(32)
        framed = encode_records(batch, 60, salt)
        assert len(framed) == encoded_size(batch, 60)
    for bad in ([(0, b"")], [(256, b"")], [(1, b"ok"), (1, b"x" * 11)]):
        with pytest.raises(ValueError, match=r"kind|max_record_size") as sized:
            encoded_size(bad, 10)
        with pytest.raises(ValueError, match=r"kind|max_record_size") as encoded:
            encode_records(bad, 10, 0)
        assert str(sized.value) == str(encoded.value)


def test_roll_seals_the_active_segment_even_when_empty(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path)
    storage.append([(1, b"one")])
    assert storage.roll() == 1
    assert storage.roll() == 2  # an empty segment is a valid segment
    storage.append([(2, b"two")])
    assert storage.stats().active_segment == 3
    storage.close()
    storage, replayed = opened(tmp_path)
    storage.close()
    assert replayed == [(1, b"one"), (2, b"two")]
    assert file_records(tmp_path / "seg-00000002.log") == []


def test_always_fsyncs_every_batch(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path, StorageOptions(fsync=FsyncPolicy.ALWAYS))
    for i in range(5):
        storage.append([(1, b"%d" % i), (2, b"more")])
    stats = storage.stats()
    assert (stats.appends, stats.fsyncs, stats.unsynced_bytes) == (5, 5, 0)
    assert storage.sync_due_at() is None
    storage.close()


def test_never_leaves_syncing_to_the_system_until_sync_or_roll(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path, StorageOptions(fsync=FsyncPolicy.NEVER))
    for i in range(5):
        storage.append([(1, b"%d" % i)])
    assert storage.stats().fsyncs == 0
    assert storage.stats().unsynced_bytes == 5 * 10
    assert storage.sync_due_at() is None
    storage.roll()  # sealed segments are synced whatever the policy
    assert (storage.stats().fsyncs, storage.stats().unsynced_bytes) == (1, 0)
    storage.append([(1, b"x")])
    storage.sync()
    assert storage.stats().fsyncs == 2
    storage.close()


def test_interval_syncs_once_the_interval_has_passed(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path, StorageOptions(fsync=FsyncPolicy.INTERVAL, fsync_interval=3600))
    storage.append([(1, b"a")])
    storage.append([(1, b"b")])
    assert storage.stats().fsyncs == 0
    due = storage.sync_due_at()
    assert due is not None
    storage.sync()
    assert storage.sync_due_at() is None
    storage.close()

    storage, _ = opened(tmp_path, StorageOptions(fsync=FsyncPolicy.INTERVAL, fsync_interval=0))
    storage.append([(1, b"c")])
    storage.append([(1, b"d")])
    assert storage.stats().fsyncs == 2
    storage.close()


def test_stats_describe_the_files(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path, StorageOptions(segment_size=100))
    storage.append([(1, b"x" * 100)])  # over segment_size: rolls
    storage.append([(1, b"y")])
    stats = storage.stats()
    assert (stats.segments, stats.first_segment, stats.active_segment) == (2, 1, 2)
    assert stats.snapshot is None
    assert stats.snapshot_bytes == 0
    assert stats.total_bytes == stats.bytes_since_compaction == (32 + 109) + (32 + 10)
    storage.close()


def test_a_closed_storage_refuses_work_and_closes_twice(tmp_path: Path) -> None:
    with SegmentStorage.open(tmp_path) as storage:
        list(storage.replay())
        storage.append([(1, b"x")])
    storage.close()
    for call in (lambda: storage.append([(1, b"y")]), storage.roll, storage.sync, storage.replay):
        with pytest.raises(StorageError, match="closed"):
            call()


def test_a_failed_write_stops_all_later_writes(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path)
    storage.append([(1, b"kept")])
    # A real failure: the segment's descriptor now refers to a read-only open of the same file.
    read_only = os.open(tmp_path / "seg-00000001.log", os.O_RDONLY)
    os.dup2(read_only, storage._fd)
    os.close(read_only)
    with pytest.raises(StorageError, match="could not write to"):
        storage.append([(1, b"lost")])
    with pytest.raises(StorageError, match="could not write to"):
        storage.append([(1, b"also refused")])
    with pytest.raises(StorageError):
        storage.sync()
    storage.close()
    storage, replayed = opened(tmp_path)
    storage.close()
    assert replayed == [(1, b"kept")]


def test_options_are_checked() -> None:
    for bad in (
        {"fsync": "sometimes"},
        {"fsync_interval": -1},
        {"segment_size": 0},
        {"max_record_size": 2**32},
        {"compact_min_bytes": -1},
        {"compact_garbage_ratio": 1.0},
    ):
        with pytest.raises(ValueError, match=r"must|sometimes"):
            StorageOptions(**bad)
    assert StorageOptions(fsync="never").fsync is FsyncPolicy.NEVER  # type: ignore[arg-type]


def test_segment_storage_is_a_storage(tmp_path: Path) -> None:
    storage: Storage = SegmentStorage.open(tmp_path)
    assert list(storage.replay()) == []
    storage.close()


def failing_fsync(after: int) -> Callable[[Path], None]:
    """An fsync hook that lets ``after`` fsyncs through, then fails as a dying disk does."""
    calls = 0

    def fsync(path: Path) -> None:
        nonlocal calls
        calls += 1
        if calls > after:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    return fsync


def test_a_failed_fsync_is_never_retried_and_its_batch_is_cut(
    tmp_path: Path, faults: FaultPoints
) -> None:
    storage, _ = opened(tmp_path)
    storage.append([(1, b"durable")])
    faults.fsync = failing_fsync(after=0)
    with pytest.raises(StorageError, match=r"could not fsync .*seg-00000001.log: .*\(EIO\)"):
        storage.append([(1, b"never acknowledged")])
    faults.fsync = None  # the disk answers again: still no write, no sync, until a reopen
    with pytest.raises(StorageError, match="could not fsync"):
        storage.append([(1, b"refused")])
    with pytest.raises(StorageError, match="could not fsync"):
        storage.sync()
    # The batch whose fsync failed is gone from the file, not only from the answers: the page
    # cache may hold it although the disk does not, and a reopen must not read it back.
    assert os.path.getsize(tmp_path / "seg-00000001.log") == 32 + 9 + len(b"durable")
    storage.close()
    assert reopen(tmp_path) == [(1, b"durable")]


def test_a_failed_fsync_under_interval_keeps_what_was_acknowledged(
    tmp_path: Path, faults: FaultPoints
) -> None:
    # Under `interval` an unsynced write was acknowledged already (the policy's promise covers a
    # power cut, not this): it stays, and reads back if the kernel still has it.
    storage, _ = opened(tmp_path, StorageOptions(fsync=FsyncPolicy.INTERVAL, fsync_interval=3600))
    storage.append([(1, b"acknowledged")])
    faults.fsync = failing_fsync(after=0)
    with pytest.raises(StorageError, match="could not fsync"):
        storage.sync()
    storage.close()
    faults.fsync = None
    assert reopen(tmp_path) == [(1, b"acknowledged")]
