"""A log that a misbehaving peer cannot flood: each kind of line (a peer's protocol error, a
failed login, a refused database, ...) is written at most ``burst`` times per ``window`` seconds;
the next line written after that says how many like it were held back.

Tracebacks stay for the broker's own bugs (``logger.exception``); what comes from outside, a
peer's fault or a refusal the broker already explained, is one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Kind:
    window_start: float
    written: int = 0
    held: int = 0


class QuietLog:
    """Rate-limited one-line logging onto ``logger``, per kind."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window: float = 60.0,
        burst: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.window = window
        self.burst = burst
        self.clock = clock
        self._kinds: dict[str, _Kind] = {}

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless lines of ``kind`` already used up this window."""
        if not self.logger.isEnabledFor(level):
            return
        now = self.clock()
        state = self._kinds.get(kind)
        if state is None or now - state.window_start >= self.window:
            held = 0 if state is None else state.held
            state = self._kinds[kind] = _Kind(now)
            if len(self._kinds) > 1024:  # kinds come from our code, but bound them anyway
                self._kinds = {kind: state}
            if held:
                message += " (%d more like it held back in the last %.0f s)"
                args = (*args, held, self.window)
        if state.written >= self.burst:
            state.held += 1
            return
        state.written += 1
        self.logger.log(level, message, *args)

    def info(self, kind: str, message: str, *args: object) -> None:
        self.log(logging.INFO, kind, message, *args)

    def warning(self, kind: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, kind, message, *args)

    def error(self, kind: str, message: str, *args: object) -> None:
        self.log(logging.ERROR, kind, message, *args)
