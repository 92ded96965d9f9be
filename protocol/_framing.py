"""Length-prefixed frames: a 4-byte big-endian body length N (1..max_frame_size), then N bytes."""

from __future__ import annotations

import struct

from ._codec import WireError
from ._errors import ErrorCode

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size


def frame(payload: bytes, max_frame_size: int) -> bytes:
    """Prefix ``payload`` with its length; WireError(too_large) if it is over the limit."""
    if len(payload) > max_frame_size:
        raise WireError(
            f"frame of {len(payload)} bytes exceeds max_frame_size {max_frame_size}",
            ErrorCode.TOO_LARGE,
        )
    return _HEADER.pack(len(payload)) + payload


class FrameReader:
    """Splits received bytes into frame bodies.

    Bytes accumulate in one bytearray; a complete frame is cut off the front (``del`` at the front
    of a bytearray is cheap in CPython), and the declared length is read once per frame, so feeding
    a frame one byte at a time costs linear, not quadratic, time. A declared length over the limit
    is refused as soon as its 4 bytes arrive, before any of the body is buffered.
    """

    def __init__(self, max_frame_size: int) -> None:
        self._max = max_frame_size
        self._buffer = bytearray()
        self._body_size: int | None = None  # declared length of the frame at the front, once read

    def __len__(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame body, or None when more bytes are needed."""
        if self._body_size is None:
            if len(self._buffer) < HEADER_SIZE:
                return None
            (size,) = _HEADER.unpack_from(self._buffer)
            if size == 0:
                raise WireError("frame of length 0")
            if size > self._max:
                raise WireError(
                    f"declared frame length {size} exceeds max_frame_size {self._max}",
                    ErrorCode.TOO_LARGE,
                )
            self._body_size = size
        end = HEADER_SIZE + self._body_size
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[HEADER_SIZE:end])
        del self._buffer[:end]
        self._body_size = None
        return body
