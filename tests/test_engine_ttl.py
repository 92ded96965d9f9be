"""TTLs in the engine: deadlines, caches, expiry as a logged change, and replay of all of it.

Every call takes ``now`` explicitly: no test here waits for anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prontodb.broker.database import Database
from prontodb.broker.engine import ChangeKind, Engine, OpKind, Record, RecordKind, TxnOp
from prontodb.protocol import ErrorCode, ProntoError

T0 = 1_000.0


def logged(engine: Engine, applied: Any, log: list[Record]) -> Any:
    """Keep ``applied``'s records, as the database would, and return its result."""
    log.extend(applied.records)
    return applied.result


def test_a_key_set_with_a_ttl_expires_at_its_deadline() -> None:
    e = Engine()
    e.set("session.w1", "active", writer="w1", now=T0, ttl=2.5)
    assert e.deadline("session.w1") == (True, T0 + 2.5)
    assert e.next_deadline() == T0 + 2.5
    early = e.expire_due(T0 + 2.4)
    assert (early.result, early.records) == ([], [])
    due = e.expire_due(T0 + 2.5)
    assert due.result == ["session.w1"]
    assert e.get("session.w1") is None
    assert e.revision == 2  # the expiry is a change with its own revision
    assert [kind for kind, _ in due.records] == [RecordKind.EXPIRE]
    assert [(c.revision, c.kind, c.key) for c in due.changes] == [
        (2, ChangeKind.EXPIRE, "session.w1")
    ]
    assert e.next_deadline() is None


def test_keys_due_at_once_go_at_one_revision_in_deadline_order() -> None:
    e = Engine()
    e.set("b", 1, writer="u", now=T0, ttl=2)
    e.set("a", 1, writer="u", now=T0, ttl=1)
    e.set("c", 1, writer="u", now=T0, ttl=9)
    due = e.expire_due(T0 + 5)
    assert due.result == ["a", "b"]
    assert {c.revision for c in due.changes} == {4}
    assert e.keys() == ["c"]


def test_set_restarts_the_clock_and_a_plain_set_clears_it() -> None:
    e = Engine()
    e.set("k", 1, writer="u", now=T0, ttl=10)
    e.set("k", 2, writer="u", now=T0 + 5, ttl=10)
    assert e.expire_due(T0 + 12).result == []  # the first deadline is stale
    assert e.deadline("k") == (True, T0 + 15)
    e.set("k", 3, writer="u", now=T0 + 6)  # as Redis SET: no TTL given, none kept
    assert e.deadline("k") == (True, None)
    assert e.expire_due(T0 + 100).result == []


def test_incr_keeps_the_deadline_so_a_window_stays_fixed() -> None:
    e = Engine()
    e.create_cache("rate_limits.api", 60)
    assert e.incr("rate_limits.api.w1_calls", writer="w1", now=T0).result == 1
    assert e.incr("rate_limits.api.w1_calls", writer="w1", now=T0 + 59).result == 2
    assert e.deadline("rate_limits.api.w1_calls") == (True, T0 + 60)
    assert e.expire_due(T0 + 60).result == ["rate_limits.api.w1_calls"]
    assert e.incr("rate_limits.api.w1_calls", writer="w1", now=T0 + 61).result == 1  # new window


def test_caches_give_keys_under_them_a_default_ttl() -> None:
    e = Engine()
    e.create_cache("sessions.active", 3600)
    e.create_cache("sessions", 60)
    e.set("sessions.active.worker1", "on", writer="u", now=T0)
    e.set("sessions.idle.worker2", "off", writer="u", now=T0)
    e.set("sessions.active.monitor", "on", writer="u", now=T0, ttl=5)  # its own TTL wins
    e.set("sessionsX", "not under it", writer="u", now=T0)  # prefixes follow the dots
    assert e.deadline("sessions.active.worker1") == (True, T0 + 3600)  # the nearest cache
    assert e.deadline("sessions.idle.worker2") == (True, T0 + 60)
    assert e.deadline("sessions.active.monitor") == (True, T0 + 5)
    assert e.deadline("sessionsX") == (True, None)
    assert e.caches() == {"sessions": 60.0, "sessions.active": 3600.0}
    assert e.drop_cache("sessions").result is True
    assert e.drop_cache("sessions").result is False
    e.set("sessions.idle.worker3", "off", writer="u", now=T0)
    assert e.deadline("sessions.idle.worker3") == (True, None)
    assert e.deadline("sessions.idle.worker2") == (True, T0 + 60)  # keys keep their deadlines


def test_expire_persist_and_deadline() -> None:
    e = Engine()
    assert e.deadline("k") == (False, None)
    assert e.expire("k", 5, writer="u", now=T0).result is False
    e.set("k", "v", writer="u", now=T0)
    assert e.persist("k", writer="u", now=T0).result is False  # no deadline: nothing changes
    assert e.revision == 1
    expired = e.expire("k", 5, writer="u", now=T0)
    assert expired.result is True
    assert e.deadline("k") == (True, T0 + 5)
    entry = e.get("k")
    assert entry is not None
    assert (entry.value, entry.version, entry.mod_rev) == ("v", 2, 2)
    assert e.persist("k", writer="u", now=T0 + 1).result is True
    assert e.deadline("k") == (True, None)
    now = e.expire("k", 0, writer="u", now=T0 + 2)  # 0 or less: gone at once, as an expiry
    assert now.result is True
    assert e.get("k") is None
    assert [c.kind for c in now.changes] == [ChangeKind.EXPIRE]


def test_transactions_honour_caches_and_keep_deadlines_on_incr() -> None:
    e = Engine()
    e.create_cache("tmp", 30)
    e.set("tmp.n", 1, writer="u", now=T0, ttl=100)
    e.txn(
        [],
        [TxnOp(OpKind.SET, "tmp.s", "x"), TxnOp(OpKind.INCR, "tmp.n"), TxnOp(OpKind.INCR, "tmp.m")],
        writer="u",
        now=T0 + 1,
    )
    assert e.deadline("tmp.s") == (True, T0 + 31)
    assert e.deadline("tmp.n") == (True, T0 + 100)
    assert e.deadline("tmp.m") == (True, T0 + 31)


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), "5", True])
def test_a_bad_ttl_is_refused(ttl: Any) -> None:
    e = Engine()
    with pytest.raises(ProntoError) as info:
        e.set("k", 1, writer="u", now=T0, ttl=ttl)
    assert info.value.code == ErrorCode.BAD_REQUEST
    with pytest.raises(ProntoError):
        e.create_cache("c", ttl)
    with pytest.raises(ProntoError):
        e.create_cache("", 5)  # every key: not a cache


def test_replay_and_snapshots_keep_deadlines_and_caches() -> None:
    e = Engine()
    log: list[Record] = []
    logged(e, e.create_cache("sessions", 60), log)
    logged(e, e.set("sessions.a", 1, writer="u", now=T0), log)
    logged(e, e.set("plain", 2, writer="u", now=T0), log)
    logged(e, e.set("own", 3, writer="u", now=T0, ttl=5), log)
    logged(e, e.expire("plain", 50, writer="u", now=T0), log)
    logged(e, e.txn([], [TxnOp(OpKind.SET, "sessions.b", 4)], writer="u", now=T0), log)
    logged(e, e.expire_due(T0 + 10), log)  # "own" goes
    logged(e, e.create_cache("gone", 1), log)
    logged(e, e.drop_cache("gone"), log)

    def state(engine: Engine) -> Any:
        keys = engine.keys()
        return engine.revision, keys, [engine.deadline(k) for k in keys], engine.caches()

    replayed = Engine.restore(log)
    assert state(replayed) == state(e)
    assert replayed.next_deadline() == T0 + 50
    from_snapshot = Engine.restore(e.snapshot())
    assert state(from_snapshot) == state(e)
    assert from_snapshot.expire_due(T0 + 60).result == ["plain", "sessions.a", "sessions.b"]


def test_many_rewrites_do_not_grow_the_deadline_heap_without_bound() -> None:
    e = Engine()
    for i in range(20_000):
        e.set("hot", i, writer="u", now=T0 + i, ttl=1_000_000)
    assert len(e._deadlines) <= 2 * 1 + 1024 + 1
    assert e.next_deadline() == T0 + 19_999 + 1_000_000


def test_keys_that_expired_while_the_database_was_closed_go_on_the_next_sweep(
    tmp_path: Path,
) -> None:
    db = Database.open(tmp_path)
    db.write(db.engine.set("sessions.w1", "on", writer="u", now=T0, ttl=60))
    db.write(db.engine.set("kept", "on", writer="u", now=T0))
    db.close()
    db = Database.open(tmp_path)  # "an hour later"
    assert db.write(db.engine.expire_due(T0 + 3600)) == ["sessions.w1"]
    db.close()
    db = Database.open(tmp_path)
    assert db.engine.keys() == ["kept"]  # the expiry was logged
    db.close()
