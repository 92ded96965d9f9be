"""`prontodb mcp` as an agent host runs it: spawned on stdio by the official SDK's client, against
a real broker that wants tokens, each server acting as the user it was started with."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import pytest

pytest.importorskip("mcp")

import httpx2
import mcp_types as types
from brokers import BrokerProcess, running_broker, start_broker
from mcp import ClientSession
from mcp.client.session import IncomingMessage, MessageHandlerFnT
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from prontodb.clients import Client

# The SDK's HTTP client leaves its response streams to the garbage collector, which trio (these
# tests' loop) reports; they are the client's, not the server under test's.
pytestmark = [
    pytest.mark.filterwarnings(f"ignore:Async generator '{package}\\.:ResourceWarning")
    for package in ("httpx2", "httpcore2")
]
# The handshake's protocol (2025-11-25) has resources/subscribe; the SDK warns of its successor.
pytestmark.append(pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed"))


@pytest.fixture
def broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path / "data", short_dir / "b.sock", extra=["--require-auth"]) as b:
        yield b


def admin(broker: BrokerProcess) -> Client:
    token = (broker.data_dir / "admin.token").read_text().strip()
    return Client.connect(broker.url, user="admin", token=token)


def make_user(broker: BrokerProcess, name: str, prefix: str, level: str = "write") -> str:
    with admin(broker) as client:
        token = client.user_add(name)
        client.grant(name, level, cursor="default", prefix=prefix)
        return token


Serve = Callable[..., AbstractAsyncContextManager[ClientSession]]


@pytest.fixture(params=["stdio", "http"])
def server(request: pytest.FixtureRequest) -> Serve:
    """Opens an MCP session with ``prontodb mcp`` run as a user, on stdio (the SDK's client
    starts the process) or on Streamable HTTP (the test starts it; the SDK's client connects
    with the user's token as its bearer): ``server(broker, user, token, tmp_path, *extra,
    message_handler=None)``."""
    return functools.partial(open_server, request.param)


def mcp_argv(broker: BrokerProcess, user: str, *extra: str) -> list[str]:
    return ["-m", "prontodb.clients.cli", "--url", broker.url, "--user", user, "mcp", *extra]


def mcp_env(token: str) -> dict[str, str]:
    env = {"PRONTODB_TOKEN": token}
    if os.environ.get("PYTHONPATH"):  # the SDK passes only a few variables on by default
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


@asynccontextmanager
async def open_server(
    transport: str,
    broker: BrokerProcess,
    user: str,
    token: str,
    tmp_path: Path,
    *extra: str,
    message_handler: MessageHandlerFnT | None = None,
) -> AsyncIterator[ClientSession]:
    if transport == "http":
        async with (
            http_server(broker, user, token, tmp_path, *extra) as url,
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write, message_handler=message_handler) as session,
        ):
            await session.initialize()
            yield session
        return
    params = StdioServerParameters(
        command=sys.executable, args=mcp_argv(broker, user, *extra), env=mcp_env(token)
    )
    with (tmp_path / f"mcp-{user}.log").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, message_handler=message_handler) as session,
        ):
            await session.initialize()
            yield session


@asynccontextmanager
async def http_server(
    broker: BrokerProcess,
    user: str,
    token: str,
    tmp_path: Path,
    *extra: str,
    address: str = "127.0.0.1:0",
) -> AsyncIterator[str]:
    """``prontodb mcp --http ADDRESS`` run as ``user``, for the block; its URL. Stopped by its
    PID on the way out, however the block ends."""
    argv = [sys.executable, *mcp_argv(broker, user, "--http", address, *extra)]
    process = await anyio.open_process(
        argv, env={**os.environ, **mcp_env(token)}, stdout=None, stderr=subprocess.PIPE
    )
    log = (tmp_path / f"mcp-http-{user}.log").open("wb")
    try:
        assert process.stderr is not None
        seen = b""
        with anyio.fail_after(30):
            while b"serving MCP at " not in seen or not seen.endswith(b"\n"):
                seen += await process.stderr.receive()
        log.write(seen)
        url = seen.split(b"serving MCP at ")[1].split()[0].decode()
        async with anyio.create_task_group() as group:
            group.start_soon(drain, process.stderr, log)
            yield url
            group.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(10, shield=True):
                await process.wait()
            if process.returncode is None:
                process.kill()
        await process.aclose()
        log.close()


async def drain(stream: anyio.abc.ByteReceiveStream, log: IO[bytes]) -> None:
    async for chunk in stream:
        log.write(chunk)


async def ok(session: ClientSession, tool: str, **arguments: Any) -> Any:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content


async def error(session: ClientSession, tool: str, **arguments: Any) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error
    assert result.structured_content is None
    text = result.content[0]
    assert text.type == "text"
    return text.text


async def test_an_agent_reads_writes_counts_and_claims_as_its_user(
    broker: BrokerProcess, tmp_path: Path, server: Serve
) -> None:
    token = make_user(broker, "agent", "")
    async with server(broker, "agent", token, tmp_path) as session:
        tools = (await session.list_tools()).tools
        assert all("user" not in t.input_schema["properties"] for t in tools)
        by_name = {t.name: t for t in tools}
        assert by_name["get"].annotations is not None
        assert by_name["get"].annotations.read_only_hint is True
        assert by_name["del"].annotations is not None
        assert by_name["del"].annotations.destructive_hint is True

        assert await ok(session, "set", key="plan.step", value={"n": 1}) == {
            "key": "plan.step",
            "revision": 1,
        }
        assert await ok(session, "get", key="plan.step") == {"key": "plan.step", "value": {"n": 1}}
        meta = await ok(session, "get", key="plan.step", meta=True)
        assert meta["writer"] == "agent"
        assert meta["version"] == 1
        assert (await ok(session, "incr", key="jobs.count", by=5))["value"] == 5

        await ok(session, "set", key="queue.t1", value="resize image")
        claimed = await ok(session, "claim", prefix="queue", wait=0.5, lease=30)
        assert (claimed["key"], claimed["value"], claimed["deliveries"]) == (
            "queue.t1",
            "resize image",
            1,
        )
        listed = await ok(session, "claims", prefix="queue")
        assert [(c["key"], c["holder"]) for c in listed["claims"]] == [("queue.t1", "agent")]
        assert await ok(session, "ack", key="queue.t1", token=claimed["token"]) == {
            "key": "queue.t1",
            "acked": True,
        }
        assert (await ok(session, "keys", prefix="queue")) == {"keys": []}

        # errors: a tool result with isError and the CLI's words
        assert (
            await error(session, "get", key="plan.nope") == "not found: plan.nope (cursor default)"
        )
        failed = await error(session, "cas", key="plan.step", old={"n": 2}, new={"n": 3})
        assert failed.startswith("compare_failed:")
        gone = await error(session, "ack", key="queue.t1", token=claimed["token"])
        assert gone.split(":")[0] in ("compare_failed", "not_found")
        assert (await error(session, "claim", prefix="queue")).startswith("timed_out:")
        assert (await error(session, "set", key="")).startswith("bad_request:")
    with Client.connect(broker.url, user="admin", token=admin_token(broker)) as client:
        info = client.get_info("jobs.count")
        assert info is not None
        assert info.writer == "agent"


def admin_token(broker: BrokerProcess) -> str:
    return (broker.data_dir / "admin.token").read_text().strip()


async def test_a_user_without_the_grant_is_denied(
    broker: BrokerProcess, tmp_path: Path, server: Serve
) -> None:
    token = make_user(broker, "narrow", "mine")
    async with server(broker, "narrow", token, tmp_path) as session:
        await ok(session, "set", key="mine.a", value=1)
        denied = await error(session, "set", key="theirs.a", value=1)
        assert denied.startswith("denied:")
        assert (await error(session, "get", key="theirs.a")).startswith("denied:")
        with pytest.raises(MCPError, match=r"^denied:"):
            await session.read_resource("prontodb://default/theirs.a")
        with pytest.raises(MCPError, match=r"^denied:"):
            await session.subscribe_resource("prontodb://default/theirs/")
        for wait in (0, 5):  # a call that may wait is refused as plainly
            assert (await error(session, "claim", prefix="theirs", wait=wait)).startswith("denied:")
            assert (await error(session, "lock", name="theirs", wait=wait)).startswith("denied:")


async def test_read_only_offers_only_reads(
    broker: BrokerProcess, tmp_path: Path, server: Serve
) -> None:
    token = make_user(broker, "watcher", "")
    async with server(broker, "watcher", token, tmp_path, "--read-only") as session:
        tools = (await session.list_tools()).tools
        names = {t.name for t in tools}
        assert {"get", "keys", "claims", "status"} <= names
        assert not names & {"set", "del", "incr", "claim", "ack", "cas", "txn"}
        assert all(t.annotations and t.annotations.read_only_hint for t in tools)
        assert "read-only" in await error(session, "set", key="a", value=1)
        assert (await ok(session, "status"))["version"]


async def test_the_broker_being_down_is_said_plainly(
    broker: BrokerProcess, tmp_path: Path, server: Serve
) -> None:
    token = make_user(broker, "agent", "")
    async with server(broker, "agent", token, tmp_path) as session:
        await ok(session, "set", key="a", value=1)
        broker.terminate()
        text = await error(session, "get", key="a")
        assert text.startswith("unavailable:")
        assert broker.url in text


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Look every 10 ms, for at most ``within`` seconds, until ``condition()`` holds."""
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"not within {within:g} s: {what}")


def claimers(client: Client) -> int:
    """The claims waiting at the broker for an item, in the default database."""
    databases = client.status()["databases"]
    return sum(db["claimers"] for db in databases if db["name"] == "default")


async def test_a_cancelled_waiting_claim_holds_nothing(
    broker: BrokerProcess, tmp_path: Path, server: Serve
) -> None:
    token = make_user(broker, "worker", "")
    async with server(broker, "worker", token, tmp_path) as session:
        with admin(broker) as other:
            async with anyio.create_task_group() as group:
                # the host gives up on a claim that waits: the SDK's client sends
                # notifications/cancelled for the abandoned request
                group.start_soon(session.call_tool, "claim", {"prefix": "queue", "wait": 25})
                await until(lambda: claimers(other) == 1, "the claim waiting at the broker")
                group.cancel_scope.cancel()
            await until(lambda: claimers(other) == 0, "the broker's claim cancelled")

            other.set("queue.t1", "resize image")
            taken = other.claim("queue", wait=0)
            assert taken is not None
            assert taken.key == "queue.t1"
            assert [c.holder for c in other.claims("queue")] == ["admin"]
        # the server goes on serving the session
        assert (await ok(session, "claims", prefix="queue"))["claims"][0]["holder"] == "admin"


async def test_watch_returns_the_next_changes_and_says_how_its_wait_goes(
    broker: BrokerProcess, tmp_path: Path, server: Serve
) -> None:
    token = make_user(broker, "monitor", "")
    async with server(broker, "monitor", token, tmp_path) as session:
        first = (await ok(session, "set", key="jobs.a", value=1))["revision"]
        await ok(session, "set", key="other.x", value=0)
        await ok(session, "set", key="jobs.b", value=2)
        await ok(session, "del", key="jobs.a")

        # from a revision: the history, `count` at a time, going on from next_rev
        got = await ok(session, "watch", prefix="jobs", from_rev=first, count=2)
        assert [(e["rev"], e["type"], e["key"]) for e in got["events"]] == [
            (first, "put", "jobs.a"),
            (first + 2, "put", "jobs.b"),
        ]
        assert got["events"][0]["value"] == 1
        assert got["events"][0]["by"] == "monitor"
        assert got["next_rev"] == first + 3
        rest = await ok(
            session, "watch", prefix="jobs", from_rev=got["next_rev"], count=5, timeout=0
        )
        assert [(e["type"], e["key"]) for e in rest["events"]] == [("delete", "jobs.a")]
        assert "value" not in rest["events"][0]
        assert rest["next_rev"] == first + 4

        # from now: it waits, and says so to a host that asked for progress
        notes: list[tuple[float, float | None, str | None]] = []
        watching = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            notes.append((progress, total, message))
            watching.set()

        result: dict[str, Any] = {}

        async def wait_for_two() -> None:
            arguments: dict[str, Any] = {"prefix": "jobs", "count": 2, "timeout": 20}
            answer = await session.call_tool("watch", arguments, progress_callback=on_progress)
            assert not answer.is_error, answer.content
            result.update(answer.structured_content or {})

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(wait_for_two)
                await watching.wait()  # the watch is in place at the broker
                with admin(broker) as other:
                    other.set("jobs.c", "three")
                    other.set("elsewhere", 0)
                    other.set("jobs.d", "four")
        assert [(e["key"], e["value"], e["by"]) for e in result["events"]] == [
            ("jobs.c", "three", "admin"),
            ("jobs.d", "four", "admin"),
        ]
        assert len(notes) >= 3
        assert [n[0] for n in notes] == sorted({n[0] for n in notes})  # always increasing
        assert notes[0][1] == 20
        assert "jobs.d" in (notes[-1][2] or "")

        # nothing within the timeout: an empty answer, not an error
        quiet = await ok(session, "watch", prefix="nothing", timeout=0.2)
        assert quiet["events"] == []
        assert quiet["next_rev"] == result["next_rev"]


# resources/subscribe is what the 2025-11-25 protocol the stdio handshake agrees on has (the SDK's
# client warns that the 2026-07-28 one replaces it with subscriptions/listen).
async def test_keys_are_resources_and_a_subscription_tells_every_change_in_order(
    broker: BrokerProcess, tmp_path: Path, server: Serve
) -> None:
    token = make_user(broker, "monitor", "")
    updates: list[types.ResourceUpdatedNotificationParams] = []
    arrived = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        nonlocal arrived
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(message.params)
            arrived.set()

    async def updated(n: int) -> list[tuple[str, str, int]]:
        """Wait for ``n`` updates in all; each one's URI, change type and revision."""
        nonlocal arrived
        with anyio.fail_after(10):
            while len(updates) < n:
                await arrived.wait()
                arrived = anyio.Event()
        told = []
        for params in updates:
            assert params.meta is not None
            event = params.meta["prontodb/event"]
            told.append((params.uri, event["type"], event["rev"]))
        return told

    async with server(broker, "monitor", token, tmp_path, message_handler=on_message) as session:
        templates = (await session.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["prontodb://{cursor}/{key}"]

        await ok(session, "set", key="plan.step", value={"n": 1})
        contents = (await session.read_resource("prontodb://default/plan.step")).contents
        assert contents[0].mime_type == "application/json"
        assert isinstance(contents[0], types.TextResourceContents)
        document = json.loads(contents[0].text)
        assert (document["key"], document["value"], document["writer"]) == (
            "plan.step",
            {"n": 1},
            "monitor",
        )
        scanned = (await session.read_resource("prontodb://default/plan/")).contents[0]
        assert isinstance(scanned, types.TextResourceContents)
        assert json.loads(scanned.text) == {"plan.step": {"n": 1}}
        with pytest.raises(MCPError, match=r"not found: plan\.nope"):
            await session.read_resource("prontodb://default/plan.nope")

        # a prefix: every change below it, in order, each told with its key's URI
        await session.subscribe_resource("prontodb://default/jobs/")
        with admin(broker) as other:
            first = other.set("jobs.a", "one")
            other.set("elsewhere", 0)
            other.set("jobs.b", "two")
            other.delete("jobs.a")
        assert await updated(3) == [
            ("prontodb://default/jobs.a", "put", first),
            ("prontodb://default/jobs.b", "put", first + 2),
            ("prontodb://default/jobs.a", "delete", first + 3),
        ]

        # a key: its own changes alone; unsubscribing ends the prefix's watch
        await session.subscribe_resource("prontodb://default/plan.step")
        await session.unsubscribe_resource("prontodb://default/jobs/")
        with admin(broker) as other:
            other.set("jobs.c", "three")
            other.set("plan.step.detail", "below the key")
            last = other.set("plan.step", {"n": 2})
        assert (await updated(4))[3:] == [("prontodb://default/plan.step", "put", last)]


async def test_agents_take_turns_at_a_lock_and_a_stopped_server_frees_its_locks(
    broker: BrokerProcess, tmp_path: Path, server: Serve
) -> None:
    first_token, second_token = make_user(broker, "first", ""), make_user(broker, "second", "")
    lock = {"name": "deploy"}
    async with server(broker, "first", first_token, tmp_path) as first:
        held = await ok(first, "lock", **lock)
        assert (held["name"], held["writer"], held["holding"]) == ("deploy", "first", True)
        fence = {"name": "deploy", "token": held["token"]}
        await ok(first, "set", key="deploy.state", value="rolling", fence=fence)

        async with server(broker, "second", second_token, tmp_path) as second:
            assert (await error(second, "lock", **lock)).startswith("timed_out:")
            taken: dict[str, Any] = {}

            async def wait_in_line() -> None:
                taken.update(await ok(second, "lock", **lock, wait=25))

            async with anyio.create_task_group() as group:
                group.start_soon(wait_in_line)
                with admin(broker) as other:
                    await until(
                        lambda: len(other.holders("deploy").members) == 2,  # type: ignore[union-attr]
                        "the second agent in line",
                    )
                await ok(first, "unlock", name="deploy", token=held["token"])
            assert taken["writer"] == "second"
            assert taken["token"] > held["token"]
            # the first agent's token no longer holds the lock: its fenced writes are refused
            refused = await error(first, "set", key="deploy.state", value="stale", fence=fence)
            assert refused.startswith("compare_failed:")
        # the second agent's server stopped without unlocking: the broker freed the lock
        assert (await error(first, "holders", name="deploy")).startswith("not_found:")
        assert (await ok(first, "lock", **lock))["holding"] is True


async def test_a_subscription_tells_every_change_in_order_across_a_broker_restart(
    broker: BrokerProcess, tmp_path: Path, server: Serve
) -> None:
    token = make_user(broker, "monitor", "")
    told: list[tuple[str, int]] = []
    arrived = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        nonlocal arrived
        if isinstance(message, types.ResourceUpdatedNotification):
            assert message.params.meta is not None
            told.append((message.params.uri, message.params.meta["prontodb/event"]["rev"]))
            arrived.set()

    async def updated(n: int) -> list[tuple[str, int]]:
        nonlocal arrived
        with anyio.fail_after(30):
            while len(told) < n:
                await arrived.wait()
                arrived = anyio.Event()
        return told

    restarted: BrokerProcess | None = None
    try:
        async with server(broker, "monitor", token, tmp_path, message_handler=on_message) as s:
            await s.subscribe_resource("prontodb://default/jobs/")
            with admin(broker) as other:
                before = [other.set(f"jobs.{i}", i) for i in range(3)]
            assert await updated(3) == [
                (f"prontodb://default/jobs.{i}", before[i]) for i in range(3)
            ]

            broker.terminate()
            restarted = start_broker(broker.data_dir, Path(broker.socket), extra=["--require-auth"])
            with admin(restarted) as other:
                after = [other.set(f"jobs.{i}", -i) for i in range(3, 6)]
            assert [rev for _, rev in await updated(6)] == before + after
            assert len(told) == 6  # nothing told twice
    finally:
        if restarted is not None:
            restarted.terminate()


async def test_the_coordination_patterns_are_prompts(
    broker: BrokerProcess, tmp_path: Path, server: Serve
) -> None:
    token = make_user(broker, "agent", "")
    async with server(broker, "agent", token, tmp_path) as session:
        prompts = {p.name: p for p in (await session.list_prompts()).prompts}
        assert set(prompts) == {
            "worker",
            "pipeline_stage",
            "resource_holder",
            "monitor",
            "shared_context",
        }
        worker = prompts["worker"]
        assert worker.arguments is not None
        assert [(a.name, a.required) for a in worker.arguments] == [
            ("prefix", True),
            ("lease", False),
        ]

        got = await session.get_prompt("worker", {"prefix": "jobs", "lease": "120"})
        assert got.description == worker.description
        text = got.messages[0].content
        assert isinstance(text, types.TextContent)
        steps = [text.text.index(f"`{tool}`") for tool in ("claim", "extend", "ack", "release")]
        assert steps == sorted(steps)  # the tools in the order to call them
        assert "prefix `jobs`" in text.text
        assert "lease 120" in text.text

        with pytest.raises(MCPError, match="needs prefix"):
            await session.get_prompt("monitor", {})
        with pytest.raises(MCPError, match="no prompt"):
            await session.get_prompt("nope", {})
