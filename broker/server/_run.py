"""``prontodb serve``: logging, the ready signal, and the process's exit status."""

from __future__ import annotations

import gc
import json
import logging
import os
import sys

import trio

from ._broker import Broker, BrokerInfo
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


def run(config: ServerConfig, *, ready_fd: int | None = None) -> int:
    """Run a broker in the foreground; return the process's exit status.

    Once it listens, one JSON line ``{"pid", "socket", "tcp"}`` goes to ``ready_fd`` (then closed),
    which is how an auto-starting CLI or a test knows it may connect without polling.
    """
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("PRONTODB_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

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
    except* (AlreadyServing, CatalogError) as refused:
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
