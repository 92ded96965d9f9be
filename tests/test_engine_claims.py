"""Claims in the engine: FIFO hand-out, leases, fencing, release, delays, dead letters, replay.

Every call takes ``now`` explicitly.
"""

from __future__ import annotations

from typing import Any

import pytest

from prontodb.broker.engine import ChangeKind, Claimed, Engine, OpKind, Record, RecordKind, TxnOp
from prontodb.protocol import ErrorCode, ProntoError

T0 = 5_000.0


def filled(*keys: str) -> Engine:
    e = Engine()
    for i, key in enumerate(keys):
        e.set(key, f"v{i}", writer="orchestrator", now=T0)
    return e


def take(e: Engine, prefix: str = "q", now: float = T0, **kwargs: Any) -> Claimed:
    claimed = e.claim(prefix, holder=kwargs.pop("holder", "w1"), now=now, lease=30, **kwargs).result
    assert claimed is not None
    return claimed


def refused(call: Any) -> ProntoError:
    with pytest.raises(ProntoError) as info:
        call()
    assert info.value.code == ErrorCode.COMPARE_FAILED
    return info.value


def test_claims_hand_out_direct_children_oldest_first() -> None:
    e = filled("q.b", "q.a", "q.a.sub", "queue.x", "q.c")
    order = [take(e).key for _ in range(3)]
    assert order == ["q.b", "q.a", "q.c"]  # by creation, not by name; q.a.sub is not a child
    assert e.claim("q", holder="w2", now=T0, lease=30).result is None
    assert e.get("q.b") is not None  # a claimed item stays readable
    assert e.queue_counts("q") == {
        "ready": 0,
        "claimed": 3,
        "delayed": 0,
        "waiting": 0,
        "redeliveries": 0,
        "dead": 0,
    }


def test_a_claim_is_a_logged_change_with_a_growing_token() -> None:
    e = filled("q.1", "q.2")
    applied = e.claim("q", holder="w1", now=T0, lease=10)
    first = applied.result
    assert first is not None
    assert (first.value, first.lease, first.deliveries) == ("v0", T0 + 10, 1)
    assert [k for k, _ in applied.records] == [RecordKind.CLAIM]
    assert [c.kind for c in applied.changes] == [ChangeKind.CLAIM]
    second = take(e)
    assert second.token > first.token
    claim, deliveries = e.claim_of("q.1")
    assert claim is not None
    assert (claim.holder, claim.token, deliveries) == ("w1", first.token, 1)


def test_ack_finishes_and_a_stale_token_is_refused() -> None:
    e = filled("q.1")
    c = take(e)
    refused(lambda: e.ack("q.1", c.token + 1, writer="w1", now=T0))
    applied = e.ack("q.1", c.token, writer="w1", now=T0)
    assert [k for k, _ in applied.records] == [RecordKind.ACK]
    assert e.get("q.1") is None
    refused(lambda: e.ack("q.1", c.token, writer="w1", now=T0))  # twice: the second is refused


def test_an_expired_lease_returns_the_item_and_fences_the_old_holder() -> None:
    e = filled("q.1", "q.2")
    old = take(e, holder="w1")
    e.claim("q", holder="w1", now=T0, lease=100)  # q.2, held longer
    assert e.next_timer() == T0 + 30
    assert e.claims_due(T0 + 29).result == []
    due = e.claims_due(T0 + 30)
    assert due.result == ["q.1"]
    assert [k for k, _ in due.records] == [RecordKind.RETURNED]
    assert [c.kind for c in due.changes] == [ChangeKind.RELEASE]
    new = take(e, holder="w2", now=T0 + 31)
    assert (new.key, new.deliveries) == ("q.1", 2)  # a redelivery
    refused(lambda: e.ack("q.1", old.token, writer="w1", now=T0 + 32))  # fencing
    e.ack("q.1", new.token, writer="w2", now=T0 + 33)


def test_release_returns_at_once_or_after_a_delay() -> None:
    e = filled("q.1", "q.2")
    c = take(e)
    e.release("q.1", c.token, writer="w1", now=T0)
    assert take(e).key == "q.1"  # back in its place: still the oldest
    held = e.claim_of("q.1")[0]
    assert held is not None
    e.release("q.1", held.token, writer="w1", now=T0, delay=10)
    assert take(e).key == "q.2"
    assert e.claim("q", holder="w2", now=T0 + 5, lease=30).result is None
    assert e.queue_counts("q")["delayed"] == 1
    assert e.claims_due(T0 + 10).result == ["q.1"]
    assert take(e, now=T0 + 10).key == "q.1"


def test_extend_renews_the_lease() -> None:
    e = filled("q.1")
    c = take(e)
    assert e.extend("q.1", c.token, 60, now=T0 + 20).result == T0 + 80
    assert e.claims_due(T0 + 30).result == []  # the old deadline is stale
    refused(lambda: e.extend("q.1", c.token + 7, 60, now=T0))
    assert e.claims_due(T0 + 80).result == ["q.1"]


def test_an_item_delivered_max_times_goes_to_the_dead_letters() -> None:
    e = filled("q.poison", "q.ok")
    for attempt in range(2):
        c = take(e, now=T0 + attempt, max_deliveries=2)
        assert c.key == "q.poison"
        e.release("q.poison", c.token, writer="w1", now=T0 + attempt)
    applied = e.claim("q", holder="w1", now=T0 + 5, lease=30, max_deliveries=2)
    assert applied.result is not None
    assert applied.result.key == "q.ok"
    assert e.get("q.poison") is None
    dead = e.get("dead.q.poison")
    assert dead is not None
    assert dead.value == "v0"
    assert e.queue_counts("q") == {
        "ready": 0,
        "claimed": 1,
        "delayed": 0,
        "waiting": 0,
        "redeliveries": 0,
        "dead": 1,
    }


def test_claims_bound_to_a_connection_return_when_it_goes() -> None:
    e = filled("q.1", "q.2", "q.3")
    take(e, bound=7)
    take(e, bound=8)
    take(e)  # a CLI claim: held by its lease only
    assert e.return_bound(T0, session=7).result == ["q.1"]
    assert e.return_bound(T0).result == ["q.2"]  # any connection's: what a reopen does
    assert [k for k, _ in e.claims("q")] == ["q.3"]


def test_deleting_or_expiring_a_claimed_item_ends_its_claim() -> None:
    e = filled("q.1")
    e.set("q.2", "x", writer="u", now=T0, ttl=5)
    c1 = take(e)
    take(e)
    e.delete("q.1", writer="u", now=T0)
    refused(lambda: e.ack("q.1", c1.token, writer="w1", now=T0))
    e.expire_due(T0 + 5)
    assert e.claims("q") == []
    assert e.claims_due(T0 + 100).result == []


def test_replay_and_snapshots_keep_claims_counts_and_delays() -> None:
    e = Engine()
    log: list[Record] = []

    def do(applied: Any) -> Any:
        log.extend(applied.records)
        return applied.result

    for key in ("q.1", "q.2", "q.3", "q.4"):
        do(e.set(key, key, writer="o", now=T0))
    a = do(e.claim("q", holder="w1", now=T0, lease=30, bound=3))
    b = do(e.claim("q", holder="w2", now=T0, lease=30))
    do(e.release(b.key, b.token, writer="w2", now=T0, delay=50))
    c = do(e.claim("q", holder="w3", now=T0, lease=30))
    do(e.extend(c.key, c.token, 90, now=T0))
    d = do(e.claim("q", holder="w4", now=T0, lease=30))
    do(e.ack(a.key, a.token, writer="w1", now=T0))
    do(e.claims_due(T0 + 40))  # d's lease runs out: back in the queue, delivered once

    def state(engine: Engine) -> Any:
        return (
            engine.revision,
            engine.claims(),
            [engine.claim_of(k)[1] for k in engine.keys("")],
            engine.queue_counts("q"),
            engine.next_timer(),
        )

    for restored in (Engine.restore(log), Engine.restore(e.snapshot())):
        assert state(restored) == state(e)
        again = restored.claim("q", holder="w5", now=T0 + 41, lease=5).result
        assert again == Claimed(d.key, d.key, c.token + 2, T0 + 46, 2)


def test_a_key_deleted_and_set_again_in_one_txn_is_a_new_item() -> None:
    e = filled("q.a", "q.b")
    take(e)  # q.a
    held = take(e)  # q.b
    e.txn([], [TxnOp(OpKind.DELETE, "q.b"), TxnOp(OpKind.SET, "q.b", 3)], writer="u", now=T0)
    assert e.claim_of("q.b") == (None, 0)  # the old claim went with the old item
    refused(lambda: e.ack("q.b", held.token, writer="w1", now=T0))
    again = take(e)
    assert (again.key, again.value, again.deliveries) == ("q.b", 3, 1)
    assert e.claim("q", holder="w2", now=T0, lease=30).result is None  # handed out once
    assert state_of(Engine.restore(e.snapshot())) == state_of(e)


def test_a_dead_letter_for_a_key_at_the_length_limit_does_not_fail_the_claim() -> None:
    long_key = "q." + "x" * 1020
    e = filled(long_key, "q.ok")
    first = take(e, max_deliveries=1)
    e.release(first.key, first.token, writer="w1", now=T0)
    assert take(e, max_deliveries=1).key == "q.ok"
    assert e.keys("dead") == [f"dead.{long_key}"]


def test_expire_with_a_past_deadline_expires_now() -> None:
    e = filled("k")
    assert e.expire("k", -5, writer="u", now=T0).result is True
    assert e.get("k") is None


def state_of(engine: Engine) -> Any:
    return engine.revision, engine.claims(), engine.queue_counts("q"), engine.next_timer()


def test_a_claim_that_no_longer_holds_says_what_became_of_it() -> None:
    engine = Engine()
    engine.set("q.a", "job", writer="o", now=0.0)
    first = engine.claim("q", holder="w1", now=0.0, lease=10).result
    assert first is not None
    engine.claims_due(20.0)  # its lease ran out: back in the queue
    with pytest.raises(ProntoError, match=r"'q\.a' is not claimed: the claim with token 1 is over"):
        engine.ack("q.a", first.token, writer="w1", now=20.0)
    second = engine.claim("q", holder="w2", now=20.0, lease=10).result
    assert second is not None
    with pytest.raises(ProntoError, match=r"another claim \(token 2\) holds it now"):
        engine.ack("q.a", first.token, writer="w1", now=20.0)
    engine.ack("q.a", second.token, writer="w2", now=20.0)
    with pytest.raises(ProntoError, match=r"There is no item 'q\.a'") as gone:
        engine.ack("q.a", second.token, writer="w2", now=20.0)
    assert gone.value.code is ErrorCode.COMPARE_FAILED
    with pytest.raises(ProntoError, match=r"There is no item 'q\.never'"):
        engine.release("q.never", 1, writer="w2", now=20.0)


def test_soonest_claims_lists_the_nearest_deadlines_first_within_a_limit() -> None:
    e = filled("q.a", "q.b", "q.c")
    a = e.claim("q", holder="w1", now=T0, lease=30).result
    b = e.claim("q", holder="w2", now=T0, lease=10).result
    e.claim("q", holder="w3", now=T0, lease=20)
    assert a is not None
    assert b is not None
    e.release(b.key, b.token, writer="w2", now=T0)
    again = e.claim("q", holder="w2", now=T0 + 1, lease=5).result
    assert again is not None
    listed = e.soonest_claims(2)
    assert [(key, claim.holder, claim.lease, n) for key, claim, n in listed] == [
        ("q.b", "w2", T0 + 6, 2),
        ("q.c", "w3", T0 + 20, 1),
    ]
    assert len(e.soonest_claims(100)) == 3
    assert [key for key, _, _ in e.soonest_claims(100, keep=lambda key: key != "q.b")] == [
        "q.c",
        "q.a",
    ]
