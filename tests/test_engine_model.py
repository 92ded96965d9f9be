"""The engine against a plain-dict model (hypothesis), and replay of its records and snapshots.

The model keeps TTL deadlines beside the keys: a set without a TTL clears one (no caches here), incr
keeps it, and keys leave only when the machine advances the clock and asks for expire_due.

It keeps sessions too: their TTLs and deadlines (None after a restore, until the next expire_due
starts them again), and which session each attached key belongs to (a write without one detaches
it, incr keeps it). The machine may also carry on with an engine restored from its records or a
snapshot.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from prontodb.broker.engine import Compare, Engine, OpKind, Record, Target, TxnOp
from prontodb.protocol import ErrorCode, ProntoError

SEGMENTS = st.sampled_from(["a", "b", "q", "task_1", "x-y", "n:1"])
KEYS = st.lists(SEGMENTS, min_size=1, max_size=3).map(".".join)
PREFIXES = st.one_of(st.just(""), KEYS)
SCALARS = st.one_of(
    st.text(max_size=8), st.binary(max_size=8), st.integers(-(2**63), 2**63 - 1), st.booleans()
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=3), SCALARS, max_size=3),
)
STEPS = st.integers(-1000, 1000)
SESSION_IDS = st.integers(1, 6)


def under(key: str, prefix: str) -> bool:
    return not prefix or key == prefix or key.startswith(prefix + ".")


class EngineMachine(RuleBasedStateMachine):
    """Every operation must agree with a dict of key -> (value, create_rev, mod_rev, version)."""

    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine()
        self.model: dict[str, tuple[Any, int, int, int]] = {}
        self.revision = 0
        self.records: list[Record] = []
        self.now = 0.0
        self.deadlines: dict[str, float] = {}
        self.sessions: dict[int, tuple[float, float | None]] = {}  # id -> (ttl, deadline)
        self.attached: dict[str, int] = {}  # key -> its session
        self.next_session = 1

    def _put(self, key: str, value: Any, *, keep_ttl: bool = False) -> None:
        if not keep_ttl:
            self.deadlines.pop(key, None)
            self.attached.pop(key, None)
        self.revision += 1
        old = self.model.get(key)
        create, version = (old[1], old[3] + 1) if old else (self.revision, 1)
        self.model[key] = (value, create, self.revision, version)

    def _do(self, applied: Any) -> Any:
        self.records.extend(applied.records)
        self.now += 1
        return applied.result

    @rule(key=KEYS, value=VALUES)
    def set(self, key: str, value: Any) -> None:
        entry = self._do(self.engine.set(key, value, writer="w", now=self.now))
        self._put(key, value)
        assert entry.mod_rev == self.revision

    @rule(key=KEYS, value=VALUES, ttl=st.integers(1, 6))
    def set_with_ttl(self, key: str, value: Any, ttl: int) -> None:
        deadline = self.now + ttl
        self._do(self.engine.set(key, value, writer="w", now=self.now, ttl=ttl))
        self._put(key, value)
        self.deadlines[key] = deadline

    @rule(seconds=st.integers(0, 4))
    def advance_and_expire(self, seconds: int) -> None:
        self.now += seconds
        now = self.now
        due = sorted((d, k) for k, d in self.deadlines.items() if d <= now)
        expired = self._do(self.engine.expire_due(now))
        expected = [k for _, k in due]
        if due:
            self.revision += 1
            for _, key in due:
                del self.model[key]
                del self.deadlines[key]
        for session, (ttl, deadline) in self.sessions.items():
            if deadline is None:  # restored: the clock starts again now, with a full TTL
                self.sessions[session] = (ttl, now + ttl)
        ended = sorted((d, i) for i, (_, d) in self.sessions.items() if d is not None and d <= now)
        for _, session in ended:
            expected += self._end(session)
        assert expired == expected

    def _end(self, session: int) -> list[str]:
        """End ``session`` in the model; its keys, which went at one revision."""
        del self.sessions[session]
        keys = sorted(k for k, s in self.attached.items() if s == session)
        if keys:
            self.revision += 1
        for key in keys:
            del self.model[key]
            del self.attached[key]
        return keys

    def _live(self, session: int) -> bool:
        deadline = self.sessions.get(session, (0.0, 0.0))[1]
        return deadline is None or deadline > self.now

    @rule(ttl=st.integers(1, 6))
    def session_grant(self, ttl: int) -> None:
        deadline = self.now + ttl
        session = self._do(self.engine.session_grant(ttl, owner="o", now=self.now))
        assert session == self.next_session
        self.next_session += 1
        self.sessions[session] = (ttl, deadline)

    @rule(session=SESSION_IDS)
    def session_keepalive(self, session: int) -> None:
        now = self.now
        try:
            deadline = self._do(self.engine.session_keepalive(session, now=now))
        except ProntoError as exc:
            assert exc.code is ErrorCode.NOT_FOUND
            assert not self._live(session)
        else:
            ttl = self.sessions[session][0]
            assert deadline == now + ttl
            self.sessions[session] = (ttl, deadline)

    @rule(session=SESSION_IDS)
    def session_revoke(self, session: int) -> None:
        try:
            keys = self._do(self.engine.session_revoke(session, writer="w", now=self.now))
        except ProntoError as exc:
            assert exc.code is ErrorCode.NOT_FOUND
            assert session not in self.sessions
        else:
            assert keys == self._end(session)

    @rule(key=KEYS, value=VALUES, session=SESSION_IDS)
    def set_in_session(self, key: str, value: Any, session: int) -> None:
        try:
            self._do(self.engine.set(key, value, writer="w", now=self.now, session=session))
        except ProntoError as exc:
            assert exc.code is ErrorCode.NOT_FOUND
            assert not self._live(session)
        else:
            self._put(key, value)
            self.attached[key] = session

    @rule(from_snapshot=st.booleans())
    def carry_on_restored(self, from_snapshot: bool) -> None:
        """Go on with an engine rebuilt as an open would: every session waits for its clock."""
        source = self.engine.snapshot() if from_snapshot else self.records
        self.engine = Engine.restore(source)
        self.sessions = {i: (ttl, None) for i, (ttl, _) in self.sessions.items()}

    @rule(key=KEYS, value=VALUES)
    def set_if_absent(self, key: str, value: Any) -> None:
        try:
            self._do(self.engine.set(key, value, writer="w", now=self.now, if_absent=True))
        except ProntoError as exc:
            assert exc.code is ErrorCode.COMPARE_FAILED
            assert key in self.model
        else:
            assert key not in self.model
            self._put(key, value)

    @rule(key=KEYS, value=VALUES, stale=st.booleans())
    def set_if_rev(self, key: str, value: Any, stale: bool) -> None:
        rev = self.model[key][2] if key in self.model else 0
        if stale:
            rev += 1
        try:
            self._do(self.engine.set(key, value, writer="w", now=self.now, if_rev=rev))
        except ProntoError as exc:
            assert exc.code is ErrorCode.COMPARE_FAILED
            assert stale
        else:
            assert not stale
            self._put(key, value)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        existed = self._do(self.engine.delete(key, writer="w", now=self.now))
        assert existed == (key in self.model)
        if existed:
            del self.model[key]
            self.deadlines.pop(key, None)
            self.attached.pop(key, None)
            self.revision += 1

    @rule(key=KEYS, by=STEPS)
    def incr(self, key: str, by: int) -> None:
        old = self.model.get(key)
        try:
            total = self._do(self.engine.incr(key, by, writer="w", now=self.now))
        except ProntoError as exc:
            assert old is not None
            assert exc.code in (ErrorCode.WRONG_TYPE, ErrorCode.OUT_OF_RANGE)
        else:
            start = 0 if old is None else old[0]
            assert type(start) is int
            assert total == start + by
            self._put(key, total, keep_ttl=True)

    @rule(
        key=KEYS,
        expect=VALUES,
        writes=st.lists(st.tuples(KEYS, st.one_of(st.none(), VALUES)), min_size=1, max_size=4),
    )
    def txn(self, key: str, expect: Any, writes: list[tuple[str, Any]]) -> None:
        ops = [TxnOp(OpKind.DELETE, k) if v is None else TxnOp(OpKind.SET, k, v) for k, v in writes]
        use_current = key in self.model and len(writes) % 2 == 0
        target = self.model[key][0] if use_current else expect
        result = self._do(
            self.engine.txn(
                [Compare(key, Target.VALUE, "==", target)], ops, writer="w", now=self.now
            )
        )
        holds = (
            key in self.model
            and self.model[key][0] == target
            and type(self.model[key][0]) is type(target)
        )
        assert result.succeeded == holds
        if not holds:
            return
        before = dict(self.model)
        staged = dict(writes)  # the final state the transaction leaves for each key
        changed = any(v is not None or k in before for k, v in staged.items())
        if not changed:
            return
        self.revision += 1
        for k, v in writes:
            current = self.model.get(k)
            self.deadlines.pop(k, None)
            self.attached.pop(k, None)
            if v is None:
                self.model.pop(k, None)
            else:
                create, version = (current[1], current[3] + 1) if current else (self.revision, 1)
                self.model[k] = (v, create, self.revision, version)

    @rule(prefix=PREFIXES)
    def listing(self, prefix: str) -> None:
        expected = sorted(k for k in self.model if under(k, prefix))
        assert self.engine.keys(prefix) == expected
        assert self.engine.count(prefix) == len(expected)

    @precondition(lambda self: len(self.records) > 0)
    @rule()
    def replay_matches(self) -> None:
        assert dump(Engine.restore(self.records)) == dump(self.engine)

    @rule()
    def snapshot_matches(self) -> None:
        restored = Engine.restore(self.engine.snapshot())
        assert dump(restored) == dump(self.engine)
        assert restored.live_bytes == self.engine.live_bytes

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.engine.revision == self.revision
        state = {k: (e.value, e.create_rev, e.mod_rev, e.version) for k, e in self.engine.scan()}
        assert state == self.model
        deadlines = {k: e.expires for k, e in self.engine.scan() if e.expires is not None}
        assert deadlines == self.deadlines
        attached = {k: e.session for k, e in self.engine.scan() if e.session is not None}
        assert attached == self.attached
        counts = {i: sum(s == i for s in self.attached.values()) for i in self.sessions}
        assert [(i.id, i.ttl, i.deadline, i.keys) for i in self.engine.sessions()] == [
            (i, ttl, deadline, counts[i]) for i, (ttl, deadline) in sorted(self.sessions.items())
        ]
        assert self.engine.next_session == self.next_session
        times: list[float] = list(self.deadlines.values())
        for _, deadline in self.sessions.values():
            times.append(-math.inf if deadline is None else deadline)
        assert self.engine.next_deadline() == min(times, default=None)


def dump(engine: Engine) -> tuple[Any, ...]:
    return (
        engine.revision,
        [
            (k, *e[1:], e.value)  # every field, the session included (the value compared last)
            for k, e in engine.scan()
        ],
        [(i.id, i.owner, i.ttl, i.keys) for i in engine.sessions()],
        engine.next_session,
    )


TestEngineMachine = EngineMachine.TestCase
