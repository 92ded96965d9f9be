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
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote

import anyio
import mcp_types as types
from anyio.abc import TaskGroup, TaskStatus
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY

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


# The most subscriptions one server runs at a time, over all its sessions: each is a watch on a
# broker connection of its own.
SUBSCRIPTION_CAP = 100


def _connection(session: ServerSession) -> Any:
    """The MCP connection ``session`` (built per request) belongs to. The SDK 2.3's low-level
    handlers reach it only through the session; tests/test_mcp.py's HTTP tests see that a closed
    session's watches end, so a change in the SDK shows there."""
    return getattr(session, "_connection", session)


Tell = Callable[[types.ServerNotification], Awaitable[None]]


async def watch_uri(
    client: AsyncClient, uri: str, tell: Tell, meta: dict[str, Any], started: Callable[[], None]
) -> None:
    """Watch ``uri``'s key or prefix, calling ``started`` once the watch is in place at the
    broker, and ``tell`` each change as ``notifications/resources/updated`` (with ``meta`` in
    its ``_meta``), in order, until cancelled. ProntoError if the watch cannot start; returns
    if it ends later (the broker stayed away, the watch fell behind its history, the session
    went)."""
    cursor, name, is_prefix = parse(uri)
    in_place = False
    try:
        async with client.watch(name, cursor=cursor) as watch:
            started()
            in_place = True
            async for event in watch:
                if not is_prefix and event.key != name:
                    continue  # below the key: not its change
                told = uri if not is_prefix else key_uri(cursor, event.key)
                params = types.ResourceUpdatedNotificationParams(
                    uri=told, _meta={**meta, **_event_meta(event)}
                )
                await tell(types.ResourceUpdatedNotification(params=params))
    except ProntoError as exc:
        if not in_place:
            raise  # the subscribe call says why
        # The broker stayed away longer than the watch waits for it, or the watch fell out of
        # the broker's history: the subscription ends (subscribe again).
        log.warning("the subscription to %s ended: %s", uri, exc.message)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass  # the session went before its end was told: nobody to tell


class Subscriptions:
    """The subscriptions of every session of a server: a watch per (connection, URI), run in
    ``group``, that the end of its connection ends; and the watches of ``subscriptions/listen``
    streams, which end with their stream. At most ``cap`` watches in all."""

    def __init__(self, group: TaskGroup, cap: int = SUBSCRIPTION_CAP) -> None:
        self._group = group
        self._cap = cap
        self._running: dict[Any, dict[str, anyio.CancelScope]] = {}
        self._listening = 0

    @property
    def group(self) -> TaskGroup:
        """The task group the server runs its background work in."""
        return self._group

    def __len__(self) -> int:
        return self._listening + sum(len(uris) for uris in self._running.values())

    def _check_room(self, more: int) -> None:
        if len(self) + more > self._cap:
            raise MCPError(
                types.INVALID_PARAMS,
                f"limit: this server runs at most {self._cap} subscriptions at a time; "
                "unsubscribe from some first",
            )

    async def subscribe(self, client: AsyncClient, session: ServerSession, uri: str) -> None:
        """Start watching ``uri`` for ``session``'s connection (again subscribing to it does
        nothing); return once the watch is in place at the broker, so that every change made
        after this is told."""
        parse(uri)
        connection = _connection(session)
        running = self._running.get(connection, {})
        if uri in running:
            return
        self._check_room(1)
        try:
            scope = await self._group.start(self._subscription, client, session, uri)
        except ProntoError as exc:
            raise MCPError(types.INVALID_PARAMS, f"{exc.code.value}: {exc.message}") from None
        if connection not in self._running:
            self._running[connection] = running
            stack = getattr(connection, "exit_stack", None)
            if stack is not None:
                stack.callback(self.end, connection)
        running[uri] = scope

    def unsubscribe(self, session: ServerSession, uri: str) -> None:
        scope = self._running.get(_connection(session), {}).pop(uri, None)
        if scope is not None:
            scope.cancel()

    def end(self, connection: Any) -> None:
        """End ``connection``'s subscriptions (it closed)."""
        for scope in self._running.pop(connection, {}).values():
            scope.cancel()

    async def _subscription(
        self,
        client: AsyncClient,
        session: ServerSession,
        uri: str,
        *,
        task_status: TaskStatus[anyio.CancelScope],
    ) -> None:
        with anyio.CancelScope() as scope:
            await watch_uri(
                client, uri, session.send_notification, {}, lambda: task_status.started(scope)
            )
            running = self._running.get(_connection(session), {})  # it ended by itself
            if running.get(uri) is scope:
                del running[uri]

    async def listen(
        self,
        client: AsyncClient,
        session: ServerSession,
        request_id: types.RequestId,
        wanted: types.SubscriptionFilter,
    ) -> types.SubscriptionsListenResult:
        """Serve one ``subscriptions/listen`` stream (the 2026-07-28 protocol): a watch per
        resource URI of ``wanted``, in place before the acknowledgement, then their changes on
        the stream until the client ends it. The lists of tools, prompts and resources never
        change, so asking for their changes is honoured and nothing is sent."""
        uris = list(dict.fromkeys(wanted.resource_subscriptions or ()))
        for uri in uris:
            parse(uri)
        self._check_room(len(uris))
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: request_id}
        acknowledged = anyio.Event()

        async def tell(notification: types.ServerNotification) -> None:
            await acknowledged.wait()  # the acknowledgement is the stream's first frame
            await session.send_notification(notification, related_request_id=request_id)

        self._listening += len(uris)
        try:
            async with anyio.create_task_group() as group:
                for uri in uris:
                    await group.start(_listened, client, uri, tell, meta)
                honored = types.SubscriptionFilter(
                    tools_list_changed=wanted.tools_list_changed or None,
                    prompts_list_changed=wanted.prompts_list_changed or None,
                    resources_list_changed=wanted.resources_list_changed or None,
                    resource_subscriptions=uris or None,
                )
                params = types.SubscriptionsAcknowledgedNotificationParams(
                    notifications=honored, _meta=meta
                )
                await session.send_notification(
                    types.SubscriptionsAcknowledgedNotification(params=params),
                    related_request_id=request_id,
                )
                acknowledged.set()
                if not uris:
                    await anyio.sleep_forever()  # nothing to tell: the stream stays open
        except ProntoError as exc:
            raise MCPError(types.INVALID_PARAMS, f"{exc.code.value}: {exc.message}") from None
        finally:
            self._listening -= len(uris)
        return types.SubscriptionsListenResult(_meta=meta)


async def _listened(
    client: AsyncClient,
    uri: str,
    tell: Tell,
    meta: dict[str, Any],
    *,
    task_status: TaskStatus[None],
) -> None:
    await watch_uri(client, uri, tell, meta, task_status.started)
