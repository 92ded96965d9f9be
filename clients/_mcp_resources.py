"""``prontodb mcp``'s resources: keys as ``prontodb://CURSOR/KEY``, and subscriptions that are
real ProntoDB watches.

- ``prontodb://CURSOR/KEY`` (the template ``prontodb://{cursor}/{key}``) reads as the document
  ``get --meta --json`` prints: the key, its value and its metadata, as JSON text.
- ``prontodb://CURSOR/PREFIX/`` (a trailing slash; ``prontodb://CURSOR/`` for every key) reads
  as the document ``scan --json`` prints: an object of key to value.
- ``resources/subscribe`` on either runs a watch of the key (its changes alone) or of the prefix
  (every change at and below it) on a connection of its own, which resumes after a broker restart
  where it was; every change is sent as ``notifications/resources/updated`` with the URI of the
  key that changed, in revision order, and ``_meta["prontodb/event"]`` saying what happened
  (``rev``, ``type``, ``key``). ``resources/unsubscribe`` of the same URI ends the watch.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, unquote

import anyio
import mcp_types as types
from anyio.abc import TaskGroup, TaskStatus
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError

from prontodb.protocol import ProntoError

from ._async.client import AsyncClient
from ._types import WatchEvent

log = logging.getLogger("prontodb.mcp")

SCHEME = "prontodb://"
TEMPLATE = types.ResourceTemplate(
    name="prontodb-key",
    title="A ProntoDB key",
    uri_template=SCHEME + "{cursor}/{key}",
    description=(
        "A key of a ProntoDB database (cursor): its value with its revisions, version, writer, "
        "time and size, as JSON. End the URI with / for a prefix instead "
        "(prontodb://CURSOR/PREFIX/: every key and value below it). Subscribe to either to be "
        "told of every change, in order."
    ),
    mime_type="application/json",
)


def key_uri(cursor: str, key: str) -> str:
    return f"{SCHEME}{quote(cursor, safe='')}/{quote(key, safe='')}"


def parse(uri: str) -> tuple[str, str, bool]:
    """``(cursor, key or prefix, is_prefix)`` of a ProntoDB resource URI; MCPError if it is none."""
    if not uri.startswith(SCHEME) or "/" not in uri[len(SCHEME) :]:
        raise MCPError(
            types.INVALID_PARAMS,
            f"bad_request: {uri} is not a ProntoDB resource (prontodb://CURSOR/KEY, or "
            "prontodb://CURSOR/PREFIX/ for a prefix)",
        )
    cursor, _, rest = uri[len(SCHEME) :].partition("/")
    is_prefix = rest == "" or rest.endswith("/")
    return unquote(cursor), unquote(rest.rstrip("/")), is_prefix


async def read(client: AsyncClient, uri: str) -> types.ReadResourceResult:
    """The resource at ``uri``: MCPError if it is none or there is no such key; ProntoError as
    the broker says (denied, unavailable, ...)."""
    from ._cli_commands import _meta_fields, to_json

    cursor, name, is_prefix = parse(uri)
    if is_prefix:
        document: Any = dict(await client.scan(name, cursor=cursor))
    else:
        info = await client.get_info(name, cursor=cursor)
        if info is None:
            raise MCPError(types.INVALID_PARAMS, f"not found: {name} (cursor {cursor})")
        document = {"key": name, **_meta_fields(info)}
    text = to_json(document).decode()
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=text)]
    )


def _event_meta(event: WatchEvent) -> dict[str, Any]:
    return {"prontodb/event": {"rev": event.rev, "type": event.type, "key": event.key}}


class Subscriptions:
    """The session's subscriptions: a watch per subscribed URI, run in ``group``."""

    def __init__(self, group: TaskGroup) -> None:
        self._group = group
        self._running: dict[str, anyio.CancelScope] = {}

    async def subscribe(self, client: AsyncClient, session: ServerSession, uri: str) -> None:
        """Start watching ``uri`` (again subscribing to it does nothing); return once the watch
        is in place at the broker, so that every change made after this is told."""
        cursor, name, is_prefix = parse(uri)
        if uri in self._running:
            return
        try:
            scope = await self._group.start(
                self._watch, client, session, uri, cursor, name, is_prefix
            )
        except ProntoError as exc:
            raise MCPError(types.INVALID_PARAMS, f"{exc.code.value}: {exc.message}") from None
        self._running[uri] = scope

    def unsubscribe(self, uri: str) -> None:
        scope = self._running.pop(uri, None)
        if scope is not None:
            scope.cancel()

    def close(self) -> None:
        for uri in list(self._running):
            self.unsubscribe(uri)

    async def _watch(
        self,
        client: AsyncClient,
        session: ServerSession,
        uri: str,
        cursor: str,
        name: str,
        is_prefix: bool,
        *,
        task_status: TaskStatus[anyio.CancelScope],
    ) -> None:
        started = False
        with anyio.CancelScope() as scope:
            try:
                async with client.watch(name, cursor=cursor) as watch:
                    task_status.started(scope)
                    started = True
                    async for event in watch:
                        if not is_prefix and event.key != name:
                            continue  # below the key: not its change
                        told = uri if not is_prefix else key_uri(cursor, event.key)
                        params = types.ResourceUpdatedNotificationParams(
                            uri=told, _meta=_event_meta(event)
                        )
                        await session.send_notification(
                            types.ResourceUpdatedNotification(params=params)
                        )
            except ProntoError as exc:
                if not started:
                    raise  # the subscribe call says why
                # The broker stayed away longer than the watch waits for it, or the watch fell
                # out of the broker's history: the subscription ends (subscribe again).
                log.warning("the subscription to %s ended: %s", uri, exc.message)
                if self._running.get(uri) is scope:
                    del self._running[uri]
