"""Value checks: which Python objects may be stored, how big and how deep, and strict equality."""

from __future__ import annotations

from typing import Any

import msgpack

from prontodb.protocol import ErrorCode, ProntoError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_SCALARS = (str, bytes, int, float, bool)
_NESTED_SCALARS = (*_SCALARS, type(None))


def pack_value(value: Any, max_size: int, max_depth: int) -> bytes:
    """Check ``value`` and return its msgpack encoding (which the record reuses).

    Top-level values are str, bytes, int, float, bool, list or dict; containers may also hold None,
    and maps need string keys. Raises bad_request for other types or nesting, too_large over the size.
    """
    if isinstance(value, list | dict):
        _check_nested(value, max_depth)
    elif not isinstance(value, _SCALARS):
        raise ProntoError(
            ErrorCode.BAD_REQUEST,
            f"A value must be a string, bytes, a number, a list or a map, not {type(value).__name__}.",
        )
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProntoError(ErrorCode.BAD_REQUEST, f"The value cannot be stored: {exc}.") from None
    if len(packed) > max_size:
        raise ProntoError(
            ErrorCode.TOO_LARGE,
            f"The value takes {len(packed)} bytes; the limit is {max_size}. Store less or split it.",
        )
    return packed


def _check_nested(value: list[Any] | dict[Any, Any], max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | dict):
            if depth > max_depth:
                raise ProntoError(
                    ErrorCode.BAD_REQUEST, f"The value nests deeper than {max_depth} levels."
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise ProntoError(
                            ErrorCode.BAD_REQUEST, "Map keys in a value must be strings."
                        )
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)
        elif not isinstance(item, _NESTED_SCALARS):
            raise ProntoError(
                ErrorCode.BAD_REQUEST, f"A value cannot hold a {type(item).__name__}."
            )


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
