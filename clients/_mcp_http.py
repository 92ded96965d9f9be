"""``prontodb mcp --http HOST:PORT``: the same MCP server (``_mcp_server.build``) over Streamable
HTTP, for hosts that reach their tools by URL rather than by starting a process.

The SDK's Streamable HTTP app (one MCP session per client, progress and resource updates on
server-sent events) served by uvicorn, which the SDK itself depends on. Who may talk to it:

- Every request must carry ``Authorization: Bearer TOKEN`` with the token of the ProntoDB user
  the server acts as (``$PRONTODB_TOKEN``): holding that user's credential is what lets a client
  act as that user, exactly as on the broker's own TCP listener. A server whose user has no
  token (a local user on the Unix socket) can only listen on loopback, with no bearer needed.
- Off loopback it also needs TLS (``--tls-cert``, ``--tls-key``). On loopback the SDK checks the
  ``Host`` and ``Origin`` headers, so that a web page cannot reach the server through DNS
  rebinding.
"""

from __future__ import annotations

import hmac
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from prontodb.protocol import LOOPBACK, split_host_port

from ._cli_commands import Globals
from ._mcp_resources import Subscriptions
from ._mcp_server import Broker, build

PATH = "/mcp"
# How long a stopping server waits for open requests and event streams before closing them.
GRACE = 3

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Listen:
    """Where and how ``--http`` listens: ``token`` is the bearer every request must carry (None:
    none, loopback only); ``tls`` the certificate chain and key."""

    host: str
    port: int
    token: str | None
    tls: tuple[Path, Path] | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{PATH}"


def listen(address: str, token: str | None, tls: tuple[Path, Path] | None) -> Listen:
    """Check ``--http``'s address against what it needs off loopback; ValueError says what is
    missing."""
    if address.isdigit():  # a port alone: loopback, the default
        address = f"127.0.0.1:{address}"
    pair = split_host_port(address)
    if pair is None:
        raise ValueError(f"{address!r} is not HOST:PORT (port 0 picks a free one)")
    host, port = pair
    if host not in LOOPBACK:
        if token is None:
            raise ValueError(
                f"off loopback ({host}) every request must carry the token of the user the "
                "server acts as: set PRONTODB_TOKEN (prontodb user token NAME makes one)"
            )
        if tls is None:
            raise ValueError(
                f"off loopback ({host}) the token must not cross the network in clear: "
                "give --tls-cert and --tls-key"
            )
    return Listen(host, port, token, tls)


def require_bearer(app: App, token: str) -> App:
    """``app`` behind a check of ``Authorization: Bearer token``. Written here rather than with
    the SDK's OAuth resource-server settings: there is one fixed credential and no
    authorization server to name."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                await _refuse(send)
                return
        await app(scope, receive, send)

    return guarded


async def _refuse(send: Send) -> None:
    body = (
        b'{"error": "denied: this MCP server wants Authorization: Bearer with the token of '
        b'the ProntoDB user it acts as"}'
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b'Bearer realm="prontodb"'),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def bind(where: Listen) -> socket.socket:
    """The listening socket (bound here, not by uvicorn, so port 0's choice is known)."""
    family = socket.AF_INET6 if ":" in where.host else socket.AF_INET
    return socket.create_server((where.host, where.port), family=family, backlog=128)


async def serve(
    options: Globals,
    read_only: bool,
    where: Listen,
    *,
    task_status: TaskStatus[Listen] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve MCP at ``where`` until SIGINT or SIGTERM (or cancelled); one line on stderr says
    the URL, and ``task_status`` is told where it listens (port 0: the one chosen)."""
    import uvicorn

    broker = Broker(options)
    sock = bind(where)
    bound = Listen(where.host, sock.getsockname()[1], where.token, where.tls)
    try:
        async with anyio.create_task_group() as group:
            subscriptions = Subscriptions(group)
            server = build(options, read_only, broker, subscriptions)
            app: App = server.streamable_http_app(streamable_http_path=PATH, host=where.host)
            if where.token is not None:
                app = require_bearer(app, where.token)
            config = uvicorn.Config(
                app,
                log_level="warning",
                lifespan="on",
                timeout_graceful_shutdown=GRACE,
                ssl_certfile=str(where.tls[0]) if where.tls else None,
                ssl_keyfile=str(where.tls[1]) if where.tls else None,
            )
            print(f"prontodb mcp: serving MCP at {bound.url}", file=sys.stderr, flush=True)
            task_status.started(bound)
            await uvicorn.Server(config).serve(sockets=[sock])
            group.cancel_scope.cancel()  # stopped: end the subscriptions' watches
    finally:
        sock.close()
        await broker.aclose()


def main(options: Globals, read_only: bool, where: Listen) -> int:
    """Serve until stopped; the exit status."""
    logging.basicConfig(level=logging.WARNING, format="prontodb mcp: %(levelname)s %(message)s")
    anyio.run(serve, options, read_only, where)
    return 0
