"""Whether any client connection has bytes waiting to be read, asked without a pass through
the event loop.

A write is made durable once per batch. Waiting for the event loop's next pass gives requests
that are arriving meanwhile the chance to join the batch, which is what makes concurrent writers
cheap; but when nobody else has sent anything, that pass only delays the answers. The broker asks
this set, a second epoll of its own over every client socket (level-triggered, polled with a zero
timeout), and writes at once when nothing is waiting: what Redis does before its event loop sleeps.
"""

from __future__ import annotations

import select


class PendingInput:
    """The client sockets' readiness, for :meth:`waiting`. Where epoll is missing it knows
    nothing, and says input may be waiting (the broker then always waits for the next pass)."""

    def __init__(self) -> None:
        self._epoll = select.epoll() if hasattr(select, "epoll") else None

    def add(self, fd: int) -> None:
        """Watch socket ``fd`` (until :meth:`remove`, which must come before it is closed)."""
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN)

    def remove(self, fd: int) -> None:
        if self._epoll is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass  # never added, or the epoll is closed

    def waiting(self) -> bool:
        """Whether some watched socket has bytes (or its end) to read now."""
        if self._epoll is None or self._epoll.closed:
            return True
        return bool(self._epoll.poll(0, 1))

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
