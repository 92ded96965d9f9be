"""What the handlers of the broker's operations and its connections share: the narrow parts of
one broker, handed down, so that no module reaches back up into the broker that made them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._catalog import Catalog
from ._config import ServerConfig
from ._databases import Databases
from ._pending_input import PendingInput
from ._quiet_log import QuietLog
from ._rates import RateBuckets
from ._sessions import Sessions
from ._stats import Stats


@dataclass(frozen=True, slots=True)
class Context:
    """One broker's parts, as its operations and sessions see them."""

    config: ServerConfig
    databases: Databases
    sessions: Sessions[Any]
    # The time every change records and every deadline is measured against (epoch seconds).
    clock: Callable[[], float]
    quiet: QuietLog  # what comes from outside (a peer's fault, a refused database), rate-limited
    pending_input: PendingInput  # the sessions' sockets: see OpenDatabase.flush_if_alone
    server_name: str  # "prontodb/<version>", what the Welcome says
    backups: str  # DATA_DIR/backups, absolute: where a cursor's admin may write its backups
    status: Callable[[], dict[str, Any]]  # what `prontodb status` shows
    stats: Stats  # requests, fsyncs, group commits, compactions, overflows counted as they come
    snapshot: Callable[[], dict[str, Any]]  # what the `stats` op answers and /metrics shows
    request_stop: Callable[[], None]  # begin a clean shutdown
    stopping: Callable[[], bool]  # whether a shutdown has begun
    # Requests served since the start, by operation (the registry's names, and one name for
    # every unknown one: the keys stay bounded).
    requests: dict[str, int] = field(default_factory=dict)
    rates: RateBuckets = field(default_factory=lambda: RateBuckets())  # users' request rates

    @property
    def catalog(self) -> Catalog:
        return self.databases.catalog
