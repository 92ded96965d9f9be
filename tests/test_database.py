"""The engine written through real storage: reopen, compaction, writes racing a compaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from prontodb.broker.database import Database
from prontodb.broker.engine import Engine, OpKind, TxnOp
from prontodb.broker.storage import FsyncPolicy, StorageOptions

# Small segments so that the log rolls; compaction only when a test asks for it.
SMALL = StorageOptions(segment_size=4096)


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
    db = Database.open(tmp_path / "main", options=SMALL)
    fill(db, 400)
    before = dump(db.engine)
    size_before = db.storage.stats().total_bytes
    db.compact()
    assert db.storage.stats().total_bytes < size_before / 2
    fill(db, 50, start=400)
    after = dump(db.engine)
    db.close()
    again = Database.open(tmp_path / "main", options=SMALL)
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
    db = Database.open(tmp_path / "main", options=options)
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
