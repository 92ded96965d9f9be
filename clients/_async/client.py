"""A ProntoDB client: one connection to a broker, shared by any number of concurrent callers.

``AsyncClient`` is made of its groups of operations (``_keys``, ``_claims``, ``_admin``) over the
connection that carries their requests (``_pipeline``). Like them it needs nothing but its
backend's sockets, locks and events, and scripts/unasync.py turns it into the sync client (threads
and blocking sockets instead of tasks and anyio) by substitution.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import TracebackType

from prontodb.protocol import Hello

from .. import _anyio_backend as backend
from .._locations import default_url
from .._types import BrokerUnavailable
from .._urls import parse_url, tls_context
from ._admin import AdminOperations
from ._claims import ClaimOperations
from ._keys import KeyOperations
from ._pipeline import Pipeline
from ._recipes import RecipeOperations
from .watch import Watch

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any


# With autostart: start a broker and connect, this many times before giving up.
_START_ROUNDS = 3


class AsyncClient(KeyOperations, ClaimOperations, RecipeOperations, AdminOperations):
    """A connection to a ProntoDB broker; its methods are the broker's operations.

    Open one with :meth:`connect` and close it with ``async with`` or :meth:`aclose`::

        async with AsyncClient.connect("unix:///run/prontodb.sock") as client:
            await client.set("project.status", "ready")

    Any number of callers may use one client at once: their requests are pipelined on the one
    connection and each gets its own answer. A call cancelled while it waits leaves the
    connection usable; its answer is dropped when it arrives (the operation may have been applied).
    A claim cancelled before its caller has the item tells the broker so (``cancel``): a waiting
    claim stops waiting, and an item already claimed for it goes back to its queue.

    Errors are :class:`~prontodb.protocol.ProntoError` with the broker's code (``compare_failed``,
    ``wrong_type``, ...). When the connection ends, the calls waiting on it and every later call
    raise ``unavailable`` (or the code of the broker's Goodbye).

    Attributes (set by :meth:`connect`, not to be changed): ``url``, ``user``, ``cursor`` (the
    database operations act on unless told otherwise), ``session`` (the broker's number for this
    connection) and ``server`` (the broker's name and version).
    """

    def __init__(self, pipeline: Pipeline, *, url: str, user: str, cursor: str) -> None:
        """Private: use :meth:`connect`."""
        self.url = url
        self.user = user
        self.cursor = cursor
        self.session = pipeline.welcome.session
        self.server = pipeline.welcome.server
        self._pipeline = pipeline
        self._call = pipeline.call
        # How connect() was called, for the connections of watches: token, timeout, name.
        self._again: tuple[str | None, float | None, str, str | None] = (
            None,
            10.0,
            "prontodb-python",
            None,
        )

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        url: str | None = None,
        *,
        user: str | None = None,
        token: str | None = None,
        cursor: str = "default",
        timeout: float | None = 10.0,
        name: str = "prontodb-python",
        ca_file: str | None = None,
        autostart: bool = False,
    ) -> backend.Connecting[AsyncClient]:
        """Connect to the broker at ``url`` and greet it; either form works::

            client = await AsyncClient.connect(url)
            async with AsyncClient.connect(url) as client:  # closed on leaving
                ...

        ``url`` is ``unix:///path/to/socket``, ``tcp://host:port`` or ``tcps://host:port`` (TLS)
        (None: ``$PRONTODB_URL``, else the default socket). ``user`` defaults to
        ``$PRONTODB_USER``, else the owner of the token, else the login name; ``token`` is the
        user's secret, if the broker wants one (None: ``$PRONTODB_TOKEN``). ``cursor`` is the
        database the client's operations act on by default. ``timeout`` bounds the connection
        and the greeting in seconds (None: wait as long as it takes). ``name`` tells the broker
        which program this is. ``ca_file`` (None: ``$PRONTODB_CA_FILE``, else the system's CAs)
        is what a ``tcps://`` broker's certificate is checked against.

        ``autostart=True`` does what the ``prontodb`` CLI does on the default socket (``url``
        None and no ``$PRONTODB_URL``): if no broker answers, it starts one in the background
        for the default data directory, which exits once idle. Off by default: a library should
        not leave a process behind unasked.

        Raises :class:`BrokerUnavailable` when nothing answers at ``url``, and ProntoError when
        the broker refuses the greeting (``unauthenticated``, ``protocol``) or hangs up (or,
        with ``autostart``, ``unavailable`` saying why no broker could be started).
        """
        start = autostart and url is None and not os.environ.get("PRONTODB_URL")
        if url is None:
            url = default_url()
        address = parse_url(url)
        guessed = user is None and not os.environ.get("PRONTODB_USER")
        if user is None:
            user = os.environ.get("PRONTODB_USER") or _login_name()
        if token is None:
            token = os.environ.get("PRONTODB_TOKEN") or None
        tls = None
        if address.scheme == "tcps":
            tls = tls_context(ca_file or os.environ.get("PRONTODB_CA_FILE") or None)
        # A guessed user gives way to the token's owner; the Welcome says whom we act for.
        hello = Hello(name, user, token, user_default=guessed and token is not None)

        async def opening() -> AsyncClient:
            rounds = 0
            while True:
                try:
                    pipeline = await Pipeline.open(address, url, hello, timeout, tls)
                    break
                except BrokerUnavailable:
                    # A broker that answered the start may begin to stop (its idle time up)
                    # before we connect: it refuses us before any request; start the next one.
                    rounds += 1
                    if not start or rounds > _START_ROUNDS:
                        raise
                # Imported here: its modules (socket, select) would slow every CLI start.
                from .._autostart import start_default_broker

                await backend.run_blocking(start_default_broker)
            client = cls(pipeline, url=url, user=pipeline.welcome.user or hello.user, cursor=cursor)
            client._again = (token, timeout, name, ca_file)
            return client

        return backend.Connecting(opening())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} user={self.user!r} cursor={self.cursor!r}>"

    async def aclose(self) -> None:
        """Say Goodbye and close the connection; closing twice does nothing.

        Calls still waiting, and any later call, raise ProntoError ``unavailable``.
        """
        await self._pipeline.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def statistics(self) -> dict[str, int]:
        """Counters for debugging: requests ``in_flight`` (sent, unanswered, ``abandoned`` ones
        included), callers ``queued`` for a slot, callers ``waiting`` for an answer, and
        ``max_in_flight``."""
        return self._pipeline.statistics()

    # -- operations (the others are in _keys, _claims and _admin) ----------------------------

    def watch(
        self,
        prefix: str = "",
        *,
        from_rev: int | None = None,
        cursor: str | None = None,
        reconnect: float = 30.0,
    ) -> Watch:
        """Every change under ``prefix`` (segment-aware; "" for all) from revision ``from_rev``
        (None: from now), as :class:`WatchEvent`::

            async with client.watch("jobs") as watch:
                async for event in watch:
                    print(event.rev, event.type, event.key, event.value)

        The watch runs on a connection of its own, opened with this client's URL, user and
        token. If that connection is lost, it connects again (for up to ``reconnect`` seconds)
        and resumes where it was, so no event is lost or repeated across a broker restart.
        """
        return Watch(
            self._connect_again,
            prefix,
            from_rev=from_rev,
            cursor=self.cursor if cursor is None else cursor,
            reconnect=reconnect,
        )

    async def _connect_again(self) -> Pipeline:
        """A connection of its own for a watch: as this client's, with the same URL and user."""
        token, timeout, name, ca_file = self._again
        client = await AsyncClient.connect(
            self.url,
            user=self.user,
            token=token,
            cursor=self.cursor,
            timeout=timeout,
            name=name,
            ca_file=ca_file,
        )
        return client._pipeline

    async def call(self, op: str, args: Mapping[str, Any]) -> Any:
        """Send the raw request ``op`` with ``args`` and return its result (no cursor added)."""
        return await self._call(op, dict(args))

    async def call_many(self, requests: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        """Send the raw requests ``(op, args)`` pipelined (no cursor added): many in one write,
        without waiting for each answer. Each one's result, or the ProntoError it failed with,
        in order; a failure does not stop the others (for all or nothing, use ``txn``)."""
        return await self._pipeline.call_many([(op, dict(args)) for op, args in requests])


def _login_name() -> str:
    import getpass  # only when no user is given, to keep the import light

    return getpass.getuser()
