"""Sessions in the engine: grant, keep-alive, revoke, expiry, keys attached and detached, and
replay of all of it from the log and from a snapshot.

Every call takes ``now`` explicitly: no test here waits for anything.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from prontodb.broker.engine import (
    ChangeKind,
    Engine,
    EngineLimits,
    OpKind,
    Record,
    RecordKind,
    SessionInfo,
    TxnOp,
)
from prontodb.protocol import ErrorCode, ProntoError

T0 = 1_000.0


def logged(applied: Any, log: list[Record]) -> Any:
    """Keep ``applied``'s records, as the database would, and return its result."""
    log.extend(applied.records)
    return applied.result


def refused(code: ErrorCode, call: Any, match: str | None = None) -> ProntoError:
    with pytest.raises(ProntoError, match=match) as info:
        call()
    assert info.value.code is code
    return info.value


def attached(engine: Engine, session: int) -> list[str]:
    return [k for k, e in engine.scan() if e.session == session]


def test_a_grant_gives_new_ids_and_is_logged_without_a_revision() -> None:
    e = Engine()
    first = e.session_grant(10, owner="alice", now=T0)
    second = e.session_grant(2.5, owner="bob", now=T0 + 1)
    assert (first.result, second.result) == (1, 2)
    assert [kind for kind, _ in first.records] == [RecordKind.SESSION_GRANT]
    assert first.changes == []
    assert e.revision == 0
    assert e.sessions() == [
        SessionInfo(1, "alice", 10.0, T0 + 10, 0),
        SessionInfo(2, "bob", 2.5, T0 + 3.5, 0),
    ]
    assert e.statistics()["sessions"] == 2
    assert e.next_deadline() == T0 + 3.5
    assert e.next_session == 3


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan, "10", True, 86_400.5])
def test_a_grant_with_a_bad_ttl_is_refused(ttl: Any) -> None:
    e = Engine()
    refused(ErrorCode.BAD_REQUEST, lambda: e.session_grant(ttl, owner="u", now=T0), "ttl")
    assert e.sessions() == []
    assert e.next_session == 1


def test_a_day_is_the_longest_ttl_by_default_and_the_limit_can_change() -> None:
    assert Engine().session_grant(86_400, owner="u", now=T0).result == 1
    short = Engine(EngineLimits(max_session_ttl=60))
    refused(ErrorCode.BAD_REQUEST, lambda: short.session_grant(61, owner="u", now=T0), "60")


def test_a_keepalive_moves_the_deadline_and_is_not_logged() -> None:
    e = Engine()
    session = e.session_grant(10, owner="u", now=T0).result
    kept = e.session_keepalive(session, now=T0 + 8)
    assert (kept.result, kept.records, kept.changes) == (T0 + 18, [], [])
    assert e.expire_due(T0 + 17).records == []
    assert e.sessions()[0].deadline == T0 + 18
    assert e.next_deadline() == T0 + 18


@pytest.mark.parametrize("session", [1, 7, -1, "2", None, 2.0, True])
def test_keeping_alive_revoking_or_attaching_to_no_session_is_not_found(session: Any) -> None:
    e = Engine()
    e.session_grant(10, owner="u", now=T0)
    e.session_grant(10, owner="u", now=T0)
    e.session_revoke(1, writer="u", now=T0)  # 1 ended, 7 was never granted, the rest are not ids
    error = refused(ErrorCode.NOT_FOUND, lambda: e.session_keepalive(session, now=T0), "Grant")
    assert f"no session {session!r}" in str(error)
    refused(ErrorCode.NOT_FOUND, lambda: e.session_revoke(session, writer="u", now=T0))
    if session is not None:  # None is no session: a plain set
        refused(ErrorCode.NOT_FOUND, lambda: e.set("k", 1, writer="u", now=T0, session=session))
    assert e.get("k") is None
    assert e.revision == 0


def test_a_session_past_its_deadline_takes_no_keepalive_nor_keys_before_it_is_swept() -> None:
    e = Engine()
    session = e.session_grant(10, owner="u", now=T0).result
    refused(ErrorCode.NOT_FOUND, lambda: e.session_keepalive(session, now=T0 + 10))
    refused(ErrorCode.NOT_FOUND, lambda: e.set("k", 1, writer="u", now=T0 + 10, session=session))
    assert e.expire_due(T0 + 10).records[0][0] == RecordKind.SESSION_END
    assert e.sessions() == []


def test_keys_set_with_a_session_are_attached_and_meta_shows_it() -> None:
    e = Engine()
    session = e.session_grant(10, owner="u", now=T0).result
    entry = e.set("locks.a", "me", writer="u", now=T0, session=session).result
    assert (entry.session, entry.expires) == (session, None)
    assert entry.meta()["session"] == session
    assert e.set("plain", 1, writer="u", now=T0).result.meta()["session"] is None
    assert e.sessions()[0].keys == 1
    assert attached(e, session) == ["locks.a"]


def test_a_write_without_the_session_detaches_the_key_and_incr_keeps_it() -> None:
    e = Engine()
    s1 = e.session_grant(10, owner="u", now=T0).result
    s2 = e.session_grant(10, owner="u", now=T0).result
    e.set("a", 1, writer="u", now=T0, session=s1)
    e.set("b", 1, writer="u", now=T0, session=s1)
    e.incr("b", writer="u", now=T0)  # a counter keeps its session, as it keeps its TTL
    assert e.get("b").session == s1  # type: ignore[union-attr]
    e.set("a", 2, writer="u", now=T0)  # detached: the lease is per write, as etcd's
    assert attached(e, s1) == ["b"]
    e.set("b", 3, writer="u", now=T0, session=s2)  # moved to another session
    assert attached(e, s1) == []
    assert attached(e, s2) == ["b"]
    assert [i.keys for i in e.sessions()] == [0, 1]
    assert e.session_revoke(s1, writer="u", now=T0).result == []
    assert e.keys() == ["a", "b"]


def test_a_key_may_not_have_a_ttl_and_a_session() -> None:
    e = Engine()
    session = e.session_grant(10, owner="u", now=T0).result
    refused(
        ErrorCode.BAD_REQUEST,
        lambda: e.set("k", 1, writer="u", now=T0, ttl=5, session=session),
        "not both",
    )
    e.set("k", 1, writer="u", now=T0, session=session)
    refused(ErrorCode.BAD_REQUEST, lambda: e.expire("k", 5, writer="u", now=T0), "session 1")
    assert e.persist("k", writer="u", now=T0).result is False  # it has no deadline to remove
    assert e.get("k").session == session  # type: ignore[union-attr]
    assert e.expire("k", 0, writer="u", now=T0).result is True  # expiring it now removes it
    assert e.sessions()[0].keys == 0


def test_a_session_overrides_the_ttl_of_a_cache() -> None:
    e = Engine()
    e.create_cache("c", 5)
    session = e.session_grant(10, owner="u", now=T0).result
    entry = e.set("c.k", 1, writer="u", now=T0, session=session).result
    assert (entry.expires, entry.session) == (None, session)


def test_revoke_deletes_every_attached_key_at_one_revision() -> None:
    e = Engine()
    session = e.session_grant(10, owner="u", now=T0).result
    for key in ("b", "a", "c.d"):
        e.set(key, 1, writer="u", now=T0, session=session)
    e.set("kept", 1, writer="u", now=T0)
    revoked = e.session_revoke(session, writer="bob", now=T0 + 1)
    assert revoked.result == ["a", "b", "c.d"]
    assert [kind for kind, _ in revoked.records] == [RecordKind.SESSION_END]
    assert [(c.revision, c.kind, c.key, c.by) for c in revoked.changes] == [
        (5, ChangeKind.DELETE, k, "bob") for k in ("a", "b", "c.d")
    ]
    assert e.revision == 5
    assert e.keys() == ["kept"]
    assert e.sessions() == []
    assert e.history.batches()[-1].revision == 5  # watchers see the deletes
    refused(ErrorCode.NOT_FOUND, lambda: e.session_keepalive(session, now=T0 + 1))


def test_revoking_a_session_without_keys_is_logged_without_a_revision() -> None:
    e = Engine()
    session = e.session_grant(10, owner="u", now=T0).result
    revoked = e.session_revoke(session, writer="u", now=T0)
    assert (revoked.result, revoked.changes, e.revision) == ([], [], 0)
    assert [kind for kind, _ in revoked.records] == [RecordKind.SESSION_END]
    assert Engine.restore(e.session_grant(1, owner="u", now=T0).records).next_session == 3


def test_expiry_ends_sessions_after_the_keys_each_at_its_own_revision() -> None:
    e = Engine()
    s1 = e.session_grant(5, owner="u", now=T0).result
    s2 = e.session_grant(3, owner="u", now=T0).result
    s3 = e.session_grant(4, owner="u", now=T0).result  # no keys
    e.set("one", 1, writer="u", now=T0, session=s1)
    e.set("two", 2, writer="u", now=T0, session=s2)
    e.set("ttl", 3, writer="u", now=T0, ttl=4)
    assert e.next_deadline() == T0 + 3
    early = e.expire_due(T0 + 2.9)
    assert (early.result, early.records) == ([], [])
    due = e.expire_due(T0 + 5)
    assert due.result == ["ttl", "two", "one"]
    kinds = [RecordKind.EXPIRE, RecordKind.SESSION_END, RecordKind.SESSION_END]
    assert [kind for kind, _ in due.records] == [*kinds, RecordKind.SESSION_END]  # s3's
    assert [(c.revision, c.kind, c.key, c.by) for c in due.changes] == [
        (4, ChangeKind.EXPIRE, "ttl", ""),
        (5, ChangeKind.EXPIRE, "two", ""),
        (6, ChangeKind.EXPIRE, "one", ""),
    ]
    assert e.sessions() == []
    assert e.keys() == []
    assert e.next_deadline() is None
    assert s3 == 3


def test_claims_on_an_attached_item_go_with_it() -> None:
    e = Engine()
    session = e.session_grant(10, owner="u", now=T0).result
    e.set("q.a", 1, writer="u", now=T0, session=session)
    claimed = e.claim("q", holder="w", now=T0, lease=30).result
    assert claimed is not None
    e.session_revoke(session, writer="u", now=T0)
    assert e.claims() == []
    assert e.next_timer() is None


def test_a_txn_attaches_its_puts_and_keeps_the_session_of_an_incr() -> None:
    e = Engine()
    session = e.session_grant(10, owner="u", now=T0).result
    e.set("n", 1, writer="u", now=T0, session=session)
    ops = [
        TxnOp(OpKind.SET, "a", 1, session=session),
        TxnOp(OpKind.SET, "b", 2),
        TxnOp(OpKind.INCR, "n", by=2),
    ]
    assert e.txn([], ops, writer="u", now=T0).result.succeeded
    assert attached(e, session) == ["a", "n"]
    refused(
        ErrorCode.NOT_FOUND,
        lambda: e.txn([], [TxnOp(OpKind.SET, "c", 1, session=9)], writer="u", now=T0),
    )
    assert e.get("c") is None
    assert e.revision == 2
    assert e.session_revoke(session, writer="u", now=T0).result == ["a", "n"]


def test_a_txn_operation_from_the_wire_carries_its_session() -> None:
    parsed = TxnOp.from_wire({"op": "set", "key": "a", "value": 1, "session": 3})
    assert parsed == TxnOp(OpKind.SET, "a", 1, session=3)
    assert TxnOp.from_wire({"op": "set", "key": "a", "value": 1}).session is None
    for raw in (
        {"op": "set", "key": "a", "value": 1, "session": "3"},
        {"op": "set", "key": "a", "value": 1, "session": True},
        {"op": "del", "key": "a", "session": 3},
        {"op": "incr", "key": "a", "session": 3},
    ):
        refused(ErrorCode.BAD_REQUEST, lambda raw=raw: TxnOp.from_wire(raw), match="session")


def test_the_sessions_bound_to_a_connection_end_when_it_closes() -> None:
    e = Engine()
    log: list[Record] = []
    first = logged(e.session_grant(10, owner="u", now=T0, bound=7), log)
    second = logged(e.session_grant(10, owner="u", now=T0, bound=7), log)
    other = logged(e.session_grant(10, owner="u", now=T0, bound=8), log)
    free = logged(e.session_grant(10, owner="u", now=T0), log)
    for key, session in (("a", first), ("b", second), ("c", other), ("d", free)):
        logged(e.set(key, 1, writer="u", now=T0, session=session), log)
    assert logged(e.end_bound_sessions(9, now=T0), log) == []
    ended = e.end_bound_sessions(7, now=T0 + 1)
    assert ended.result == ["a", "b"]
    assert [(c.kind, c.key, c.by, c.revision) for c in ended.changes] == [
        (ChangeKind.DELETE, "a", "", 5),  # a revision per session
        (ChangeKind.DELETE, "b", "", 6),
    ]
    log.extend(ended.records)
    assert [i.id for i in e.sessions()] == [other, free]
    assert e.keys() == ["c", "d"]
    restored = Engine.restore(log)  # the ends are logged; the binding is not
    assert restored.keys() == ["c", "d"]
    assert restored.end_bound_sessions(8, now=T0 + 1).result == []


def test_a_session_holds_at_most_max_session_keys() -> None:
    e = Engine(EngineLimits(max_session_keys=2))
    session = e.session_grant(10, owner="u", now=T0).result
    e.set("a", 1, writer="u", now=T0, session=session)
    e.set("b", 1, writer="u", now=T0, session=session)
    e.set("b", 2, writer="u", now=T0, session=session)  # already attached: not one more
    refused(ErrorCode.TOO_LARGE, lambda: e.set("c", 1, writer="u", now=T0, session=session))


def test_a_dead_letter_is_not_attached() -> None:
    e = Engine()
    session = e.session_grant(10, owner="u", now=T0).result
    e.set("q.a", 1, writer="u", now=T0, session=session)
    e.claim("q", holder="w", now=T0, lease=1, max_deliveries=1)
    e.claims_due(T0 + 1)
    e.claim("q", holder="w", now=T0 + 1, lease=1, max_deliveries=1)  # buries q.a
    assert e.get("dead.q.a").session is None  # type: ignore[union-attr]
    assert e.sessions()[0].keys == 0


def lived() -> tuple[Engine, list[Record]]:
    """An engine with sessions in every state, and its log."""
    e = Engine()
    log: list[Record] = []
    s1 = logged(e.session_grant(10, owner="alice", now=T0), log)
    s2 = logged(e.session_grant(20, owner="bob", now=T0), log)
    s3 = logged(e.session_grant(30, owner="carol", now=T0), log)
    s4 = logged(e.session_grant(40, owner="dave", now=T0), log)
    logged(e.set("a", 1, writer="alice", now=T0, session=s1), log)
    logged(e.set("b", 2, writer="bob", now=T0, session=s2), log)
    logged(e.set("c", 3, writer="bob", now=T0, session=s2), log)
    logged(e.txn([], [TxnOp(OpKind.SET, "d", 4, session=s4)], writer="u", now=T0), log)
    logged(e.set("c", 5, writer="bob", now=T0), log)  # detached
    logged(e.session_keepalive(s1, now=T0 + 5), log)
    logged(e.session_revoke(s3, writer="carol", now=T0 + 6), log)  # no keys
    logged(e.expire_due(T0 + 14.9), log)  # nothing: s1 was kept alive until T0 + 15
    logged(e.expire_due(T0 + 15), log)  # s1 ends
    logged(e.session_revoke(s4, writer="dave", now=T0 + 16), log)
    logged(e.set("e", 6, writer="bob", now=T0 + 16, session=s2), log)
    return e, log


def state(engine: Engine) -> tuple[Any, ...]:
    return (
        engine.revision,
        [(k, e.value, e.mod_rev, e.session, e.expires) for k, e in engine.scan()],
        [(i.id, i.owner, i.ttl, i.keys) for i in engine.sessions()],
        engine.next_session,
        engine.statistics(),
        engine.history.first,
        engine.history.batches(),
    )


@pytest.mark.parametrize("source", ["log", "snapshot", "snapshot of the replayed log"])
def test_replay_rebuilds_the_sessions_their_keys_and_the_next_id(source: str) -> None:
    e, log = lived()
    if source == "log":
        restored = Engine.restore(log)
    elif source == "snapshot":
        restored = Engine.restore(e.snapshot())
    else:
        restored = Engine.restore(Engine.restore(log).snapshot())
    assert state(restored) == state(e)
    assert [i.deadline for i in restored.sessions()] == [None]  # its clock starts again...
    assert restored.next_deadline() == -math.inf  # ...at once
    started = restored.expire_due(T0 + 100)  # a keep-alive is not logged: a full TTL again
    assert (started.result, started.records) == ([], [])
    assert restored.sessions() == [SessionInfo(2, "bob", 20.0, T0 + 120, 2)]
    assert restored.next_deadline() == T0 + 120
    assert restored.session_grant(1, owner="u", now=T0).result == 5  # ids are never reused
    ended = restored.expire_due(T0 + 120)
    assert ended.result == ["b", "e"]
    assert restored.keys() == ["c"]


def test_a_restored_session_may_be_kept_alive_before_its_clock_starts() -> None:
    _, log = lived()
    restored = Engine.restore(log)
    assert restored.session_keepalive(2, now=T0 + 200).result == T0 + 220
    restored.expire_due(T0 + 210)  # starts no clock over: 2 has its own deadline now
    assert restored.sessions()[0].deadline == T0 + 220


def test_a_snapshot_keeps_the_next_id_when_no_session_is_live() -> None:
    e = Engine()
    for _ in range(3):
        e.session_revoke(e.session_grant(5, owner="u", now=T0).result, writer="u", now=T0)
    snapshot = list(e.snapshot())
    assert RecordKind.SNAPSHOT_SESSIONS in [kind for kind, _ in snapshot]
    assert Engine.restore(snapshot).session_grant(5, owner="u", now=T0).result == 4
    assert RecordKind.SNAPSHOT_SESSIONS not in [kind for kind, _ in Engine().snapshot()]


def test_rebase_never_lowers_the_next_session_id() -> None:
    e = Engine()
    e.session_grant(5, owner="u", now=T0)
    e.rebase(10, next_session=7)
    assert e.session_grant(5, owner="u", now=T0).result == 7
    e.rebase(11, next_session=2)
    assert e.next_session == 8


def test_a_snapshot_of_many_sessions_and_keys_comes_in_chunks() -> None:
    e = Engine()
    sessions = [e.session_grant(60, owner="u", now=T0).result for _ in range(1500)]
    for i in range(2500):
        e.set(f"k{i:05}", i, writer="u", now=T0, session=sessions[i % 1500])
    kinds = [kind for kind, _ in e.snapshot()]
    assert kinds.count(RecordKind.SNAPSHOT_SESSIONS) == 2
    assert kinds.count(RecordKind.SNAPSHOT_ATTACHED) == 3
    restored = Engine.restore(e.snapshot())
    assert state(restored) == state(e)


def test_many_keepalives_do_not_grow_the_deadline_heap_without_bound() -> None:
    e = Engine()
    session = e.session_grant(60, owner="u", now=T0).result
    for i in range(5000):
        e.session_keepalive(session, now=T0 + i)
    assert len(e._sessions._heap) <= 2 * 1 + 1024 + 1
    assert e.next_deadline() == T0 + 4999 + 60
