"""What cursor and user names look like: they become directory names and catalog entries, so
anything else is refused before it reaches a path (a request's, or a catalog's on load)."""

from __future__ import annotations

import re
from typing import Any

from prontodb.protocol import ErrorCode, ProntoError

_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,64}")
_USER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
DEFAULT_NAME = "default"


def validate_name(name: Any) -> str:
    """A cursor's database name, or bad_request saying what names look like."""
    return _valid(name, _CURSOR, "a cursor name", "'_' or '-'")


def validate_user(name: Any) -> str:
    """A user name, or bad_request saying what user names look like."""
    return _valid(name, _USER, "a user name", "'_', '.', '@' or '-'")


def _valid(name: Any, pattern: re.Pattern[str], what: str, punctuation: str) -> str:
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise ProntoError(
            ErrorCode.BAD_REQUEST,
            f"{name!r} is not {what}; use 1 to 64 letters, digits, {punctuation}.",
        )
    return name
