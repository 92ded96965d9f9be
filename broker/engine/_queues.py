"""A queue's settings (``queue config``): its default lease, its deliveries before the dead
letter, and the backoff that spaces out retries; and the options one item is written with.

Pure values and arithmetic: the engine logs a config as QUEUE_CONFIG and applies it. The backoff's
jitter comes from a hash of the item's key and delivery count, not from a random source, so that
the delay is the same wherever it is computed (and it is logged anyway).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

from prontodb.protocol import ErrorCode, ProntoError

from ._claims import DEFAULT_PRIORITY
from ._keys import validate_key
from ._values import is_integer

MAX_PRIORITY = (1 << 31) - 1
MAX_AFTER = 64  # keys one item may wait for
MAX_DELAY = 366 * 86_400.0  # an item may be scheduled a year ahead at most


class QueueConfig(NamedTuple):
    """A queue's settings; None fields fall back to the claimer's arguments and the defaults."""

    lease: float | None = None  # seconds a claim holds an item when the claimer names none
    max_deliveries: int | None = None  # hand-outs before the item goes to dead.<key>
    backoff: tuple[float, float] | None = None  # (first delay, cap) in seconds

    def as_map(self) -> dict[str, Any]:
        """The config as logged and answered: only the fields that are set."""
        found: dict[str, Any] = {}
        if self.lease is not None:
            found["lease"] = self.lease
        if self.max_deliveries is not None:
            found["max_deliveries"] = self.max_deliveries
        if self.backoff is not None:
            found["backoff"] = list(self.backoff)
        return found

    @classmethod
    def from_map(cls, raw: Mapping[str, Any]) -> QueueConfig:
        """Check and build a config from its map (the wire's and the log's)."""
        unknown = set(raw) - {"lease", "max_deliveries", "backoff"}
        if unknown:
            raise _bad(
                f"A queue config has no {sorted(unknown)[0]!r}; use lease, max_deliveries, backoff."
            )
        lease = raw.get("lease")
        if lease is not None:
            lease = seconds(lease, "lease")
        deliveries = raw.get("max_deliveries")
        if deliveries is not None and (not is_integer(deliveries) or deliveries < 1):
            raise _bad("'max_deliveries' must be 1 or more.")
        backoff = raw.get("backoff")
        if backoff is not None:
            if not isinstance(backoff, list | tuple) or len(backoff) != 2:
                raise _bad("'backoff' is [first delay, cap] in seconds, like [1, 300].")
            first, cap = (
                seconds(backoff[0], "backoff's first delay"),
                seconds(backoff[1], "backoff's cap"),
            )
            if cap < first:
                raise _bad("The backoff's cap must be at least its first delay.")
            backoff = (first, cap)
        return cls(lease, deliveries, backoff)


class ItemOptions(NamedTuple):
    """How a queue item is written: its priority, the time it may be claimed from (None: at
    once) and the keys it waits for. Build it with :meth:`make`, which checks it."""

    priority: int = DEFAULT_PRIORITY
    not_before: float | None = None
    after: tuple[str, ...] = ()

    @classmethod
    def make(
        cls,
        *,
        priority: Any = None,
        delay: Any = None,
        at: Any = None,
        after: Any = None,
        now: float,
        max_key_len: int,
    ) -> ItemOptions:
        """Checked options: ``delay`` seconds from ``now`` or an absolute ``at`` (epoch seconds;
        one of them; a time past is now), ``after`` a list of keys."""
        if delay is not None and at is not None:
            raise _bad("Give 'delay' or 'at', not both.")
        not_before = None
        if delay is not None:
            if (
                isinstance(delay, bool)
                or not isinstance(delay, int | float)
                or not 0 <= delay <= MAX_DELAY
            ):
                raise _bad(f"'delay' must be a number of seconds from 0 to {MAX_DELAY:g} (a year).")
            not_before = now + float(delay) if delay > 0 else None
        elif at is not None:
            if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
                raise _bad("'at' must be a time in seconds since the epoch.")
            if at > now + MAX_DELAY:
                raise _bad("'at' is more than a year ahead.")
            not_before = float(at) if at > now else None
        keys: tuple[str, ...] = ()
        if after is not None:
            if not isinstance(after, list | tuple) or len(after) > MAX_AFTER:
                raise _bad(f"'after' must be a list of at most {MAX_AFTER} keys.")
            keys = tuple(validate_key(k, max_key_len) for k in after)
        chosen = DEFAULT_PRIORITY if priority is None else priority_of(priority)
        return cls(chosen, not_before, keys)


def backoff_delay(config: QueueConfig | None, key: str, deliveries: int) -> float | None:
    """Seconds before ``key``, handed out ``deliveries`` times, may be claimed again: the first
    delay doubled per delivery after the first, capped, then jittered down by up to half
    ("equal jitter"), so that items that failed together do not come back together. None: the
    queue has no backoff."""
    if config is None or config.backoff is None:
        return None
    first, cap = config.backoff
    exponent = min(max(deliveries - 1, 0), 64)
    full = min(cap, first * math.pow(2.0, exponent))
    spread = zlib.crc32(f"{key}\x00{deliveries}".encode()) / 0xFFFFFFFF
    return full * (0.5 + 0.5 * spread)


def priority_of(value: Any) -> int:
    """A checked priority: a whole number from 0 (most urgent) to 2**31 - 1."""
    if not is_integer(value) or not 0 <= value <= MAX_PRIORITY:
        raise _bad(f"A priority is a whole number from 0 (most urgent) to {MAX_PRIORITY}.")
    return int(value)


def seconds(value: Any, name: str) -> float:
    """A checked positive duration."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise _bad(f"{name!r} must be a number of seconds above 0.")
    return float(value)


def _bad(message: str) -> ProntoError:
    return ProntoError(ErrorCode.BAD_REQUEST, message)
