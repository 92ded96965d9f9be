"""The engine's watch history: what each operation records, reading it back, pruning, and keeping
it across replay and snapshots (docs/FORMAT.md, "History").

Every call takes ``now`` explicitly: no test here waits for anything.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prontodb.broker.engine import (
    Batch,
    Change,
    ChangeKind,
    Engine,
    EngineLimits,
    HistoryLimits,
    OpKind,
    Record,
    RecordKind,
    TxnOp,
)
from prontodb.protocol import ProntoError

T0 = 10_000.0
EVERYTHING = {"max_bytes": 1 << 30, "max_batches": 1 << 30}


class Driver:
    """An engine whose records are kept, as the database would keep them."""

    def __init__(self, limits: HistoryLimits | None = None) -> None:
        self.limits = EngineLimits(history=limits or HistoryLimits())
        self.engine = Engine(self.limits)
        self.records: list[Record] = []

    def do(self, applied: Any) -> Any:
        self.records.extend(applied.records)
        return applied.result

    def restored(self, records: list[Record] | None = None) -> Engine:
        return Engine.restore(self.records if records is None else records, self.limits)


def shape(batches: list[Batch]) -> list[Any]:
    """Batches as plain data, so that a live, replayed or decoded history compare field by field."""
    return [
        (b.revision, b.time, [(str(c.kind), c.key, c.by, c.entry) for c in b.changes])
        for b in batches
    ]


def same_history(a: Engine, b: Engine) -> None:
    assert shape(a.history.batches()) == shape(b.history.batches())
    assert (a.history.first, a.history.bytes) == (b.history.first, b.history.bytes)


def value(change: Change) -> Any:
    return None if change.entry is None else change.entry.value


def kinds(e: Engine) -> list[list[tuple[str, str, str]]]:
    return [[(c.kind, c.key, c.by) for c in b.changes] for b in e.history.batches()]


def read_all(e: Engine, start: int, prefix: str = "", **limits: int) -> list[Batch]:
    """Read from ``start`` to the current revision in as many calls as the limits take; every
    call must move on, and the last must say the next revision is the one after the current."""
    found: list[Batch] = []
    revision, through = start, e.revision
    while revision <= through:
        batches, following = e.history.read(revision, through, prefix, **{**EVERYTHING, **limits})
        assert following > revision
        assert all(revision <= b.revision < following for b in batches)
        found += batches
        revision = following
    assert revision == through + 1
    return found


# -- what each operation records ---------------------------------------------------------------


def test_set_incr_and_delete_record_puts_and_a_delete_by_their_writers() -> None:
    e = Engine()
    put = e.set("a", "x", writer="alice", now=T0).result
    e.incr("n", 5, writer="bob", now=T0 + 1)
    e.delete("a", writer="carol", now=T0 + 2)
    assert [(b.revision, b.time - T0) for b in e.history.batches()] == [(1, 0), (2, 1), (3, 2)]
    assert kinds(e) == [[("put", "a", "alice")], [("put", "n", "bob")], [("delete", "a", "carol")]]
    first, counter, gone = (b.changes[0] for b in e.history.batches())
    assert (first.revision, first.entry) == (1, put)  # the key's new state
    assert (value(counter), gone.entry) == (5, None)


def test_a_txn_is_one_batch_at_one_revision_in_op_order() -> None:
    e = Engine()
    e.set("b", 1, writer="u", now=T0)
    ops = [TxnOp(OpKind.SET, "c", "v"), TxnOp(OpKind.DELETE, "b"), TxnOp(OpKind.INCR, "a", by=2)]
    e.txn([], ops, writer="t", now=T0 + 1)
    assert len(e.history) == 2
    batch = e.history.batches()[1]
    assert (batch.revision, batch.time) == (2, T0 + 1)
    assert {c.revision for c in batch.changes} == {2}
    assert kinds(e)[1] == [("put", "c", "t"), ("delete", "b", "t"), ("put", "a", "t")]
    assert [value(c) for c in batch.changes] == ["v", None, 2]


def test_expire_due_records_expiries_by_the_broker() -> None:
    e = Engine()
    e.set("s.1", 1, writer="u", now=T0, ttl=1)
    e.set("s.2", 1, writer="u", now=T0, ttl=2)
    e.expire_due(T0 + 5)
    last = e.history.batches()[-1]
    assert (last.revision, last.time) == (3, T0 + 5)
    assert [(c.kind, c.key, c.by, c.entry) for c in last.changes] == [
        ("expire", "s.1", "", None),
        ("expire", "s.2", "", None),
    ]


def test_claim_ack_release_and_a_lease_running_out() -> None:
    e = Engine()
    e.set("q.1", "a", writer="o", now=T0)
    e.set("q.2", "b", writer="o", now=T0)
    one = e.claim("q", holder="w1", now=T0 + 1, lease=30).result
    two = e.claim("q", holder="w2", now=T0 + 1, lease=5).result
    assert one is not None
    assert two is not None
    e.release("q.1", one.token, writer="w1", now=T0 + 2)
    again = e.claim("q", holder="w3", now=T0 + 3, lease=30).result  # q.1 once more
    assert again is not None
    e.ack("q.1", again.token, writer="w3", now=T0 + 4)
    e.claims_due(T0 + 6)  # q.2's lease runs out
    assert kinds(e)[2:] == [
        [("claim", "q.1", "w1")],
        [("claim", "q.2", "w2")],
        [("release", "q.1", "w1")],
        [("claim", "q.1", "w3")],
        [("ack", "q.1", "w3")],
        [("release", "q.2", "")],
    ]
    # a claim or release carries the item, an ack none (the item is gone)
    assert [value(b.changes[0]) for b in e.history.batches()[2:]] == ["a", "b", "a", "a", None, "b"]
    assert e.history.batches()[-2].changes[0].entry is None


def test_a_dead_letter_is_a_delete_and_a_put_in_one_batch_before_the_claim() -> None:
    e = Engine()
    e.set("q.poison", "p", writer="o", now=T0)
    e.set("q.ok", "k", writer="o", now=T0)
    c = e.claim("q", holder="w", now=T0, lease=30, max_deliveries=1).result
    assert c is not None
    e.release("q.poison", c.token, writer="w", now=T0)
    e.claim("q", holder="w", now=T0 + 1, lease=30, max_deliveries=1)
    bury, claim = e.history.batches()[-2:]
    assert (bury.revision, claim.revision) == (e.revision - 1, e.revision)
    assert [(c.kind, c.key, value(c)) for c in bury.changes] == [
        ("delete", "q.poison", None),
        ("put", "dead.q.poison", "p"),
    ]
    assert [(c.kind, c.key, c.by) for c in claim.changes] == [("claim", "q.ok", "w")]


def test_extend_create_cache_and_no_ops_add_nothing() -> None:
    e = Engine()
    e.set("q.1", 1, writer="o", now=T0)
    c = e.claim("q", holder="w", now=T0, lease=30).result
    assert c is not None
    before = e.history.batches()
    e.extend("q.1", c.token, 60, now=T0 + 1)
    e.create_cache("cache", 10)
    e.delete("missing", writer="u", now=T0 + 2)
    e.claim("empty", holder="w", now=T0 + 2, lease=30)
    assert e.history.batches() == before


# -- reading -----------------------------------------------------------------------------------


def filled() -> Engine:
    e = Engine()
    for i, key in enumerate(["queue", "other", "queue.a", "queueing.x", "queue.b.c", "other"]):
        e.set(key, i, writer="u", now=T0 + i)  # revisions 1..6
    both = [TxnOp(OpKind.SET, "queueing.y", 0), TxnOp(OpKind.SET, "queue.z", 0)]
    e.txn([], both, writer="u", now=T0 + 9)
    return e  # revision 7: one batch with a key on each side


def test_read_filters_by_segment_and_skips_batches_without_a_match() -> None:
    e = filled()
    batches, following = e.history.read(1, e.revision, "queue", **EVERYTHING)
    assert [(b.revision, [c.key for c in b.changes]) for b in batches] == [
        (1, ["queue"]),
        (3, ["queue.a"]),
        (5, ["queue.b.c"]),
        (7, ["queue.z"]),  # queueing.y left out of the batch, not the batch left out
    ]
    assert following == e.revision + 1
    everything, _ = e.history.read(1, e.revision, "", **EVERYTHING)
    assert everything == e.history.batches()


def test_read_honours_through_and_continues_from_the_next_revision() -> None:
    e = filled()
    batches, following = e.history.read(2, 4, "queue", **EVERYTHING)
    assert [b.revision for b in batches] == [3]
    assert following == 5
    nothing, following = e.history.read(6, 6, "queue", **EVERYTHING)
    assert (nothing, following) == ([], 7)  # all read, none matching: still moves on


def test_read_in_small_steps_has_no_gap_and_no_duplicate() -> None:
    e = filled()
    whole = [b.revision for b in read_all(e, 1, "queue")]
    for steps in ({"max_batches": 1}, {"max_batches": 2}, {"max_bytes": 1}, {"max_bytes": 300}):
        assert [b.revision for b in read_all(e, 1, "queue", **steps)] == whole
    # max_batches counts batches looked at, matching or not
    batches, following = e.history.read(1, e.revision, "queue", max_bytes=1 << 30, max_batches=2)
    assert ([b.revision for b in batches], following) == ([1], 3)
    batches, following = e.history.read(2, e.revision, "queue", max_bytes=1, max_batches=99)
    assert ([b.revision for b in batches], following) == ([3], 4)  # at least one batch


# -- pruning -----------------------------------------------------------------------------------


def test_the_revisions_limit_keeps_the_last_revisions() -> None:
    e = Engine(EngineLimits(history=HistoryLimits(revisions=3)))
    for i in range(10):
        e.set(f"k.{i}", i, writer="u", now=T0 + i)
    assert [b.revision for b in e.history.batches()] == [8, 9, 10]
    assert e.history.first == 8
    assert [b.revision for b in read_all(e, e.history.first, max_batches=1)] == [8, 9, 10]


def test_the_bytes_limit_drops_the_oldest_batches() -> None:
    e = Engine(EngineLimits(history=HistoryLimits(bytes=1000)))
    for i in range(20):
        e.set("k", "x" * 100, writer="u", now=T0 + i)
    kept = e.history.batches()
    assert e.history.bytes <= 1000
    assert e.history.first == kept[0].revision > 1
    assert [b.revision for b in kept] == list(range(e.history.first, 21))
    assert read_all(e, e.history.first) == kept


def test_the_seconds_limit_uses_the_batch_times() -> None:
    e = Engine(EngineLimits(history=HistoryLimits(seconds=10)))
    for t in (0, 2, 5, 9):
        e.set("k", t, writer="u", now=T0 + t)
    assert e.history.first == 1
    e.set("k", 13, writer="u", now=T0 + 13)  # the batches of T0 and T0+2 are over 10 s old
    assert [b.time - T0 for b in e.history.batches()] == [5, 9, 13]
    assert e.history.first == 3
    assert [b.revision for b in read_all(e, 3, max_batches=1)] == [3, 4, 5]


# -- replay and snapshots ----------------------------------------------------------------------


def varied(d: Driver, t: float = T0) -> None:
    """A bit of every change kind, at distinct times."""
    d.do(d.engine.create_cache("c", 5))
    d.do(d.engine.set("c.k", "v", writer="a", now=t))
    d.do(d.engine.set("q.1", [1, "x"], writer="a", now=t + 1))
    d.do(d.engine.set("q.2", {"k": b"y"}, writer="a", now=t + 1, ttl=100))
    d.do(d.engine.incr("n", 3, writer="b", now=t + 2))
    ops = [TxnOp(OpKind.INCR, "n"), TxnOp(OpKind.DELETE, "c.k"), TxnOp(OpKind.SET, "q.3", 3)]
    d.do(d.engine.txn([], ops, writer="b", now=t + 3))
    one = d.do(d.engine.claim("q", holder="w1", now=t + 4, lease=2))
    d.do(d.engine.release(one.key, one.token, writer="w1", now=t + 4))
    two = d.do(d.engine.claim("q", holder="w2", now=t + 5, lease=2, max_deliveries=1))
    d.do(d.engine.extend(two.key, two.token, 1, now=t + 5))
    d.do(d.engine.claims_due(t + 7))
    three = d.do(d.engine.claim("q", holder="w3", now=t + 8, lease=9, max_deliveries=1))
    d.do(d.engine.ack(three.key, three.token, writer="w3", now=t + 9))
    d.do(d.engine.set("c.x", 0, writer="a", now=t + 9))
    d.do(d.engine.expire_due(t + 20))


PRUNED = [HistoryLimits(revisions=4), HistoryLimits(bytes=600), HistoryLimits(seconds=6)]


@pytest.mark.parametrize("limits", [HistoryLimits(), *PRUNED])
def test_replay_rebuilds_the_same_history(limits: HistoryLimits) -> None:
    d = Driver(limits)
    varied(d)
    if limits == HistoryLimits():
        assert {c.kind for b in d.engine.history.batches() for c in b.changes} == set(ChangeKind)
    else:
        assert d.engine.history.first > 1  # pruned
    same_history(d.restored(), d.engine)


@pytest.mark.parametrize("limits", [HistoryLimits(), HistoryLimits(revisions=3)])
def test_a_snapshot_carries_the_history(limits: HistoryLimits) -> None:
    d = Driver(limits)
    varied(d)
    snapshot = list(d.engine.snapshot())
    assert RecordKind.SNAPSHOT_HISTORY in [k for k, _ in snapshot]
    if limits.revisions == 3:  # a short window: its first comes back as it was
        assert d.restored(snapshot).history.first == d.engine.revision - 2
    same_history(d.restored(snapshot), d.engine)
    later = len(d.records)
    varied(d, T0 + 100)
    same_history(d.restored(snapshot + d.records[later:]), d.engine)


def test_a_long_history_spans_several_snapshot_chunks() -> None:
    d = Driver()
    for i in range(2100):
        d.do(d.engine.set(f"k.{i % 7}", i, writer="u", now=T0 + i))
    snapshot = list(d.engine.snapshot())
    assert [k for k, _ in snapshot].count(RecordKind.SNAPSHOT_HISTORY) == 3
    same_history(d.restored(snapshot), d.engine)


def test_a_snapshot_without_history_starts_the_window_after_it() -> None:
    d = Driver()
    varied(d)
    old_style = [r for r in d.engine.snapshot() if r[0] != RecordKind.SNAPSHOT_HISTORY]
    at = d.engine.revision
    later = len(d.records)
    d.do(d.engine.set("after", 1, writer="u", now=T0 + 50))
    d.do(d.engine.delete("after", writer="u", now=T0 + 51))
    restored = d.restored(old_style + d.records[later:])
    assert restored.history.first == at + 1
    assert shape(restored.history.batches()) == shape(d.engine.history.batches()[-2:])
    assert [b.revision for b in read_all(restored, at + 1)] == [at + 1, at + 2]


def test_a_snapshot_restored_under_a_smaller_bytes_limit_claims_no_revision_it_lacks() -> None:
    # A 1 MiB batch closes the first SNAPSHOT_HISTORY chunk; under a limit it alone exceeds,
    # that chunk is pruned whole, and the second chunk must not bring the old `first` back.
    d = Driver()
    for i in range(3):
        d.do(d.engine.set(f"k.{i}", i, writer="u", now=T0 + i))
    d.do(d.engine.set("big", "x" * ((1 << 20) - 8), writer="u", now=T0 + 3))
    # Overwritten, so that the history holds the big value itself (not the live entry's reference).
    d.do(d.engine.set("big", 0, writer="u", now=T0 + 3.5))
    for i in range(3):
        d.do(d.engine.set(f"k.{i}", i, writer="u", now=T0 + 4 + i))
    snapshot = list(d.engine.snapshot())
    assert [k for k, _ in snapshot].count(RecordKind.SNAPSHOT_HISTORY) == 2
    smaller = EngineLimits(history=HistoryLimits(bytes=10_000))
    restored = Engine.restore(snapshot, smaller)
    assert [b.revision for b in restored.history.batches()] == [5, 6, 7, 8]
    same_history(restored, Engine.restore(d.records, smaller))  # as replay of the log has it
    assert restored.history.first == 5  # not 1: revisions 1 to 4 are gone


# -- property: reading from anywhere, and replay -----------------------------------------------

SEGMENTS = ["q", "qa", "a"]
ITEMS = st.tuples(st.sampled_from(SEGMENTS), st.sampled_from("12")).map(".".join)  # claimable
KEYS = st.one_of(ITEMS, st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map(".".join))
CLAIM = st.tuples(st.just("claim"), st.sampled_from(SEGMENTS), st.sampled_from([None, 1]))
FINISH = st.tuples(st.just("finish"), st.integers(0, 5), st.booleans())  # ack or release
SET = st.tuples(st.just("set"), KEYS, st.integers(0, 3), st.sampled_from([None, 2, 5]))
DELETE, INCR = st.tuples(st.just("delete"), KEYS), st.tuples(st.just("incr"), KEYS)
TXN = st.tuples(st.just("txn"), st.lists(st.tuples(st.booleans(), KEYS), min_size=1, max_size=3))
TICK = st.tuples(st.just("tick"), st.integers(1, 4))  # expire_due and claims_due
# Sets, claims and their ends twice as likely: claims need queue items, acks need claims.
OPS = st.one_of(SET, SET, CLAIM, CLAIM, FINISH, FINISH, DELETE, INCR, TXN, TICK)


def under(key: str, prefix: str) -> bool:
    return not prefix or key == prefix or key.startswith(prefix + ".")


def run(d: Driver, ops: list[Any]) -> None:
    e, now, held = d.engine, T0, []
    for op in ops:
        now += 1
        try:
            if op[0] == "set":
                d.do(e.set(op[1], op[2], writer="w", now=now, ttl=op[3]))
            elif op[0] == "delete":
                d.do(e.delete(op[1], writer="w", now=now))
            elif op[0] == "incr":
                d.do(e.incr(op[1], writer="w", now=now))
            elif op[0] == "txn":
                txn_ops = [TxnOp(OpKind.DELETE if g else OpKind.INCR, k) for g, k in op[1]]
                d.do(e.txn([], txn_ops, writer="t", now=now))
            elif op[0] == "tick":
                now += op[1]
                d.do(e.expire_due(now))
                d.do(e.claims_due(now))
            elif op[0] == "claim":
                c = d.do(e.claim(op[1], holder="h", now=now, lease=3, max_deliveries=op[2]))
                held += [c] if c else []
            elif held:
                c = held.pop(op[1] % len(held))
                finish = e.ack if op[2] else e.release
                d.do(finish(c.key, c.token, writer="h", now=now))
        except ProntoError:  # incr of a non-integer, a stale token: refused, nothing changes
            pass


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(OPS, min_size=10, max_size=40),
    keep=st.integers(1, 50),
    prefix=st.sampled_from(["", *SEGMENTS, "q.a", "q.q"]),
    data=st.data(),
)
def test_reading_from_any_kept_revision_and_replay_agree(
    ops: list[Any], keep: int, prefix: str, data: st.DataObject
) -> None:
    d = Driver(HistoryLimits(revisions=keep))
    run(d, ops)
    history = d.engine.history
    start = data.draw(st.integers(history.first, d.engine.revision + 1), label="start")
    step = data.draw(st.integers(1, 3), label="max_batches")
    got = read_all(d.engine, start, prefix, max_batches=step)
    revisions = [b.revision for b in got]
    assert revisions == sorted(set(revisions))  # each once, in order
    by_hand = [
        (b.revision, [c for c in b.changes if under(c.key, prefix)])
        for b in history.batches()
        if b.revision >= start
    ]
    assert [(b.revision, list(b.changes)) for b in got] == [(r, cs) for r, cs in by_hand if cs]
    same_history(d.restored(), d.engine)


def test_memory_follows_the_window_not_the_bytes_written() -> None:
    """Overwriting one key with big values keeps the live value and the window's bytes, not every
    value ever written (pruned batches used to stay referenced until thousands piled up)."""
    import tracemalloc

    engine = Engine(EngineLimits(history=HistoryLimits(bytes=2 << 20)))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(300):
            engine.set("big", bytes([n % 256]) * (256 << 10), writer="w", now=T0 + n)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert engine.history.bytes <= 2 << 20
    # The live value and the 2 MiB window, with room for bookkeeping: not 300 x 256 KiB = 75 MiB.
    assert held < 8 << 20, f"{held / (1 << 20):.1f} MiB held after writing 75 MiB"
