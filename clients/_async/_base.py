"""What the client's groups of operations share: the default cursor and the way to send a request.

The operations are grouped by concern (``_keys``, ``_claims``, ``_admin``), each a class over this
one; ``AsyncClient`` (``client``) is made of them all and provides what they rest on.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any


class ClientBase:
    """The attributes every group of operations uses; set by the client's constructor."""

    cursor: str  # the database operations act on unless told otherwise
    # The connection's own bound ``call``: an operation's request goes straight to it, through
    # no wrapper of the client's (its per-call overhead is measured in bench/).
    _call: Callable[[str, dict[str, Any]], Awaitable[Any]]

    def _args(self, cursor: str | None, **args: Any) -> dict[str, Any]:
        args["cursor"] = self.cursor if cursor is None else cursor
        return args
