"""Request rates per user: a token bucket each, for the ``rate`` quota (user_limits)."""

from __future__ import annotations

MAX_USERS = 10_000  # buckets kept; the least recently used go first beyond this


class RateBuckets:
    """Token buckets by user: ``rate`` tokens a second, holding at most one second's worth."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, when)

    def take(self, user: str, rate: float, now: float) -> bool:
        """Take one token for a request of ``user`` at ``now``; False if none is left."""
        tokens, when = self._buckets.pop(user, (rate, now))
        tokens = min(max(rate, 1.0), tokens + max(now - when, 0.0) * rate)
        allowed = tokens >= 1.0
        self._buckets[user] = (tokens - 1.0 if allowed else tokens, now)  # most recent last
        if len(self._buckets) > MAX_USERS:
            del self._buckets[next(iter(self._buckets))]
        return allowed
