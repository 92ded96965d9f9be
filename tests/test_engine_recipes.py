"""Locks, semaphores, elections and barriers in the engine (broker/engine/_recipes.py): joins in
line, holders by token, leaving by token only, proclaim, fences, mismatched limits, members that go
with their sessions, and a state machine against a plain model of every recipe.

Every call takes ``now`` explicitly: no test here waits for anything.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from prontodb.broker.engine import ChangeKind, Engine, recipes
from prontodb.protocol import ErrorCode, ProntoError

T0 = 1_000.0


def grant(engine: Engine, ttl: float = 10, now: float = T0) -> int:
    session: int = engine.session_grant(ttl, owner="alice", now=now).result
    return session


def join(engine: Engine, name: str, kind: str, limit: int, session: int, **kw: Any) -> Any:
    return recipes.join(
        engine,
        name,
        kind,
        limit,
        session,
        kw.pop("value", None),
        writer="w",
        now=kw.pop("now", T0),
        **kw,
    ).result


def refused(code: ErrorCode, call: Any, match: str | None = None) -> ProntoError:
    with pytest.raises(ProntoError, match=match) as info:
        call()
    assert info.value.code is code
    return info.value


def test_a_lock_is_held_by_the_first_member_and_passes_in_line() -> None:
    e = Engine()
    a, b, c = grant(e), grant(e), grant(e)
    first = join(e, "deploy", "lock", 1, a)
    second = join(e, "deploy", "lock", 1, b)
    third = join(e, "deploy", "lock", 1, c)
    assert (first.key, first.holding) == (f"deploy.{a}", True)
    assert not second.holding
    assert not third.holding
    assert first.token < second.token < third.token
    assert e.get(first.key).value == {"recipe": "lock", "limit": 1, "value": None}  # type: ignore[union-attr]
    left = recipes.leave(e, "deploy", first.token, writer="w", now=T0)
    assert left.result
    assert left.changes[0].kind is ChangeKind.DELETE
    held = recipes.state(e, "deploy")
    assert held is not None
    assert [m.token for m in held.holders] == [second.token]
    # A session that ends takes its place in line with it.
    e.session_revoke(b, writer="w", now=T0)
    held = recipes.state(e, "deploy")
    assert held is not None
    assert [m.token for m in held.holders] == [third.token]


def test_joining_again_is_the_same_membership_and_a_try_writes_nothing_when_held() -> None:
    e = Engine()
    a, b = grant(e), grant(e)
    first = join(e, "deploy", "lock", 1, a)
    assert join(e, "deploy", "lock", 1, a) == first
    revision = e.revision
    assert join(e, "deploy", "lock", 1, b, try_only=True) is None
    assert e.revision == revision
    assert recipes.state(e, "deploy") == recipes.Recipe("deploy", "lock", 1, [first])


def test_leave_is_by_token_only() -> None:
    e = Engine()
    a, b = grant(e), grant(e)
    join(e, "deploy", "lock", 1, a)
    mine = join(e, "deploy", "lock", 1, b)
    assert not recipes.leave(e, "deploy", mine.token + 100, writer="w", now=T0).result
    assert recipes.leave(e, "deploy", mine.token, writer="w", now=T0).result
    assert not recipes.leave(e, "deploy", mine.token, writer="w", now=T0).result


def test_a_semaphore_has_limit_holders_and_refuses_another_limit() -> None:
    e = Engine()
    sessions = [grant(e) for _ in range(5)]
    members = [join(e, "pool", "semaphore", 3, s) for s in sessions]
    assert [m.holding for m in members] == [True, True, True, False, False]
    err = refused(ErrorCode.COMPARE_FAILED, lambda: join(e, "pool", "semaphore", 4, grant(e)))
    assert "semaphore of 3" in str(err)
    assert err.details == {"recipe": "semaphore", "limit": 3}
    refused(ErrorCode.COMPARE_FAILED, lambda: join(e, "pool", "lock", 1, grant(e)))
    # Once every member has gone, the name is free for another limit.
    for s in sessions:
        e.session_revoke(s, writer="w", now=T0)
    assert join(e, "pool", "semaphore", 4, grant(e)).holding


def test_bad_recipes_and_limits_are_refused() -> None:
    e = Engine()
    s = grant(e)
    refused(ErrorCode.BAD_REQUEST, lambda: join(e, "x", "mutex", 1, s), "Unknown recipe")
    refused(ErrorCode.BAD_REQUEST, lambda: join(e, "x", "lock", 2, s), "one holder")
    refused(ErrorCode.BAD_REQUEST, lambda: join(e, "x", "semaphore", 0, s), "from 1")
    refused(ErrorCode.BAD_KEY, lambda: join(e, "no/such", "lock", 1, s))
    refused(ErrorCode.NOT_FOUND, lambda: join(e, "x", "lock", 1, 999))


def test_a_barrier_opens_for_everyone_once_its_count_is_there() -> None:
    e = Engine()
    sessions = [grant(e) for _ in range(3)]
    assert not join(e, "start", "barrier", 3, sessions[0]).holding
    assert not join(e, "start", "barrier", 3, sessions[1]).holding
    assert join(e, "start", "barrier", 3, sessions[2]).holding
    opened = recipes.state(e, "start")
    assert opened is not None
    assert all(m.holding for m in opened.members)
    # Nobody holds a barrier: it fences nothing.
    refused(
        ErrorCode.COMPARE_FAILED,
        lambda: recipes.check_fence(e, "start", opened.members[0].token),
        "barrier",
    )


def test_an_election_leader_proclaims_and_terms_grow() -> None:
    e = Engine()
    a, b = grant(e), grant(e)
    leader = join(e, "primary", "election", 1, a, value="host-a")
    join(e, "primary", "election", 1, b, value="host-b")
    proclaimed = recipes.proclaim(e, "primary", leader.token, "host-a:v2", writer="w", now=T0)
    assert proclaimed.result.value == "host-a:v2"
    assert proclaimed.result.token == leader.token
    state = recipes.state(e, "primary")
    assert state is not None
    assert state.holders[0].value == "host-a:v2"
    assert state.holders[0].token == leader.token  # a proclaim keeps the term
    waiting = state.members[1]
    refused(
        ErrorCode.COMPARE_FAILED,
        lambda: recipes.proclaim(e, "primary", waiting.token, "x", writer="w", now=T0),
        "waiting",
    )
    e.session_revoke(a, writer="w", now=T0)
    state = recipes.state(e, "primary")
    assert state is not None
    assert state.holders[0].token == waiting.token > leader.token
    assert state.holders[0].value == "host-b"


def test_fences_hold_for_the_holder_only() -> None:
    e = Engine()
    a, b = grant(e, ttl=5), grant(e, ttl=50)
    holder = join(e, "deploy", "lock", 1, a)
    waiter = join(e, "deploy", "lock", 1, b)
    recipes.check_fence(e, "deploy", holder.token)
    refused(
        ErrorCode.COMPARE_FAILED, lambda: recipes.check_fence(e, "deploy", waiter.token), "waiting"
    )
    e.expire_due(T0 + 6)  # the holder's session ran out
    refused(
        ErrorCode.COMPARE_FAILED,
        lambda: recipes.check_fence(e, "deploy", holder.token),
        "not there",
    )
    recipes.check_fence(e, "deploy", waiter.token)
    refused(ErrorCode.BAD_REQUEST, lambda: recipes.check_fence(e, "deploy", "7"))


def test_ordinary_keys_under_a_name_are_not_members() -> None:
    e = Engine()
    s = grant(e)
    e.set("deploy.config", {"recipe": "lock", "limit": 1}, writer="w", now=T0)  # no session
    e.set("deploy.99", {"recipe": "lock", "limit": 1}, writer="w", now=T0, session=s)  # not its key
    assert recipes.state(e, "deploy") is None
    assert join(e, "deploy", "lock", 1, s).holding


def test_listing_finds_every_recipe_under_a_prefix() -> None:
    e = Engine()
    s = grant(e)
    join(e, "jobs.deploy", "lock", 1, s)
    join(e, "jobs.pool", "semaphore", 2, s)
    join(e, "other", "barrier", 2, s)
    assert [r.name for r in recipes.listing(e)] == ["jobs.deploy", "jobs.pool", "other"]
    assert [r.name for r in recipes.listing(e, "jobs")] == ["jobs.deploy", "jobs.pool"]
    assert recipes.listing(e)[1].as_map()["members"][0]["session"] == s


def test_members_survive_replay_in_the_same_order() -> None:
    log: list[Any] = []
    first = Engine()
    for _ in range(3):
        log.extend(first.session_grant(10, owner="alice", now=T0).records)
    for s in (1, 2, 3):
        log.extend(recipes.join(first, "pool", "semaphore", 2, s, None, writer="w", now=T0).records)
    replayed = Engine.restore(log)
    assert recipes.state(replayed, "pool") == recipes.state(first, "pool")


# -- a state machine against a plain model ---------------------------------------------------

NAMES = st.sampled_from(["a", "b"])
KIND_LIMITS = st.sampled_from([("lock", 1), ("semaphore", 2), ("election", 1), ("barrier", 3)])


class RecipeMachine(RuleBasedStateMachine):
    """The model: per name, its kind and limit and the sessions in line, in join order."""

    def __init__(self) -> None:
        super().__init__()
        self.engine = Engine()
        self.now = T0
        self.live: list[int] = []
        self.lines: dict[str, list[tuple[int, int]]] = {}  # name -> [(session, token)]
        self.kinds: dict[str, tuple[str, int]] = {}

    def _drop(self, session: int) -> None:
        for name, line in list(self.lines.items()):
            self.lines[name] = [(s, t) for s, t in line if s != session]
            if not self.lines[name]:
                del self.lines[name], self.kinds[name]

    @rule(ttl=st.integers(1, 5))
    def grant(self, ttl: int) -> None:
        self.live.append(grant(self.engine, ttl, self.now))

    @precondition(lambda self: self.live)
    @rule(data=st.data(), name=NAMES, kind_limit=KIND_LIMITS, try_only=st.booleans())
    def join(
        self, data: st.DataObject, name: str, kind_limit: tuple[str, int], try_only: bool
    ) -> None:
        session = data.draw(st.sampled_from(self.live))
        kind, limit = kind_limit

        def call() -> Any:
            engine, now = self.engine, self.now
            return recipes.join(
                engine, name, kind, limit, session, None, writer="w", now=now, try_only=try_only
            ).result

        if name in self.kinds and self.kinds[name] != kind_limit:
            refused(ErrorCode.COMPARE_FAILED, call)
            return
        line = self.lines.get(name, [])
        already = [t for s, t in line if s == session]
        would_hold = len(line) + 1 >= limit if kind == "barrier" else len(line) < limit
        member = call()
        if already:
            assert member is not None
            assert member.token == already[0]
        elif try_only and not would_hold:
            assert member is None
        else:
            assert member is not None
            self.lines.setdefault(name, []).append((session, member.token))
            self.kinds[name] = kind_limit

    @precondition(lambda self: self.lines)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.lines)))
        session, token = data.draw(st.sampled_from(self.lines[name]))
        assert recipes.leave(self.engine, name, token, writer="w", now=self.now).result
        self.lines[name].remove((session, token))
        if not self.lines[name]:
            del self.lines[name], self.kinds[name]

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(self.live))
        self.engine.session_revoke(session, writer="w", now=self.now)
        self.live.remove(session)
        self._drop(session)

    @rule(seconds=st.integers(0, 3))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds
        self.engine.expire_due(self.now)
        alive = {s.id for s in self.engine.sessions()}
        for session in [s for s in self.live if s not in alive]:
            self.live.remove(session)
            self._drop(session)

    @precondition(lambda self: self.lines)
    @rule(data=st.data())
    def fence(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.lines)))
        _session, token = data.draw(st.sampled_from(self.lines[name]))
        kind, limit = self.kinds[name]
        position = [t for _s, t in self.lines[name]].index(token)
        if kind != "barrier" and position < limit:
            recipes.check_fence(self.engine, name, token)
        else:
            refused(ErrorCode.COMPARE_FAILED, lambda: recipes.check_fence(self.engine, name, token))

    @invariant()
    def agrees_with_model(self) -> None:
        for name in ("a", "b"):
            state = recipes.state(self.engine, name)
            line = self.lines.get(name)
            if line is None:
                assert state is None
                continue
            assert state is not None
            assert (state.kind, state.limit) == self.kinds[name]
            assert [(m.session, m.token) for m in state.members] == line
            opened = state.kind == "barrier" and len(line) >= state.limit
            holders = len(line) if opened else (0 if state.kind == "barrier" else state.limit)
            assert [m.holding for m in state.members] == [i < holders for i in range(len(line))]


RecipeMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestRecipeMachine = RecipeMachine.TestCase
