"""The one table of error codes shared by the broker, the clients and the CLI.

Every failure that crosses the wire carries a code from this table and a sentence that says what to
do. The CLI maps codes to exit statuses through the same table, so the three never disagree.
"""

from __future__ import annotations

import enum

from ._named_tuple import NamedTuple

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any


class ErrorCode(enum.StrEnum):
    """Stable, lower-case names that travel on the wire."""

    NOT_FOUND = "not_found"
    EXISTS = "exists"
    COMPARE_FAILED = "compare_failed"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    BAD_KEY = "bad_key"
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    TIMED_OUT = "timed_out"
    DENIED = "denied"
    UNAUTHENTICATED = "unauthenticated"
    COMPACTED = "compacted"
    OVERFLOW = "overflow"
    UNKNOWN_OP = "unknown_op"
    PROTOCOL = "protocol"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    QUOTA_EXCEEDED = "quota_exceeded"


class ErrorInfo(NamedTuple):
    """What the table knows of one code: its default sentence and the CLI's exit status."""

    message: str
    exit_status: int


# CLI exit statuses (DESIGN "Errors"): 1 error, 3 not found, 4 timed out waiting, 5 compare failed.
ERROR_TABLE: dict[ErrorCode, ErrorInfo] = {
    ErrorCode.NOT_FOUND: ErrorInfo(
        "No such key; check the key and the cursor, or set it first.", 3
    ),
    ErrorCode.EXISTS: ErrorInfo(
        "It already exists; pick another name or remove the old one first.", 1
    ),
    ErrorCode.COMPARE_FAILED: ErrorInfo(
        "The condition did not hold, so nothing was changed; re-read the key and try again.", 5
    ),
    ErrorCode.WRONG_TYPE: ErrorInfo(
        "The stored value has the wrong type for this operation (incr needs an integer); "
        "set a value of the right type first.",
        1,
    ),
    ErrorCode.OUT_OF_RANGE: ErrorInfo(
        "The result would leave the signed 64-bit integer range; use a smaller step.", 1
    ),
    ErrorCode.BAD_KEY: ErrorInfo(
        "Keys are dot-separated segments of letters, digits, '_', ':' and '-' "
        "(like project.queue.task_1); fix the key.",
        1,
    ),
    ErrorCode.BAD_REQUEST: ErrorInfo(
        "The request's arguments are missing or of the wrong type; check the command's --help.", 1
    ),
    ErrorCode.TOO_LARGE: ErrorInfo(
        "It is over the size limit; store less (split the value) or raise the broker's limit.", 1
    ),
    ErrorCode.TIMED_OUT: ErrorInfo(
        "Nothing arrived before the timeout; try again or wait longer.", 4
    ),
    ErrorCode.DENIED: ErrorInfo("This user lacks the permission; ask an admin for a grant.", 1),
    ErrorCode.UNAUTHENTICATED: ErrorInfo(
        "The broker needs a valid token for this user; pass one (PRONTODB_TOKEN).", 1
    ),
    ErrorCode.COMPACTED: ErrorInfo(
        "That revision is no longer kept; re-read the current state and resume from the oldest "
        "revision still available.",
        1,
    ),
    ErrorCode.OVERFLOW: ErrorInfo(
        "The watcher fell too far behind and its stream was cut off; resume from the revision "
        "it was given (next_rev), and read faster or watch a narrower prefix.",
        1,
    ),
    ErrorCode.UNKNOWN_OP: ErrorInfo(
        "The broker does not know this operation; upgrade the broker or the client.", 1
    ),
    ErrorCode.PROTOCOL: ErrorInfo(
        "The peer sent bytes that break the protocol; the connection was closed. Reconnect, and "
        "report it if it repeats.",
        1,
    ),
    ErrorCode.UNAVAILABLE: ErrorInfo(
        "The broker cannot serve this now (starting, stopping, overloaded, or a database it cannot write or open: the message says which); retry shortly.",
        1,
    ),
    ErrorCode.INTERNAL: ErrorInfo(
        "The broker failed unexpectedly; the request may not have been applied. "
        "See the broker's log.",
        1,
    ),
    ErrorCode.QUOTA_EXCEEDED: ErrorInfo(
        "This user is at one of its quotas (the message says which); free some or ask an admin "
        "for a larger one.",
        1,
    ),
}


class ProntoError(Exception):
    """A failure with a code from :class:`ErrorCode`, a sentence and optional details.

    Raised by the engine for a refused operation and by the clients for an error response.
    ``details`` holds machine-readable extras (for ``compacted``: ``oldest_rev``).

    Each code has a subclass (``NotFound``, ``CompareFailed``, ...): ``ProntoError(code, ...)``
    makes an instance of the code's own, so ``except CompareFailed:`` catches exactly that, and
    ``except ProntoError:`` every one.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> ProntoError:
        if cls is ProntoError:
            code = args[0] if args else kwargs.get("code")
            cls = _BY_CODE.get(code, ProntoError)  # type: ignore[arg-type]
        error: ProntoError = super().__new__(cls, *args)
        return error

    def __reduce__(self) -> tuple[Any, ...]:
        return (ProntoError, (self.code, self.message, self.details))

    def __init__(
        self, code: ErrorCode, message: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        self.code = ErrorCode(code)
        self.message = message if message is not None else ERROR_TABLE[self.code].message
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(f"{self.code.value}: {self.message}")

    @property
    def exit_status(self) -> int:
        """The CLI's exit status for this error."""
        return ERROR_TABLE[self.code].exit_status

    def to_wire(self) -> dict[str, Any]:
        """The error map carried in a response: code, message and any details."""
        return {**self.details, "code": self.code.value, "message": self.message}

    @classmethod
    def from_wire(cls, error: dict[str, Any]) -> ProntoError:
        """Rebuild an error from its wire map; an unknown code becomes ``internal``."""
        extra = {k: v for k, v in error.items() if k not in ("code", "message")}
        raw_code = error.get("code")
        try:
            code = ErrorCode(raw_code if isinstance(raw_code, str) else "")
        except ValueError:
            code = ErrorCode.INTERNAL
            extra["unknown_code"] = raw_code
        message = error.get("message")
        return cls(code, message if isinstance(message, str) else None, extra)


class NotFound(ProntoError):
    """``not_found``: no such key (or claim, user, cursor...)."""


class Exists(ProntoError):
    """``exists``: it exists already."""


class CompareFailed(ProntoError):
    """``compare_failed``: a condition did not hold; nothing was changed."""


class WrongType(ProntoError):
    """``wrong_type``: the stored value has the wrong type for the operation."""


class OutOfRange(ProntoError):
    """``out_of_range``: the result would leave the signed 64-bit range."""


class BadKey(ProntoError):
    """``bad_key``: not a valid key."""


class BadRequest(ProntoError):
    """``bad_request``: missing or mistyped arguments."""


class TooLarge(ProntoError):
    """``too_large``: over a size limit."""


class TimedOut(ProntoError):
    """``timed_out``: nothing arrived in time."""


class Denied(ProntoError):
    """``denied``: the user lacks the permission."""


class Unauthenticated(ProntoError):
    """``unauthenticated``: no valid token for the user."""


class Compacted(ProntoError):
    """``compacted``: that revision is no longer kept (details ``oldest_rev``)."""


class Overflow(ProntoError):
    """``overflow``: a watcher fell behind and was cut off (details ``next_rev``)."""


class UnknownOp(ProntoError):
    """``unknown_op``: the broker does not know the operation."""


class ProtocolViolation(ProntoError):
    """``protocol``: the peer broke the protocol; the connection was closed."""


class Unavailable(ProntoError):
    """``unavailable``: the broker cannot serve this now (starting, stopping, a database it
    cannot open or write)."""


class Internal(ProntoError):
    """``internal``: the broker failed unexpectedly."""


class QuotaExceeded(ProntoError):
    """``quota_exceeded``: the user is at one of its quotas (details ``user``, ``limit``,
    ``value``)."""


_BY_CODE: dict[str, type[ProntoError]] = {
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.EXISTS: Exists,
    ErrorCode.COMPARE_FAILED: CompareFailed,
    ErrorCode.WRONG_TYPE: WrongType,
    ErrorCode.OUT_OF_RANGE: OutOfRange,
    ErrorCode.BAD_KEY: BadKey,
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.TOO_LARGE: TooLarge,
    ErrorCode.TIMED_OUT: TimedOut,
    ErrorCode.DENIED: Denied,
    ErrorCode.UNAUTHENTICATED: Unauthenticated,
    ErrorCode.COMPACTED: Compacted,
    ErrorCode.OVERFLOW: Overflow,
    ErrorCode.UNKNOWN_OP: UnknownOp,
    ErrorCode.PROTOCOL: ProtocolViolation,
    ErrorCode.UNAVAILABLE: Unavailable,
    ErrorCode.INTERNAL: Internal,
    ErrorCode.QUOTA_EXCEEDED: QuotaExceeded,
}


class ProtocolError(Exception):
    """The byte stream broke the protocol; raised by :class:`~prontodb.protocol.Connection`.

    ``code`` is ``protocol`` for a malformed or out-of-order message and ``too_large`` for a frame
    or value over a limit; ``message`` says what was wrong. Only the two subclasses are raised.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code = ErrorCode(code)
        self.message = message
        super().__init__(f"{self.code.value}: {message}")


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid. The connection is dead: close it, maybe after a Goodbye."""


class LocalProtocolError(ProtocolError):
    """We tried to send something invalid. Nothing was encoded and the connection is unchanged."""
