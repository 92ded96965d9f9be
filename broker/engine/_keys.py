"""Key grammar and segment-aware prefixes.

A key is dot-separated segments of ``[A-Za-z0-9_:-]``. A prefix selects the key equal to it and every
key below it, segment by segment: ``queue`` selects ``queue`` and ``queue.task_1``, not ``queueing.x``.
"""

from __future__ import annotations

import re

from prontodb.protocol import ErrorCode, ProntoError

_KEY_RE = re.compile(r"[A-Za-z0-9_:\-]+(?:\.[A-Za-z0-9_:\-]+)*")

# '/' is the character right after '.', so [prefix + ".", prefix + "/") holds exactly the descendants.
SEPARATOR = "."
_AFTER_SEPARATOR = chr(ord(SEPARATOR) + 1)


def validate_key(key: object, max_len: int) -> str:
    """Return ``key`` if it is a well-formed key of at most ``max_len`` characters, else raise bad_key."""
    if not isinstance(key, str):
        raise ProntoError(ErrorCode.BAD_KEY, f"A key must be a string, not {type(key).__name__}.")
    if len(key) > max_len:
        raise ProntoError(
            ErrorCode.BAD_KEY, f"The key is {len(key)} characters long; the limit is {max_len}."
        )
    if _KEY_RE.fullmatch(key) is None:
        raise ProntoError(
            ErrorCode.BAD_KEY,
            f"{key!r} is not a valid key: use dot-separated segments of letters, digits, "
            "'_', ':' and '-' (like project.queue.task_1).",
        )
    return key


def validate_prefix(prefix: object, max_len: int) -> str:
    """Like :func:`validate_key`, but the empty string (every key) is allowed too."""
    if prefix == "":
        return ""
    return validate_key(prefix, max_len)


def descendant_range(prefix: str) -> tuple[str, str]:
    """The half-open range of sort keys that holds every key strictly below ``prefix``."""
    return prefix + SEPARATOR, prefix + _AFTER_SEPARATOR


def parent_of(key: str) -> str:
    """The prefix one segment up (``""`` for a top-level key)."""
    head, _, _ = key.rpartition(SEPARATOR)
    return head
