"""The databases one broker serves: opened on first use, each with its durability waiters.

Each database's writes are flushed from the event loop, one batch per turn; :class:`OpenDatabase`
wakes the requests whose records are then durable.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import logging
import math
import os
import shutil
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

from prontodb.protocol import ErrorCode, ProntoError

from ..database import Database
from ..engine import Applied, Engine, EngineCounters, EngineLimits
from ..storage import (
    CorruptionError,
    DirectoryLock,
    DirectoryLocked,
    StorageError,
    StorageOptions,
    WriteObserver,
)
from ._catalog import CATALOG_FILE, Catalog
from ._claim_waiters import ClaimWaiters
from ._quiet_log import QuietLog
from ._recipe_waiters import RecipeWaiters
from ._stats import Stats

logger = logging.getLogger("prontodb.server")
T = TypeVar("T")

# Seconds a write (and its fsync) may take on the event loop; past it, the database's writes move
# to a thread. Disks measured here fsync in 0.1-1 ms; a spinning disk's 5-15 ms stays on the loop.
SLOW_WRITE = 0.020
COMPACTION_CHECK_EVERY = 16  # writes between two looks at whether a database should compact
_PATHS_KEPT = 4096  # directory Paths cached by their text (a bound: names are the clients')
# Reads of a database that does not exist yet see this empty engine and create nothing.
EMPTY = Engine()


class FanOutCache:
    """Watch pushes already encoded, by (flavour, prefix, start revision), valid while the
    durable revision is ``durable``: the watchers of one fan-out share them (see
    _watches.encoded; the flavour is the encoding: msgpack, or the dashboard's events)."""

    __slots__ = ("durable", "entries")

    def __init__(self) -> None:
        self.durable = -1
        self.entries: dict[tuple[str, str, int], tuple[list[tuple[bytes, int]], int]] = {}


class WatchPosition:
    """How far one running watch has been sent: what the metrics' watcher lag reads.

    ``next_rev`` is the first revision the watcher has not been sent yet; it moves as each push
    is handed to the socket, so a reader that does not keep up stays behind the durable head."""

    __slots__ = ("next_rev", "prefix", "user")

    def __init__(self, user: str, prefix: str, next_rev: int) -> None:
        self.user = user
        self.prefix = prefix
        self.next_rev = next_rev


class OpenDatabase:
    """One open database, driven from the trio thread, with the requests waiting on its disk.

    Its writer has no thread of its own: :meth:`flush_loop` writes what the requests of one turn of
    the event loop submitted as one batch (one write, one fsync under ``always``), as Redis does
    with ``appendfsync always``. The loop blocks for that fsync; in exchange no write pays for two
    thread hand-offs, which cost more than the fsync on the disks we measured.
    """

    def __init__(self, name: str, directory: Path, quiet: QuietLog) -> None:
        self.name = name
        self.directory = directory
        self.quiet = quiet
        self._durable = 0
        # (ticket, order, callback): called once the ticket is durable or the writer failed. The
        # answers waiting on the disk, sent from the flush that made them so.
        self._on_durable: list[tuple[int, int, Callable[[], None]]] = []
        # Watchers see a change once it is durable: the revision each pending ticket makes so.
        self.durable_rev = 0
        self.watching: set[WatchPosition] = set()  # watches streaming from this database now
        self.writes_unchecked = 0  # writes since the broker last asked about compaction
        self.fanout = FanOutCache()
        self.replaced_at: int | None = None  # restored from a backup: the new revision
        self.retired = False  # closed: a new object serves the directory from now on
        # Set while a restore replaces it: its watchers wait to hear how that ended.
        self.replacing: trio.Event | None = None
        self._pending_revs: deque[tuple[int, int]] = deque()  # (ticket, revision), in order
        self._revision_moved = trio.Event()
        self._order = itertools.count()
        self._has_pending = trio.Event()
        self._flusher = trio.CancelScope()
        self._sweeper = trio.CancelScope()
        # A slow disk: writes slower than slow_write go to a thread (see _write_pending), so
        # that this database's fsync stalls its own requests only, not every connection's.
        self.slow_write = SLOW_WRITE
        self._in_thread = False
        self._writing: trio.Event | None = None  # set once a write in a thread returns
        self._reschedule = trio.Event()  # the sweeper's next deadline may have moved earlier
        self.waiters = ClaimWaiters()
        self.recipe_waiters = RecipeWaiters()
        self._sweep_at: float | None = None
        self.failure: StorageError | None = None
        self.compaction_done: trio.Event | None = None  # set once the latest compaction ended
        self.database: Database  # set by open(), before any request can see this object

    def open(
        self, options: StorageOptions, limits: EngineLimits, observer: WriteObserver | None = None
    ) -> None:
        """Open the files, which locks the directory until they are closed (blocking: run it in
        a thread); a directory another broker holds is refused (DirectoryLocked). ``observer``
        hears of each fsync and group commit (the broker's metrics)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.database = Database.open(
            self.directory,
            options=options,
            limits=limits,
            threaded_writer=False,
            observer=observer,
        )
        self.durable_rev = self.engine.revision

    @property
    def engine(self) -> Engine:
        return self.database.engine

    @property
    def watchers(self) -> int:
        """The watches streaming from this database now."""
        return len(self.watching)

    def submit(self, applied: Applied[Any]) -> int:
        """Queue ``applied``'s records for the next flush; the ticket to wait for."""
        ticket = self.database.submit(applied)
        if applied.records:
            self._has_pending.set()
        if applied.changes:
            self._pending_revs.append((ticket, applied.changes[-1].revision))
            self.recipe_waiters.changed(self.engine, applied.changes, ticket)
        return ticket

    def expire_due(self, now: float) -> None:
        """Remove the keys past their deadline at ``now`` and return the claims whose lease ran
        out (logged changes, queued for the flush); serve waiting claimers if work came back."""
        due = self.engine.next_timer()
        if due is None or due > now:
            return  # the common case, checked first: every request of the database comes here
        self.submit(self.engine.expire_due(now))
        returned = self.engine.claims_due(now)
        self.submit(returned)
        if returned.result:
            self.serve_waiters(now)

    def serve_waiters(self, now: float) -> None:
        """Hand claimable items to waiting claimers, first come, first served."""
        if not self.waiters:
            return
        try:
            self.waiters.serve(self.engine, now, self.submit)
        except Exception as exc:
            # Called after another request's change was applied: that request must still get
            # its answer. A failure here is a bug; reopen the database from what is durable.
            logger.exception("database %s: serving waiting claimers failed", self.name)
            self._fail(StorageError(f"serving waiting claimers failed: {exc}"))
            return
        self.deadlines_changed()  # the leases of the claims just made

    def give_back(self, key: str, token: int, writer: str, now: float) -> bool:
        """Release a claim nobody will work on (its claimer went, or gave up), so the item is
        not stuck; False if that claim had ended already."""
        try:
            applied = self.engine.release(key, token, writer=writer, now=now)
        except ProntoError:
            return False  # acked, returned, its item gone, or its lease ran out and it moved on
        self.submit(applied)
        self.serve_waiters(now)
        return True

    def deadlines_changed(self) -> None:
        """A write may have set an earlier deadline than the one the sweeper sleeps until."""
        next_timer = self.engine.next_timer()
        if next_timer is not None and (self._sweep_at is None or next_timer < self._sweep_at):
            self._reschedule.set()

    async def sweep_loop(self, clock: Callable[[], float]) -> None:
        """Expire keys and leases when their deadlines come, with one timer at the earliest (no
        task per key, no polling), so that watchers hear of an expiry even when nobody asks."""
        with self._sweeper:
            while True:
                self._sweep_at = self.engine.next_timer()
                delay = math.inf if self._sweep_at is None else self._sweep_at - clock()
                with trio.move_on_after(max(delay, 0.0)):
                    await self._reschedule.wait()
                self._reschedule = trio.Event()
                self._sweep_at = None
                try:
                    self.expire_due(clock())
                except StorageError as exc:
                    self._fail(exc)  # the database is reopened on its next use
                    return
                except Exception as exc:  # a bug: never let it take the broker down
                    logger.exception("database %s: the sweeper failed", self.name)
                    self._fail(StorageError(f"the sweeper failed: {exc}"))
                    return

    def wake(self) -> None:
        """Something was queued behind the engine's back (a compaction's roll marker)."""
        self._has_pending.set()

    async def flush_loop(self) -> None:
        """Write each turn's records as one batch, and sync on time under ``interval``."""
        writer = self.database.writer
        with self._flusher:
            while True:
                due = writer.sync_due_at()
                if due is None:  # no timer to keep (fsync always): no cancel scope to pay for
                    await self._has_pending.wait()
                else:
                    with trio.move_on_after(due - time.monotonic()):
                        await self._has_pending.wait()
                self._has_pending = trio.Event()
                if trio.lowlevel.current_statistics().tasks_runnable:
                    # Let every task that is ready run first, so its writes join this batch.
                    await trio.lowlevel.checkpoint()
                try:
                    durable = await self._write_pending()
                except StorageError as exc:
                    self._fail(exc)
                    return
                self._advance(durable)

    async def _write_pending(self) -> int:
        """Write what is queued: from the event loop while the disk is fast (a hand-off to a
        thread would cost more than the fsync), in a thread once a write took longer than
        ``slow_write`` (then one slow database stalls its own requests, not the broker), and
        back on the loop once a write is fast again. A disk that stalls for good still stalls
        the broker once, on the write that finds it out."""
        if not self._in_thread:
            return self._write_on_loop()
        began = time.monotonic()
        done = self._writing = trio.Event()
        try:
            durable = await trio.to_thread.run_sync(self.database.writer.write_pending)
        finally:
            self._writing = None
            done.set()
        self._judge(time.monotonic() - began)
        return durable

    def _write_on_loop(self) -> int:
        began = time.monotonic()
        durable = self.database.writer.write_pending()
        self._judge(time.monotonic() - began)
        return durable

    def _judge(self, took: float) -> None:
        """Where the next writes go, given that the last one took ``took`` seconds."""
        if took > self.slow_write and not self._in_thread:
            self._in_thread = True
            self.quiet.warning(
                f"slow:{self.directory}",
                "database %s: a write took %.0f ms; its writes go to a thread until one is fast "
                "again, so that the other databases are not held up",
                self.name,
                took * 1000,
            )
        elif took <= self.slow_write / 2 and self._in_thread:
            self._in_thread = False

    async def writes_done(self) -> None:
        """Return once no write of this database runs in a thread (before its files close)."""
        if self._writing is not None:
            await self._writing.wait()

    def flush_if_alone(self, input_waiting: Callable[[], bool]) -> None:
        """Write what is queued now if nothing could join the batch: no task but the flush loop
        (woken by the submit) is ready to run, and no client has sent bytes not yet read
        (``input_waiting``, see _pending_input). The flush loop's pass through the event loop
        would then only delay the answers."""
        if (
            self._has_pending.is_set()
            and not self.retired
            and self.failure is None
            and not self._in_thread
            # The one-syscall question first: with many clients input is mostly waiting, and
            # trio's statistics walk every registered socket (~4 µs a set at 50 clients).
            and not input_waiting()
            and trio.lowlevel.current_statistics().tasks_runnable <= 1
        ):
            self.flush_now()

    def flush_now(self) -> None:
        """Write what is queued now, from the event loop (if alone, at shutdown before the loop
        stops, and at a close once no write runs in a thread)."""
        if self.failure is not None or self._writing is not None:
            return  # a write in a thread runs: the batch after it is the flush loop's
        try:
            self._advance(self._write_on_loop())
        except StorageError as exc:
            self._fail(exc)

    def stop_flushing(self) -> None:
        """End :meth:`flush_loop` and :meth:`sweep_loop`; what is still queued is written by
        ``database.close()``."""
        self._flusher.cancel()
        self._sweeper.cancel()

    def _advance(self, ticket: int) -> None:
        self._durable = max(self._durable, ticket)
        callbacks = self._on_durable
        due = []
        while callbacks and callbacks[0][0] <= self._durable:
            due.append(heapq.heappop(callbacks))
        # What one flush frees goes out in the order it was queued, not by ticket: a blocked
        # claim, queued when the write that serves it ran, is answered before that write.
        due.sort(key=lambda entry: entry[1])
        for _, _, callback in due:
            self._call(callback)
        pending = self._pending_revs
        if pending and pending[0][0] <= self._durable:
            while pending and pending[0][0] <= self._durable:
                self.durable_rev = pending.popleft()[1]
            self._wake_watchers()

    def replaced(self, revision: int) -> None:
        """This object's database was replaced (restored from a backup, or deleted) and will
        be reopened as a new object: its watchers must re-read, from ``revision``."""
        self.replaced_at = revision
        self._wake_watchers()

    def retire(self, closed_cleanly: bool) -> None:
        """This object serves no more (its files are closed): settle everyone waiting on it.

        A clean close wrote everything submitted, so every ticket is durable; otherwise the
        waiting answers fail with ``unavailable``. Waiting claimers wake with nothing, and go
        wait on the database's next object; watchers end (and resume on it, or re-read)."""
        self.retired = True
        if closed_cleanly and self.failure is None:
            self._advance(self.database.last_ticket)
        elif self.failure is None:
            self._fail(StorageError("the database was closed before its writes were durable"))
        self.waiters.wake_all()
        self.recipe_waiters.wake_all()
        self._wake_watchers()

    def _wake_watchers(self) -> None:
        self._revision_moved.set()
        self._revision_moved = trio.Event()

    async def wait_past(self, revision: int) -> None:
        """Return once a change after ``revision`` is durable (or the writer failed)."""
        while self.durable_rev <= revision and not self.retired and self.failure is None:
            await self._revision_moved.wait()

    def _fail(self, error: StorageError) -> None:
        self.quiet.error(
            f"failed:{self.directory}",
            "database %s: writes failed (%s); its requests are answered unavailable, and the "
            "next one reopens it from what is on disk",
            self.name,
            error,
        )
        self.failure = error
        callbacks, self._on_durable = self._on_durable, []
        for _, _, callback in sorted(callbacks):
            self._call(callback)
        self._wake_watchers()

    def _call(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:  # one answer's failure must not keep the others from going out
            logger.exception("database %s: a durability callback failed", self.name)

    def is_durable(self, ticket: int) -> bool:
        return ticket <= self._durable

    def settled(self, ticket: int) -> bool:
        """Whether an answer waiting for ``ticket`` can go: it is durable, or never will be."""
        return ticket <= self._durable or self.failure is not None

    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (from the event loop, no await) once :meth:`settled`: now if it
        already is, else from the flush that makes ``ticket`` durable or from the failure."""
        if self.settled(ticket):
            self._call(callback)
        else:
            heapq.heappush(self._on_durable, (ticket, next(self._order), callback))

    def unavailable(self) -> ProntoError:
        """The answer to a request whose change the failed writer could not make durable: the
        cause itself (``no space left on device`` and the file), not a pointer to the log."""
        cause = self.failure or "it was closed before the change was durable"
        return ProntoError(
            ErrorCode.UNAVAILABLE,
            f"The broker could not write to the database {self.name!r} ({cause}); the change "
            "may not have been kept. Retry once that is fixed: the database is reopened from "
            "what is on disk.",
        )

    async def wait_durable(self, ticket: int) -> None:
        """Return once ``ticket`` is durable; raise ``unavailable`` if the writer failed."""
        if not self.settled(ticket):
            event = trio.Event()
            self.when_durable(ticket, event.set)
            await event.wait()
        if ticket > self._durable:
            raise self.unavailable()


class Databases:
    """Every database of the data directory that a request has named, opened once each."""

    def __init__(
        self,
        data_dir: Path,
        options: StorageOptions,
        limits: EngineLimits,
        clock: Callable[[], float],
        quiet: QuietLog,
        stats: Stats | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.quiet = quiet
        self.stats = stats or Stats()  # fsyncs, group commits and compactions count here
        # What the engine of a database closed in this run had counted (claims, redeliveries,
        # ...), by directory: its next object goes on from there, so the counters of the
        # metrics never go back. One entry per database closed and not removed.
        self._counters: dict[Path, EngineCounters] = {}
        self.catalog = Catalog(data_dir / CATALOG_FILE)  # the broker loads the real one
        self.options = options
        self.limits = limits
        self.clock = clock  # the broker's: what deadlines are measured against
        self._open: dict[Path, OpenDatabase] = {}  # by directory
        # Every request names its database's directory: building and hashing a fresh Path for
        # it each time cost more than the rest of a small request's lookup.
        self._paths: dict[str, Path] = {}
        self._by_name: dict[str, Path] = {}  # an undefined cursor's name -> its directory
        self._opening: dict[Path, trio.Event] = {}
        # Databases refused as damaged, with what their directory looked like then: the same
        # refusal is given again, without re-reading the log, until a file there changes.
        self._refused: dict[Path, tuple[Fingerprint, str]] = {}
        # Set (and replaced) whenever a database opens or is restored: watchers of a database
        # that did not exist yet wait on it (see wait_for).
        self._appeared = trio.Event()
        # Where the databases' flush loops run; the broker sets it before it serves.
        self.flushers: trio.Nursery | None = None
        self.background: trio.Nursery | None = None  # compactions: they outlive every session

    def return_session(self, session: int, now: float) -> None:
        """A connection ended: its bound claims go back to their queues, and the sessions bound
        to it end (their keys deleted), in every database."""
        for db in list(self._open.values()):
            if db.failure is None:
                try:
                    returned = db.engine.return_bound(now, session)
                    if returned.records:
                        db.submit(returned)
                        db.serve_waiters(now)
                    ended = db.engine.end_bound_sessions(session, now=now)
                    if ended.records:
                        db.submit(ended)
                        db.deadlines_changed()
                except Exception:  # the other databases still get their claims back
                    logger.exception("database %s: returning session %d's claims", db.name, session)

    def directory(self, name: str) -> Path:
        """Where the database of an undefined cursor ``name`` lives."""
        path = self._by_name.get(name)  # no string to build per request
        if path is None:
            if len(self._by_name) >= _PATHS_KEPT:
                self._by_name.clear()
            path = self._by_name[name] = self._path(f"{self.data_dir}/{name}.db")
        return path

    def locate(self, name: str, user: str) -> Path:
        """The directory cursor ``name`` means for ``user``: its definition's, else the default."""
        cursor = self.catalog.lookup(user, name)
        return self.directory(name) if cursor is None else self._path(cursor.path)

    def _path(self, text: str) -> Path:
        path = self._paths.get(text)
        if path is None:
            if len(self._paths) >= _PATHS_KEPT:
                self._paths.clear()
            path = self._paths[text] = Path(text)
        return path

    def opened(self) -> list[OpenDatabase]:
        return list(self._open.values())

    def open_at(self, directory: Path) -> OpenDatabase | None:
        """The database open at ``directory``, if one is."""
        return self._open.get(directory)

    def open_now(self, name: str, user: str) -> OpenDatabase | None:
        """:meth:`get`'s answer when it needs no wait: the database cursor ``name`` means for
        ``user``, if it is open and its writer has not failed; else None (then ``get``)."""
        db = self._open.get(self.locate(name, user))
        return db if db is not None and db.failure is None else None

    async def get(self, name: str, *, create: bool, user: str = "") -> OpenDatabase | None:
        """The database cursor ``name`` means for ``user``, opening it if needed; None if it
        does not exist and ``create`` is false. Two cursors bound to one directory share it."""
        return await self.at(name, self.locate(name, user), create=create)

    async def at(self, name: str, directory: Path, *, create: bool) -> OpenDatabase | None:
        """The database in ``directory`` (called ``name`` in logs), as :meth:`get` has it."""
        while True:
            db = self._open.get(directory)
            if db is not None and db.failure is None:
                return db
            if db is not None:  # its writer failed: drop it, reopen from what is durable
                # Exclusive: the requests that come while it closes wait, rather than open the
                # directory a second time beside it.
                async with self._exclusive(directory):
                    if self._open.get(directory) is db:
                        await self.close(db)
                continue
            opening = self._opening.get(directory)
            if opening is not None:
                await opening.wait()
                continue
            # One stat of a local directory: cheaper than a hop to a thread.
            if not create and not directory.exists():  # noqa: ASYNC240
                return None
            refused = self._refused.get(directory)
            if refused is not None:
                if refused[0] == fingerprint(directory):
                    raise ProntoError(ErrorCode.UNAVAILABLE, refused[1])
                del self._refused[directory]  # something changed there: try again
            return await self._open_new(name, directory)

    async def wait_for(self, name: str, user: str) -> OpenDatabase:
        """The database cursor ``name`` means for ``user``, once it exists: a watch names one
        before its first write, and must not create it (a read creates no state, least of all
        for a user who may only read)."""
        while True:
            appeared = self._appeared
            db = await self.get(name, create=False, user=user)
            if db is not None:
                return db
            await appeared.wait()

    def _announce(self) -> None:
        self._appeared.set()
        self._appeared = trio.Event()

    async def close(self, db: OpenDatabase) -> None:
        """Stop serving ``db``, close its files (what is queued is written first) and settle
        whatever waits on it (:meth:`OpenDatabase.retire`)."""
        if self._open.get(db.directory) is db:
            del self._open[db.directory]
            self._counters[db.directory] = db.engine.counters
        # Shielded: a close cut short would leave the files (and the directory's lock) held by
        # an object nobody serves, and the next open would find it "open in another broker".
        with trio.CancelScope(shield=True):
            db.stop_flushing()
            await db.writes_done()  # the writer is not the thread's to share
            # What was queued behind that write (a compaction's roll marker among it) is
            # written now: the compaction waits for its marker before it can end.
            db.flush_now()
            if db.compaction_done is not None:  # never two storages on one directory
                await db.compaction_done.wait()
            closed_cleanly = await trio.to_thread.run_sync(_close_quietly, db)
            db.retire(closed_cleanly)

    async def replace(self, name: str, directory: Path, build: Callable[[int], int]) -> int:
        """Swap the database in ``directory`` for what ``build(above)`` writes there (in a
        thread; the build holds the directory's lock, as restore_into does; ``above`` is the old
        revision, 0 if none was open). Requests for it wait meanwhile; its watchers are told.
        The new revision."""
        async with self._exclusive(directory):
            old = self._open.get(directory)
            above = 0
            if old is not None:
                above = old.engine.revision
                old.replacing = trio.Event()
                await self.close(old)
            try:
                revision = await trio.to_thread.run_sync(_locked, directory, build, above)
                logger.info("database %s at %s restored: revision %d", name, directory, revision)
                if old is not None:
                    old.replaced(revision)
                self._announce()
                return revision
            finally:
                if old is not None and old.replacing is not None:
                    old.replacing.set()

    async def remove(self, directory: Path, check: Callable[[Path], None]) -> None:
        """Delete the database in ``directory`` once ``check(directory)`` (in a thread) has not
        refused; requests for it wait meanwhile, and its watchers are told to re-read."""
        async with self._exclusive(directory):
            await trio.to_thread.run_sync(check, directory)
            old = self._open.get(directory)
            if old is not None:
                await self.close(old)
                old.replaced(0)
            await trio.to_thread.run_sync(_locked, directory, lambda _: _purge(directory), 0)
            self._counters.pop(directory, None)  # gone: a database made there starts anew

    @asynccontextmanager
    async def _exclusive(self, directory: Path) -> AsyncIterator[None]:
        """Keep every request for ``directory`` waiting (as an opening does) for the block."""
        while (opening := self._opening.get(directory)) is not None:
            await opening.wait()
        done = self._opening[directory] = trio.Event()
        try:
            yield
        finally:
            del self._opening[directory]
            done.set()

    async def _open_new(self, name: str, directory: Path) -> OpenDatabase:
        done = self._opening[directory] = trio.Event()
        try:
            assert self.flushers is not None, "the broker sets Databases.flushers first"
            db = OpenDatabase(name, directory, self.quiet)
            try:
                await trio.to_thread.run_sync(db.open, self.options, self.limits, self.stats)
            except (StorageError, OSError) as exc:
                # Damage or a failing disk, which the message names: one line, not a traceback.
                error = ProntoError(
                    ErrorCode.UNAVAILABLE,
                    f"The database {name!r} could not be opened: {exc}",
                )
                self.quiet.error(f"open:{directory}", "database %s refused: %s", name, exc)
                if isinstance(exc, CorruptionError):
                    self._refused[directory] = (fingerprint(directory), error.message)
                raise error from exc
            except Exception as exc:
                logger.exception("could not open the database %s", name)  # a bug of ours
                raise ProntoError(
                    ErrorCode.UNAVAILABLE,
                    f"The database {name!r} could not be opened ({exc}); see the broker's log.",
                ) from exc
            self.quiet.info(  # a database reopened after each failed write: rate-limited
                f"opened:{directory}", "opened database %s at revision %d", name, db.engine.revision
            )
            # What was just loaded lives as long as the database: keep it out of the collector's
            # full passes, which otherwise scan every entry (15 ms pauses at 100k objects).
            gc.freeze()
            counters = self._counters.pop(directory, None)
            if counters is not None:
                db.engine.counters = counters
            self.flushers.start_soon(db.flush_loop)
            self.flushers.start_soon(db.sweep_loop, self.clock)
            # Claims bound to a connection end with it, and none of those outlived the last broker.
            returned = db.engine.return_bound(self.clock())
            if returned.records:
                db.submit(returned)
            self._open[directory] = db
            self._announce()
            return db
        finally:
            del self._opening[directory]
            done.set()

    def maybe_compact(self, db: OpenDatabase) -> None:
        """Start a compaction in a thread if the database wants one (asked every
        ``COMPACTION_CHECK_EVERY`` writes: the question costs more than a small write)."""
        db.writes_unchecked += 1
        if db.writes_unchecked < COMPACTION_CHECK_EVERY:
            return
        db.writes_unchecked = 0
        database = db.database
        if self.background is None or not database.wants_compaction:
            return
        finish = database.start_compaction()
        db.wake()  # the flush loop writes the roll marker the compaction waits for
        done = db.compaction_done = trio.Event()

        async def compact() -> None:
            began = time.monotonic()
            ok = False
            try:
                await trio.to_thread.run_sync(finish)
                ok = True
            except Exception:
                database.compaction_failed()
            else:
                logger.info("compacted database %s", db.name)
            finally:
                self.stats.compacted(ok, time.monotonic() - began)
                done.set()

        self.background.start_soon(compact)

    def flush_now(self) -> None:
        """Write every open database's queued records now."""
        for db in self._open.values():
            db.flush_now()

    async def close_all(self) -> None:
        """Make every write durable and close the files."""
        for db in list(self._open.values()):
            await self.close(db)


def _close_quietly(db: OpenDatabase) -> bool:
    """Close ``db``'s files; whether everything submitted was written."""
    try:
        db.database.close()
    except Exception:
        logger.exception("closing the database %s failed", db.name)
        return False
    return True


def _locked(directory: Path, build: Callable[[int], T], above: int) -> T:
    """``build(above)``, which holds ``directory``'s lock (made first if need be) while it
    changes the files; ``unavailable`` if another broker holds it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return build(above)
    except DirectoryLocked as exc:
        raise ProntoError(ErrorCode.UNAVAILABLE, f"Nothing was changed: {exc}") from None


def _purge(directory: Path) -> None:
    """Delete the database in ``directory``, which no broker may have open meanwhile."""
    with DirectoryLock(directory):
        shutil.rmtree(directory)


# What a directory's files looked like: (name, inode, size, mtime, ctime) of each, sorted.
Fingerprint = tuple[tuple[str, int, int, int, int], ...]


def fingerprint(directory: Path) -> Fingerprint:
    """The names, inodes, sizes and change times of the files in ``directory`` (one listing,
    cheap next to re-reading a log): any change to a file there changes it (a copy that keeps
    the old modification time still changes the inode or ctime)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return ()
    found = []
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        found.append((entry.name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(sorted(found))
