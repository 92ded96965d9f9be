"""Locks, semaphores, elections and barriers, built from session keys (docs/RECIPES.md).

A recipe named NAME is the set of its members: the keys ``NAME.<session id>``, each attached to the
session of the party that joined (so a party that dies drops out when its session ends) and holding
``{"recipe": KIND, "limit": N, "value": V}``. Members are ordered by their create revision, which is
also each member's token: the first ``limit`` members hold the recipe (a lock and an election have
limit 1; a barrier opens once ``limit`` members are there, for all of them). Because members are
ordinary keys, every change to a recipe is a logged change that watchers see, replays and snapshots
need nothing new, and the order survives a restart.

Everything here is the engine's own write and read operations composed, so it is as atomic as they
are: the broker runs each call with no await inside.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from prontodb.protocol import ErrorCode, ProntoError

from ._engine import Applied, Engine
from ._entry import Entry
from ._keys import SEPARATOR, parent_of, validate_key
from ._values import is_integer

LOCK, SEMAPHORE, ELECTION, BARRIER = "lock", "semaphore", "election", "barrier"
KINDS = (LOCK, SEMAPHORE, ELECTION, BARRIER)
MAX_LIMIT = 10_000  # a semaphore's holders or a barrier's parties (a session's keys, at most)


class Member(NamedTuple):
    """One party of a recipe: its key, its token (the key's create revision), its session, the
    user who joined, its value (an election's candidate value) and whether it holds now."""

    key: str
    token: int
    session: int
    writer: str
    value: Any
    holding: bool


class Recipe(NamedTuple):
    """A recipe's state: its name, kind, limit and members in token order (holders first)."""

    name: str
    kind: str
    limit: int
    members: list[Member]

    @property
    def holders(self) -> list[Member]:
        return [m for m in self.members if m.holding]

    @property
    def waiting(self) -> list[Member]:
        return [m for m in self.members if not m.holding]

    def member(self, token: int) -> Member | None:
        """The member with ``token``, if it is still there."""
        return next((m for m in self.members if m.token == token), None)

    def as_map(self) -> dict[str, Any]:
        """The recipe as the wire carries it (``holders`` and ``locks`` answers)."""
        return {
            "name": self.name,
            "recipe": self.kind,
            "limit": self.limit,
            "members": [m._asdict() for m in self.members],
        }


def member_key(name: str, session: int) -> str:
    """The key of ``session``'s membership in recipe ``name``."""
    return f"{name}{SEPARATOR}{session}"


def _descriptor(entry: Entry) -> tuple[str, int] | None:
    """(kind, limit) if ``entry`` is a recipe member's, else None (an ordinary key)."""
    value = entry.value
    if entry.session is None or not isinstance(value, dict):
        return None
    kind, limit = value.get("recipe"), value.get("limit")
    if not isinstance(kind, str) or kind not in KINDS or not isinstance(limit, int):
        return None
    return kind, limit


def state(engine: Engine, name: str) -> Recipe | None:
    """Recipe ``name`` as it stands, or None if it has no member."""
    found: list[tuple[Entry, str, int]] = []
    kind, limit = "", 0
    for key, entry in engine.children(name):
        described = _descriptor(entry)
        if described is not None and key == member_key(name, entry.session or 0):
            found.append((entry, key, entry.session or 0))
            kind, limit = described  # joins refuse a mismatch, so the members agree
    if not found:
        return None
    found.sort(key=lambda member: member[0].create_rev)
    # A barrier is open for all its members once ``limit`` are there, and for none before.
    holders = (len(found) if len(found) >= limit else 0) if kind == BARRIER else limit
    members = [
        Member(key, e.create_rev, session, e.writer, e.value.get("value"), i < holders)
        for i, (e, key, session) in enumerate(found)
    ]
    return Recipe(name, kind, limit, members)


def listing(engine: Engine, prefix: str = "") -> list[Recipe]:
    """Every recipe with a member at or below ``prefix``, by name."""
    names = {parent_of(key) for key in engine.attached_keys() if _under(key, prefix)}
    found = (state(engine, name) for name in sorted(names) if name)
    return [recipe for recipe in found if recipe is not None]


def _under(key: str, prefix: str) -> bool:
    return not prefix or key == prefix or key.startswith(prefix + SEPARATOR)


def join(
    engine: Engine,
    name: str,
    kind: str,
    limit: int,
    session: int,
    value: Any,
    *,
    writer: str,
    now: float,
    try_only: bool = False,
) -> Applied[Member | None]:
    """``session`` joins recipe ``name`` (a new member, last in line; joining again is its
    membership as it is). With ``try_only``, a join that would not hold at once writes nothing
    and the result is None. A ``limit`` that differs from the members' is refused."""
    name = validate_key(name, engine.limits.max_key_len - 21)  # room for ".<session id>"
    if kind not in KINDS:
        raise _bad(f"Unknown recipe {kind!r}; use one of {', '.join(KINDS)}.")
    if not is_integer(limit) or not 1 <= limit <= MAX_LIMIT:
        raise _bad(f"A {kind}'s limit must be a whole number from 1 to {MAX_LIMIT}.")
    if kind in (LOCK, ELECTION) and limit != 1:
        raise _bad(f"A {kind} has one holder: its limit is 1.")
    current = state(engine, name)
    if current is not None and (current.kind, current.limit) != (kind, limit):
        raise ProntoError(
            ErrorCode.COMPARE_FAILED,
            f"{name!r} is a {_described(current.kind, current.limit)} while its members are "
            f"there, not a {_described(kind, limit)}: use the same name and limit as they do, "
            "or another name.",
            {"recipe": current.kind, "limit": current.limit},
        )
    key = member_key(name, session)
    mine = None if current is None else next((m for m in current.members if m.key == key), None)
    if mine is not None:
        return Applied(mine, [], [])
    if try_only and not _would_hold(current, kind, limit):
        return Applied(None, [], [])
    described = {"recipe": kind, "limit": limit, "value": value}
    applied = engine.set(key, described, writer=writer, now=now, if_absent=True, session=session)
    # The newest member is last in line: it holds exactly when a join would hold, so the line
    # need not be read again.
    entry = applied.result
    holding = _would_hold(current, kind, limit)
    member = Member(key, entry.create_rev, session, entry.writer, value, holding)
    return Applied(member, applied.records, applied.changes)


def _would_hold(current: Recipe | None, kind: str, limit: int) -> bool:
    """Whether a new member would hold at once."""
    members = 0 if current is None else len(current.members)
    return members + 1 >= limit if kind == BARRIER else members < limit


def leave(engine: Engine, name: str, token: int, *, writer: str, now: float) -> Applied[bool]:
    """Remove the member of recipe ``name`` with ``token`` (the next in line may now hold); the
    result is whether it was there. Leaving is by token only: never someone else's place."""
    current = state(engine, validate_key(name, engine.limits.max_key_len))
    member = None if current is None else current.member(token)
    if member is None:
        return Applied(False, [], [])
    return engine.delete(member.key, writer=writer, now=now)


def proclaim(
    engine: Engine, name: str, token: int, value: Any, *, writer: str, now: float
) -> Applied[Member]:
    """The holder of ``name`` with ``token`` changes its value (an election's leader announces
    a new one); its token stays. compare_failed unless that member holds."""
    member, current = _holding(engine, name, token)
    described = {"recipe": current.kind, "limit": current.limit, "value": value}
    applied = engine.set(member.key, described, writer=writer, now=now, session=member.session)
    return Applied(member._replace(value=value, writer=writer), applied.records, applied.changes)


def check_fence(engine: Engine, name: Any, token: Any) -> None:
    """Raise compare_failed unless recipe ``name`` is held with ``token`` (a fenced write)."""
    if not isinstance(name, str) or not is_integer(token):
        raise _bad("A fence is a recipe's name and a holder's token (an integer).")
    _holding(engine, name, token)


def check_fences(engine: Engine, fences: Iterable[tuple[Any, Any]]) -> None:
    """:func:`check_fence` for each of ``fences``."""
    for name, token in fences:
        check_fence(engine, name, token)


def _holding(engine: Engine, name: str, token: int) -> tuple[Member, Recipe]:
    current = state(engine, validate_key(name, engine.limits.max_key_len))
    member = None if current is None else current.member(token)
    if current is None or member is None or not member.holding or current.kind == BARRIER:
        if member is not None and current is not None and current.kind == BARRIER:
            why = "it is a barrier, which nobody holds"
        elif member is not None:
            why = f"token {token} is still waiting in line"
        else:
            why = f"token {token} is not there (released, or its session ended)"
        raise ProntoError(
            ErrorCode.COMPARE_FAILED,
            f"{name!r} is not held with token {token}: {why}; the holder's work must stop.",
            {"name": name, "token": token},
        )
    return member, current


def _described(kind: str, limit: int) -> str:
    return f"{kind} of {limit}" if kind in (SEMAPHORE, BARRIER) else kind


def _bad(message: str) -> ProntoError:
    return ProntoError(ErrorCode.BAD_REQUEST, message)
