"""Per-user quotas in the engine: keys and bytes owned (by last writer), claims held, refused in
the same step as the write (transactions whole), kept across restarts, and never passed by a
sequence of writes from several users (a state machine against a plain model).

Every call takes ``now`` explicitly."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from prontodb.broker.engine import Engine, OpKind, Quota, Record, TxnOp
from prontodb.protocol import ErrorCode, ProntoError

T0 = 20_000.0


def refused(call: Any, limit: str) -> ProntoError:
    with pytest.raises(ProntoError) as info:
        call()
    assert info.value.code is ErrorCode.QUOTA_EXCEEDED
    assert info.value.details["limit"] == limit
    return info.value


def test_keys_and_bytes_are_counted_by_last_writer() -> None:
    e = Engine()
    log: list[Record] = []
    log += e.set_quota("ann", Quota(max_keys=2, max_bytes=100)).records
    for key in ("a", "b"):
        log += e.set(key, "x" * 10, writer="ann", now=T0).records
    err = refused(lambda: e.set("c", 1, writer="ann", now=T0), "max_keys")
    assert "'ann' is at its quota max_keys=2" in str(err)
    e.set("a", "y" * 20, writer="ann", now=T0)  # a rewrite: still two keys
    refused(lambda: e.set("a", "z" * 95, writer="ann", now=T0), "max_bytes")
    e.set("b", "mine now", writer="bob", now=T0)  # bob took b over: ann owns one key
    e.set("c", 1, writer="ann", now=T0)
    assert e.usage("ann") == {"keys": 2, "bytes": 21 + 1, "claims": 0}  # "y" * 20 and 1, packed
    e.delete("c", writer="ann", now=T0)
    assert e.usage("ann")["keys"] == 1
    assert e.usage("nobody") == {"keys": 0, "bytes": 0, "claims": 0}


def test_a_transaction_is_judged_whole() -> None:
    e = Engine()
    e.set_quota("ann", Quota(max_keys=2))
    ops = [TxnOp(OpKind.SET, k, 1) for k in ("a", "b", "c")]
    refused(lambda: e.txn([], ops, writer="ann", now=T0), "max_keys")
    assert e.keys() == []
    swap = [TxnOp(OpKind.DELETE, "a"), TxnOp(OpKind.SET, "b", 1), TxnOp(OpKind.SET, "c", 1)]
    e.set("a", 0, writer="ann", now=T0)
    e.txn([], swap, writer="ann", now=T0)  # one out, two in: two keys
    assert e.usage("ann")["keys"] == 2


def test_a_lower_quota_refuses_growth_but_not_the_rest() -> None:
    e = Engine()
    for key in ("a", "b", "c"):
        e.set(key, 1, writer="ann", now=T0)
    e.set_quota("ann", Quota(max_keys=1))
    e.set("a", 2, writer="ann", now=T0)  # adds nothing
    refused(lambda: e.set("d", 1, writer="ann", now=T0), "max_keys")
    e.delete("b", writer="ann", now=T0)
    e.set_quota("ann", None)
    assert e.quotas() == {}
    e.set("d", 1, writer="ann", now=T0)


def test_claims_held_are_limited() -> None:
    e = Engine()
    e.set_quota("w", Quota(max_claims=1))
    for key in ("q.a", "q.b"):
        e.set(key, 1, writer="o", now=T0)
    first = e.claim("q", holder="w", now=T0).result
    assert first is not None
    assert e.claims_left("w") == 0
    refused(lambda: e.claim("q", holder="w", now=T0), "max_claims")
    e.ack(first.key, first.token, writer="w", now=T0)
    assert e.claim("q", holder="w", now=T0).result is not None
    assert e.claims_left("other") is None


def test_quotas_and_use_survive_a_restart() -> None:
    e = Engine()
    log: list[Record] = []
    log += e.set_quota("ann", Quota(max_keys=2, max_claims=3)).records
    log += e.set("a", 1, writer="ann", now=T0).records
    log += e.set("b", 1, writer="ann", now=T0).records
    for restored in (Engine.restore(log), Engine.restore(e.snapshot())):
        assert restored.quotas() == {"ann": Quota(max_keys=2, max_claims=3)}
        assert restored.usage("ann")["keys"] == 2
        refused(lambda r=restored: r.set("c", 1, writer="ann", now=T0), "max_keys")


LIMITS = {"ann": Quota(max_keys=3, max_bytes=40), "bob": Quota(max_keys=2, max_bytes=25)}


class QuotaMachine(RuleBasedStateMachine):
    """Two users with quotas and one without write, rewrite and delete a handful of keys; the
    model owner map says who owns what; no user ever owns more than its quota allows."""

    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine()
        for user, quota in LIMITS.items():
            self.engine.set_quota(user, quota)
        self.owners: dict[str, tuple[str, int]] = {}  # key -> (writer, size)

    def _use(self, user: str) -> tuple[int, int]:
        mine = [size for owner, size in self.owners.values() if owner == user]
        return len(mine), sum(mine)

    @rule(
        user=st.sampled_from(["ann", "bob", "cy"]),
        key=st.sampled_from("abcde"),
        size=st.integers(0, 15),
    )
    def write(self, user: str, key: str, size: int) -> None:
        value = "x" * size
        try:
            entry = self.engine.set(key, value, writer=user, now=T0).result
        except ProntoError as err:
            assert err.code is ErrorCode.QUOTA_EXCEEDED
            return
        self.owners[key] = (user, entry.size)

    @rule(user=st.sampled_from(["ann", "bob", "cy"]), key=st.sampled_from("abcde"))
    def delete(self, user: str, key: str) -> None:
        self.engine.delete(key, writer=user, now=T0)
        self.owners.pop(key, None)

    @invariant()
    def never_over_quota(self) -> None:
        for user, quota in LIMITS.items():
            keys, size = self._use(user)
            assert self.engine.usage(user)["keys"] == keys
            assert self.engine.usage(user)["bytes"] == size
            assert keys <= (quota.max_keys or 0)
            assert size <= (quota.max_bytes or 0)


QuotaMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestQuotaMachine = QuotaMachine.TestCase
