"""Compaction: installing a snapshot, a crash after every step, refusals, and racing a writer."""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from prontodb.broker.storage import (
    CorruptionError,
    GroupCommitWriter,
    SegmentStorage,
    StorageError,
    StorageOptions,
)

from storage_files import Record, opened, reopen

OLD = [(1, b"key-%d=%d" % (i % 4, i)) for i in range(30)]  # many writes to four keys
TAIL = [(2, b"after the seal %d" % i) for i in range(5)]
SNAPSHOT = [(9, b"key-%d=%d" % (k, 26 + k)) for k in range(4)]  # the live state of OLD
STEPS = [
    "snapshot_written",
    "snapshot_renamed",
    "manifest_written",
    "manifest_installed",
    "old_segments_deleted",
    "old_snapshot_deleted",
]


def with_history(path: Path) -> SegmentStorage:
    """OLD spread over segments 1-3 (sealed), TAIL in the active segment 4."""
    storage, _ = opened(path)
    for i, record in enumerate(OLD):
        storage.append([record])
        if i in (9, 19):
            storage.roll()
    assert storage.roll() == 3
    storage.append(TAIL)
    return storage


def test_install_snapshot_replaces_the_sealed_segments(tmp_path: Path) -> None:
    storage = with_history(tmp_path)
    before = storage.stats()
    storage.install_snapshot(3, iter(SNAPSHOT))
    after = storage.stats()
    assert (after.snapshot, after.first_segment, after.segments) == ("snap-00000003.snap", 4, 1)
    assert after.snapshot_bytes == (tmp_path / "snap-00000003.snap").stat().st_size
    assert after.total_bytes < before.total_bytes
    storage.append([(3, b"later")])
    storage.close()
    assert sorted(os.listdir(tmp_path)) == ["MANIFEST", "seg-00000004.log", "snap-00000003.snap"]
    assert reopen(tmp_path) == [*SNAPSHOT, *TAIL, (3, b"later")]


def test_a_second_compaction_replaces_the_first_snapshot(tmp_path: Path) -> None:
    storage = with_history(tmp_path)
    storage.install_snapshot(3, SNAPSHOT)
    assert storage.roll() == 4
    storage.install_snapshot(4, [(9, b"everything")])
    storage.close()
    assert sorted(os.listdir(tmp_path)) == ["MANIFEST", "seg-00000005.log", "snap-00000004.snap"]
    assert reopen(tmp_path) == [(9, b"everything")]


def test_an_empty_state_makes_an_empty_snapshot(tmp_path: Path) -> None:
    storage = with_history(tmp_path)
    storage.install_snapshot(3, [])
    storage.close()
    assert reopen(tmp_path) == TAIL


@pytest.mark.parametrize("steps_taken", range(len(STEPS) + 1))
def test_a_crash_after_any_step_leaves_the_old_set_or_the_new(
    tmp_path: Path, steps_taken: int
) -> None:
    storage = with_history(tmp_path)
    steps = storage.compaction_steps(3, SNAPSHOT)
    taken = [next(steps) for _ in range(steps_taken)]
    assert taken == STEPS[:steps_taken]
    # The crash: nothing is closed or cleaned up. (The descriptors leak until exit.)
    del steps, storage

    records = reopen(tmp_path)
    installed = "manifest_installed" in taken
    assert records == ([*SNAPSHOT, *TAIL] if installed else [*OLD, *TAIL])
    live = (
        ["snap-00000003.snap", "seg-00000004.log"]
        if installed
        else [f"seg-0000000{n}.log" for n in (1, 2, 3, 4)]
    )
    assert sorted(os.listdir(tmp_path)) == sorted(["MANIFEST", *live])  # orphans are gone
    # And the reopened database carries on.
    storage, _ = opened(tmp_path)
    storage.append([(3, b"next")])
    storage.close()
    assert reopen(tmp_path) == [*records, (3, b"next")]


def test_a_roll_during_a_compaction_is_kept_in_the_manifest_it_installs(tmp_path: Path) -> None:
    storage = with_history(tmp_path)  # segments 1-3 sealed, 4 active
    steps = storage.compaction_steps(3, SNAPSHOT)
    assert [next(steps) for _ in range(3)] == STEPS[:3]  # its manifest is written, not installed
    storage.append([(2, b"in segment 4")])
    storage.roll()  # segment 5: the roll records it, replacing the manifest under the compaction
    assert list(steps) == STEPS[3:]
    storage.close()
    assert b'"first_segment":4,"last_segment":5' in (tmp_path / "MANIFEST").read_bytes()
    (tmp_path / "seg-00000005.log").unlink()
    with pytest.raises(CorruptionError, match="segment missing"):
        SegmentStorage.open(tmp_path)


def crashed_after_the_commit_point(path: Path) -> None:
    """Run a compaction of segments 1-3 up to ``manifest_installed``, then crash."""
    storage = with_history(path)
    steps = storage.compaction_steps(3, SNAPSHOT)
    assert [next(steps) for _ in range(4)] == STEPS[:4]
    del steps, storage  # the crash: nothing closed, no old segment deleted yet


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_snapshot_after_the_commit_point_deletes_no_old_segment(
    tmp_path: Path, damage: str
) -> None:
    crashed_after_the_commit_point(tmp_path)
    snapshot = tmp_path / "snap-00000003.snap"
    data = snapshot.read_bytes()
    if damage == "truncated":  # caught by the size check at open
        snapshot.write_bytes(data[:-10])
    else:  # the right size, caught by a record checksum during replay
        snapshot.write_bytes(data[:-3] + bytes([data[-3] ^ 0x40]) + data[-2:])

    def open_and_replay() -> None:
        storage = SegmentStorage.open(tmp_path)  # truncated: refused here
        try:
            list(storage.replay())  # flipped: refused here
        finally:
            storage.close()

    with pytest.raises(CorruptionError) as caught:
        open_and_replay()
    assert caught.value.path == snapshot
    # The old segments, the only complete copy of OLD, are all still there.
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["MANIFEST", "snap-00000003.snap", *(f"seg-0000000{n}.log" for n in (1, 2, 3, 4))]
    )
    # So the old set can be brought back: the manifest of a database without a snapshot.
    body = b'{"format":1,"snapshot":null,"snapshot_bytes":0,"first_segment":1}'
    (tmp_path / "MANIFEST").write_bytes(body + b"\ncrc32:%08x\n" % zlib.crc32(body))
    assert reopen(tmp_path) == [*OLD, *TAIL]
    assert "snap-00000003.snap" not in os.listdir(tmp_path)  # now it is the orphan


def test_orphans_stay_until_replay_has_verified_every_record(tmp_path: Path) -> None:
    crashed_after_the_commit_point(tmp_path)
    everything = sorted(os.listdir(tmp_path))
    storage = SegmentStorage.open(tmp_path)
    records = storage.replay()
    assert next(records) == SNAPSHOT[0]
    assert sorted(os.listdir(tmp_path)) == everything  # opened and replaying: nothing deleted
    assert list(records) == [*SNAPSHOT[1:], *TAIL]
    assert sorted(os.listdir(tmp_path)) == ["MANIFEST", "seg-00000004.log", "snap-00000003.snap"]
    storage.close()


def test_a_failing_state_iterator_leaves_the_old_set(tmp_path: Path) -> None:
    def state() -> Iterator[Record]:
        yield from SNAPSHOT[:2]
        raise RuntimeError("the engine failed mid-snapshot")

    storage = with_history(tmp_path)
    with pytest.raises(RuntimeError, match="mid-snapshot"):
        storage.install_snapshot(3, state())
    assert not any(name.startswith("snap-") for name in os.listdir(tmp_path))
    storage.install_snapshot(3, SNAPSHOT)  # a later attempt is not blocked
    storage.close()
    assert reopen(tmp_path) == [*SNAPSHOT, *TAIL]


def test_compaction_refuses_segments_that_are_not_live_and_sealed(tmp_path: Path) -> None:
    storage = with_history(tmp_path)
    for through in (4, 5, 0):
        with pytest.raises(ValueError, match="live sealed segment"):
            storage.install_snapshot(through, SNAPSHOT)
    storage.install_snapshot(2, SNAPSHOT)
    with pytest.raises(ValueError, match="live sealed segment"):
        storage.install_snapshot(2, SNAPSHOT)  # already compacted
    steps = storage.compaction_steps(3, SNAPSHOT)
    assert next(steps) == "snapshot_written"
    with pytest.raises(StorageError, match="already running"):
        storage.install_snapshot(3, SNAPSHOT)
    steps.close()  # abandoned between steps: the tmp snapshot stays, as after a crash
    storage.install_snapshot(3, SNAPSHOT)
    storage.close()

    storage, _ = opened(tmp_path)
    storage.roll()
    storage.roll()
    late = storage.compaction_steps(4, SNAPSHOT)  # checked now, and again when it starts
    storage.install_snapshot(5, SNAPSHOT)
    with pytest.raises(ValueError, match="live sealed segment"):
        next(late)
    storage.close()

    unreplayed = SegmentStorage.open(tmp_path)
    with pytest.raises(StorageError, match="replay"):
        unreplayed.install_snapshot(3, SNAPSHOT)
    unreplayed.close()


def test_should_compact_weighs_size_and_garbage(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path, StorageOptions(compact_min_bytes=1000, compact_garbage_ratio=0.5))
    storage.append([(1, b"x" * 500)])
    assert not storage.should_compact(live_bytes=0)  # too small to bother
    storage.append([(1, b"x" * 500)])
    total = storage.stats().total_bytes
    assert total > 1000
    assert storage.should_compact(live_bytes=total // 2 - 1)
    assert not storage.should_compact(live_bytes=total // 2 + 1)
    storage.close()


def test_compaction_runs_while_the_writer_keeps_writing(tmp_path: Path) -> None:
    storage, _ = opened(tmp_path, StorageOptions(segment_size=512))
    writer = GroupCommitWriter(storage)
    submitted: list[tuple[int, Record]] = []
    sealed = threading.Event()
    done = threading.Event()

    def keep_writing() -> None:
        i = 0
        while i < 200 or (not done.is_set() and i < 20_000):
            record = (1, b"write %d" % i)
            submitted.append((writer.submit([record]), record))
            if i == 100:
                sealed.set()
            i += 1

    thread = threading.Thread(target=keep_writing)
    thread.start()
    assert sealed.wait(10)
    roll = writer.submit_roll()
    assert writer.wait(roll.ticket, 10)
    assert roll.sealed_segment is not None
    storage.install_snapshot(roll.sealed_segment, [(9, b"state at the roll")])
    done.set()
    thread.join()
    writer.close()
    storage.close()
    after = [record for ticket, record in sorted(submitted) if ticket > roll.ticket]
    assert reopen(tmp_path) == [(9, b"state at the roll"), *after]
