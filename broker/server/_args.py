"""Request arguments: the kinds an operation declares (docs/PROTOCOL.md, "Operations"), and the
checks every request's arguments go through before its handler runs.

A kind with one meaning everywhere (a flag, a whole number, a list) is checked here, with one
wording of its error. Keys, prefixes, values and durations are checked where their rules live
(the engine's key rules, the handler's bounds), so that the embedded database refuses the same
things with the same words. Arguments an operation does not declare are ignored: an older broker
serves a newer client's optional extras as if absent.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prontodb.protocol import ErrorCode, ProntoError

from ._names import validate_name, validate_user


class Kind(enum.Enum):
    """What an argument holds; its value is the type docs/PROTOCOL.md writes for it."""

    KEY = "key"  # a key; its form is the engine's to judge (bad_key)
    PREFIX = "prefix"  # a key prefix, "" for every key
    VALUE = "any"  # any value the protocol carries
    FLAG = "bool"
    UINT = "uint"  # a whole number, 0 or more
    INT = "int"  # a signed 64-bit integer
    SECONDS = "seconds"  # a duration, bounded by the operation that takes it
    LIST = "list"
    MAP = "map"
    TEXT = "str"
    CURSOR = "cursor"  # a cursor name (it becomes a directory name)
    USER = "user"  # a user name
    PATH = "path"  # an absolute path on the broker's machine


def bad(message: str) -> ProntoError:
    return ProntoError(ErrorCode.BAD_REQUEST, message)


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise bad(f"{name!r} must be true or false.")


def _uint(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise bad(f"{name!r} must be a whole number, 0 or more.")


def _int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad(f"{name!r} must be an integer.")


def _list(name: str, value: Any) -> None:
    if not isinstance(value, list):
        raise bad(f"{name!r} must be a list.")


def _map(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise bad(f"{name!r} must be a map.")


def _cursor(name: str, value: Any) -> None:
    validate_name(value)


def _user(name: str, value: Any) -> None:
    validate_user(value)


# Checks of a value that is present (nil counts as absent for the optional numbers).
_CHECKS: dict[Kind, Callable[[str, Any], None]] = {
    Kind.FLAG: _flag,
    Kind.UINT: _uint,
    Kind.INT: _int,
    Kind.LIST: _list,
    Kind.MAP: _map,
    Kind.CURSOR: _cursor,
    Kind.USER: _user,
}


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of an operation: its name and kind, whether a request must carry it
    (``missing`` words that refusal when the general one would say too little), whether nil
    means the same as absent (``nil``; always so for whole numbers), and what it means
    (``doc``, for the docs and the tools generated from the registry)."""

    name: str
    kind: Kind
    required: bool = False
    nil: bool = False
    missing: str = ""
    doc: str = ""
    # Worked out once: every request checks each argument of its operation (an Enum's hash
    # is Python code, and a lookup by it cost more than the rest of the check).
    _check: Callable[[str, Any], None] | None = field(init=False, repr=False, compare=False)
    _nil_absent: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_check", _CHECKS.get(self.kind))
        # nil stands for "absent" where the argument says so (and always for whole numbers)
        object.__setattr__(self, "_nil_absent", self.nil or self.kind is Kind.UINT)

    def check(self, args: Mapping[str, Any]) -> None:
        """Raise ``bad_request`` if ``args`` lacks this argument, or holds one of the wrong
        kind."""
        name = self.name
        value = args.get(name)
        if value is None and (self._nil_absent or name not in args):
            if self.required:
                raise bad(self.missing or f"The request needs the argument {name!r}.")
            return
        check = self._check
        if check is not None:
            check(name, value)


def owner_arg(args: Mapping[str, Any], user: str) -> str | None:
    """The owner a cursor operation acts for: this user with ``mine`` (a flag its declaration
    checked), else None (global)."""
    return user if args.get("mine", False) else None


def absolute_path(args: Mapping[str, Any], key: str = "path") -> Path:
    """The argument ``key`` as an absolute, normalised path; bad_request for anything else."""
    path = args.get(key)
    if not isinstance(path, str) or not os.path.isabs(path):
        raise bad(
            f"{key!r} must be an absolute path, not {path!r} (the CLI makes a relative path absolute "
            "against your working directory)."
        )
    return Path(os.path.normpath(path))
