"""The operations the broker serves, each declared once, next to its handler.

A declaration (:func:`op`) says everything the rest of the broker needs to know of an operation:
its name on the wire, its arguments, the permission it needs, whether it writes, where it runs,
and which client method and CLI command reach it. The session dispatches by it, checks
arguments and permissions by it, counts requests by it, and answers ``unknown_op`` for a name
it lacks; tests hold the clients, the CLI and docs/PROTOCOL.md to it (tests/test_op_registry.py).

Adding an operation: declare it with ``@op(...)`` on its handler in the module of its layer
(docs/ARCHITECTURE.md, "Adding an operation").
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from prontodb.protocol import ErrorCode, ProntoError

from ._access import Need, Rule, admin_everywhere
from ._args import Arg, Kind

F = TypeVar("F", bound=Callable[..., Any])


class Layer(enum.Enum):
    """Where an operation runs, which fixes its handler's signature."""

    # One database's engine: ``handler(engine, call) -> (result, applied)``, never awaits. The
    # session opens the database named by ``cursor`` and makes the change durable.
    DATABASE = "database"
    # The connection itself (a claim that blocks, a watch's stream, the cancels of either):
    # ``await handler(session, request)``, a method of the session.
    SESSION = "session"
    # The broker's catalog, files or process: ``await handler(context, user, args)``.
    BROKER = "broker"


# Every database and session operation takes the cursor that names its database.
CURSOR = Arg("cursor", Kind.CURSOR, doc="the database's cursor name (default: default)")


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One operation, as :func:`op` declared it."""

    name: str
    layer: Layer
    handler: Callable[..., Any]
    access: Rule
    args: tuple[Arg, ...]
    writes: bool  # it may change a database (or the catalog)
    creates: bool  # it makes a database that does not exist yet (``del`` writes, but not that)
    client: str | None  # the client method that sends it; None: the client sends it internally
    cli: str | None  # the CLI command that sends it ("cursor set"); None: none does
    summary: str

    def check_args(self, args: Mapping[str, Any]) -> None:
        """Raise ``bad_request`` unless ``args`` fit the declared arguments."""
        for arg in self.args:
            arg.check(args)


REGISTRY: dict[str, OpSpec] = {}


def op(
    name: str,
    layer: Layer,
    *,
    access: Rule,
    args: tuple[Arg, ...] = (),
    writes: bool = False,
    creates: bool = False,
    client: str | None = "",
    cli: str | None = "",
    cursor: bool = True,
    summary: str,
) -> Callable[[F], F]:
    """Declare the decorated function as the handler of operation ``name``. ``client`` and
    ``cli`` default to the operation's name (``_`` becomes ``-`` for the CLI). A database or
    session operation takes the ``cursor`` of its database first, unless ``cursor`` is False
    (it acts on the connection alone)."""

    def declare(handler: F) -> F:
        if name in REGISTRY:
            raise RuntimeError(f"the operation {name!r} is declared twice")
        # The cursor first: its name is checked before the rest, as it was before any lookup.
        declared = (CURSOR, *args) if cursor and layer is not Layer.BROKER else args
        REGISTRY[name] = OpSpec(
            name=name,
            layer=layer,
            handler=handler,
            access=access,
            args=declared,
            writes=writes,
            creates=creates,
            client=name if client == "" else client,
            cli=name.replace("_", "-") if cli == "" else cli,
            summary=summary,
        )
        return handler

    return declare


def unknown(name: str) -> ProntoError:
    """The answer to a request for an operation the registry lacks."""
    return ProntoError(
        ErrorCode.UNKNOWN_OP,
        f"The broker does not know the operation {name!r}; upgrade the broker or the client.",
    )


def needs(name: str, args: Mapping[str, Any], user: str, backups: str = "") -> list[Need]:
    """The permissions request ``name`` with ``args`` needs; an operation not known (yet) is
    an admin's."""
    spec = REGISTRY.get(name)
    access = admin_everywhere if spec is None else spec.access
    return access(args, user, backups)
