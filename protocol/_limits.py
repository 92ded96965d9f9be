"""The bounds every decoder enforces, so that no peer can make us buffer or build without limit."""

from __future__ import annotations

from collections.abc import Mapping

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any

# A frame's length travels in 4 bytes, so no frame can be larger than this whatever the limit says.
MAX_FRAME_SIZE_CEILING = 2**32 - 1

# The integer ranges, defined here once: msgpack carries INT64_MIN..UINT64_MAX; ids and sessions
# are unsigned; stored counters are signed 64-bit, as a peer in another language holds them.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

_FIELDS = (
    "max_frame_size",
    "max_container_len",
    "max_depth",
    "max_str_len",
    "max_bin_len",
    "max_in_flight",
)


class Limits:
    """Bounds on one connection's frames, on the msgpack objects inside them and on its requests.

    ``max_str_len`` and ``max_bin_len`` are clamped to ``max_frame_size`` (nothing bigger can arrive
    anyway). A received message that breaks a limit is a :class:`RemoteProtocolError`; a message we
    try to send that breaks one is a :class:`LocalProtocolError` with code ``too_large``.

    Immutable. A plain class rather than a dataclass: the CLI imports it at every start, and the
    dataclasses module costs more to import than everything else here.
    """

    __slots__ = _FIELDS

    max_frame_size: int
    """Largest frame body in bytes; a 1 MiB value plus its envelope fits with room to spare."""
    max_container_len: int
    """Most elements in one array, or pairs in one map (a ``keys`` answer, a transaction)."""
    max_depth: int
    """Deepest nesting of arrays and maps, counting the message's own array as level 1."""
    max_str_len: int
    """Longest string in UTF-8 bytes."""
    max_bin_len: int
    """Longest binary value in bytes."""
    max_in_flight: int
    """Most requests awaiting their Response at once (pipelined, blocking ones included)."""

    def __init__(
        self,
        max_frame_size: int = 4 * 1024 * 1024,
        max_container_len: int = 100_000,
        max_depth: int = 32,
        max_str_len: int = 4 * 1024 * 1024,
        max_bin_len: int = 4 * 1024 * 1024,
        max_in_flight: int = 1024,
    ) -> None:
        values = locals()
        for name in _FIELDS:
            value = values[name]
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Limits.{name} must be an int, not {type(value).__name__}")
        if not 1 <= max_frame_size <= MAX_FRAME_SIZE_CEILING:
            raise ValueError(f"max_frame_size must be in 1..{MAX_FRAME_SIZE_CEILING}")
        # Every message is an array of up to 4 elements holding at most one more container.
        if max_container_len < 4:
            raise ValueError("max_container_len must be at least 4")
        if max_depth < 2:
            raise ValueError("max_depth must be at least 2")
        if max_str_len < 0 or max_bin_len < 0:
            raise ValueError("max_str_len and max_bin_len must not be negative")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        setter = object.__setattr__
        setter(self, "max_frame_size", max_frame_size)
        setter(self, "max_container_len", max_container_len)
        setter(self, "max_depth", max_depth)
        setter(self, "max_str_len", min(max_str_len, max_frame_size))
        setter(self, "max_bin_len", min(max_bin_len, max_frame_size))
        setter(self, "max_in_flight", max_in_flight)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Limits are immutable; build new ones (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Limits are immutable (cannot delete {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Limits):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().values()))

    def __repr__(self) -> str:
        return "Limits(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"

    def as_dict(self) -> dict[str, int]:
        """The limits by field name, as a server advertises them in :class:`Welcome`."""
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Limits:
        """Build limits from a Welcome's map: unknown names are ignored, missing ones default."""
        return cls(**{name: value for name, value in values.items() if name in _FIELDS})
