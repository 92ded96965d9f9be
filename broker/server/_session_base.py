"""What the parts of a session share: the connection's state that the dispatcher
(``_session.py``), its blocking claims (``_session_claims.py``) and its watches
(``_session_watches.py``) all read, and the checks every request goes through."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from prontodb.protocol import Connection, ProntoError, Request

from ._access import check
from ._claim_waiters import Waiter
from ._context import Context
from ._databases import OpenDatabase
from ._names import DEFAULT_NAME
from ._outbox import Outbox
from ._registry import needs


class SessionBase:
    """The state of one connection, set up by :class:`~._session.Session`."""

    ctx: Context
    number: int
    user: str
    # Whether this connection must prove its user with a token; then its requests are checked
    # against the user's grants.
    authenticate: bool
    conn: Connection
    outbox: Outbox
    _waits: trio.Nursery  # the tasks of blocked claims and watches; they end with the reading
    # request id -> its blocked claim's waiter, database and args (see _cancel, _end_wait)
    _claim_waits: dict[int, tuple[Waiter, OpenDatabase, dict[str, Any]]]
    # request id -> the database directory, key and token of a claim answer that went out
    _answered_claims: OrderedDict[int, tuple[Path, str, int]]
    # request id -> its running watch: the scope that ends it, the request's args and the
    # database directory its cursor named
    _watches: dict[int, tuple[trio.CancelScope, dict[str, Any], Path]]
    _refused: dict[int, ProntoError]  # waits ended by a revoke: their answers
    # request id -> a party waiting in a recipe's line: the scope that ends its wait, the
    # request's args and its database's directory
    _recipe_waits: dict[int, tuple[trio.CancelScope, dict[str, Any], Path]]

    @property
    def watch_count(self) -> int:
        """The watches running on this connection (a figure of the metrics)."""
        return len(self._watches)

    def _authorize(self, request: Request) -> None:
        """Raise ``denied`` unless this connection's user may make ``request`` now. Checked
        when it is read, and again after any wait before it takes effect (opening a database
        can take seconds): a revoke meanwhile must not let it through."""
        self._authorize_op(request.op, request.args)

    def _authorize_op(self, op: str, args: Mapping[str, Any]) -> None:
        """:meth:`_authorize` for operation ``op`` with ``args`` (a wait's, when grants change)."""
        if self.authenticate:
            ctx = self.ctx
            check(ctx.catalog.grants, self.user, needs(op, args, self.user, ctx.backups))

    def _stop_recipe_wait(self, request_id: int) -> bool:
        """End the wait of ``acquire`` request ``request_id`` (it answers nil, or the reason
        left in ``_refused``); False if it is not waiting."""
        running = self._recipe_waits.get(request_id)
        if running is None:
            return False
        running[0].cancel()
        return True

    def _cursor(self, request: Request) -> str:
        """The cursor a database operation names (checked by its declaration)."""
        name: str = request.args.get("cursor", DEFAULT_NAME)
        return name
