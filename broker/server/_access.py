"""Who may do what: tokens, grants, and the permission each operation needs.

A grant gives a user a level (read < write < admin) on one cursor or every cursor, at and below
one key prefix or on every key. An operation needs a level on the keys or the prefix it touches
(docs/PROTOCOL.md, "Users and permissions"): its rule, one of those below, is named where the
operation is declared. The broker checks it only on connections that had to authenticate.
Pure functions: no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import posixpath
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prontodb.protocol import ErrorCode, Hello, ProntoError

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

    def meets(self, need: Need) -> bool:
        """Whether this grant gives ``need``."""
        if need.somewhere:
            return self.level >= need.level and self.cursor in (None, need.cursor)
        return self.covers(need.level, need.cursor, need.target)


@dataclass(frozen=True, slots=True)
class Need:
    """One permission an operation needs: ``level`` on ``target`` in ``cursor`` (``why``, if
    set, explains a need larger than the operation's cursor)."""

    level: Level
    cursor: str | None
    target: str = ""
    why: str = ""
    somewhere: bool = False  # ``level`` on some key of ``cursor`` is enough (any prefix)


def new_token() -> str:
    """A fresh secret: 256 random bits, URL-safe text."""
    return secrets.token_urlsafe(32)


def token_hash(token: str, salt: str) -> str:
    """What the catalog keeps of a token. Tokens are long random secrets, not passwords, so one
    salted SHA-256 is enough (nothing to brute-force)."""
    return hashlib.sha256(f"{salt}:{token}".encode()).hexdigest()


def token_matches(token: str, salt: str, expected: str) -> bool:
    return hmac.compare_digest(token_hash(token, salt), expected)


class Known(Protocol):
    """What the catalog keeps of a user (its ``User``), as far as a login needs it."""

    @property
    def salt(self) -> str: ...
    @property
    def hash(self) -> str: ...


def token_owner(users: Mapping[str, Known], token: str | None) -> str | None:
    """The user ``token`` belongs to, if any. Salted hashes cannot be looked up, so this tries
    each user: one SHA-256 per user, paid only by a login that does not name its user."""
    if token is None:
        return None
    return next((name for name, u in users.items() if token_matches(token, u.salt, u.hash)), None)


def who_is(users: Mapping[str, Known], hello: Hello, *, must_prove: bool) -> tuple[str, str | None]:
    """The user a connection greeted with ``hello`` acts for, and None; or, when it ``must_prove``
    who it is and cannot, the sentence that refuses it.

    A user the client only guessed (``user_default``: its login name) gives way to the owner of
    its token, so that ``PRONTODB_TOKEN`` alone is enough.
    """
    claimed = users.get(hello.user)
    token = hello.token
    if (
        token is not None
        and claimed is not None
        and token_matches(token, claimed.salt, claimed.hash)
    ):
        return hello.user, None
    if not (hello.user_default or must_prove):
        return hello.user, None  # nobody asks whose the token is: spare a hash per user
    owner = token_owner(users, hello.token)
    if owner is not None and hello.user_default:
        return owner, None
    if not must_prove:
        return hello.user, None
    if owner is not None:
        return hello.user, (
            f"This token belongs to {owner!r}, not {hello.user!r}: connect as {owner} "
            f"(--user {owner}, or PRONTODB_USER={owner}), or use {hello.user}'s own token."
        )
    if hello.token is None:
        return hello.user, (
            f"This broker needs a token for {hello.user!r} here: set PRONTODB_TOKEN (an admin "
            "makes one with `prontodb user add` or `user token`)."
        )
    return hello.user, (
        f"This broker knows no user with that token (tried as {hello.user!r}): check "
        "PRONTODB_TOKEN (an admin makes a new one with `prontodb user token NAME`)."
    )


def check(grants: Iterable[Grant], user: str, needs: Iterable[Need]) -> None:
    """Raise ``denied`` naming the first permission ``user`` lacks."""
    mine = [g for g in grants if g.user == user]
    for need in needs:
        if not any(g.meets(need) for g in mine):
            level = need.level.name.lower()
            where = "every cursor" if need.cursor is None else f"cursor {need.cursor}"
            what = f"prefix {need.target}" if need.target else "every key"
            what = "some key" if need.somewhere else what
            flags = "" if need.cursor is None else f" --cursor {need.cursor}"
            flags += f" --prefix {need.target}" if need.target else ""
            why = f" ({need.why})" if need.why else ""
            raise ProntoError(
                ErrorCode.DENIED,
                f"{user} needs {level} on {where}, {what}{why}; an admin can give it with "
                f"`prontodb grant {user} {level}{flags}`.",
                {"needs": level, "cursor": need.cursor, "prefix": need.target},
            )


# What a request needs, from its arguments, its user and the broker's backup directory
# (absolute). Each operation names one rule in the registry (_registry.py). Malformed arguments
# are left to the operation itself to refuse (a bad key needs nothing: it fails anyway).
Rule = Callable[[Mapping[str, Any], str, str], list[Need]]


def _cursor(args: Mapping[str, Any]) -> str:
    cursor = args.get("cursor", DEFAULT_CURSOR)
    return cursor if isinstance(cursor, str) else DEFAULT_CURSOR


def nothing(args: Mapping[str, Any], user: str, backups: str) -> list[Need]:
    """Open to every user who logged in."""
    return []


def on_key(level: Level, name: str = "key") -> Rule:
    """``level`` on the request's ``key`` (or the key its argument ``name`` holds: a recipe's
    name, whose members are below it) in its cursor."""

    def rule(args: Mapping[str, Any], user: str, backups: str) -> list[Need]:
        return [Need(level, _cursor(args), _text(args.get(name)))]

    return rule


def on_each_key(level: Level, name: str) -> Rule:
    """``level`` on each key the request's ``name`` holds (a list of keys, or a map by key)."""

    def rule(args: Mapping[str, Any], user: str, backups: str) -> list[Need]:
        keys = args.get(name)
        keys = keys if isinstance(keys, list | dict) else []
        return [Need(level, _cursor(args), _text(key)) for key in keys]

    return rule


def on_prefix(level: Level) -> Rule:
    """``level`` on the request's ``prefix`` (and every key below it) in its cursor."""

    def rule(args: Mapping[str, Any], user: str, backups: str) -> list[Need]:
        return [Need(level, _cursor(args), _text(args.get("prefix")))]

    return rule


def on_cursor(level: Level) -> Rule:
    """``level`` on every key of the request's cursor."""

    def rule(args: Mapping[str, Any], user: str, backups: str) -> list[Need]:
        return [Need(level, _cursor(args))]

    return rule


def somewhere_in_cursor(level: Level) -> Rule:
    """``level`` on some key of the request's cursor, under any prefix (the operation itself
    touches no key it names: a session's keys were attached by writes checked on their own)."""

    def rule(args: Mapping[str, Any], user: str, backups: str) -> list[Need]:
        return [Need(level, _cursor(args), somewhere=True)]

    return rule


def on_txn_keys(args: Mapping[str, Any], user: str, backups: str) -> list[Need]:
    """Read on each compared key and each ``get``, write on each other operation's key."""
    cursor = _cursor(args)
    found = [Need(Level.READ, cursor, _text(_field(c, "key"))) for c in _items(args, "compares")]
    for item in _items(args, "ops"):
        level = Level.READ if _field(item, "op") == "get" else Level.WRITE
        found.append(Need(level, cursor, _text(_field(item, "key"))))
    return found


def admin_everywhere(args: Mapping[str, Any], user: str, backups: str) -> list[Need]:
    """Admin on every cursor and every key (also what an unknown operation needs)."""
    return [Need(Level.ADMIN, None)]


def own_or_admin(args: Mapping[str, Any], user: str, backups: str) -> list[Need]:
    """Nothing when the request is about its own user (``user``), else admin everywhere."""
    return [] if args.get("user") == user else admin_everywhere(args, user, backups)


def backup_path(path_arg: str) -> Rule:
    """A path reaches any directory the broker can: naming one is an admin's of everything,
    not of one cursor (else a cursor admin could write a backup anywhere, or restore any backup
    file into its cursor). Its own backups are the exception: a cursor's admin may back it up
    to, and restore it from, the broker's backup directory."""

    def rule(args: Mapping[str, Any], user: str, backups: str) -> list[Need]:
        only = args.get("cursor")
        if isinstance(only, str) and within(args.get(path_arg), backups):
            return [Need(Level.ADMIN, only)]
        why = f"a backup path outside {backups}" if isinstance(only, str) and backups else ""
        return [Need(Level.ADMIN, None, why=why)]

    return rule


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
