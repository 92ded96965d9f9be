"""The databases one broker serves: opened on first use, each with its durability waiters.

The group-commit writer reports from its own thread; :class:`OpenDatabase` carries those reports
into trio (``run_sync_soon``) and wakes the requests whose records are now durable.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import re
from pathlib import Path
from typing import Any

import trio

from prontodb.protocol import ErrorCode, ProntoError

from ..database import Database
from ..engine import Engine
from ..storage import StorageError, StorageOptions

logger = logging.getLogger("prontodb.server")

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_NAME = "default"
# Reads of a database that does not exist yet see this empty engine and create nothing.
EMPTY = Engine()


def validate_name(name: Any) -> str:
    """A cursor's database name, or bad_request saying what names look like."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ProntoError(
            ErrorCode.BAD_REQUEST,
            f"{name!r} is not a cursor name; use 1 to 64 letters, digits, '_' or '-'.",
        )
    return name


class OpenDatabase:
    """One open database, driven from the trio thread, with the tickets it is waiting on."""

    def __init__(self, name: str, directory: Path, token: trio.lowlevel.TrioToken) -> None:
        self.name = name
        self.directory = directory
        self._token = token
        self._durable = 0
        self._waiters: list[tuple[int, int, trio.Event]] = []
        self._order = itertools.count()
        self.failure: StorageError | None = None
        self.database: Database  # set by open(), before any request can see this object

    def open(self, options: StorageOptions) -> None:
        """Open the files (blocking: run it in a thread)."""
        self.database = Database.open(
            self.directory,
            options=options,
            on_durable=self._on_durable,
            on_error=self._on_error,
        )

    @property
    def engine(self) -> Engine:
        return self.database.engine

    # -- called from the writer thread -------------------------------------------------------

    def _on_durable(self, ticket: int) -> None:
        self._token.run_sync_soon(self._advance, ticket)

    def _on_error(self, error: StorageError) -> None:
        self._token.run_sync_soon(self._fail, error)

    # -- the trio side -----------------------------------------------------------------------

    def _advance(self, ticket: int) -> None:
        self._durable = max(self._durable, ticket)
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._durable:
            heapq.heappop(waiters)[2].set()

    def _fail(self, error: StorageError) -> None:
        logger.error("database %s: writes failed (%s); it will be reopened", self.name, error)
        self.failure = error
        for _, _, event in self._waiters:
            event.set()
        self._waiters.clear()

    def is_durable(self, ticket: int) -> bool:
        return ticket <= self._durable

    async def wait_durable(self, ticket: int) -> None:
        """Return once ``ticket`` is durable; raise ``unavailable`` if the writer failed."""
        if ticket > self._durable and self.failure is None:
            event = trio.Event()
            heapq.heappush(self._waiters, (ticket, next(self._order), event))
            await event.wait()
        if ticket > self._durable:
            raise ProntoError(
                ErrorCode.UNAVAILABLE,
                f"The broker could not write to the database {self.name!r} (see its log); the "
                "change may not have been kept. Retry: the database is reopened from what is on disk.",
            )


class Databases:
    """Every database of the data directory that a request has named, opened once each."""

    def __init__(self, data_dir: Path, options: StorageOptions) -> None:
        self.data_dir = data_dir
        self.options = options
        self._open: dict[str, OpenDatabase] = {}
        self._opening: dict[str, trio.Event] = {}

    def directory(self, name: str) -> Path:
        return self.data_dir / f"{name}.db"

    def opened(self) -> list[OpenDatabase]:
        return list(self._open.values())

    async def get(self, name: str, *, create: bool) -> OpenDatabase | None:
        """The open database ``name``, opening it if needed; None if it does not exist and
        ``create`` is false."""
        while True:
            db = self._open.get(name)
            if db is not None and db.failure is None:
                return db
            if db is not None:  # its writer failed: drop it, reopen from what is durable
                del self._open[name]
                await trio.to_thread.run_sync(_close_quietly, db)
                continue
            opening = self._opening.get(name)
            if opening is not None:
                await opening.wait()
                continue
            if not create and not self.directory(name).exists():
                return None
            return await self._open_new(name)

    async def _open_new(self, name: str) -> OpenDatabase:
        done = self._opening[name] = trio.Event()
        try:
            db = OpenDatabase(name, self.directory(name), trio.lowlevel.current_trio_token())
            try:
                await trio.to_thread.run_sync(db.open, self.options)
            except Exception as exc:
                logger.exception("could not open the database %s", name)
                raise ProntoError(
                    ErrorCode.UNAVAILABLE,
                    f"The database {name!r} could not be opened ({exc}); see the broker's log.",
                ) from exc
            logger.info("opened database %s at revision %d", name, db.engine.revision)
            self._open[name] = db
            return db
        finally:
            del self._opening[name]
            done.set()

    async def close_all(self) -> None:
        """Make every write durable and close the files."""
        databases, self._open = list(self._open.values()), {}
        for db in databases:
            await trio.to_thread.run_sync(_close_quietly, db)


def _close_quietly(db: OpenDatabase) -> None:
    try:
        db.database.close()
    except Exception:
        logger.exception("closing the database %s failed", db.name)
