"""Per-user quotas of one database: the keys a user may own, their bytes, the claims it may hold.

A key belongs to the user who wrote it last (its ``writer``); its bytes are its value's encoded
size. The engine keeps each writer's use up to date on every write and removal, and refuses a
write that would take a user with a quota past it (``quota_exceeded``), in the same step as the
write, so that concurrent writers can never pass it together. Quotas are logged (QUOTA) and kept
in snapshots, so they survive restarts and backups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from prontodb.protocol import ErrorCode, ProntoError

from ._values import is_integer


class Quota(NamedTuple):
    """A user's limits in one database; None: no limit."""

    max_keys: int | None = None
    max_bytes: int | None = None
    max_claims: int | None = None

    def as_map(self) -> dict[str, int]:
        """The limits that are set, as logged and answered."""
        return {name: value for name, value in self._asdict().items() if value is not None}

    @classmethod
    def from_map(cls, raw: Mapping[str, Any]) -> Quota:
        """Check and build a quota from its map."""
        unknown = set(raw) - set(cls._fields)
        if unknown:
            names = ", ".join(cls._fields)
            raise _bad(f"A quota has no {sorted(unknown)[0]!r}; use {names}.")
        for name, value in raw.items():
            if value is not None and (not is_integer(value) or value < 0):
                raise _bad(f"{name!r} must be a whole number, 0 or more.")
        return cls(**{name: raw.get(name) for name in cls._fields})


class Usage:
    """What each writer owns now: keys and bytes."""

    __slots__ = ("bytes", "keys")

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self.bytes: dict[str, int] = {}

    def add(self, writer: str, size: int, sign: int) -> None:
        """``writer`` gains (sign 1) or loses (sign -1) a key of ``size`` bytes."""
        self.keys[writer] = self.keys.get(writer, 0) + sign
        self.bytes[writer] = self.bytes.get(writer, 0) + sign * size
        if not self.keys[writer]:
            del self.keys[writer], self.bytes[writer]

    def of(self, writer: str) -> tuple[int, int]:
        """(keys, bytes) ``writer`` owns."""
        return self.keys.get(writer, 0), self.bytes.get(writer, 0)


def check(quota: Quota, user: str, before: tuple[int, int], after: tuple[int, int]) -> None:
    """Refuse a write that would take ``user`` from owning ``before`` (keys, bytes) to
    ``after`` past a limit. A write that adds nothing passes, even over a limit lowered since."""
    keys, size = after
    if quota.max_keys is not None and keys > max(quota.max_keys, before[0]):
        raise exceeded(user, "max_keys", quota.max_keys, f"it would own {keys} keys")
    if quota.max_bytes is not None and size > max(quota.max_bytes, before[1]):
        raise exceeded(user, "max_bytes", quota.max_bytes, f"its values would take {size} bytes")


def exceeded(user: str, limit: str, value: int, why: str) -> ProntoError:
    """The error of a request refused by ``user``'s ``limit``."""
    return ProntoError(
        ErrorCode.QUOTA_EXCEEDED,
        f"User {user!r} is at its quota {limit}={value} ({why}); free some (delete keys, finish "
        "claims) or ask an admin for a larger quota (`prontodb quota set`).",
        {"user": user, "limit": limit, "value": value},
    )


def _bad(message: str) -> ProntoError:
    return ProntoError(ErrorCode.BAD_REQUEST, message)
