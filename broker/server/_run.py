"""``prontodb serve``: logging, the ready signal, and the process's exit status."""

from __future__ import annotations

import gc
import json
import logging
import logging.handlers
import os
import sys
from pathlib import Path

import trio

from ._broker import Broker, BrokerInfo, CannotListen
from ._catalog import CatalogError
from ._config import ServerConfig
from ._lockfile import AlreadyServing

logger = logging.getLogger("prontodb.server")


async def serve(
    config: ServerConfig,
    *,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[BrokerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a broker until it is stopped (``nursery.start(serve, config)`` gives its addresses)."""
    await Broker(config).serve(handle_signals=handle_signals, task_status=task_status)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_MAX_BYTES = 10 << 20  # per log file; with the older ones kept, a log takes at most 4 times it
LOG_KEPT = 3  # rotated files kept: broker.log.1 (newest) .. broker.log.3


class LogFile(logging.handlers.RotatingFileHandler):
    """The broker's log file, rotated by size so that it can never fill the data disk. What else
    the process writes to stdout or stderr (a crash's last words) lands in the current file too,
    and counts toward its size."""

    def __init__(self, path: Path, max_bytes: int = LOG_MAX_BYTES) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=LOG_KEPT, encoding="utf-8")
        self._adopt_stdio()

    def doRollover(self) -> None:
        super().doRollover()
        self._adopt_stdio()

    def _adopt_stdio(self) -> None:
        if self.stream is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(self.stream.fileno(), 1)
            os.dup2(self.stream.fileno(), 2)


def setup_logging(log_file: Path | None, max_bytes: int = LOG_MAX_BYTES) -> None:
    """Log to ``log_file`` (rotated, see :class:`LogFile`), else to stderr; the level comes from
    $PRONTODB_LOG_LEVEL (INFO by default)."""
    handler: logging.Handler = (
        logging.StreamHandler(sys.stderr) if log_file is None else LogFile(log_file, max_bytes)
    )
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(
        level=os.environ.get("PRONTODB_LOG_LEVEL", "INFO").upper(), handlers=[handler]
    )


def run(
    config: ServerConfig,
    *,
    ready_fd: int | None = None,
    log_file: Path | None = None,
    log_max_bytes: int = LOG_MAX_BYTES,
) -> int:
    """Run a broker in the foreground; return the process's exit status.

    Once it listens, one JSON line ``{"pid", "socket", "tcp"}`` goes to ``ready_fd`` (then closed),
    which is how an auto-starting CLI or a test knows it may connect without polling. It logs to
    ``log_file`` (rotated at ``log_max_bytes``) if given, else to stderr.
    """
    setup_logging(log_file, log_max_bytes)

    # Full collections scan every live object, and a broker holds many: make them a hundred
    # times rarer than the default (young ones, which cost little, keep their pace).
    gc.set_threshold(700, 10, 1000)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(
                lambda task_status: serve(config, handle_signals=True, task_status=task_status)
            )
            if ready_fd is not None:
                _signal_ready(ready_fd, info)

    status = 0
    # trio may hand these back inside an exception group (a nursery's), hence except*.
    try:
        trio.run(main)
    except* (AlreadyServing, CannotListen, CatalogError) as refused:
        for exc in refused.exceptions:
            logger.error("%s", exc)
        status = 1
    except* OSError as failed:
        for error in failed.exceptions:
            logger.error("cannot serve: %s", error)
        status = 1
    return status


def _signal_ready(fd: int, info: BrokerInfo) -> None:
    try:
        os.write(fd, json.dumps(info.as_dict()).encode() + b"\n")
        os.close(fd)
    except OSError:
        pass  # whoever waited is gone; serve on
