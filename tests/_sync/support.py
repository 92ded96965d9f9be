"""tests/_async/support.py's names for the sync client's tests: threads and blocking sockets.

The generated tests in this folder import these where their async originals import the async
ones; what a name does here is the nearest thing threads have to what it does there.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest

from prontodb.clients import Client, ErrorCode, ProntoError
from prontodb.protocol import (
    NEED_DATA,
    Connection,
    Event,
    Goodbye,
    Hello,
    Limits,
    Message,
    Request,
    Response,
    Role,
    Welcome,
)

T = TypeVar("T")


class TaskGroup:
    """Threads started with ``start_soon``, all joined when the ``with`` block ends; what they
    raised is raised then, as an ExceptionGroup (as from anyio's task group).

    If the block itself raises, the threads are not waited for (they may wait for an answer the
    block was to send): the test fails with the block's error, and closing the client (which the
    test's ``with`` does next) ends their calls.
    """

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._errors: list[Exception] = []

    def start_soon(self, call: Callable[..., object], *args: object) -> None:
        thread = threading.Thread(target=self._run, args=(call, args), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _run(self, call: Callable[..., object], args: tuple[object, ...]) -> None:
        try:
            call(*args)
        except Exception as exc:
            self._errors.append(exc)

    def __enter__(self) -> TaskGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            return
        for thread in self._threads:
            thread.join()
        if self._errors:
            raise ExceptionGroup("errors in the task group's threads", self._errors)


def create_task_group() -> TaskGroup:
    """Threads started with ``start_soon``, all joined when the ``with`` block ends."""
    return TaskGroup()


def run_blocking(call: Callable[[], T]) -> T:
    """``call()``: blocking is what this side does anyway."""
    return call()


def wait_all_tasks_blocked() -> None:
    """Nothing: a thread cannot be seen waiting. What the async test checks after this holds for
    the threads too, but here they may not yet have done all they would have."""


def expect_error(code: ErrorCode, call: Callable[[], object]) -> ProntoError:
    """The ProntoError ``call()`` raises, checked to have ``code``."""
    with pytest.raises(ProntoError) as info:
        call()
    assert info.value.code is code, info.value
    return info.value


class FakePeer:
    """The broker's end of one connection, driven step by step by the test's thread."""

    def __init__(self, sock: socket.socket, max_in_flight: int) -> None:
        self.sock = sock
        # Its Connection enforces max_in_flight: a client that sent more would fail the test.
        self.conn = Connection(Role.SERVER, Limits(max_in_flight=max_in_flight))

    def next_message(self) -> Event:
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            self.conn.receive_data(self.sock.recv(65536))

    def request(self) -> Request:
        message = self.next_message()
        assert isinstance(message, Request), message
        return message

    def send(self, message: Message) -> None:
        self.sock.sendall(self.conn.send(message))

    def answer(self, request: Request, result: Any = None) -> None:
        self.send(Response(request.id, None, result))

    def send_bytes(self, data: bytes) -> None:
        """Raw bytes, past the protocol (a cut frame, garbage)."""
        self.sock.sendall(data)

    def send_eof(self) -> None:
        """Hang up this side of the connection."""
        self.sock.shutdown(socket.SHUT_WR)


@contextmanager
def scripted(
    short_dir: Path, *, max_in_flight: int = 1024, hello: Goodbye | None = None
) -> Iterator[tuple[Client, FakePeer]]:
    """A client connected to a FakePeer, which answers the Hello with a Welcome (or ``hello``)."""
    path = str(short_dir / "fake.sock")
    peers: list[FakePeer] = []
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()

        def accept() -> None:
            peer = FakePeer(listener.accept()[0], max_in_flight)
            peers.append(peer)
            assert isinstance(peer.next_message(), Hello)
            peer.send(hello or Welcome("fake/1", 7, {"max_in_flight": max_in_flight}))

        try:
            with create_task_group() as group:
                group.start_soon(accept)
                client = Client.connect("unix://" + path, user="tester")  # refused: raised here
            with client:
                yield client, peers[0]
        finally:
            for peer in peers:
                peer.sock.close()
