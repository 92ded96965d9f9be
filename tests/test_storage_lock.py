"""Storage owns its directory: one opener at a time, in this process or another (DIR/LOCK)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from prontodb.broker import backup
from prontodb.broker.database import Database
from prontodb.broker.engine import EngineLimits
from prontodb.broker.storage import (
    CorruptionError,
    DirectoryLock,
    DirectoryLocked,
    SegmentStorage,
    StorageError,
    StorageOptions,
    is_database_file,
)

# Opens the database named by argv[1], says so on stdout, then holds it until stdin closes.
HOLDER = textwrap.dedent(
    """
    import sys
    from prontodb.broker.database import Database

    db = Database.open(sys.argv[1])
    print("open", flush=True)
    sys.stdin.read()
    db.close()
    """
)


@contextmanager
def held_by_another_process(directory: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process with the database in ``directory`` open; killed by pid on the way out."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "open\n"
        yield child
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def test_a_second_open_in_the_same_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = Database.open(path)
    try:
        first.write(first.engine.set("k", "v", writer="w", now=0.0))
        with pytest.raises(DirectoryLocked) as refused:
            Database.open(path)
        assert isinstance(refused.value, StorageError)
        assert refused.value.directory == path
        assert refused.value.pid == os.getpid()
        message = str(refused.value)
        assert str(path) in message
        assert f"pid {os.getpid()}" in message
        assert "close" in message
        assert json.loads((path / "LOCK").read_text()) == {"pid": os.getpid()}
    finally:
        first.close()
    # Released with the close: the next open succeeds and sees the write.
    again = Database.open(path)
    try:
        entry = again.engine.get("k")
        assert entry is not None
        assert entry.value == "v"
    finally:
        again.close()


def test_the_lock_file_exists_only_while_the_directory_is_open(tmp_path: Path) -> None:
    db = Database.open(tmp_path)
    assert (tmp_path / "LOCK").exists()
    db.close()
    assert sorted(os.listdir(tmp_path)) == ["MANIFEST", "seg-00000001.log"]


def test_a_failed_open_releases_the_lock(tmp_path: Path) -> None:
    Database.open(tmp_path).close()
    (tmp_path / "MANIFEST").write_bytes(b"not a manifest")
    for _ in range(2):  # refused for the damage each time, never for a lock left behind
        with pytest.raises(CorruptionError):
            Database.open(tmp_path)
    assert not (tmp_path / "LOCK").exists()
    with DirectoryLock(tmp_path) as lock:
        assert lock.held


def test_a_failed_replay_releases_the_lock(tmp_path: Path) -> None:
    small = StorageOptions(segment_size=4096)
    db = Database.open(tmp_path, options=small)
    while db.storage.stats().segments < 2:
        db.write(db.engine.set("k", "x" * 500, writer="w", now=0.0))
    db.close()
    segment = tmp_path / "seg-00000001.log"
    data = bytearray(segment.read_bytes())
    data[100] ^= 0xFF  # inside the first record of a sealed segment: its checksum fails
    segment.write_bytes(bytes(data))
    for _ in range(2):  # the header checks pass; replay refuses, and the open lets go
        with pytest.raises(CorruptionError, match=r"seg-00000001\.log"):
            Database.open(tmp_path, options=small)
    with DirectoryLock(tmp_path):
        pass


def test_a_database_another_process_holds_is_refused_naming_its_pid(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with held_by_another_process(path) as child:
        with pytest.raises(DirectoryLocked) as refused:
            Database.open(path)
        assert refused.value.pid == child.pid
        message = str(refused.value)
        assert str(path) in message
        assert f"pid {child.pid}" in message
        assert "another broker or program" in message
        assert "stop that process" in message
        with pytest.raises(DirectoryLocked):
            SegmentStorage.open(path, lock=True)
    # The kernel dropped the lock with the killed process; its stale record is no obstacle.
    assert json.loads((path / "LOCK").read_text()) == {"pid": child.pid}
    Database.open(path).close()


def test_a_lock_held_by_the_caller_opens_the_database_and_stays_held(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path) as lock:
        with pytest.raises(DirectoryLocked):
            Database.open(tmp_path)
        db = Database.open(tmp_path, lock=lock)
        db.close()
        assert lock.held
        with pytest.raises(DirectoryLocked):
            Database.open(tmp_path)
    Database.open(tmp_path).close()


def test_a_lock_on_another_directory_is_not_accepted(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with DirectoryLock(tmp_path / "a") as lock, pytest.raises(StorageError, match="not a lock"):
        SegmentStorage.open(tmp_path / "b", lock=lock)
    with pytest.raises(StorageError, match="not a lock"):  # a released one neither
        SegmentStorage.open(tmp_path / "a", lock=lock)


def test_storage_opened_without_a_lock_takes_none(tmp_path: Path) -> None:
    # The raw backend (tests, tools that keep others out themselves) makes no LOCK file.
    storage = SegmentStorage.open(tmp_path)
    try:
        assert not (tmp_path / "LOCK").exists()
    finally:
        storage.close()


def test_a_lock_renamed_aside_leaves_the_new_directory_to_its_holder(tmp_path: Path) -> None:
    # A restore moves a damaged directory aside, holding its lock, and opens a new one in its
    # place: letting go of the old lock must not delete the new holder's LOCK file.
    path = tmp_path / "db"
    path.mkdir()
    old = DirectoryLock(path).acquire()
    os.rename(path, tmp_path / "aside")
    db = Database.open(path)
    try:
        old.release()
        assert (path / "LOCK").exists()
        with pytest.raises(DirectoryLocked):
            Database.open(path)
    finally:
        db.close()


def test_a_restore_into_a_directory_held_elsewhere_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = Database.open(path)
    try:
        db.write(db.engine.set("k", "kept", writer="w", now=0.0))
        records = list(db.engine.snapshot())
        with pytest.raises(DirectoryLocked):
            backup.restore_into(
                path, records, options=StorageOptions(), limits=EngineLimits(), above=0
            )
        assert [p.name for p in tmp_path.iterdir()] == ["db"]  # nothing moved aside
    finally:
        db.close()
    revision = backup.restore_into(path, records, options=StorageOptions(), limits=EngineLimits())
    again = Database.open(path)
    try:
        assert again.engine.revision == revision
        entry = again.engine.get("k")
        assert entry is not None
        assert entry.value == "kept"
    finally:
        again.close()


def test_the_names_storage_makes_are_database_files() -> None:
    for name in ("MANIFEST", "LOCK", "seg-00000001.log", "snap-00000041.snap", "MANIFEST.tmp"):
        assert is_database_file(name), name
    assert is_database_file("snap-00000041.snap.tmp")
    for name in ("notes.txt", "seg-1.log", "seg-00000000.log", "LOCK.bak", "broker.lock"):
        assert not is_database_file(name), name
