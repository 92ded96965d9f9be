"""Value checks: which Python objects may be stored, how big and how deep, and strict equality."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import msgpack

from prontodb.protocol import (
    VALUE_TYPES,
    ErrorCode,
    Limits,
    LocalProtocolError,
    ProntoError,
    check_value,
)

_TOP_LEVEL = (str, bytes, int, float, bool, list, dict)


@lru_cache(maxsize=8)
def _value_limits(max_size: int, max_depth: int) -> Limits:
    return Limits(max_frame_size=max_size, max_depth=max_depth)


def pack_value(value: Any, max_size: int, max_depth: int) -> bytes:
    """Check ``value`` and return its msgpack encoding (which the record reuses).

    A value is a str, bytes, int, float, bool, list or dict; inside lists and maps anything the
    protocol carries (None too), with string map keys. The rule is the protocol's own
    (:func:`check_value`), with the engine's bounds: bad_request for a type, too_large for the
    size or the nesting depth.
    """
    if not isinstance(value, _TOP_LEVEL):
        raise ProntoError(
            ErrorCode.BAD_REQUEST, f"A {type(value).__name__} cannot be stored: {VALUE_TYPES}."
        )
    try:
        if isinstance(value, list | dict):  # a scalar needs no walk: packb and the size check do
            check_value(value, _value_limits(max_size, max_depth))
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except LocalProtocolError as exc:
        code = ErrorCode.TOO_LARGE if exc.code is ErrorCode.TOO_LARGE else ErrorCode.BAD_REQUEST
        raise ProntoError(code, f"The value cannot be stored: {exc.message}.") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProntoError(ErrorCode.BAD_REQUEST, f"The value cannot be stored: {exc}.") from None
    if len(packed) > max_size:
        raise ProntoError(
            ErrorCode.TOO_LARGE,
            f"The value takes {len(packed)} bytes; the limit is {max_size}. Store less or split it.",
        )
    return packed


def is_integer(value: Any) -> bool:
    """True for int but not bool (which Python counts as an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def same_value(a: Any, b: Any) -> bool:
    """Equality that also requires equal types, so 1, 1.0 and True are three different values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(v, b[k]) for k, v in a.items())
    return bool(a == b)
