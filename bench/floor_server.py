"""The floor under a durable hand-off in Python: a trio server that does only what one must do.

    python -m bench.floor_server --socket PATH --log FILE [--ready-fd N]

It speaks just enough RESP for bench/loadgen.py's ``RespQueueClient``: ``LPUSH key value...``
appends the values to ``--log``, fdatasyncs, hands the newest to a client blocked in ``BLPOP``
(before answering the pusher, as ProntoDB answers a served claim first) and keeps the rest;
``BLPOP key 0`` pops one or waits; ``PING`` answers. One list whatever the key, no other state,
nothing logged for a pop.

bench/claims.py runs it beside ProntoDB and Redis: its hand-off is what the same machine, the same
Python and trio, the same fsync and the same clients cost with no broker logic at all, so
ProntoDB's distance above it is ProntoDB's own code, and a latency target below it cannot be met
by any broker written this way on that machine.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
from collections import deque

import trio

_PONG = b"+PONG\r\n"


class Floor:
    """The list, the clients blocked on it, and the log file."""

    def __init__(self, log_fd: int) -> None:
        self.log_fd = log_fd
        self.items: deque[bytes] = deque()
        self.blocked: deque[int] = deque()  # fds of connections waiting in BLPOP, oldest first

    def forget(self, fd: int) -> None:
        """Connection ``fd`` closed: it waits for nothing any more."""
        if fd in self.blocked:
            self.blocked.remove(fd)

    def run(self, fd: int, command: list[bytes]) -> bytes | None:
        """The reply to ``command`` from connection ``fd`` (None: it waits in BLPOP)."""
        name = command[0].upper()
        if name == b"LPUSH" and len(command) >= 3:
            values = command[2:]
            os.write(self.log_fd, b"".join(b"%d:%s\n" % (len(v), v) for v in values))
            os.fdatasync(self.log_fd)
            self.items.extendleft(values)
            while self.blocked and self.items:
                _write(self.blocked.popleft(), _pop_reply(self.items.popleft()))
            return b":%d\r\n" % len(self.items)
        if name == b"BLPOP" and len(command) >= 3:
            if self.items:
                return _pop_reply(self.items.popleft())
            self.blocked.append(fd)
            return None
        if name == b"PING":
            return _PONG
        return b"-ERR the floor server knows only LPUSH, BLPOP and PING\r\n"


def _pop_reply(value: bytes) -> bytes:
    return b"*2\r\n$1\r\nq\r\n$%d\r\n%s\r\n" % (len(value), value)


def _write(fd: int, data: bytes) -> None:
    """Write a small reply whole (a client of this benchmark reads every reply it gets)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue  # never seen with replies this small; spinning is fine for a benchmark


def parse(buffer: bytearray) -> list[bytes] | None:
    """Cut one ``*N`` array of bulk strings off the front of ``buffer`` (None: not all there)."""
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    if buffer[:1] != b"*":
        raise ValueError(f"expected a RESP array, got {bytes(buffer[:20])!r}")
    count, at, parts = int(buffer[1:end]), end + 2, []
    for _ in range(count):
        end = buffer.find(b"\r\n", at)
        if end < 0:
            return None
        size = int(buffer[at + 1 : end])
        start, stop = end + 2, end + 2 + size
        if len(buffer) < stop + 2:
            return None
        parts.append(bytes(buffer[start:stop]))
        at = stop + 2
    del buffer[:at]
    return parts


async def serve_connection(floor: Floor, sock: trio.socket.SocketType) -> None:
    """Read commands and answer them, reading the socket directly as ProntoDB's broker does."""
    fd = sock.fileno()
    buffer = bytearray()
    try:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                    return
                raise
            if not data:
                return
            buffer += data
            while (command := parse(buffer)) is not None:
                reply = floor.run(fd, command)
                if reply is not None:
                    _write(fd, reply)
    finally:
        floor.forget(fd)
        sock.close()


async def main(path: str, log: str, ready_fd: int | None) -> None:
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    floor = Floor(log_fd)
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(64)
    if ready_fd is not None:
        os.write(ready_fd, json.dumps({"pid": os.getpid(), "socket": path}).encode() + b"\n")
        os.close(ready_fd)
    async with trio.open_nursery() as nursery:
        while True:
            sock, _ = await listener.accept()
            nursery.start_soon(serve_connection, floor, sock)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--ready-fd", type=int)
    args = parser.parse_args()
    trio.run(main, args.socket, args.log, args.ready_fd)
