"""What the async client's tests need that the sync client's do differently.

tests/_sync/support.py has the same names for threads and blocking sockets, and a test imports
them as ``from _async.support import ...``, which scripts/unasync.py turns into
``from _sync.support import ...`` in the test's sync copy. The scripted peer (``FakePeer``) is
the broker's end of a real Unix socket driven by the test, for what a real broker does too fast
to observe: answers held back, answers out of order, a Goodbye or a hang-up in the middle.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.to_thread
import pytest

from prontodb.clients import AsyncClient, ErrorCode, ProntoError
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

BACKENDS = ("trio", "asyncio")


def anyio_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Make an async test a plain one that runs it on each of anyio's event loops (``backend``:
    trio, asyncio), with the fixtures it names. The sync copy of a test has no such decorator.

    (pytest-trio, in trio mode here, would run an ``async def`` test on trio alone.)
    """
    signature = inspect.signature(test)

    @functools.wraps(test)
    def run(*, backend: str, **fixtures: Any) -> None:
        anyio.run(functools.partial(test, **fixtures), backend=backend)

    # pytest reads the fixtures a test wants from its signature: the test's, and ``backend``.
    extra = inspect.Parameter("backend", inspect.Parameter.KEYWORD_ONLY)
    parameters = [*signature.parameters.values(), extra]
    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    parametrized: Callable[..., None] = pytest.mark.parametrize("backend", BACKENDS)(run)
    return parametrized


def create_task_group() -> anyio.abc.TaskGroup:
    """Tasks started with ``start_soon``, all waited for when the ``async with`` block ends."""
    return anyio.create_task_group()


async def run_blocking(call: Callable[[], T]) -> T:
    """``call()``, which blocks (a process to wait for), in a worker thread: the loop runs on."""
    return await anyio.to_thread.run_sync(call)


async def wait_all_tasks_blocked() -> None:
    """Return once every other task waits: whatever they were going to send is sent."""
    await anyio.wait_all_tasks_blocked()


async def expect_error(code: ErrorCode, call: Callable[[], Awaitable[object]]) -> ProntoError:
    """The ProntoError ``call()`` raises, checked to have ``code``."""
    with pytest.raises(ProntoError) as info:
        await call()
    assert info.value.code is code, info.value
    return info.value


class FakePeer:
    """The broker's end of one connection, driven step by step by a test."""

    def __init__(self, stream: anyio.abc.SocketStream, max_in_flight: int) -> None:
        self.stream = stream
        # Its Connection enforces max_in_flight: a client that sent more would fail the test.
        self.conn = Connection(Role.SERVER, Limits(max_in_flight=max_in_flight))

    async def next_message(self) -> Event:
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            try:
                data = await self.stream.receive(65536)
            except anyio.EndOfStream:
                data = b""
            self.conn.receive_data(data)

    async def request(self) -> Request:
        message = await self.next_message()
        assert isinstance(message, Request), message
        return message

    async def send(self, message: Message) -> None:
        await self.stream.send(self.conn.send(message))

    async def answer(self, request: Request, result: Any = None) -> None:
        await self.send(Response(request.id, None, result))

    async def send_bytes(self, data: bytes) -> None:
        """Raw bytes, past the protocol (a cut frame, garbage)."""
        await self.stream.send(data)

    async def send_eof(self) -> None:
        """Hang up this side of the connection."""
        await self.stream.send_eof()


@asynccontextmanager
async def scripted(
    short_dir: Path, *, max_in_flight: int = 1024, hello: Goodbye | None = None
) -> AsyncIterator[tuple[AsyncClient, FakePeer]]:
    """A client connected to a FakePeer, which answers the Hello with a Welcome (or ``hello``)."""
    path = str(short_dir / "fake.sock")
    peers: list[FakePeer] = []
    refused: ProntoError | None = None
    async with await anyio.create_unix_listener(path) as listener:

        async def accept() -> None:
            peer = FakePeer(await listener.accept(), max_in_flight)
            peers.append(peer)
            assert isinstance(await peer.next_message(), Hello)
            limits = {"max_in_flight": max_in_flight}
            await peer.send(hello or Welcome("fake/1", 7, limits))

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(accept)
                try:
                    client = await AsyncClient.connect("unix://" + path, user="tester")
                except ProntoError as exc:
                    refused = exc  # raised below, outside the task group's exception group
            if refused is not None:
                raise refused
            async with client:
                yield client, peers[0]
        finally:
            for peer in peers:
                await peer.stream.aclose()
