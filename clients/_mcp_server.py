"""``prontodb mcp``: ProntoDB's tools (``_mcp_tools``) served over MCP on stdio.

Built on the official MCP SDK's low-level server (the optional extra ``prontodb[mcp]``); only the
``mcp`` command imports this module, so the CLI's start-up never pays for the SDK. Every tool acts
as the user the server was started with (``--user``, ``$PRONTODB_TOKEN``), through one
:class:`AsyncClient` connected on first use and again after the broker went away. stdout carries
JSON-RPC alone: logs go to stderr.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from prontodb.protocol import ErrorCode, ProntoError

from ._async.client import AsyncClient
from ._cli_commands import CLIENT_NAME, Globals, target_url
from ._mcp_prompts import PATTERNS, named_tools
from ._mcp_resources import TEMPLATE, Subscriptions, read
from ._mcp_sessions import Sessions
from ._mcp_stdio import stdio_server
from ._mcp_tools import BY_NAME, Progress, Tool, ToolFailed, call, offered

log = logging.getLogger("prontodb.mcp")

INSTRUCTIONS = (
    "ProntoDB coordinates agents: shared keys (get, set, cas, incr, txn), task queues (set an "
    "item under a prefix; claim it, then ack or release it with its token), watches (watch "
    "waits for the next changes under a prefix), and locks, semaphores, elections and barriers "
    "(lock, semaphore, elect, barrier; unlock with the token). Every tool acts as this server's "
    "ProntoDB user, with that user's grants."
)


class Broker:
    """The server's one connection to the broker, made on first use (starting the default
    broker as the CLI does) and made again after it was lost."""

    def __init__(self, options: Globals) -> None:
        self.options = options
        self._client: AsyncClient | None = None
        self._lock = anyio.Lock(fast_acquire=True)  # no loop pass when it is free, as it is

    async def client(self) -> AsyncClient:
        async with self._lock:
            if self._client is None:
                self._client = await AsyncClient.connect(
                    self.options.url,
                    user=self.options.user,
                    cursor=self.options.cursor,
                    name=CLIENT_NAME.replace("cli", "mcp"),
                    autostart=True,
                )
            return self._client

    async def lost(self, client: AsyncClient) -> None:
        """Forget ``client`` (its connection failed): the next call connects again."""
        async with self._lock:
            if self._client is client:
                self._client = None
        with anyio.CancelScope(shield=True):
            try:
                await client.aclose()
            except (ProntoError, OSError):
                pass

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):  # also when the server is being cancelled
            if self._client is not None:
                await self.lost(self._client)


def tool_listing(tool: Tool) -> types.Tool:
    return types.Tool(
        name=tool.name,
        description=tool.description,
        input_schema=tool.input_schema(),
        output_schema=tool.output_schema(),
        annotations=types.ToolAnnotations(
            title=f"prontodb {tool.name.replace('_', ' ')}",
            read_only_hint=tool.read_only,
            destructive_hint=tool.destructive,
            idempotent_hint=tool.idempotent,
            open_world_hint=False,
        ),
    )


def error_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def build(
    options: Globals, read_only: bool, broker: Broker, subscriptions: Subscriptions
) -> Server[Any]:
    """The MCP server for ``options``' user, with only the read tools if ``read_only``; its
    resources' subscriptions run in ``subscriptions``."""
    tools = {t.name: t for t in offered(read_only)}
    sessions = Sessions(subscriptions.group)

    async def list_tools(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool_listing(t) for t in tools.values()])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        tool = tools.get(params.name)
        if tool is None:
            why = " (this server is read-only)" if params.name in BY_NAME else ""
            return error_result(f"bad_request: there is no tool {params.name!r}{why}")
        return await run(tool, params.arguments or {}, ctx.session.report_progress)

    async def run(
        tool: Tool, arguments: dict[str, Any], progress: Progress
    ) -> types.CallToolResult:
        client: AsyncClient | None = None
        try:
            client = await broker.client()
            document, text = await call(tool, client, arguments, options.cursor, progress, sessions)
        except ToolFailed as exc:
            return error_result(str(exc))
        except ProntoError as exc:
            if exc.code is ErrorCode.UNAVAILABLE:
                if client is not None:
                    await broker.lost(client)
                return error_result(_unavailable(options, exc))
            return error_result(f"{exc.code.value}: {exc.message}")
        return types.CallToolResult(
            content=[types.TextContent(text=text)], structured_content=document
        )

    return Server(
        "prontodb",
        version=_version(),
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        **prompt_handlers(set(tools)),
        **resource_handlers(options, broker, subscriptions),
    )


def prompt_handlers(offered_tools: set[str]) -> dict[str, Any]:
    """The coordination patterns (``_mcp_prompts``) as prompts: those whose every tool is
    offered (a read-only server does not tell an agent to write)."""
    patterns = {p.name: p for p in PATTERNS if named_tools(p, BY_NAME) <= offered_tools}

    async def list_prompts(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(
            prompts=[
                types.Prompt(
                    name=p.name,
                    title=p.title,
                    description=p.description,
                    arguments=[
                        types.PromptArgument(
                            name=a.name, description=a.description, required=a.required
                        )
                        for a in p.arguments
                    ],
                )
                for p in patterns.values()
            ]
        )

    async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        pattern = patterns.get(params.name)
        if pattern is None:
            names = ", ".join(patterns)
            raise MCPError(types.INVALID_PARAMS, f"there is no prompt {params.name!r} ({names})")
        try:
            text = pattern.render(dict(params.arguments or {}))
        except ValueError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        message = types.PromptMessage(role="user", content=types.TextContent(text=text))
        return types.GetPromptResult(description=pattern.description, messages=[message])

    return {"on_list_prompts": list_prompts, "on_get_prompt": get_prompt}


def resource_handlers(
    options: Globals, broker: Broker, subscriptions: Subscriptions
) -> dict[str, Any]:
    """The Server's handlers of resources (``_mcp_resources``): keys, prefixes, subscriptions."""

    async def connected() -> AsyncClient:
        """The broker's client for a resource request; MCPError if it cannot be reached."""
        try:
            return await broker.client()
        except ProntoError as exc:
            raise MCPError(types.INTERNAL_ERROR, _unavailable(options, exc)) from None

    async def list_resources(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[])  # every key is one: see the template

    async def list_templates(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[TEMPLATE])

    async def read_resource(
        ctx: Any, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        client = await connected()
        try:
            return await read(client, params.uri)
        except ProntoError as exc:
            if exc.code is ErrorCode.UNAVAILABLE:
                await broker.lost(client)
                raise MCPError(types.INTERNAL_ERROR, _unavailable(options, exc)) from None
            raise MCPError(types.INVALID_PARAMS, f"{exc.code.value}: {exc.message}") from None

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        await subscriptions.subscribe(await connected(), ctx.session, params.uri)
        return types.EmptyResult()

    async def listen(
        ctx: Any, params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        if ctx.request_id is None:
            raise MCPError(types.INVALID_REQUEST, "subscriptions/listen needs a request id")
        client = await connected()
        return await subscriptions.listen(client, ctx.session, ctx.request_id, params.notifications)

    async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        subscriptions.unsubscribe(ctx.session, params.uri)
        return types.EmptyResult()

    return {
        "on_list_resources": list_resources,
        "on_list_resource_templates": list_templates,
        "on_read_resource": read_resource,
        "on_subscribe_resource": subscribe,
        "on_unsubscribe_resource": unsubscribe,
        "on_subscriptions_listen": listen,
    }


def _unavailable(options: Globals, exc: ProntoError) -> str:
    return (
        f"unavailable: the ProntoDB broker at {target_url(options)} cannot be "
        f"reached ({exc.message}); nothing was done. The server connects again on "
        "the next call."
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prontodb")
    except PackageNotFoundError:
        return "0"


async def serve(options: Globals, read_only: bool) -> None:
    broker = Broker(options)
    try:
        async with anyio.create_task_group() as group:
            subscriptions = Subscriptions(group)
            server = build(options, read_only, broker, subscriptions)
            async with stdio_server() as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())
            group.cancel_scope.cancel()  # the host went: end the subscriptions' watches
    finally:
        await broker.aclose()


def main(options: Globals, read_only: bool) -> int:
    """Serve until the host closes stdin; the exit status."""
    logging.basicConfig(level=logging.WARNING, format="prontodb mcp: %(levelname)s %(message)s")
    anyio.run(serve, options, read_only)
    return 0
