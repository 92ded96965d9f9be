"""bench/floor_server.py, the hand-off benchmark's floor: it must do a durable hand-off right, or
its figures say nothing."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from bench.floor_server import Floor, parse


def test_parse_cuts_whole_commands_and_waits_for_the_rest() -> None:
    buffer = bytearray(b"*3\r\n$5\r\nLPUSH\r\n$1\r\nq\r\n$3\r\nab")
    assert parse(buffer) is None  # the value is not all there
    buffer += b"c\r\n*1\r\n$4\r\nPING\r\n"
    assert parse(buffer) == [b"LPUSH", b"q", b"abc"]
    assert parse(buffer) == [b"PING"]
    assert parse(buffer) is None
    assert buffer == b""


def test_a_push_is_logged_then_handed_to_the_oldest_blocked_pop(tmp_path: Path) -> None:
    log = tmp_path / "floor.aof"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    try:
        floor = Floor(fd)
        assert floor.run(first.fileno(), [b"BLPOP", b"q", b"0"]) is None  # waits
        assert floor.run(second.fileno(), [b"BLPOP", b"q", b"0"]) is None
        assert floor.run(99, [b"LPUSH", b"q", b"item"]) == b":0\r\n"
        assert first_peer.recv(100) == b"*2\r\n$1\r\nq\r\n$4\r\nitem\r\n"
        assert log.read_bytes() == b"4:item\n"  # on disk before anyone heard of it
        floor.forget(second.fileno())  # gone: the next push is kept, not written to it
        assert floor.run(99, [b"LPUSH", b"q", b"next"]) == b":1\r\n"
        assert floor.run(99, [b"BLPOP", b"q", b"0"]) == b"*2\r\n$1\r\nq\r\n$4\r\nnext\r\n"
        assert floor.run(99, [b"PING"]) == b"+PONG\r\n"
        assert floor.run(99, [b"GET", b"q"]).startswith(b"-ERR")  # type: ignore[union-attr]
    finally:
        os.close(fd)
        for sock in (first, first_peer, second, second_peer):
            sock.close()
