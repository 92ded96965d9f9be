"""The broker: listeners, sessions, databases, and a clean shutdown.

Shutdown (SIGTERM, SIGINT or the ``stop`` op) goes in this order: stop accepting; stop reading
requests; answer the ones already read (each once durable) and say Goodbye, within a grace
period; close the databases (every write durable); remove the socket; release the data-dir lock.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket as stdlib_socket
import ssl
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import trio

from prontodb.protocol import LOOPBACK

from ..engine import EngineLimits, recipes
from ..storage import StorageOptions
from ._catalog import Catalog
from ._config import ServerConfig
from ._context import Context
from ._databases import Databases, OpenDatabase
from ._lockfile import AlreadyServing, DataDirLock
from ._pending_input import PendingInput
from ._quiet_log import QuietLog
from ._roster import RosterEntry
from ._session import Session
from ._sessions import Sessions
from ._snapshot import snapshot
from ._stats import Stats
from ._users import bootstrap

logger = logging.getLogger("prontodb.server")

# sun_path is 108 bytes on Linux, the terminating NUL included.
_MAX_SOCKET_PATH = 107
_LISTEN_BACKLOG = 1024
BACKUPS_DIR = "backups"  # in the data directory: the backups a cursor's admin may name


class CannotListen(Exception):
    """A listener could not be opened: the message names its address (``host:port``, or the
    socket's path) and says what to do."""


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """Where a started broker listens (``tcp`` and ``http`` with the port each actually got)."""

    pid: int
    socket: str | None
    tcp: str | None
    http: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "socket": self.socket, "tcp": self.tcp, "http": self.http}


class Broker:
    """One broker process's state. Run it with :meth:`serve`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.server_name = f"prontodb/{version('prontodb')}"
        options = StorageOptions(fsync=config.fsync)
        # The time every change records and every deadline is measured against: seconds since
        # the epoch. Tests put a clock driven by trio's in its place.
        self.clock: Callable[[], float] = time.time
        limits = EngineLimits(history=config.history)
        # What comes from outside (a peer's fault, a refused database) is logged rate-limited.
        self.quiet = QuietLog(logger)
        self.stats = Stats()  # what the metrics count as the broker serves
        self.databases = Databases(
            config.data_dir, options, limits, lambda: self.clock(), self.quiet, self.stats
        )
        self.started = time.time()
        self.info = BrokerInfo(os.getpid(), None, None)
        self.sessions: Sessions[Session] = Sessions()
        self.pending_input = PendingInput()  # the sessions' sockets: see flush_if_alone
        self._stop = trio.Event()
        self._sessions_scope = trio.CancelScope()  # replaced by the sessions nursery's
        self._socket_inode: tuple[int, int] | None = None  # of our socket file, to remove it
        self._http: list[trio.abc.Listener[Any]] = []  # serve --http's listeners, once open
        self._serving = False  # for /readyz: set once the sessions are served
        # What the operations and the sessions are handed: the parts, not the broker.
        self.context = Context(
            config=config,
            databases=self.databases,
            sessions=self.sessions,
            clock=lambda: self.clock(),
            quiet=self.quiet,
            pending_input=self.pending_input,
            server_name=self.server_name,
            # Where a cursor's admin may write and read backups of its cursor (PROTOCOL.md).
            backups=os.path.join(os.path.abspath(config.data_dir), BACKUPS_DIR),
            status=self.status,
            stats=self.stats,
            snapshot=self.snapshot,
            request_stop=self.request_stop,
            stopping=self._stop.is_set,
        )

    def request_stop(self) -> None:
        """Begin a clean shutdown (idempotent)."""
        self._stop.set()

    # -- serving -----------------------------------------------------------------------------

    async def serve(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[BrokerInfo] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and serve until stopped; ``task_status.started`` gets the :class:`BrokerInfo`."""
        config = self.config
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = DataDirLock(config.data_dir)
        lock.acquire(self._lock_record(None))
        opened: list[trio.SocketListener] = []  # closed on the way out, however it goes
        roster: RosterEntry | None = None
        served = False  # "stopped" is said only of a broker that said it was serving
        try:
            catalog = self.databases.catalog = Catalog.load(config.data_dir)
            catalog.on_change = self.sessions.recheck_waits
            await bootstrap(catalog, config.data_dir, self.context.clock)
            listeners, tcp_name = await self._open_listeners(opened)
            http_name = await self._open_http(opened)
            socket_name = None if config.socket_path is None else str(config.socket_path)
            self.info = BrokerInfo(os.getpid(), socket_name, tcp_name, http_name)
            lock.rewrite(self._lock_record(tcp_name))
            if config.roster is not None:
                roster = RosterEntry.enter(config.roster, self._roster_record())
            logger.info(
                "broker %d serving %s on %s%s%s (fsync %s)",
                self.info.pid,
                config.data_dir,
                socket_name or "-",
                f" and tcp {tcp_name}" if tcp_name else "",
                f", http {http_name}" if http_name else "",
                config.fsync.value,
            )
            served = True
            await self._run(listeners, handle_signals, task_status)
        finally:
            for listener in opened:
                listener.socket.close()  # closed already, unless serving never began
            with trio.CancelScope(shield=True):
                await self.databases.close_all()
            if config.socket_path is not None and self._socket_inode is not None:
                _remove_socket(config.socket_path, self._socket_inode)
            lock.release()
            if roster is not None:
                roster.leave()  # after the data directory is free: a broker ps lists holds it
            self.pending_input.close()
            if served:
                logger.info("broker %d stopped", self.info.pid)

    async def _open_listeners(
        self, opened: list[trio.SocketListener]
    ) -> tuple[list[Listening], str | None]:
        """The listeners the config names (each also put in ``opened``), and the TCP address
        bound (``host:port``, with the port port 0 got), or None."""
        config = self.config
        listeners: list[Listening] = []
        if config.socket_path is not None:
            unix, self._socket_inode = await _open_unix_listener(config.socket_path)
            opened.append(unix)
            # The socket's file mode is the trust boundary, unless told to want tokens.
            listeners.append(Listening(unix, config.require_auth))
        if config.tcp is None:
            return listeners, None
        host, port = config.tcp
        if config.tls is None and host not in LOOPBACK:
            logger.warning(
                "listening on TCP %s without TLS: tokens and data cross the network in "
                "clear; give --tls-cert and --tls-key",
                host,
            )
        tcp_listeners = await _open_tcp_listeners(host, port)
        opened.extend(tcp_listeners)
        bound = tcp_listeners[0].socket.getsockname()
        wrapped: list[trio.abc.Listener[Any]] = list(tcp_listeners)
        if config.tls is not None:
            context = _server_tls(*config.tls)
            wrapped = [trio.SSLListener(t, context) for t in tcp_listeners]
        listeners.extend(Listening(t, not config.insecure) for t in wrapped)
        return listeners, _host_port(bound[0], bound[1])

    async def _open_http(self, opened: list[trio.SocketListener]) -> str | None:
        """Open ``serve --http``'s listener (kept in ``_http``, and put in ``opened``); the
        address bound (``host:port``), or None without one. Off loopback it is TLS only."""
        if self.config.http is None:
            return None
        host, port = self.config.http
        tls = self.config.tls
        if host not in LOOPBACK and tls is None:
            raise CannotListen(
                f"Cannot listen for HTTP on {_host_port(host, port)}: off loopback the metrics "
                "listener needs TLS; give --tls-cert and --tls-key, or a loopback --http address "
                "(127.0.0.1:PORT)."
            )
        sockets = await _open_tcp_listeners(host, port, "--http")
        opened.extend(sockets)
        self._http = list(sockets)
        if tls is not None and host not in LOOPBACK:
            context = _server_tls(*tls)
            self._http = [trio.SSLListener(s, context) for s in sockets]
        bound = sockets[0].socket.getsockname()
        return _host_port(bound[0], bound[1])

    async def _serve_http(self, scope: trio.CancelScope) -> None:
        """Serve the HTTP listener until ``scope`` is cancelled (after the sessions ended, so
        that /readyz says the broker is stopping meanwhile)."""
        from ._web import (
            web_server,  # prometheus_client and h11: only for a broker that serves HTTP
        )

        assert self.config.http is not None
        off_loopback = self.config.http[0] not in LOOPBACK
        server = web_server(
            server_name=self.server_name,
            snapshot=self.snapshot,
            not_ready=self._not_ready,
            users=(lambda: self.databases.catalog.users) if off_loopback else None,
            databases=self.databases,
            stats=self.stats,
        )
        with scope:
            await server.serve(self._http)

    def _not_ready(self) -> str | None:
        """Why the broker does not serve requests now (/readyz), or None: it does."""
        if self._stop.is_set():
            return "the broker is stopping"
        if not self._serving:
            return "the broker is starting"
        for db in self.databases.opened():
            if db.failure is not None:
                return f"the database {db.name!r} cannot write ({db.failure})"
        return None

    async def _run(
        self,
        listeners: list[Listening],
        handle_signals: bool,
        task_status: trio.TaskStatus[BrokerInfo],
    ) -> None:
        async with trio.open_nursery() as outer:
            # The signal watcher lives until the very end, so that a second signal during the
            # grace period drops the connections instead of killing the process. It is started
            # (its handlers in place) before the broker says it listens: a SIGTERM sent on
            # seeing the ready line must stop it cleanly, not kill it.
            signals = trio.CancelScope()
            if handle_signals:
                await outer.start(self._watch_signals, signals)
            web = trio.CancelScope()
            if self._http:
                outer.start_soon(self._serve_http, web)
            async with trio.open_nursery() as background:  # compactions: outlive every session
                self.databases.background = background
                async with trio.open_nursery() as flushers:
                    self.databases.flushers = flushers
                    await self._serve_sessions(listeners, task_status)
                    # Every session has ended. Write what is queued (a compaction may wait for
                    # its roll marker) before the flush loops stop; close() writes anything later.
                    self.databases.flush_now()
                    flushers.cancel_scope.cancel()
            signals.cancel()
            web.cancel()

    async def _serve_sessions(
        self, listeners: list[Listening], task_status: trio.TaskStatus[BrokerInfo]
    ) -> None:
        async with trio.open_nursery() as sessions:
            self._sessions_scope = sessions.cancel_scope
            async with trio.open_nursery() as service:
                service.start_soon(self._accept, listeners, sessions)
                if self.config.idle_exit is not None:
                    service.start_soon(self._exit_when_idle, self.config.idle_exit)
                self._serving = True
                task_status.started(self.info)
                await self._stop.wait()
                logger.info("stopping: no new connections; finishing requests in flight")
                service.cancel_scope.cancel()
            await self._stop_listening(listeners)
            self.sessions.stop_reading()
            with trio.move_on_after(self.config.shutdown_grace) as grace:
                while self.sessions:
                    await self.sessions.wait_changed()
            if grace.cancelled_caught:
                logger.warning("%d connections did not finish in time", len(self.sessions))
            sessions.cancel_scope.cancel()

    async def _exit_when_idle(self, seconds: float) -> None:
        """Stop once no connection has been open for ``seconds`` (``serve --idle-exit``).

        A watch or a claim waiting for an item holds a connection, so it keeps the broker up. A
        client whose greeting comes once the stop has begun is told the broker is stopping
        (Goodbye, ``unavailable``) before any request, so a CLI starts the next broker instead
        of losing its command to this one's exit.
        """
        while True:
            while self.sessions:
                await self.sessions.wait_changed()
            with trio.move_on_after(seconds) as idle:
                await self.sessions.wait_changed()  # a connection came: start again
            if idle.cancelled_caught and not self.sessions:
                break
        logger.info("no connection for %g s: stopping (--idle-exit)", seconds)
        self.request_stop()

    async def _stop_listening(self, listeners: list[Listening]) -> None:
        """Close the listeners and remove the socket file now, not at exit: a client arriving
        during the grace period is refused at once (and a CLI waits for the data directory's
        lock, then starts the next broker) instead of being left in the listen queue."""
        for listening in listeners:
            await listening.listener.aclose()
        if self.config.socket_path is not None and self._socket_inode is not None:
            _remove_socket(self.config.socket_path, self._socket_inode)

    async def _accept(self, listeners: list[Listening], sessions: trio.Nursery) -> None:
        async with trio.open_nursery() as accepting:
            for authenticate in (False, True):
                group = [item.listener for item in listeners if item.authenticate == authenticate]
                if group:

                    async def handle(
                        stream: trio.abc.Stream, authenticate: bool = authenticate
                    ) -> None:
                        await self._session(stream, authenticate)

                    accepting.start_soon(
                        partial(trio.serve_listeners, handle, group, handler_nursery=sessions)
                    )

    async def _session(self, stream: trio.abc.Stream, authenticate: bool) -> None:
        session = Session(self.context, stream, self.sessions.next_number(), authenticate)
        self.sessions.add(session)
        try:
            await session.run()
        except Exception:
            # A bug in one connection must never take the broker down with it.
            logger.exception("session %d failed", session.number)
        finally:
            self.sessions.discard(session)

    async def _watch_signals(
        self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with scope, trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._stop.is_set():
                    logger.warning("second %s: dropping connections now", name)
                    self._sessions_scope.cancel()
                else:
                    logger.info("%s received", name)
                    self.request_stop()

    # -- what the broker says of itself ----------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``prontodb status`` shows."""
        now = time.time()
        return {
            **self.info.as_dict(),
            "version": self.server_name.partition("/")[2],
            "started": self.started,
            "uptime": now - self.started,
            "data_dir": str(self.config.data_dir),
            "fsync": self.config.fsync.value,
            "connections": len(self.sessions),
            "idle_exit": self.config.idle_exit,
            "auto_started": self.config.auto_started,
            "databases": [
                _database_status(db, self.context.clock()) for db in self.databases.opened()
            ],
            "requests": dict(self.context.requests),
        }

    def snapshot(self) -> dict[str, Any]:
        """The figures the ``stats`` op answers and ``/metrics`` shows (_snapshot.py)."""
        return snapshot(
            self.stats,
            self.databases.opened(),
            self.sessions.live(),
            self.context.clock(),
            time.time() - self.started,
        )

    def _roster_record(self) -> dict[str, Any]:
        """What the broker's roster entry says of it (_roster.py)."""
        return {
            **self.info.as_dict(),
            "data_dir": str(self.config.data_dir.absolute()),
            "started": self.started,
            "auto_started": self.config.auto_started,
            "idle_exit": self.config.idle_exit,
            "version": self.server_name.partition("/")[2],
        }

    def _lock_record(self, tcp: str | None) -> dict[str, Any]:
        socket = None if self.config.socket_path is None else str(self.config.socket_path)
        return {"pid": os.getpid(), "socket": socket, "tcp": tcp, "started": self.started}


@dataclass(frozen=True, slots=True)
class Listening:
    """A listener, and whether its connections must authenticate (then permissions apply)."""

    listener: trio.abc.Listener[Any]
    authenticate: bool


def _server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


STATUS_RECIPES = 100  # recipes a database's status lists (`locks` lists them all)


def _database_status(db: OpenDatabase, now: float) -> dict[str, Any]:
    stats = db.engine.statistics()
    writer = db.database.writer.statistics()
    return {
        "name": db.name,
        "path": str(db.directory),
        "revision": stats["revision"],
        "keys": stats["keys"],
        "files_bytes": db.database.storage.stats().total_bytes,
        # Group commit at work: records written and the fsyncs they took, since it opened.
        "records_written": writer.records,
        "fsyncs": writer.fsyncs,
        # Every prefix claimed from since the open: ready, claimed, delayed and dead items.
        "queues": db.engine.queues(now=now),
        "claimers": len(db.waiters),  # blocked claims waiting for an item
        "sessions": len(db.engine.sessions()),  # live sessions (docs/PROTOCOL.md, "Sessions")
        # Locks, semaphores, elections, barriers with members (the first STATUS_RECIPES by name).
        "recipes": {
            r.name: {
                "recipe": r.kind,
                "limit": r.limit,
                "holding": len(r.holders),
                "waiting": len(r.members) - len(r.holders),
            }
            for r in recipes.listing(db.engine)[:STATUS_RECIPES]
        },
        # Watches open on it now, and the oldest revision one may start from.
        "watchers": db.watchers,
        "history_first": stats["history_first"],
    }


def _host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:7400``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _open_tcp_listeners(
    host: str, port: int, option: str = "--tcp"
) -> list[trio.SocketListener]:
    """Listen on ``host:port`` (given as ``option``); CannotListen names the address when that
    fails."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        address = _host_port(host, port)
        if exc.errno == errno.EADDRINUSE:
            why = (
                "the address is in use (another broker or program listens there); stop it, "
                f"or pass another {option} port (port 0 picks a free one)"
            )
        else:
            why = f"{exc.strerror or exc}; check the {option} address"
        raise CannotListen(f"Cannot listen on TCP {address}: {why}.") from None


async def _open_unix_listener(path: Path) -> tuple[trio.SocketListener, tuple[int, int]]:
    """Bind ``path`` with mode 0600 in a 0700 directory; refuse one a live broker answers on."""
    try:
        _prepare_socket_path(path)
        sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            await sock.bind(str(path))
            # Before listen(), nobody can connect, so the mode is right before the first client.
            os.chmod(path, 0o600)
            sock.listen(_LISTEN_BACKLOG)
            st = os.stat(path)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise CannotListen(
            f"Cannot listen on the Unix socket {path}: {exc.strerror or exc}; pass another "
            "--socket (or set PRONTODB_SOCKET)."
        ) from None
    return trio.SocketListener(sock), (st.st_dev, st.st_ino)


def _prepare_socket_path(path: Path) -> None:
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        raise CannotListen(
            f"The socket path {path} is longer than the {_MAX_SOCKET_PATH} bytes a Unix socket "
            "allows; pass a shorter --socket (or set PRONTODB_SOCKET)."
        )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        # connect() to a regular file is refused just like a dead socket: never remove one.
        raise CannotListen(
            f"{path} exists and is not a socket; pass another --socket (or set "
            "PRONTODB_SOCKET), or remove it if nothing needs it."
        )
    if _answers(path):
        raise AlreadyServing(
            f"Something already listens on {path}; stop it (`prontodb stop`) or pass "
            "another --socket."
        )
    path.unlink()  # left behind by a broker that died


def _answers(path: Path) -> bool:
    probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    else:
        return True
    finally:
        probe.close()


def _remove_socket(path: Path, inode: tuple[int, int]) -> None:
    """Remove our socket file, unless another process has since put its own there."""
    try:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) == inode:
            path.unlink()
    except FileNotFoundError:
        pass
