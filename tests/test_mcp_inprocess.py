"""The MCP server in-process, through the SDK's in-process client, against a real broker: the
same server `prontodb mcp` runs (tests/test_mcp.py drives it over stdio in a subprocess, where
coverage does not follow it). Tools, an error, a watch, resources and a subscription, prompts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from brokers import BrokerProcess, running_broker
from mcp import Client as McpClient

from prontodb.clients import Client
from prontodb.clients._cli_commands import Globals
from prontodb.clients._mcp_resources import Subscriptions
from prontodb.clients._mcp_server import Broker, build

pytestmark = pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")


@pytest.fixture
def broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path / "data", short_dir / "b.sock") as process:
        yield process


async def _exercise(url: str, read_only: bool) -> dict[str, object]:
    options = Globals(user="agent", cursor="default", url=url)
    broker = Broker(options)
    seen: dict[str, object] = {}
    try:
        async with anyio.create_task_group() as group:
            server = build(options, read_only, broker, Subscriptions(group))
            async with McpClient(server) as client:
                tools = await client.list_tools()
                seen["tools"] = sorted(t.name for t in tools.tools)
                if not read_only:
                    await client.call_tool("set", {"key": "jobs.a", "value": "x"})
                    incr = await client.call_tool("incr", {"key": "n", "by": 2})
                    seen["incr"] = incr.structured_content
                    claim = await client.call_tool("claim", {"prefix": "jobs"})
                    seen["claim"] = claim.structured_content
                    watched = await client.call_tool("watch", {"prefix": "n", "from_rev": 1})
                    seen["watch"] = watched.structured_content
                got = await client.call_tool("get", {"key": "missing"})
                seen["missing"] = (got.is_error, got.content[0].text)  # type: ignore[union-attr]
                read = await client.read_resource("prontodb://default/n")
                seen["read"] = read.contents[0].text  # type: ignore[union-attr]
                prompts = await client.list_prompts()
                seen["prompts"] = sorted(p.name for p in prompts.prompts)
            group.cancel_scope.cancel()
    finally:
        await broker.aclose()
    return seen


def test_tools_resources_and_prompts_in_process(broker: BrokerProcess) -> None:
    seen = anyio.run(_exercise, broker.url, False)
    assert "claim" in seen["tools"]  # type: ignore[operator]
    assert seen["incr"] == {"key": "n", "value": 2}
    claim = seen["claim"]
    assert isinstance(claim, dict)
    assert claim["key"] == "jobs.a"
    watch = seen["watch"]
    assert isinstance(watch, dict)
    assert [e["key"] for e in watch["events"]] == ["n"]
    assert seen["missing"] == (True, "not found: missing (cursor default)")
    assert '"value": 2' in str(seen["read"])
    assert "worker" in seen["prompts"]  # type: ignore[operator]
    with Client.connect(broker.url) as client:
        info = client.get_info("n")
        assert info is not None
        assert info.writer == "agent"  # the server's user, no one else's


def test_read_only_in_process(broker: BrokerProcess) -> None:
    with Client.connect(broker.url) as client:
        client.set("n", 2)
    seen = anyio.run(_exercise, broker.url, True)
    assert "set" not in seen["tools"]  # type: ignore[operator]
    assert "get" in seen["tools"]  # type: ignore[operator]
    assert seen["prompts"] == ["monitor"]  # the others tell an agent to write


def test_streamable_http_in_process(broker: BrokerProcess) -> None:
    """`prontodb mcp --http`'s server, on asyncio as the command runs it, with a bearer."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    from prontodb.clients._mcp_http import listen, serve

    options = Globals(user="agent", cursor="default", url=broker.url)

    async def scenario() -> tuple[int, object]:
        async with anyio.create_task_group() as group:
            where = await group.start(serve, options, False, listen("127.0.0.1:0", "t0k", None))
            bearer = {"Authorization": "Bearer t0k"}
            async with httpx2.AsyncClient() as http:
                refused = await http.post(where.url, json={})
                async with (
                    httpx2.AsyncClient(headers=bearer) as authorized,
                    streamable_http_client(where.url, http_client=authorized) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    await session.call_tool("set", {"key": "via", "value": "http"})
                    got = await session.call_tool("get", {"key": "via"})
            group.cancel_scope.cancel()
        return refused.status_code, got.structured_content

    assert anyio.run(scenario, backend="asyncio") == (401, {"key": "via", "value": "http"})


async def test_subscriptions_are_capped(broker: BrokerProcess) -> None:
    from mcp.shared.exceptions import MCPError

    options = Globals(user="agent", cursor="default", url=broker.url)
    server_broker = Broker(options)
    try:
        async with anyio.create_task_group() as group:
            server = build(options, False, server_broker, Subscriptions(group, cap=1))
            async with McpClient(server, mode="legacy") as client:  # subscribe is pre-2026
                await client.subscribe_resource("prontodb://default/a")
                await client.subscribe_resource("prontodb://default/a")  # the same one
                with pytest.raises(MCPError, match="at most 1 subscriptions"):
                    await client.subscribe_resource("prontodb://default/b")
                await client.unsubscribe_resource("prontodb://default/a")
                await client.subscribe_resource("prontodb://default/b")
            group.cancel_scope.cancel()
    finally:
        await server_broker.aclose()


async def test_subscriptions_listen_of_the_newest_protocol(broker: BrokerProcess) -> None:
    """A host on the 2026-07-28 protocol listens (``subscriptions/listen``) instead of
    subscribing: the stream is acknowledged once its watches are in place, then tells every
    change under the prefix."""
    from mcp.shared.subscriptions import ResourceUpdated

    options = Globals(user="agent", cursor="default", url=broker.url)
    server_broker = Broker(options)
    try:
        async with anyio.create_task_group() as group:
            server = build(options, False, server_broker, Subscriptions(group))
            async with (
                McpClient(server) as client,
                client.listen(resource_subscriptions=["prontodb://default/jobs/"]) as stream,
            ):
                assert stream.honored.resource_subscriptions == ["prontodb://default/jobs/"]
                with Client.connect(broker.url, user="agent") as other:
                    other.set("jobs.a", 1)
                    other.set("elsewhere", 2)
                with anyio.fail_after(10):
                    event = await stream.__anext__()
                assert event == ResourceUpdated(uri="prontodb://default/jobs.a")
            group.cancel_scope.cancel()
    finally:
        await server_broker.aclose()


async def test_recipes_fences_and_own_grants_in_process(broker: BrokerProcess) -> None:
    options = Globals(user="agent", cursor="default", url=broker.url)
    server_broker = Broker(options)

    async def ok(client: McpClient, tool: str, **arguments: object) -> dict[str, Any]:
        result = await client.call_tool(tool, arguments)
        assert not result.is_error, result.content
        assert result.structured_content is not None
        content: dict[str, Any] = result.structured_content
        return content

    try:
        async with anyio.create_task_group() as group:
            server = build(options, False, server_broker, Subscriptions(group))
            async with McpClient(server) as client:
                slots = [await ok(client, "semaphore", name="gpu", limit=2) for _ in range(2)]
                assert slots[0]["holding"] is True
                assert slots[1] == slots[0]  # one session per server: one slot per agent
                other = await client.call_tool("semaphore", {"name": "gpu", "limit": 3})
                assert other.is_error  # not a second pool of another size
                led = await ok(client, "elect", name="leader", value="host-a")
                told = await ok(client, "proclaim", name="leader", token=led["token"], value="b")
                assert (told["token"], told["value"]) == (led["token"], "b")
                passed = await ok(client, "barrier", name="start", count=1)
                assert passed["holding"] is True
                fence = {"name": "leader", "token": led["token"]}
                written = await ok(client, "mset", items={"a": 1, "b": 2}, fence=fence)
                assert written["keys"] == ["a", "b"]
                bad = await client.call_tool("set", {"key": "a", "value": 0, "fence": {"x": 1}})
                assert bad.is_error
                assert (await ok(client, "grants"))["user"] == "agent"
                assert (await ok(client, "quota_show"))["user"] == "agent"
            group.cancel_scope.cancel()
    finally:
        await server_broker.aclose()


async def test_a_call_that_waits_says_so_every_heartbeat(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prontodb.clients import _mcp_tools
    from prontodb.clients._async.client import AsyncClient

    monkeypatch.setattr(_mcp_tools, "HEARTBEAT", 0.05)  # the real one is 5 s
    said: list[tuple[float, float | None, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        said.append((done, total, message))

    client = await AsyncClient.connect(broker.url, user="agent")
    try:
        claim = _mcp_tools.BY_NAME["claim"]
        with pytest.raises(_mcp_tools.ToolFailed, match=r"^timed_out: nothing to claim"):
            await _mcp_tools.call(claim, client, {"prefix": "q", "wait": 0.3}, "default", progress)
    finally:
        await client.aclose()
    assert len(said) >= 2
    assert all(message == "waiting for an item under q" for _, _, message in said)
    assert all(total == 0.3 for _, total, _ in said)
    assert [done for done, _, _ in said] == sorted({done for done, _, _ in said})  # rising
