"""``python -m prontodb.testing._serve FD serve ARGS...``: ``prontodb serve`` that shuts down
when the test process that started it is gone.

FD is the read end of a pipe whose write end only that process holds. The kernel closes it when
the process ends, however it ends (SIGKILL, a crash, ``os._exit``), and the broker then sends
itself SIGTERM and shuts down cleanly: a test run killed mid-way leaves no broker behind. A test
run that ends normally stops its brokers by pid before that.

Stdlib only before the CLI takes over, so a broker starts as fast as ``prontodb serve`` does.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _watch(fd: int) -> None:
    try:
        os.read(fd, 1)  # returns at EOF: nobody holds the write end any more
    finally:
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> None:
    """Watch the pipe on fd ``argv[0]`` in a thread, then run the CLI on the rest and exit with
    its status."""
    fd = int(argv[0])
    threading.Thread(target=_watch, args=(fd,), name="lifeline", daemon=True).start()
    from prontodb.clients.cli import main as cli

    sys.exit(cli(argv[1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
