"""A bare protocol client over trio sockets, for testing the server below the client library."""

from __future__ import annotations

import itertools
from typing import Any

import trio

from prontodb.protocol import (
    NEED_DATA,
    Connection,
    Event,
    Hello,
    Message,
    Request,
    Response,
    Role,
    Welcome,
)


class Wire:
    """One raw connection: send messages, read events, or ``call`` an op and get its Response."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = Connection(Role.CLIENT)
        self._ids = itertools.count(1)
        self.welcome: Welcome | None = None

    @classmethod
    async def open(cls, socket: str, user: str = "tester") -> Wire:
        wire = cls(await trio.open_unix_socket(socket))
        await wire.send(Hello(client="tests/1", user=user))
        event = await wire.next()
        assert isinstance(event, Welcome), event
        wire.welcome = event
        return wire

    async def send(self, *messages: Message) -> None:
        await self.stream.send_all(b"".join(self.conn.send(m) for m in messages))

    async def next(self) -> Event:
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.receive_some(65536))

    def request(self, op: str, **args: Any) -> Request:
        return Request(next(self._ids), op, args)

    async def call(self, op: str, **args: Any) -> Response:
        request = self.request(op, **args)
        await self.send(request)
        response = await self.next()
        assert isinstance(response, Response), response
        assert response.id == request.id, response
        return response

    async def result(self, op: str, **args: Any) -> Any:
        return (await self.call(op, **args)).raise_for_error()

    async def aclose(self) -> None:
        await self.stream.aclose()
