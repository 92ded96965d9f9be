"""Compares (the conditions of conditional writes and transactions) and transaction operations.

``set --if-absent``, ``set --if-rev``, ``cas`` and ``txn`` all reduce to :class:`Compare`, so there is
one implementation of "does this condition hold for this key".
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prontodb.protocol import ErrorCode, ProntoError

from ._entry import Entry
from ._values import is_integer, same_value


class Target(enum.StrEnum):
    """What a compare looks at."""

    VALUE = "value"
    MOD_REV = "mod_rev"
    CREATE_REV = "create_rev"
    VERSION = "version"
    EXISTS = "exists"


_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
OPERATORS = ("==", "!=", *_ORDERINGS)


def _bad(message: str) -> ProntoError:
    return ProntoError(ErrorCode.BAD_REQUEST, message)


def _orderable(a: Any, b: Any) -> bool:
    numbers = (is_integer(a) or isinstance(a, float)) and (is_integer(b) or isinstance(b, float))
    return numbers or (type(a) is type(b) and isinstance(a, str | bytes))


@dataclass(frozen=True, slots=True)
class Compare:
    """``key``'s ``target`` ``op`` ``value``, e.g. Compare("pools.cpu", Target.VALUE, ">=", 2).

    A missing key has revisions and version 0; its value equals nothing and orders against nothing.
    Values compare with their types (1 != 1.0); ordering works between numbers, or two strings, or
    two byte strings, and is false otherwise.
    """

    key: str
    target: Target
    op: str
    value: Any

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise _bad(f"Unknown compare operator {self.op!r}; use one of {', '.join(OPERATORS)}.")
        if self.target is Target.EXISTS:
            if self.op not in ("==", "!=") or not isinstance(self.value, bool):
                raise _bad("An 'exists' compare takes == or != and true or false.")
        elif self.target is not Target.VALUE and not is_integer(self.value):
            raise _bad(f"A {self.target.value!r} compare needs an integer.")

    def holds(self, entry: Entry | None) -> bool:
        """Whether the condition is true for the key's current entry (None if it does not exist)."""
        if self.target is Target.VALUE:
            if entry is None:
                return self.op == "!="
            actual = entry.value
            if self.op == "==":
                return same_value(actual, self.value)
            if self.op == "!=":
                return not same_value(actual, self.value)
            return _orderable(actual, self.value) and _ORDERINGS[self.op](actual, self.value)
        if self.target is Target.EXISTS:
            actual = entry is not None
        elif entry is None:
            actual = 0
        else:
            actual = getattr(entry, self.target.value)
        if self.op == "==":
            return bool(actual == self.value)
        if self.op == "!=":
            return bool(actual != self.value)
        return _ORDERINGS[self.op](actual, self.value)

    @classmethod
    def from_wire(cls, raw: object) -> Compare:
        """Parse ``{"key": K, "target": "value", "op": "==", "value": V}``.

        ``target`` defaults to "value" and ``op`` to "==".
        """
        doc = _as_map(raw, "compare")
        try:
            target = Target(str(doc.get("target", "value")))
        except ValueError:
            names = ", ".join(t.value for t in Target)
            raise _bad(
                f"Unknown compare target {doc.get('target')!r}; use one of {names}."
            ) from None
        if "value" not in doc:
            raise _bad("A compare needs a 'value' to compare against.")
        return cls(_key_of(doc), target, _str_of(doc, "op", "=="), doc["value"])


class OpKind(enum.StrEnum):
    """What a transaction operation does."""

    GET = "get"
    SET = "set"
    DELETE = "del"
    INCR = "incr"


@dataclass(frozen=True, slots=True)
class TxnOp:
    """One operation of a transaction: get, set (with ``value``, attached to ``session`` if
    given), del, or incr (by ``by``)."""

    kind: OpKind
    key: str
    value: Any = None
    by: int = 1
    session: int | None = None

    @classmethod
    def from_wire(cls, raw: object) -> TxnOp:
        """Parse ``{"op": "set", "key": K, "value": V}``, ``{"op": "incr", "key": K, "by": 2}``, ..."""
        doc = _as_map(raw, "operation")
        try:
            kind = OpKind(str(doc.get("op")))
        except ValueError:
            names = ", ".join(k.value for k in OpKind)
            raise _bad(
                f"Unknown transaction operation {doc.get('op')!r}; use one of {names}."
            ) from None
        if kind is OpKind.SET and "value" not in doc:
            raise _bad("A 'set' operation needs a 'value'.")
        by = doc.get("by", 1)
        if not is_integer(by):
            raise _bad("'by' must be an integer.")
        session = doc.get("session")
        if session is not None and (kind is not OpKind.SET or not is_integer(session)):
            raise _bad("'session' goes with a 'set' operation, as a session's id.")
        return cls(kind, _key_of(doc), doc.get("value"), by, session)


@dataclass(frozen=True, slots=True)
class TxnResult:
    """The outcome of a transaction.

    ``succeeded`` is whether every compare held; then ``results`` has one item per operation (get:
    the Entry or None, set: the new revision, del: whether a key was deleted, incr: the new value).
    Otherwise nothing was applied and ``failed`` lists the indexes of the compares that did not hold.
    ``revision`` is the database revision after the transaction.
    """

    succeeded: bool
    revision: int
    results: list[Any] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def _as_map(raw: object, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise _bad(f"Each {what} must be a map, not {type(raw).__name__}.")
    return raw


def _key_of(doc: Mapping[str, Any]) -> str:
    key = doc.get("key")
    if not isinstance(key, str):
        raise _bad("Each compare and operation needs a string 'key'.")
    return key


def _str_of(doc: Mapping[str, Any], name: str, default: str) -> str:
    value = doc.get(name, default)
    if not isinstance(value, str):
        raise _bad(f"{name!r} must be a string.")
    return value
