"""The broker's entry in its user's roster: how ``prontodb ps`` and ``stop --all`` find it.

One file per running broker in the roster directory (``ServerConfig.roster``, which the CLI
names: docs/CLI.md, "Your brokers"), ``broker-PID-NANOSECONDS.json``: a name no other broker will
ever take, so whoever removes an entry its broker left can never remove a live one. The broker holds an
exclusive ``flock`` on its entry for as long as it runs, so an entry whose lock is free is stale,
however its broker died (kill -9 too) and whatever process has its pid now; a clean stop deletes
it. The JSON inside: ``pid``, ``data_dir``, ``socket``, ``tcp``, ``started`` (epoch seconds),
``auto_started``, ``idle_exit`` (seconds or null) and ``version``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..storage import LockFile

logger = logging.getLogger("prontodb.server")


class RosterEntry:
    """This broker's entry, locked while it runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = LockFile(path, remove=True)

    @classmethod
    def enter(cls, directory: Path, record: Mapping[str, Any]) -> RosterEntry | None:
        """List the broker in ``directory`` (made 0700 if need be); None, with a warning, if it
        cannot be: the broker serves all the same, only ``ps`` will not show it."""
        entry = cls(directory / f"broker-{os.getpid()}-{time.time_ns()}.json")
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            holder = entry._file.try_acquire(record)
        except OSError as exc:
            logger.warning("not listed for `prontodb ps`: cannot write %s (%s)", entry.path, exc)
            return None
        if holder is not None:  # nobody else takes a name made of our pid and the time
            logger.warning("not listed for `prontodb ps`: %s is held by another", entry.path)
            return None
        return entry

    def leave(self) -> None:
        """Delete the entry (it goes before the lock does: ``ps`` never sees a live one free)."""
        self._file.release()
