"""The MCP stdio transport of `prontodb mcp` (clients/_mcp_stdio.py) over real pipes, a terminal
and files: answers, end of input, lines that are not messages, lines over the limit, answers larger
than the pipe. In-process (an SDK server on `fd_transport`, on both anyio backends) and through a
real `prontodb mcp` process. Nothing sleeps: every wait is a read or a write with a deadline."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import subprocess
import sys
import time
import tty
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.shared.message import SessionMessage

from prontodb.clients._mcp_stdio import MAX_LINE, fd_transport

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])
DEADLINE = 20.0  # seconds any one wait may take before the test fails
SMALL_PIPE = 4096  # the smallest pipe buffer Linux gives (one page)
INITIALIZE = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "test", "version": "0"},
}


def request(ident: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode() + b"\n"


INITIALIZED = b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n'


# -- in-process: an SDK server on the transport, the test as its host ---------------------------


def sdk_server(big: int = 0) -> Server[Any]:
    """A server with one tool, `text`, whose answer is ``big`` bytes of text."""

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(text="x" * big)])

    return Server("t", on_call_tool=call_tool)


class Host:
    """The host's ends of the server's two pipes, read and written from the test's event loop."""

    def __init__(self, to_server: int, from_server: int) -> None:
        self.to_server, self.from_server = to_server, from_server
        os.set_blocking(to_server, False)
        os.set_blocking(from_server, False)
        self.buffer = bytearray()

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.to_server, view) :]
            except BlockingIOError:
                await anyio.wait_writable(self.to_server)

    async def line(self) -> dict[str, Any]:
        while (end := self.buffer.find(b"\n")) < 0:
            await anyio.wait_readable(self.from_server)
            chunk = os.read(self.from_server, 1 << 16)
            if not chunk:
                raise EOFError("the server's output ended")
            self.buffer += chunk
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        return json.loads(line)  # type: ignore[no-any-return]

    async def ask(self, ident: int, method: str, params: dict[str, Any] | None = None) -> Any:
        await self.write(request(ident, method, params))
        answer = await self.line()
        assert answer["id"] == ident, answer
        return answer["result"]

    async def handshake(self) -> None:
        result = await self.ask(1, "initialize", INITIALIZE)
        assert result["serverInfo"]["name"] == "t"
        await self.write(INITIALIZED)


@contextmanager
def pipes() -> Iterator[tuple[tuple[int, int], tuple[int, int]]]:
    """((server reads, server writes), (host writes, host reads)): two fresh pipes."""
    host_to_server, server_to_host = os.pipe(), os.pipe()
    try:
        yield (host_to_server[0], server_to_host[1]), (host_to_server[1], server_to_host[0])
    finally:
        for fd in (*host_to_server, *server_to_host):
            try:
                os.close(fd)
            except OSError:
                pass  # closed by the test (end of input)


@asynccontextmanager
async def serving(
    server: Server[Any], read_fd: int, write_fd: int, max_line: int = MAX_LINE
) -> AsyncIterator[anyio.Event]:
    """``server`` on the transport in a task; the event is set once it returned (input ended).
    The server is stopped on the way out if it is still running."""
    done = anyio.Event()

    async def run() -> None:
        async with fd_transport(read_fd, write_fd, max_line) as (reader, writer):
            await server.run(reader, writer, server.create_initialization_options())
        done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        yield done
        group.cancel_scope.cancel()


def run_on(backend: str, body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(DEADLINE):
            await body()

    anyio.run(bounded, backend=backend)


@BACKENDS
def test_a_request_is_answered_and_the_pipes_modes_are_restored(backend: str) -> None:
    async def body() -> None:
        with pipes() as ((server_in, server_out), (host_out, host_in)):
            host = Host(host_out, host_in)
            async with serving(sdk_server(big=5), server_in, server_out) as done:
                await host.handshake()
                assert not os.get_blocking(server_in)
                assert not os.get_blocking(server_out)
                result = await host.ask(2, "tools/call", {"name": "text", "arguments": {}})
                assert result["content"] == [{"type": "text", "text": "xxxxx"}]
                assert await host.ask(3, "ping") == {}
                os.close(host_out)  # the host goes: end of input
                await done.wait()
            assert os.get_blocking(server_in)
            assert os.get_blocking(server_out)

    run_on(backend, body)


@BACKENDS
def test_end_of_input_ends_the_session_cleanly(backend: str) -> None:
    async def body() -> None:
        with pipes() as ((server_in, server_out), (host_out, host_in)):
            host = Host(host_out, host_in)
            async with serving(sdk_server(), server_in, server_out) as done:
                await host.write(request(1, "initialize", INITIALIZE)[:-10])  # half a line
                os.close(host_out)
                await done.wait()  # the half line is answered as a parse error, then it ends
            assert (await host.line())["error"]["code"] == types.PARSE_ERROR
            assert host.buffer == b""
            assert select.select([host_in], [], [], 0)[0] == []  # nothing else was written

    run_on(backend, body)


@BACKENDS
def test_a_line_that_is_no_message_is_answered_with_an_error_and_serving_goes_on(
    backend: str,
) -> None:
    async def body() -> None:
        with pipes() as ((server_in, server_out), (host_out, host_in)):
            host = Host(host_out, host_in)
            async with serving(sdk_server(), server_in, server_out):
                await host.handshake()
                await host.write(b"this is not JSON\n\n   \n")  # blank lines are skipped
                answer = await host.line()
                assert answer["id"] is None
                assert answer["error"]["code"] == types.PARSE_ERROR
                await host.write(b'{"id": 7, "method": 12}\n')  # JSON, not JSON-RPC: its id kept
                answer = await host.line()
                assert (answer["id"], answer["error"]["code"]) == (7, types.INVALID_REQUEST)
                await host.write(b"[1, 2]\n\xff\xfe\n")  # a batch (no id to keep); not UTF-8
                assert (await host.line())["error"]["code"] == types.INVALID_REQUEST
                assert (await host.line())["error"]["code"] == types.PARSE_ERROR
                assert await host.ask(8, "ping") == {}

    run_on(backend, body)


@BACKENDS
def test_a_line_over_the_limit_is_refused_and_dropped_then_serving_goes_on(backend: str) -> None:
    limit = 1000

    def ping_of(size: int, ident: int) -> bytes:
        """A ping line of exactly ``size`` bytes, its newline not counted."""
        line = request(ident, "ping")[:-1]
        return line[:-1] + b" " * (size - len(line)) + b"}\n"

    async def body() -> None:
        with pipes() as ((server_in, server_out), (host_out, host_in)):
            fcntl.fcntl(server_in, fcntl.F_SETPIPE_SZ, SMALL_PIPE)  # a long line comes in pieces
            host = Host(host_out, host_in)
            async with serving(sdk_server(), server_in, server_out, max_line=limit):
                await host.handshake()
                await host.write(ping_of(limit, 2))  # at the limit: a message
                assert (await host.line())["id"] == 2
                # Over it, in one write with the next line (a whole line over the limit in the
                # buffer), then in pieces (the limit passed with no newline yet).
                await host.write(ping_of(limit + 1, 3) + request(4, "ping"))
                refused = await host.line()
                assert (refused["id"], refused["error"]["code"]) == (None, types.PARSE_ERROR)
                assert f"longer than {limit} bytes" in refused["error"]["message"]
                assert (await host.line())["id"] == 4
                await host.write(ping_of(20 * limit, 5))  # read a pipeful at a time, dropped
                assert (await host.line())["error"]["code"] == types.PARSE_ERROR
                assert await host.ask(6, "ping") == {}

    run_on(backend, body)


@BACKENDS
def test_a_host_that_stopped_reading_is_served_until_its_input_ends(backend: str) -> None:
    async def body() -> None:
        with pipes() as ((server_in, server_out), (host_out, host_in)):
            host = Host(host_out, host_in)
            async with serving(sdk_server(), server_in, server_out) as done:
                await host.handshake()
                os.close(host_in)  # answers can no longer be written (EPIPE): they are dropped
                await host.write(request(2, "ping") + b"not JSON\n" + request(3, "ping"))
                os.close(host_out)
                await done.wait()

    run_on(backend, body)


@BACKENDS
def test_large_answers_pass_a_small_pipe_whole_and_one_at_a_time(backend: str) -> None:
    big = 1 << 20

    async def body() -> None:
        with pipes() as ((server_in, server_out), (host_out, host_in)):
            fcntl.fcntl(server_out, fcntl.F_SETPIPE_SZ, SMALL_PIPE)
            host = Host(host_out, host_in)
            async with serving(sdk_server(big=big), server_in, server_out):
                await host.handshake()
                call = {"name": "text", "arguments": {}}
                # Both asked before either is read: their answers are written concurrently,
                # each through hundreds of partial writes.
                await host.write(request(2, "tools/call", call) + request(3, "tools/call", call))
                answers = [await host.line(), await host.line()]
                assert sorted(a["id"] for a in answers) == [2, 3]
                for answer in answers:
                    assert answer["result"]["content"][0]["text"] == "x" * big

    run_on(backend, body)


@BACKENDS
def test_a_terminal_is_served_and_left_blocking(backend: str) -> None:
    async def body() -> None:
        master, terminal = pty.openpty()
        try:
            tty.setraw(terminal)  # no echo, no line editing: bytes pass as they are
            host = Host(master, master)
            async with serving(sdk_server(big=3), terminal, terminal):
                await host.handshake()
                assert os.get_blocking(terminal)
                result = await host.ask(2, "tools/call", {"name": "text", "arguments": {}})
                assert result["content"][0]["text"] == "xxx"
        finally:
            os.close(master)
            os.close(terminal)

    run_on(backend, body)


@BACKENDS
def test_files_are_read_and_written_directly(backend: str, tmp_path: Path) -> None:
    requests = tmp_path / "requests"
    requests.write_bytes(request(1, "ping") + b"\n" + request(2, "ping")[:-1])  # no last newline
    answers = tmp_path / "answers"

    async def body() -> None:
        with requests.open("rb") as source, answers.open("wb") as sink:
            async with fd_transport(source.fileno(), sink.fileno()) as (reader, writer):
                async with reader, writer:
                    got = [item async for item in reader]
                    messages = [item for item in got if isinstance(item, SessionMessage)]
                    assert messages == got
                    for item in messages:
                        await writer.send(item)
                with pytest.raises(anyio.ClosedResourceError):
                    await reader.receive()
                with pytest.raises(anyio.ClosedResourceError):
                    await writer.send(messages[0])

    run_on(backend, body)
    assert [json.loads(line)["id"] for line in answers.read_bytes().splitlines()] == [1, 2]


# -- `prontodb mcp` itself, on its real stdin and stdout ------------------------------------------


class Process:
    """A process's stdin and stdout as its host drives them: lines written and read with
    deadlines; stderr goes to a file."""

    def __init__(self, argv: list[str], stderr: Path) -> None:
        with stderr.open("wb") as errors:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
            )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin.fileno(), self.process.stdout.fileno()
        os.set_blocking(self.stdin, False)
        self.buffer = bytearray()

    def write(self, data: bytes) -> None:
        view, deadline = memoryview(data), time.monotonic() + DEADLINE
        while view:
            if not select.select([], [self.stdin], [], deadline - time.monotonic())[1]:
                raise TimeoutError("the server does not read its input")
            try:
                view = view[os.write(self.stdin, view) :]
            except BlockingIOError:
                pass

    def line(self) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        while (end := self.buffer.find(b"\n")) < 0:
            if not select.select([self.stdout], [], [], deadline - time.monotonic())[0]:
                raise TimeoutError("no answer from the server")
            chunk = os.read(self.stdout, 1 << 16)
            if not chunk:
                raise EOFError("the server's output ended")
            self.buffer += chunk
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        return json.loads(line)  # type: ignore[no-any-return]

    def ask(self, ident: int, method: str, params: dict[str, Any] | None = None) -> Any:
        self.write(request(ident, method, params))
        answer = self.line()
        assert answer["id"] == ident, answer
        return answer["result"]

    def finish(self) -> tuple[int, bytes]:
        """Close its input; its exit status and whatever it wrote after."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        status = self.process.wait(DEADLINE)
        rest = bytes(self.buffer) + self.process.stdout.read()
        self.process.stdout.close()
        return status, rest

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def prontodb_mcp(tmp_path: Path, short_dir: Path) -> Iterator[Process]:
    """`prontodb mcp` on pipes, its stdout through a one-page pipe. No broker: these calls need
    none (its address names nothing, so none is started)."""
    argv = [sys.executable, "-m", "prontodb.clients.cli", "--url", f"unix://{short_dir}/none"]
    process = Process([*argv, "mcp"], tmp_path / "stderr")
    fcntl.fcntl(process.stdout, fcntl.F_SETPIPE_SZ, SMALL_PIPE)
    try:
        yield process
    finally:
        process.kill()


def test_prontodb_mcp_over_its_stdio(prontodb_mcp: Process, tmp_path: Path) -> None:
    server = prontodb_mcp
    assert server.ask(1, "initialize", INITIALIZE)["serverInfo"]["name"] == "prontodb"
    server.write(INITIALIZED)
    tools = server.ask(2, "tools/list")["tools"]  # about 20 kB through the 4 kB pipe
    assert {"get", "set", "claim"} <= {t["name"] for t in tools}
    server.write(b"{not json\n")
    assert server.line()["error"]["code"] == types.PARSE_ERROR
    # One byte over the documented limit: refused with a parse error, and dropped.
    over = request(3, "ping")[:-2] + b', "pad": "' + b"x" * MAX_LINE + b'"}\n'
    server.write(over)
    refused = server.line()
    assert (refused["id"], refused["error"]["code"]) == (None, types.PARSE_ERROR)
    assert server.ask(4, "ping") == {}
    status, rest = server.finish()  # end of input: it exits, having written nothing more
    assert (status, rest) == (0, b"")
    errors = (tmp_path / "stderr").read_text()
    assert f"longer than {MAX_LINE} bytes" in errors
    assert "Traceback" not in errors


STRAY = """
import os, sys
import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from prontodb.clients._mcp_stdio import stdio_server

async def call_tool(ctx, params):
    print("a stray print", flush=True)
    os.system("echo output of a child")
    return types.CallToolResult(content=[types.TextContent(text="done")])

async def main():
    server = Server("t", on_call_tool=call_tool)
    async with stdio_server() as (reader, writer):
        await server.run(reader, writer, server.create_initialization_options())
    print("stdout is back", flush=True)

anyio.run(main)
"""


def test_stdout_carries_only_the_wire_while_serving(tmp_path: Path) -> None:
    server = Process([sys.executable, "-c", STRAY], tmp_path / "stderr")
    try:
        server.ask(1, "initialize", INITIALIZE)
        server.write(INITIALIZED)
        result = server.ask(2, "tools/call", {"name": "any", "arguments": {}})
        assert result["content"][0]["text"] == "done"
        assert server.finish() == (0, b"stdout is back\n")
    finally:
        server.kill()
    errors = (tmp_path / "stderr").read_text()
    assert "a stray print" in errors
    assert "output of a child" in errors
