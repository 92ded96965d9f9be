"""The engine written through real storage: reopen, compaction, writes racing a compaction."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prontodb.broker.database import Database
from prontodb.broker.engine import Engine, EngineLimits, HistoryLimits, OpKind, TxnOp
from prontodb.broker.storage import CorruptionError, FsyncPolicy, StorageOptions

# Small segments so that the log rolls; compaction only when a test asks for it.
SMALL = StorageOptions(segment_size=4096)
# Snapshots keep the watch history's window of recent revisions; a short one lets compaction
# drop nearly everything.
SHORT_HISTORY = EngineLimits(history=HistoryLimits(revisions=10))


def dump(engine: Engine) -> tuple[int, list[tuple[Any, ...]]]:
    return engine.revision, [
        (k, e.value, e.create_rev, e.mod_rev, e.version, e.writer, e.time) for k, e in engine.scan()
    ]


def fill(db: Database, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        db.write(
            db.engine.set(
                f"queue.task_{i % 37}", {"n": i, "pad": "x" * (i % 50)}, writer="o", now=i
            )
        )
        if i % 5 == 0:
            db.write(db.engine.incr("workflow.completed", 1, writer="w", now=i))
        if i % 7 == 0:
            db.write(db.engine.delete(f"queue.task_{(i * 3) % 37}", writer="w", now=i))


def test_state_survives_close_and_reopen(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "main", options=SMALL)
    fill(db, 300)
    before = dump(db.engine)
    db.close()
    again = Database.open(tmp_path / "main", options=SMALL)
    try:
        assert dump(again.engine) == before
        assert again.storage.stats().segments > 1  # the small segment size made it roll
    finally:
        again.close()


def test_compaction_keeps_the_state_and_drops_history(tmp_path: Path) -> None:
    limits = SHORT_HISTORY
    db = Database.open(tmp_path / "main", options=SMALL, limits=limits)
    fill(db, 400)
    before = dump(db.engine)
    size_before = db.storage.stats().total_bytes
    db.compact()
    assert db.storage.stats().total_bytes < size_before / 2
    fill(db, 50, start=400)
    after = dump(db.engine)
    db.close()
    again = Database.open(tmp_path / "main", options=SMALL, limits=limits)
    try:
        assert dump(again.engine) == after
        assert after != before
    finally:
        again.close()


def test_writes_between_seal_and_install_land_after_the_snapshot(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "main", options=SMALL)
    fill(db, 100)
    finish = db.start_compaction()
    # These happen after the freeze and before the snapshot is installed: they must survive it.
    db.write(db.engine.set("late.one", "after the seal", writer="o", now=1.0))
    db.write(db.engine.delete("queue.task_1", writer="o", now=1.0))
    finish()
    expected = dump(db.engine)
    db.close()
    again = Database.open(tmp_path / "main", options=SMALL)
    try:
        assert dump(again.engine) == expected
        entry = again.engine.get("late.one")
        assert entry is not None
        assert entry.value == "after the seal"
    finally:
        again.close()


def test_a_transaction_is_one_record_all_or_nothing_on_replay(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "main")
    db.write(db.engine.set("pools.cpu_cores", 8, writer="r", now=0.0))
    db.write(
        db.engine.txn(
            [],
            [TxnOp(OpKind.INCR, "pools.cpu_cores", by=-2), TxnOp(OpKind.SET, "allocated.w1", 2)],
            writer="w1",
            now=1.0,
        )
    )
    db.close()
    again = Database.open(tmp_path / "main")
    try:
        pool, allocated = again.engine.get("pools.cpu_cores"), again.engine.get("allocated.w1")
        assert pool is not None
        assert allocated is not None
        assert (pool.value, allocated.value, pool.mod_rev, allocated.mod_rev) == (6, 2, 2, 2)
    finally:
        again.close()


OPS = st.lists(
    st.tuples(
        st.sampled_from(["set", "del", "incr", "compact"]),
        st.sampled_from(["a", "a.b", "a.c", "b", "c.d.e"]),
        st.integers(-5, 5),
    ),
    max_size=40,
)


@settings(max_examples=25)
@given(ops=OPS, policy=st.sampled_from(list(FsyncPolicy)))
def test_random_operations_reopen_to_the_same_state(
    tmp_path_factory: Any, ops: list[tuple[str, str, int]], policy: FsyncPolicy
) -> None:
    path = tmp_path_factory.mktemp("db")
    options = StorageOptions(fsync=policy, segment_size=512, compact_min_bytes=1)
    db = Database.open(path, options=options)
    try:
        for i, (op, key, n) in enumerate(ops):
            if op == "set":
                db.write(db.engine.set(key, n, writer="u", now=float(i)))
            elif op == "del":
                db.write(db.engine.delete(key, writer="u", now=float(i)))
            elif op == "incr":
                entry = db.engine.get(key)
                if entry is None or type(entry.value) is int:
                    db.write(db.engine.incr(key, n, writer="u", now=float(i)))
            else:
                db.compact()
        expected = dump(db.engine)
    finally:
        db.close()
    again = Database.open(path, options=options)
    try:
        assert dump(again.engine) == expected
    finally:
        again.close()


def test_blocking_writes_compact_once_garbage_passes_the_ratio(tmp_path: Path) -> None:
    options = StorageOptions(
        segment_size=2048, compact_min_bytes=16 * 1024, compact_garbage_ratio=0.5
    )
    db = Database.open(tmp_path / "main", options=options, limits=SHORT_HISTORY)
    try:
        for i in range(2000):  # one key rewritten: nearly everything written becomes garbage
            db.write(db.engine.set("heartbeat.worker1", i, writer="w1", now=float(i)))
            assert db.storage.stats().total_bytes <= 2 * options.compact_min_bytes + 4096
        assert db.storage.stats().snapshot is not None
    finally:
        db.close()
    again = Database.open(tmp_path / "main", options=options)
    try:
        entry = again.engine.get("heartbeat.worker1")
        assert entry is not None
        assert (entry.value, entry.version) == (1999, 2000)
    finally:
        again.close()


def test_a_failed_compaction_does_not_fail_the_durable_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = StorageOptions(segment_size=2048, compact_min_bytes=8 * 1024)
    db = Database.open(tmp_path / "main", options=options, limits=SHORT_HISTORY)
    try:
        # A real failure: a directory sits where the compaction writes its temporary snapshot.
        for number in range(1, 200):
            (tmp_path / "main" / f"snap-{number:08d}.snap.tmp").mkdir()
        for i in range(1, 400):
            assert db.write(db.engine.incr("workflow.completed", 1, writer="w", now=0.0)) == i
        failures = [r for r in caplog.records if "compaction failed" in r.getMessage()]
        assert 1 <= len(failures) <= 3  # backs off instead of failing every write
        assert db.storage.stats().snapshot is None
    finally:
        db.close()
    for number in range(1, 200):
        (tmp_path / "main" / f"snap-{number:08d}.snap.tmp").rmdir()
    again = Database.open(tmp_path / "main", options=options)
    try:
        entry = again.engine.get("workflow.completed")
        assert entry is not None
        assert entry.value == 399
    finally:
        again.close()


def test_compaction_does_not_repeat_while_the_log_holds_little_garbage(tmp_path: Path) -> None:
    options = StorageOptions(segment_size=64 * 1024, compact_min_bytes=64 * 1024)
    db = Database.open(tmp_path / "main", options=options)
    writer = "agent-" + "x" * 72  # long writer names are part of every entry's footprint
    try:
        for i in range(3000):
            db.write(db.engine.set(f"agents.a{i}.status", "active", writer=writer, now=0.0))
        db.compact()
        snapshot = db.storage.stats().snapshot
        for i in range(50):
            db.write(db.engine.set(f"agents.a{i}.status", "busy", writer=writer, now=1.0))
        assert db.storage.stats().snapshot == snapshot
        assert not db.wants_compaction
    finally:
        db.close()


@pytest.mark.parametrize("where", ["segment", "snapshot"])
def test_a_repeated_record_is_refused_naming_its_file_and_offset(
    tmp_path: Path, where: str
) -> None:
    """A record whose bytes were copied within its file passes its checksum (same salt), but
    cannot be replayed; the refusal says which file and where, not only what the engine saw."""
    path = tmp_path / "db"
    db = Database.open(path)
    for n in range(3):
        db.write(db.engine.set(f"k{n}", n, writer="w", now=1.0))
    if where == "snapshot":
        db.compact()
        db.write(db.engine.set("after", 1, writer="w", now=1.0))
    db.close()
    name = "seg-00000001.log" if where == "segment" else "snap-00000001.snap"
    damaged = path / name
    data = damaged.read_bytes()
    (length,) = struct.unpack_from("<I", data, 32 + 4)
    first = data[32 : 32 + 9 + length]  # the first record, repeated right after itself
    repeated = data[: 32 + len(first)] + first + data[32 + len(first) :]
    damaged.write_bytes(repeated)
    if where == "snapshot":  # the manifest records the snapshot's size: keep it consistent
        manifest = (path / "MANIFEST").read_bytes().split(b"\n")[0]
        body = manifest.replace(
            b'"snapshot_bytes":%d' % len(data), b'"snapshot_bytes":%d' % len(repeated)
        )
        (path / "MANIFEST").write_bytes(body + b"\ncrc32:%08x\n" % zlib.crc32(body))
    with pytest.raises(CorruptionError) as caught:
        Database.open(path)
    assert caught.value.path == damaged
    assert caught.value.offset == 32 + len(first)
    assert f"{damaged} at byte offset {32 + len(first)}" in str(caught.value)
    assert "cannot be replayed" in str(caught.value)


def test_keys_of_an_expired_session_are_gone_when_the_timer_fires_and_after_a_reopen(
    tmp_path: Path,
) -> None:
    t0 = 1_000.0
    db = Database.open(tmp_path / "main", options=SMALL)
    session = db.write(db.engine.session_grant(10, owner="o", now=t0))
    db.write(db.engine.set("locks.a", "me", writer="o", now=t0, session=session))
    db.write(db.engine.set("kept", 1, writer="o", now=t0))
    db.engine.session_keepalive(session, now=t0 + 5)
    fires = db.engine.next_deadline()  # what the broker's timer sleeps until
    assert fires == t0 + 15
    assert db.write(db.engine.expire_due(fires - 0.5)) == []
    assert db.write(db.engine.expire_due(fires)) == ["locks.a"]
    assert db.engine.keys() == ["kept"]
    assert db.engine.next_deadline() is None
    db.close()
    again = Database.open(tmp_path / "main", options=SMALL)
    try:
        assert again.engine.keys() == ["kept"]  # the end was logged
        assert again.engine.sessions() == []
        assert again.write(again.engine.session_grant(5, owner="o", now=t0)) == session + 1
    finally:
        again.close()


@pytest.mark.parametrize("compact", [False, True])
def test_a_reopen_gives_every_session_its_full_ttl_again(tmp_path: Path, compact: bool) -> None:
    t0 = 1_000.0
    db = Database.open(tmp_path / "main", options=SMALL)
    session = db.write(db.engine.session_grant(10, owner="o", now=t0))
    db.write(db.engine.set("locks.a", "me", writer="o", now=t0, session=session))
    db.write(db.engine.set("kept", 1, writer="o", now=t0))
    if compact:
        db.compact()
    db.close()  # "a crash": the keep-alives of the session were never logged
    again = Database.open(tmp_path / "main", options=SMALL)
    try:
        entry = again.engine.get("locks.a")
        assert entry is not None
        assert entry.session == session
        assert again.engine.next_deadline() == -math.inf  # the timer fires at once...
        later = t0 + 3600
        assert again.write(again.engine.expire_due(later)) == []  # ...and starts the clock
        assert again.engine.next_deadline() == later + 10
        assert again.write(again.engine.expire_due(later + 10)) == ["locks.a"]
    finally:
        again.close()
    last = Database.open(tmp_path / "main", options=SMALL)
    try:
        assert last.engine.keys() == ["kept"]
        assert last.engine.next_session == session + 1
    finally:
        last.close()
