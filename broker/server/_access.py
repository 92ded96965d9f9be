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
import posixpath
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
    """One permission an operation needs: ``level`` on ``target`` in ``cursor`` (``why``, if
    set, explains a need larger than the operation's cursor)."""

    level: Level
    cursor: str | None
    target: str = ""
    why: str = ""


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
            why = f" ({need.why})" if need.why else ""
            raise ProntoError(
                ErrorCode.DENIED,
                f"{user} needs {level} on {where}, {what}{why}; an admin can give it with "
                f"`prontodb grant {user} {level}{flags}`.",
                {"needs": level, "cursor": need.cursor, "prefix": need.target},
            )


_READ_KEY = {"get", "ttl"}
_READ_PREFIX = {"keys", "scan", "count", "claims", "watch"}
_WRITE_KEY = {"set", "del", "incr", "decr", "expire", "persist", "ack", "release", "extend"}
_WRITE_PREFIX = {"claim", "create_cache", "drop_cache"}
_OPEN = {"ping", "status", "unwatch", "cancel", "cursor_list", "cursor_show", "whoami"}


def needs(op: str, args: Mapping[str, Any], user: str, backups: str = "") -> list[Need]:
    """The permissions request ``op`` with ``args`` needs. Malformed arguments are left to the
    operation itself to refuse (a bad key needs nothing: it fails anyway). ``backups`` is the
    broker's own backup directory (absolute): the one place a cursor's admin may name."""
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
    # A path reaches any directory the broker can: naming one is an admin's of everything, not
    # of one cursor (else a cursor admin could bind a cursor to another database's files, write
    # a backup anywhere, or restore any backup file into its cursor). Its own backups are the
    # exception: a cursor's admin may back it up to, and restore it from, the broker's backup
    # directory.
    if op in ("backup", "backup_restore"):
        only = args.get("cursor")
        path = args.get("output" if op == "backup" else "path")
        if isinstance(only, str) and within(path, backups):
            return [Need(Level.ADMIN, only)]
        why = f"a backup path outside {backups}" if isinstance(only, str) and backups else ""
        return [Need(Level.ADMIN, None, why=why)]
    return [Need(Level.ADMIN, None)]  # the rest (and ops not known yet) are an admin's


def within(path: Any, directory: str) -> bool:
    """Whether ``path`` (absolute, as text) names something inside ``directory``, judged on the
    normalised text (``..`` resolved; no I/O). The broker's directory is its own (mode 0700):
    only who can already read the data directory could put a link in it."""
    if not isinstance(path, str) or not directory or not posixpath.isabs(path):
        return False
    return posixpath.normpath(path).startswith(directory.rstrip("/") + "/")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _items(args: Mapping[str, Any], name: str) -> list[Any]:
    value = args.get(name)
    return value if isinstance(value, list) else []


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else None
