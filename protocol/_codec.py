"""msgpack in and out, restricted to the plain types the protocol allows and bounded by Limits."""

from __future__ import annotations

import msgpack

from ._errors import ErrorCode, LocalProtocolError
from ._limits import INT64_MIN as INT_MIN  # the widest integers msgpack can carry
from ._limits import UINT64_MAX as INT_MAX
from ._limits import Limits

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

MAX_MESSAGE = 300  # characters of a protocol error's message


class WireError(Exception):
    """A value or message is not valid on the wire; the Connection turns it into a Remote or Local
    ProtocolError, depending on which side produced it."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.PROTOCOL) -> None:
        # A message may quote the peer's bytes (an unknown message kind, say): bounded, so that
        # a peer cannot make the Goodbye, or the line the broker logs, megabytes long.
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        super().__init__(message)
        self.code = code
        self.message = message


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise WireError(f"msgpack ext type {code} is not allowed")


def unpack(payload: bytes, limits: Limits) -> Any:
    """Decode one frame body into exactly one plain object, or raise WireError."""
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_container_len,
            max_map_len=limits.max_container_len,
            max_ext_len=0,
            ext_hook=_refuse_ext,
        )
    except WireError:
        raise
    except Exception as exc:  # msgpack reports bad input through many exception types
        raise WireError(f"invalid msgpack: {type(exc).__name__}: {exc}") from None
    check_tree(obj, limits, outgoing=False)
    return obj


def packer() -> Callable[[Any], bytes]:
    """A reusable encoder for :func:`pack`: a fresh ``packb`` builds a Packer on every call,
    a third of a small message's encoding. Not for two threads at once (one per Connection)."""
    return msgpack.Packer(use_bin_type=True).pack  # type: ignore[no-any-return]


def pack(obj: Any, limits: Limits, packb: Callable[[Any], bytes] | None = None) -> bytes:
    """Encode one plain object after checking it as the peer will, or raise WireError.
    ``packb``: an encoder from :func:`packer` to use (the Packer resets itself on a failure)."""
    check_tree(obj, limits, outgoing=True)
    try:
        packed: bytes = msgpack.packb(obj, use_bin_type=True) if packb is None else packb(obj)
    except Exception as exc:  # e.g. a str with lone surrogates
        raise WireError(f"cannot encode: {type(exc).__name__}: {exc}") from None
    return packed


# What a stored value may be, in the words of every error that refuses one (the broker's and the
# client's), so that they never disagree.
VALUE_TYPES = (
    "a value is a str, bytes, a number, a bool, a list or a dict with str keys; None only inside "
    "lists and dicts (to remove a key, delete it)"
)


def check_value(obj: Any, limits: Limits) -> None:
    """Raise LocalProtocolError unless ``obj`` could be sent under ``limits``: plain msgpack types
    only, string map keys, nesting, container and string lengths within bounds.

    The engine checks stored values with it (with its own, tighter limits), so that what the
    broker accepts to store and what the protocol can carry are one rule.
    """
    try:
        check_tree(obj, limits, outgoing=True)
    except WireError as exc:
        raise LocalProtocolError(exc.code, exc.message) from None


def check_tree(obj: Any, limits: Limits, *, outgoing: bool) -> None:
    """Walk ``obj`` once, iteratively: only plain types, str map keys, nesting within max_depth.

    Outgoing objects also get the length checks that msgpack's decoder makes on the way in, so that
    we never send what a peer with the same limits would refuse; tuples and bytearrays are allowed
    there because msgpack encodes them as arrays and bins.

    This runs on every message in both directions, so the loop is shaped for speed: containers are
    scanned in place and exact-type checks handle the common leaves; anything unusual (subclasses,
    long strings, big ints) goes through :func:`_check_leaf`.
    """
    max_depth = limits.max_depth
    pending: list[tuple[Any, int]] = [(obj, 1)]
    while pending:
        item, depth = pending.pop()
        if not _is_container(item, outgoing):
            _check_leaf(item, limits, outgoing)
            continue
        if depth > max_depth:
            too_large = ErrorCode.TOO_LARGE if outgoing else ErrorCode.PROTOCOL
            raise WireError(f"nesting exceeds max_depth {max_depth}", too_large)
        if outgoing and len(item) > limits.max_container_len:
            raise WireError(
                f"container of {len(item)} exceeds max_container_len", ErrorCode.TOO_LARGE
            )
        if isinstance(item, dict):
            for key in item:
                if type(key) is not str and not isinstance(key, str):
                    raise WireError(f"map keys must be strings, not {type(key).__name__}")
                if outgoing and 4 * len(key) > limits.max_str_len:
                    _check_leaf(key, limits, outgoing)
            children = item.values()
        else:
            children = item
        for child in children:
            kind = type(child)
            if kind in _ALWAYS_FINE or (
                kind is str and not (outgoing and 4 * len(child) > limits.max_str_len)
            ):
                continue
            if kind is int and INT_MIN <= child <= INT_MAX:
                continue
            pending.append((child, depth + 1))


_ALWAYS_FINE = frozenset({type(None), bool, float})


def _is_container(item: Any, outgoing: bool) -> bool:
    return isinstance(item, list | dict) or (outgoing and isinstance(item, tuple))


def _check_leaf(item: Any, limits: Limits, outgoing: bool) -> None:
    too_large = ErrorCode.TOO_LARGE if outgoing else ErrorCode.PROTOCOL
    if item is None or isinstance(item, bool | float):
        return
    if isinstance(item, int):
        if not INT_MIN <= item <= INT_MAX:
            raise WireError(f"integer {item} does not fit in 64 bits")
    elif isinstance(item, str):
        # Only encode when the length in characters cannot settle it: UTF-8 takes 1 to 4 bytes.
        if outgoing and 4 * len(item) > limits.max_str_len:
            size = len(item.encode("utf-8", "surrogatepass"))
            if size > limits.max_str_len:
                raise WireError(f"string of {size} bytes exceeds max_str_len", too_large)
    elif isinstance(item, bytes) or (outgoing and isinstance(item, bytearray)):
        if outgoing and len(item) > limits.max_bin_len:
            raise WireError(f"binary of {len(item)} bytes exceeds max_bin_len", too_large)
    else:
        raise WireError(f"type {type(item).__name__} cannot travel on the wire")
