"""Who may do what: tokens, grants, and the permission each operation needs.

A grant gives a user a level (read < write < admin) on one cursor or every cursor, at and below
one key prefix or on every key. An operation needs a level on the keys or the prefix it touches
(docs/PROTOCOL.md, "Users and permissions"); the broker checks it only on connections that had
to authenticate. Pure functions: no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prontodb.protocol import ErrorCode, ProntoError

DEFAULT_CURSOR = "default"


class Level(enum.IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3


def parse_level(value: Any) -> Level:
    try:
        return Level[str(value).upper()]
    except KeyError:
        raise ProntoError(
            ErrorCode.BAD_REQUEST, f"{value!r} is not a permission; use read, write or admin."
        ) from None


@dataclass(frozen=True, slots=True)
class Grant:
    """``level`` for ``user`` on ``cursor`` (None: every cursor) at and below ``prefix`` ("":
    every key)."""

    user: str
    level: Level
    cursor: str | None = None
    prefix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "level": self.level.name.lower(),
            "cursor": self.cursor,
            "prefix": self.prefix,
        }

    def covers(self, level: Level, cursor: str | None, target: str) -> bool:
        """Whether this grant allows ``level`` on ``target`` (a key, or a prefix and all below
        it) in ``cursor`` (None: the operation is not about one cursor: it needs every one)."""
        if self.level < level:
            return False
        if self.cursor is not None and self.cursor != cursor:
            return False
        return not self.prefix or target == self.prefix or target.startswith(self.prefix + ".")


@dataclass(frozen=True, slots=True)
class Need:
    """One permission an operation needs: ``level`` on ``target`` in ``cursor``."""

    level: Level
    cursor: str | None
    target: str = ""


def new_token() -> str:
    """A fresh secret: 256 random bits, URL-safe text."""
    return secrets.token_urlsafe(32)


def token_hash(token: str, salt: str) -> str:
    """What the catalog keeps of a token. Tokens are long random secrets, not passwords, so one
    salted SHA-256 is enough (nothing to brute-force)."""
    return hashlib.sha256(f"{salt}:{token}".encode()).hexdigest()


def token_matches(token: str, salt: str, expected: str) -> bool:
    return hmac.compare_digest(token_hash(token, salt), expected)


def check(grants: Iterable[Grant], user: str, needs: Iterable[Need]) -> None:
    """Raise ``denied`` naming the first permission ``user`` lacks."""
    mine = [g for g in grants if g.user == user]
    for need in needs:
        if not any(g.covers(need.level, need.cursor, need.target) for g in mine):
            level = need.level.name.lower()
            where = "every cursor" if need.cursor is None else f"cursor {need.cursor}"
            what = f"prefix {need.target}" if need.target else "every key"
            flags = "" if need.cursor is None else f" --cursor {need.cursor}"
            flags += f" --prefix {need.target}" if need.target else ""
            raise ProntoError(
                ErrorCode.DENIED,
                f"{user} needs {level} on {where}, {what}; an admin can give it with "
                f"`prontodb grant {user} {level}{flags}`.",
                {"needs": level, "cursor": need.cursor, "prefix": need.target},
            )


_READ_KEY = {"get", "ttl"}
_READ_PREFIX = {"keys", "scan", "count", "claims", "watch"}
_WRITE_KEY = {"set", "del", "incr", "decr", "expire", "persist", "ack", "release", "extend"}
_WRITE_PREFIX = {"claim", "create_cache", "drop_cache"}
_OPEN = {"ping", "status", "unwatch", "cancel", "cursor_list", "cursor_show", "whoami"}


def needs(op: str, args: Mapping[str, Any], user: str) -> list[Need]:
    """The permissions request ``op`` with ``args`` needs. Malformed arguments are left to the
    operation itself to refuse (a bad key needs nothing: it fails anyway)."""
    cursor = args.get("cursor", DEFAULT_CURSOR)
    cursor = cursor if isinstance(cursor, str) else DEFAULT_CURSOR
    if op in _OPEN:
        return []
    if op in _READ_KEY or op in _WRITE_KEY:
        level = Level.READ if op in _READ_KEY else Level.WRITE
        return [Need(level, cursor, _text(args.get("key")))]
    if op in _READ_PREFIX or op in _WRITE_PREFIX:
        level = Level.READ if op in _READ_PREFIX else Level.WRITE
        return [Need(level, cursor, _text(args.get("prefix")))]
    if op == "caches":
        return [Need(Level.READ, cursor)]
    if op == "txn":
        found = [
            Need(Level.READ, cursor, _text(_field(c, "key"))) for c in _items(args, "compares")
        ]
        for item in _items(args, "ops"):
            level = Level.READ if _field(item, "op") == "get" else Level.WRITE
            found.append(Need(level, cursor, _text(_field(item, "key"))))
        return found
    if op == "grants" and args.get("user") == user:
        return []  # one's own grants
    # Binding a cursor to a path reaches any directory the broker can: an admin's of everything,
    # not of the cursor alone (else a cursor admin could bind it to another database's files).
    if op in ("backup", "backup_restore"):
        only = args.get("cursor")
        return [Need(Level.ADMIN, only if isinstance(only, str) else None)]
    return [Need(Level.ADMIN, None)]  # the rest (and ops not known yet) are an admin's


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _items(args: Mapping[str, Any], name: str) -> list[Any]:
    value = args.get(name)
    return value if isinstance(value, list) else []


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else None
