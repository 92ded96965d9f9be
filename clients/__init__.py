"""ProntoDB clients: :class:`AsyncClient` (anyio: trio or asyncio), :class:`Client` (blocking),
and the ``prontodb`` CLI.

Names load lazily, so ``import prontodb.clients`` (and the CLI) imports neither trio nor anyio::

    from prontodb.clients import Client

    with Client.connect() as client:
        client.set("project.status", "ready")
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any

    from prontodb.protocol import (
        BadKey,
        BadRequest,
        Compacted,
        CompareFailed,
        Denied,
        ErrorCode,
        Exists,
        Internal,
        NotFound,
        OutOfRange,
        Overflow,
        ProntoError,
        ProtocolViolation,
        QuotaExceeded,
        TimedOut,
        TooLarge,
        Unauthenticated,
        Unavailable,
        UnknownOp,
        WrongType,
    )

    from ._async.client import AsyncClient
    from ._async.watch import Watch as AsyncWatch
    from ._sync.client import Client
    from ._sync.watch import Watch
    from ._types import (
        MISSING,
        BrokerUnavailable,
        Claimed,
        ClaimInfo,
        KeyInfo,
        SessionInfo,
        TxnResult,
        WatchEvent,
    )

__all__ = [
    "BadKey",
    "BadRequest",
    "Compacted",
    "CompareFailed",
    "Denied",
    "Exists",
    "Internal",
    "NotFound",
    "OutOfRange",
    "Overflow",
    "ProtocolViolation",
    "QuotaExceeded",
    "TimedOut",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "UnknownOp",
    "WrongType",
    "AsyncClient",
    "AsyncWatch",
    "BrokerUnavailable",
    "ClaimInfo",
    "Claimed",
    "Client",
    "ErrorCode",
    "KeyInfo",
    "MISSING",
    "Member",
    "ProntoError",
    "QueueStats",
    "Recipe",
    "SessionInfo",
    "SessionLost",
    "TxnResult",
    "Watch",
    "WatchEvent",
]

# The protocol's names too: the CLI's fast path imports this package, and the protocol (with
# msgpack and enum) would cost it about 10 ms.
_LAZY: dict[str, str | tuple[str, str]] = {
    "BadKey": "prontodb.protocol",
    "BadRequest": "prontodb.protocol",
    "Compacted": "prontodb.protocol",
    "CompareFailed": "prontodb.protocol",
    "Denied": "prontodb.protocol",
    "ErrorCode": "prontodb.protocol",
    "Exists": "prontodb.protocol",
    "Internal": "prontodb.protocol",
    "NotFound": "prontodb.protocol",
    "OutOfRange": "prontodb.protocol",
    "Overflow": "prontodb.protocol",
    "ProntoError": "prontodb.protocol",
    "ProtocolViolation": "prontodb.protocol",
    "QuotaExceeded": "prontodb.protocol",
    "TimedOut": "prontodb.protocol",
    "TooLarge": "prontodb.protocol",
    "Unauthenticated": "prontodb.protocol",
    "Unavailable": "prontodb.protocol",
    "UnknownOp": "prontodb.protocol",
    "WrongType": "prontodb.protocol",
    "AsyncClient": "._async.client",
    "Client": "._sync.client",
    "BrokerUnavailable": "._types",
    "Claimed": "._types",
    "ClaimInfo": "._types",
    "KeyInfo": "._types",
    "MISSING": "._types",
    "Member": "._types",
    "QueueStats": "._types",
    "Recipe": "._types",
    "SessionInfo": "._types",
    "SessionLost": "._types",
    "TxnResult": "._types",
    "WatchEvent": "._types",
    "Watch": "._sync.watch",
    "AsyncWatch": ("._async.watch", "Watch"),
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = where if isinstance(where, tuple) else (where, name)
    if module.startswith("."):
        module = __name__ + module
    # __import__, not importlib.import_module: importlib (with warnings) costs the CLI's start.
    __import__(module)
    value = getattr(sys.modules[module], attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
