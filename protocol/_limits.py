"""The bounds every decoder enforces, so that no peer can make us buffer or build without limit."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# A frame's length travels in 4 bytes, so no frame can be larger than this whatever the limit says.
MAX_FRAME_SIZE_CEILING = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one connection's frames, on the msgpack objects inside them and on its requests.

    ``max_str_len`` and ``max_bin_len`` are clamped to ``max_frame_size`` (nothing bigger can arrive
    anyway). A received message that breaks a limit is a :class:`RemoteProtocolError`; a message we
    try to send that breaks one is a :class:`LocalProtocolError` with code ``too_large``.
    """

    max_frame_size: int = 4 * 1024 * 1024
    """Largest frame body in bytes; a 1 MiB value plus its envelope fits with room to spare."""
    max_container_len: int = 100_000
    """Most elements in one array, or pairs in one map (a ``keys`` answer, a transaction)."""
    max_depth: int = 32
    """Deepest nesting of arrays and maps, counting the message's own array as level 1."""
    max_str_len: int = 4 * 1024 * 1024
    """Longest string in UTF-8 bytes."""
    max_bin_len: int = 4 * 1024 * 1024
    """Longest binary value in bytes."""
    max_in_flight: int = 1024
    """Most requests awaiting their Response at once (pipelined, blocking ones included)."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Limits.{field.name} must be an int, not {type(value).__name__}")
        if not 1 <= self.max_frame_size <= MAX_FRAME_SIZE_CEILING:
            raise ValueError(f"max_frame_size must be in 1..{MAX_FRAME_SIZE_CEILING}")
        # Every message is an array of up to 4 elements holding at most one more container.
        if self.max_container_len < 4:
            raise ValueError("max_container_len must be at least 4")
        if self.max_depth < 2:
            raise ValueError("max_depth must be at least 2")
        if self.max_str_len < 0 or self.max_bin_len < 0:
            raise ValueError("max_str_len and max_bin_len must not be negative")
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        object.__setattr__(self, "max_str_len", min(self.max_str_len, self.max_frame_size))
        object.__setattr__(self, "max_bin_len", min(self.max_bin_len, self.max_frame_size))

    def as_dict(self) -> dict[str, int]:
        """The limits by field name, as a server advertises them in :class:`Welcome`."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Limits:
        """Build limits from a Welcome's map: unknown names are ignored, missing ones default."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in values.items() if name in names})
