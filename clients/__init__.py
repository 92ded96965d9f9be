"""ProntoDB clients: :class:`AsyncClient` (anyio: trio or asyncio), :class:`Client` (blocking),
and the ``prontodb`` CLI.

Names load lazily, so ``import prontodb.clients`` (and the CLI) imports neither trio nor anyio::

    from prontodb.clients import Client

    with Client.connect() as client:
        client.set("project.status", "ready")
"""

from __future__ import annotations

from importlib import import_module

from prontodb.protocol import ErrorCode, ProntoError

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any

    from ._async.client import AsyncClient
    from ._sync.client import Client
    from ._types import MISSING, BrokerUnavailable, Claimed, ClaimInfo, KeyInfo, TxnResult

__all__ = [
    "AsyncClient",
    "BrokerUnavailable",
    "ClaimInfo",
    "Claimed",
    "Client",
    "ErrorCode",
    "KeyInfo",
    "MISSING",
    "ProntoError",
    "TxnResult",
]

_LAZY = {
    "AsyncClient": "._async.client",
    "Client": "._sync.client",
    "BrokerUnavailable": "._types",
    "Claimed": "._types",
    "ClaimInfo": "._types",
    "KeyInfo": "._types",
    "MISSING": "._types",
    "TxnResult": "._types",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
