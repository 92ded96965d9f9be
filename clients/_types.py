"""The values the clients return and the one error they add; stdlib and prontodb.protocol only.

The records are named tuples, as the protocol's messages are: immutable and slotted like frozen
dataclasses, without importing ``dataclasses`` (and ``inspect``) on the CLI's start-up path.
"""

from __future__ import annotations

import enum

from prontodb.protocol import ErrorCode, NamedTuple, ProntoError, Unavailable

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any, Final


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING
"""The default of ``if_value``: no value condition. (None cannot mean that: it is a value.)"""


class KeyInfo(NamedTuple):
    """A key's value and metadata, as ``get --meta`` shows them.

    ``create_rev`` is the revision that created the key, ``mod_rev`` the one that last wrote it,
    ``version`` the number of writes since creation, ``writer`` the user of the last write,
    ``time`` its time (seconds since the epoch, the broker's clock), ``size`` the bytes of the
    encoded value, ``expires`` its deadline (seconds since the epoch; None: no TTL),
    ``deliveries`` how many times ``claim`` handed it out, ``claim`` the claim holding it,
    ``session`` the session it is attached to, and its queue options: ``priority`` (0 most
    urgent), ``ready_at`` (not claimable before then, seconds since the epoch; None: now) and
    ``after`` (the keys it still waits for to go).
    """

    key: str
    value: Any
    create_rev: int
    mod_rev: int
    version: int
    writer: str
    time: float
    size: int
    expires: float | None = None
    deliveries: int = 0  # times it was handed out by claim
    claim: ClaimInfo | None = None  # the claim holding it now
    session: int | None = None  # the session it is attached to (it goes when that ends)
    priority: int = 100
    ready_at: float | None = None
    after: list[str] = []  # noqa: RUF012 (a named tuple's default, never mutated)


class TxnResult(NamedTuple):
    """The outcome of a transaction.

    When ``succeeded``, every operation was applied at ``revision`` and ``results`` holds one item
    per operation; otherwise nothing was applied, ``revision`` is the database's current one and
    ``failed`` lists the indexes of the compares that did not hold.
    """

    succeeded: bool
    revision: int
    results: list[Any]
    failed: list[int]


class BrokerUnavailable(Unavailable):
    """Nothing answers at the broker URL: no socket file, connection refused, or no answer in time.

    Raised by ``connect()``, code ``unavailable``. ``url`` is the address tried and ``reason``
    what went wrong there.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            ErrorCode.UNAVAILABLE,
            f"No broker answers at {url} ({reason}); start one with `prontodb serve`.",
            {"url": url},
        )
        self.url = url
        self.reason = reason


class Claimed(NamedTuple):
    """An item handed out by ``claim``: finish it with ``ack(key, token)``, give it back with
    ``release``, keep it longer with ``extend``. ``lease`` is its deadline (seconds since the
    epoch), ``deliveries`` how many times it has been handed out (1 the first time)."""

    key: str
    value: Any
    token: int
    lease: float
    deliveries: int


class WatchEvent(NamedTuple):
    """One change seen by a watch.

    ``type`` is ``put``, ``delete``, ``expire``, ``claim``, ``ack`` or ``release``; ``rev`` the
    revision of the change (the changes of one transaction share it); ``by`` the user who made it
    ("" for an expiry or a lease that ran out); ``time`` when (seconds since the epoch). For the
    types that leave the key in place (put, claim, release) ``value``, ``version``, ``create_rev``,
    ``mod_rev``, ``expires`` and ``session`` (the session it is attached to: a lock's member, a
    worker's registration) describe the key after the change; otherwise they are None.
    """

    rev: int
    type: str
    key: str
    value: Any
    by: str
    time: float
    version: int | None = None
    create_rev: int | None = None
    mod_rev: int | None = None
    expires: float | None = None
    session: int | None = None


class SessionInfo(NamedTuple):
    """A live session as ``sessions`` lists it: its ``id``, the user it was granted to, its
    ``ttl`` (seconds), its ``deadline`` (seconds since the epoch; None: the broker restarted and
    has not started its clock again yet) and how many ``keys`` are attached to it."""

    id: int
    owner: str
    ttl: float
    deadline: float | None
    keys: int


class ClaimInfo(NamedTuple):
    """A held claim as ``claims`` lists it; ``bound`` is the holding connection's session for a
    claim bound to it (None: held by its lease alone)."""

    key: str
    holder: str
    token: int
    lease: float
    bound: int | None


class SessionLost(ProntoError):
    """A session kept alive by ``keep_session`` (or a lock, semaphore, election or barrier
    built on one) could not be renewed: it ended, or the connection is gone, so its keys and
    what it held may belong to someone else now. Until that ``with`` block ends, every call of
    the client raises it (the sync client cannot interrupt the block; the async one cancels it
    at once), and the block's end raises it too. ``session`` is its id; the code is the failed
    renewal's."""

    def __init__(self, session: int, cause: BaseException) -> None:
        code = cause.code if isinstance(cause, ProntoError) else ErrorCode.UNAVAILABLE
        super().__init__(
            code,
            f"Session {session} was lost ({cause}); what it held may be someone else's now: "
            "stop the work it protected, and start again with a new session.",
            {"session": session},
        )
        self.session = session


class Member(NamedTuple):
    """A party of a lock, semaphore, election or barrier: its ``key`` (``NAME.<session>``),
    its ``token`` (the fencing token: pass it to fenced writes and to ``unlock``; an election's
    term), its ``session``, the user who joined (``writer``), its ``value`` and whether it
    holds now (``holding``; a barrier's members all hold once it opens)."""

    key: str
    token: int
    session: int
    writer: str
    value: Any
    holding: bool


class Recipe(NamedTuple):
    """A lock, semaphore, election or barrier as ``holders`` and ``locks`` list it: its name,
    its kind (``recipe``), its ``limit`` and its members in line, holders first."""

    name: str
    recipe: str
    limit: int
    members: list[Member]

    @property
    def holders(self) -> list[Member]:
        return [m for m in self.members if m.holding]


class QueueStats(NamedTuple):
    """One queue as ``queues`` and ``queue_show`` report it: how many of its items are
    ``ready``, ``claimed``, ``delayed`` (not yet due), ``waiting`` (for other keys to go) and
    ``dead`` (moved to ``dead.<key>``), how many deliveries beyond the first its items have had
    (``redeliveries``), the age in seconds of its oldest ready item (None: none ready), and its
    settings (``config``: ``lease``, ``max_deliveries``, ``backoff``; empty: the defaults)."""

    prefix: str
    ready: int
    claimed: int
    delayed: int
    waiting: int
    dead: int
    redeliveries: int
    oldest_ready_age: float | None
    config: dict[str, Any] = {}  # noqa: RUF012 (a named tuple's default, never mutated)

    @classmethod
    def from_map(
        cls, prefix: str, raw: dict[str, Any], config: dict[str, Any] | None = None
    ) -> QueueStats:
        """The stats of the wire's map."""
        return cls(
            prefix,
            raw["ready"],
            raw["claimed"],
            raw["delayed"],
            raw.get("waiting", 0),
            raw.get("dead", 0),
            raw.get("redeliveries", 0),
            raw.get("oldest_ready_age"),
            raw.get("config", config or {}),
        )
