"""Queue items in the engine: priorities, delays and schedules, dependencies, a queue's config
(default lease, deliveries, backoff), the statistics, each kept across a restart (replay from the
log and from a snapshot), and a state machine against a plain model queue.

Every call takes ``now`` explicitly: no test here waits for anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from prontodb.broker.engine import Engine, ItemOptions, QueueConfig, Record
from prontodb.protocol import ErrorCode, ProntoError

T0 = 10_000.0


class Logged:
    """An engine whose records are kept, to restart it from its log or its snapshot."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.log: list[Record] = []

    def __call__(self, applied: Any) -> Any:
        self.log.extend(applied.records)
        return applied.result

    def put(self, key: str, now: float = T0, **options: Any) -> None:
        item = ItemOptions.make(now=now, max_key_len=1024, **options) if options else None
        self(self.engine.set(key, key, writer="w", now=now, item=item))

    def take(self, prefix: str = "q", now: float = T0, **kw: Any) -> str | None:
        claimed = self(self.engine.claim(prefix, holder="w", now=now, **kw))
        return None if claimed is None else str(claimed.key)

    def drain(self, prefix: str = "q", now: float = T0) -> list[str]:
        """Claim and ack everything claimable now, in order."""
        order = []
        while (key := self.take(prefix, now)) is not None:
            token = self.engine.claim_of(key)[0].token  # type: ignore[union-attr]
            self(self.engine.ack(key, token, writer="w", now=now))
            order.append(key)
        return order

    def restarts(self) -> Iterable[Engine]:
        """The engine as a restart would rebuild it: from its log, and from a snapshot."""
        yield Engine.restore(self.log)
        yield Engine.restore(self.engine.snapshot())


def drained(engine: Engine, now: float, prefix: str = "q") -> list[str]:
    logged = Logged()
    logged.engine = engine
    return logged.drain(prefix, now)


def test_the_most_urgent_goes_first_then_the_oldest() -> None:
    q = Logged()
    q.put("q.low", priority=200)
    q.put("q.plain")  # the default priority, 100
    q.put("q.urgent", priority=0)
    q.put("q.urgent2", priority=0)
    q.put("q.plain2")
    for engine in q.restarts():
        assert drained(engine, T0) == ["q.urgent", "q.urgent2", "q.plain", "q.plain2", "q.low"]
    assert q.drain() == ["q.urgent", "q.urgent2", "q.plain", "q.plain2", "q.low"]


def test_a_release_may_change_the_priority() -> None:
    q = Logged()
    q.put("q.a")
    q.put("q.b")
    key = q.take()
    assert key == "q.a"
    token = q.engine.claim_of("q.a")[0].token  # type: ignore[union-attr]
    q(q.engine.release("q.a", token, writer="w", now=T0, priority=300))
    assert q.engine.item_of("q.a")["priority"] == 300
    for engine in q.restarts():
        assert drained(engine, T0) == ["q.b", "q.a"]
    with pytest.raises(ProntoError) as bad:
        q.engine.release("q.b", 1, writer="w", now=T0, priority=-1)
    assert bad.value.code in (ErrorCode.BAD_REQUEST, ErrorCode.COMPARE_FAILED)


def test_delayed_and_scheduled_items_wait_for_their_time() -> None:
    q = Logged()
    q.put("q.later", delay=30)
    q.put("q.at", at=T0 + 10)
    q.put("q.past", at=T0 - 10)  # a time past: ready now
    q.put("q.now", delay=0)
    assert q.engine.item_of("q.later")["ready_at"] == T0 + 30
    assert q.engine.next_timer() == T0 + 10  # one timer: the earliest
    assert q.drain() == ["q.past", "q.now"]
    q(q.engine.claims_due(T0 + 10))
    for engine in q.restarts():
        engine.claims_due(T0 + 10)
        assert drained(engine, T0 + 10) == ["q.at"]
    assert q.drain(now=T0 + 10) == ["q.at"]
    assert q.engine.claims_due(T0 + 30).result == ["q.later"]
    assert q.drain(now=T0 + 30) == ["q.later"]
    with pytest.raises(ProntoError):
        ItemOptions.make(delay=5, at=T0, now=T0, max_key_len=1024)


def test_an_item_waits_until_its_dependencies_are_gone() -> None:
    q = Logged()
    q.put("stage1.a")
    q.put("stage1.b")
    q.put("q.merge", after=["stage1.a", "stage1.b", "stage1.never"])  # a missing key holds nothing
    assert q.engine.item_of("q.merge")["after"] == ["stage1.a", "stage1.b"]
    assert q.take() is None
    assert q.engine.queue_counts("q")["waiting"] == 1
    assert q.drain("stage1") == ["stage1.a", "stage1.b"]  # acked: gone
    assert q.take() == "q.merge"


def test_a_dependency_that_dies_holds_its_dependents_on_its_dead_letter() -> None:
    q = Logged()
    q.put("build.x")
    q.put("q.deploy", after=["build.x"])
    assert q.take("build", max_deliveries=1) == "build.x"
    token = q.engine.claim_of("build.x")[0].token  # type: ignore[union-attr]
    q(q.engine.release("build.x", token, writer="w", now=T0))
    assert q.take("build", max_deliveries=1) is None  # buried: moved to dead.build.x
    assert q.engine.item_of("q.deploy")["after"] == ["dead.build.x"]
    for engine in q.restarts():
        assert engine.item_of("q.deploy")["after"] == ["dead.build.x"]
    assert q.take() is None
    q(q.engine.delete("dead.build.x", writer="ops", now=T0))  # an operator gives up on it
    assert q.take() == "q.deploy"


def test_options_stay_with_the_key_until_a_write_with_others() -> None:
    q = Logged()
    q.put("q.a", priority=5)
    q(q.engine.set("q.a", "new value", writer="w", now=T0))
    assert q.engine.item_of("q.a")["priority"] == 5
    q.put("q.a", priority=7)
    assert q.engine.item_of("q.a") == {"priority": 7, "ready_at": None, "after": []}
    session = q.engine.session_grant(10, owner="w", now=T0).result
    with pytest.raises(ProntoError) as refused:
        q.engine.set("q.b", 1, writer="w", now=T0, session=session, item=ItemOptions(priority=1))
    assert refused.value.code is ErrorCode.BAD_REQUEST


def test_a_queue_config_sets_the_lease_the_deliveries_and_the_backoff() -> None:
    q = Logged()
    config = QueueConfig(lease=5.0, max_deliveries=3, backoff=(1.0, 4.0))
    q(q.engine.queue_config("q", config))
    assert q.engine.queue_configs() == {"q": config}
    q.put("q.job")
    now = T0
    delays = []
    for delivery in (1, 2, 3):
        claimed = q(q.engine.claim("q", holder="w", now=now))
        assert claimed is not None
        assert claimed.lease == now + 5.0  # the queue's lease
        assert claimed.deliveries == delivery
        now = claimed.lease
        q(q.engine.claims_due(now))  # the lease ran out: back after a backoff
        ready_at = q.engine.item_of("q.job")["ready_at"]
        delays.append(ready_at - now)
        full = min(4.0, 1.0 * 2 ** (delivery - 1))
        assert full / 2 <= ready_at - now <= full
        assert q.take(now=now) is None  # not before its time
        now = ready_at
        q(q.engine.claims_due(now))
    assert q.take(now=now) is None  # the fourth delivery would pass max_deliveries: buried
    assert q.engine.get("dead.q.job") is not None
    for engine in q.restarts():
        assert engine.queue_configs() == {"q": config}
        assert engine.get("dead.q.job") is not None
    q(q.engine.queue_config("q", None))
    assert q.engine.queue_configs() == {}
    assert Engine.restore(q.log).queue_configs() == {}


def test_a_plain_release_backs_off_and_an_explicit_delay_wins() -> None:
    q = Logged()
    q(q.engine.queue_config("q", QueueConfig(backoff=(10.0, 60.0))))
    q.put("q.a")
    q.put("q.b")
    for key in ("q.a", "q.b"):
        assert q.take() == key
    a, b = (q.engine.claim_of(k)[0].token for k in ("q.a", "q.b"))  # type: ignore[union-attr]
    q(q.engine.release("q.a", a, writer="w", now=T0))
    q(q.engine.release("q.b", b, writer="w", now=T0, delay=1))
    assert 5 <= q.engine.item_of("q.a")["ready_at"] - T0 <= 10
    assert q.engine.item_of("q.b")["ready_at"] == T0 + 1
    for engine in q.restarts():
        assert engine.item_of("q.a") == q.engine.item_of("q.a")


def test_queue_statistics() -> None:
    q = Logged()
    q.put("q.ready1", now=T0)
    q.put("q.ready2", now=T0 + 5)
    q.put("q.later", delay=60)
    q.put("q.blocked", after=["q.ready1"])
    q.take()
    counts = q.engine.queue_counts("q", now=T0 + 20)
    assert counts == {
        "ready": 1,
        "claimed": 1,
        "delayed": 1,
        "waiting": 1,
        "redeliveries": 0,
        "dead": 0,
        "oldest_ready_age": 15.0,
    }
    assert list(q.engine.queues(now=T0)) == ["q"]
    assert q.engine.queues("other") == {}


# -- a state machine against a model queue -----------------------------------------------------

KEYS = [f"q.k{i}" for i in range(6)]


class QueueMachine(RuleBasedStateMachine):
    """The model: each live item's priority, create order, time it may be claimed from, the
    items it waits for; which are claimed. A claim must give the most urgent, then oldest, of
    those that are due, unclaimed and wait for nothing present."""

    def __init__(self) -> None:
        super().__init__()
        self.q = Logged()
        self.now = T0
        self.items: dict[str, dict[str, Any]] = {}
        self.order = 0
        self.claimed: dict[str, int] = {}

    def _expected(self) -> str | None:
        ready = [
            (v["priority"], v["order"], k)
            for k, v in self.items.items()
            if k not in self.claimed
            and (v["ready_at"] is None or v["ready_at"] <= self.now)
            and not (v["after"] & set(self.items))
        ]
        return min(ready)[2] if ready else None

    @rule(
        key=st.sampled_from(KEYS),
        priority=st.integers(0, 3),
        delay=st.integers(0, 3),
        after=st.lists(st.sampled_from(KEYS), max_size=2),
    )
    def put(self, key: str, priority: int, delay: int, after: list[str]) -> None:
        if key in self.items:
            return  # a new item each time: rewrites are tested above
        self.q.put(key, now=self.now, priority=priority, delay=delay, after=after)
        present = {k for k in after if k in self.items and k != key}
        self.order += 1
        ready_at = self.now + delay if delay else None
        self.items[key] = {
            "priority": priority,
            "order": self.order,
            "ready_at": ready_at,
            "after": present,
        }

    @rule()
    def claim(self) -> None:
        expected = self._expected()
        got = self.q.take(now=self.now, lease=1000)
        assert got == expected
        if got is not None:
            self.claimed[got] = self.q.engine.claim_of(got)[0].token  # type: ignore[union-attr]

    @precondition(lambda self: self.claimed)
    @rule(data=st.data(), ack=st.booleans())
    def finish(self, data: st.DataObject, ack: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.claimed)))
        token = self.claimed.pop(key)
        if ack:
            self.q(self.q.engine.ack(key, token, writer="w", now=self.now))
            del self.items[key]
            for item in self.items.values():  # a dependency that went is done with for good
                item["after"].discard(key)
        else:
            self.q(self.q.engine.release(key, token, writer="w", now=self.now))

    @rule(seconds=st.integers(0, 2))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds
        self.q(self.q.engine.claims_due(self.now))

    @rule()
    def restart(self) -> None:
        tokens = dict(self.claimed)
        self.q.engine = Engine.restore(self.q.engine.snapshot())
        self.q.log = []
        self.q.engine.claims_due(self.now)
        for key, token in tokens.items():
            claim = self.q.engine.claim_of(key)[0]
            assert claim is not None
            assert claim.token == token

    @invariant()
    def counts_agree(self) -> None:
        counts = self.q.engine.queue_counts("q")
        assert counts["claimed"] == len(self.claimed)
        assert sum(counts[k] for k in ("ready", "claimed", "delayed", "waiting")) == len(self.items)


QueueMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestQueueMachine = QueueMachine.TestCase


def test_many_items_due_at_once_come_back_a_bounded_pass_at_a_time() -> None:
    q = Logged()
    for i in range(2500):
        q.put(f"q.k{i:04}", delay=10)
    passes = []
    while (due := q.engine.next_timer()) is not None and due <= T0 + 10:
        passes.append(len(q(q.engine.claims_due(T0 + 10))))
    assert passes == [1000, 1000, 500]  # the broker serves others between passes
    assert q.engine.queue_counts("q")["ready"] == 2500
