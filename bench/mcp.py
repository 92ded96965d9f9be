"""A `get` and a `set` through `prontodb mcp` on stdio, against a one-shot `prontodb get` and a bare
JSON-RPC echo over the same kind of pipe.

    python -m bench.mcp [--calls 2000] [--runs 100] [--no-report]

An agent host starts one `prontodb mcp` and keeps it, so an agent's call is one JSON-RPC round trip
over the server's stdin and stdout, then one to the broker: what it costs is measured here by the
official SDK's client (``mcp.ClientSession`` on ``mcp.client.stdio``, as hosts drive servers), one
long-lived server, many sequential calls. Beside it, in the same run, the two things the issue
("Agents speak ProntoDB natively") compares it with:

- a one-shot ``prontodb get k`` (and ``set``), start to exit, as an agent that shells out pays it
  (bench/cli_startup.py's regular install, bytecode kept; timed here by spawning it, as hyperfine
  -N does);
- the protocol's floor: a tiny Python echo server (``python -m bench.mcp --echo-server``) that
  answers every request on its stdin with a fixed result, one line at a time, driven by the same
  SDK client through the same kind of pipe.

Targets: an MCP call at most 0.3x a one-shot CLI call and at most 2x the echo floor (medians).
To say where the time goes, more rows drive the same servers with a raw client (write a line, read
a line: no SDK on the client side), time the ProntoDB client's own `get` and `set` (the broker's
round trip, which the MCP server adds), drive an echo tool on the SDK's own low-level server
over `prontodb mcp`'s stdio transport (``--sdk-echo-server``): what a server built on the SDK costs
before its tool does anything, and drive `prontodb mcp` on the SDK's stdio transport, as it served
before it had its own (``--sdk-stdio-mcp URL``), so that one run measures both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from prontodb.clients import Client

from .cli_startup import REPO, VENV_PYTHON, check_output, regular_install, start_broker, stop
from .report import machine, update_section

SDK_STDIO = "MCP on the SDK's stdio"  # prontodb mcp as it served before its own transport
CLI_RATIO = 0.3  # an MCP call / a one-shot CLI call, at most
ECHO_RATIO = 2.0  # an MCP call / the echo floor's call, at most
WARMUP = 100


# -- the echo floor -----------------------------------------------------------------------------

ECHO_TOOL = {
    "name": "echo",
    "description": "Answers with its arguments.",
    "inputSchema": {"type": "object"},
    "outputSchema": {"type": "object"},
}


def echo_result(method: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The result of one request to the echo server (None: no such method)."""
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "echo", "version": "0"},
        }
    if method == "tools/list":
        return {"tools": [ECHO_TOOL]}
    if method == "tools/call":
        arguments = params.get("arguments") or {}
        return {
            "content": [{"type": "text", "text": json.dumps(arguments)}],
            "structuredContent": arguments,
            "isError": False,
        }
    if method == "ping":
        return {}
    return None


def serve_echo(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Answer newline-delimited JSON-RPC on ``stdin`` until it closes: each request with its
    :func:`echo_result`, notifications with nothing."""
    for line in stdin:
        message = json.loads(line)
        if "id" not in message or "method" not in message:
            continue  # a notification (or a response): nothing to say
        result = echo_result(message["method"], message.get("params") or {})
        if result is None:
            reply = {
                "jsonrpc": "2.0",
                "id": message["id"],
                "error": {"code": -32601, "message": "no such method"},
            }
        else:
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        stdout.write(json.dumps(reply).encode() + b"\n")
        stdout.flush()


def serve_sdk_echo() -> None:
    """The echo tool on the MCP SDK's low-level server, served as `prontodb mcp` serves (its
    stdio transport), until stdin closes."""
    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import Server

    from prontodb.clients._mcp_stdio import stdio_server

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool.model_validate(ECHO_TOOL)])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        text = types.TextContent(text=json.dumps(arguments))
        return types.CallToolResult(content=[text], structured_content=arguments)

    async def serve() -> None:
        server = Server("sdk-echo", on_list_tools=list_tools, on_call_tool=call_tool)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(serve)


def serve_mcp_on_sdk_stdio(url: str) -> None:
    """`prontodb mcp --url URL` on the SDK's stdio transport (``mcp.server.stdio``, through worker
    threads), as it served before it had its own."""
    from mcp.server import stdio

    from prontodb.clients import _mcp_server
    from prontodb.clients.cli import main as prontodb

    _mcp_server.stdio_server = stdio.stdio_server  # type: ignore[attr-defined,assignment]
    prontodb(["--url", url, "mcp"])


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Timing:
    """Sequential calls' round trips (seconds) and the wall time of the whole loop."""

    name: str
    samples: list[float]
    wall: float

    def ms(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def rate(self) -> float:
        return len(self.samples) / self.wall


async def timed(name: str, calls: int, call: Callable[[], Awaitable[object]]) -> Timing:
    for _ in range(WARMUP):
        await call()
    samples = []
    began = time.perf_counter()
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return Timing(name, samples, time.perf_counter() - began)


def timed_sync(name: str, calls: int, call: Callable[[], object], warmup: int = WARMUP) -> Timing:
    for _ in range(warmup):
        call()
    samples = []
    began = time.perf_counter()
    for _ in range(calls):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return Timing(name, samples, time.perf_counter() - began)


def server_env(base: dict[str, str]) -> dict[str, str]:
    """What the SDK's stdio client is given for a server: it passes on only a few variables of
    its own (HOME, PATH, ...), so PYTHONPATH (a worktree's link tree) goes explicitly."""
    return {k: base[k] for k in ("PYTHONPATH", "PYTHONPYCACHEPREFIX") if k in base}


def mcp_argv(url: str) -> list[str]:
    return [str(VENV_PYTHON), "-m", "prontodb.clients.cli", "--url", url, "mcp"]


def echo_argv() -> list[str]:
    return [str(VENV_PYTHON), "-m", "bench.mcp", "--echo-server"]


def sdk_echo_argv() -> list[str]:
    return [str(VENV_PYTHON), "-m", "bench.mcp", "--sdk-echo-server"]


def sdk_stdio_mcp_argv(url: str) -> list[str]:
    return [str(VENV_PYTHON), "-m", "bench.mcp", "--sdk-stdio-mcp", url]


async def through_sdk(argv: list[str], env: dict[str, str], calls: int, label: str) -> list[Timing]:
    """``get`` and ``set`` (or the echo tool, called with the same arguments) through the SDK's
    client on one long-lived server."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=argv[0], args=argv[1:], env=server_env(env), cwd=str(Path(__file__).parent.parent)
    )
    echo = label.endswith("echo")
    results = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.list_tools()  # the host lists them once; the client validates against them
        for tool, arguments in (("get", {"key": "k"}), ("set", {"key": "k", "value": "hello"})):

            async def call(tool: str = tool, arguments: dict[str, Any] = arguments) -> None:
                result = await session.call_tool("echo" if echo else tool, arguments)
                if result.is_error:
                    raise RuntimeError(f"{tool} failed: {result.content}")

            results.append(await timed(f"{label} {tool}", calls, call))
    return results


def through_pipe(argv: list[str], env: dict[str, str], calls: int, label: str) -> list[Timing]:
    """The same calls with a raw client: one JSON line written, one read, no SDK."""
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**env, **server_env(env)},
        cwd=Path(__file__).parent.parent,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    ids = iter(range(1, 1 << 62))

    def request(method: str, params: dict[str, Any]) -> Any:
        ident = next(ids)
        stdin.write(
            json.dumps({"jsonrpc": "2.0", "id": ident, "method": method, "params": params}).encode()
            + b"\n"
        )
        stdin.flush()
        reply = json.loads(stdout.readline())
        if reply.get("id") != ident or "result" not in reply:
            raise RuntimeError(f"{method}: {reply}")
        return reply["result"]

    try:
        request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            },
        )
        stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
        stdin.flush()
        results = []
        for tool, arguments in (("get", {"key": "k"}), ("set", {"key": "k", "value": "hello"})):
            name = "echo" if label.endswith("echo") else tool

            def call(name: str = name, arguments: dict[str, Any] = arguments) -> None:
                if request("tools/call", {"name": name, "arguments": arguments}).get("isError"):
                    raise RuntimeError(f"{name} failed")

            results.append(timed_sync(f"{label} {tool} (raw client)", calls, call))
        return results
    finally:
        stdin.close()
        process.wait(30)
        stdout.close()


def one_shot(name: str, argv: list[str], env: dict[str, str], runs: int) -> Timing:
    """A whole process, spawned and waited for, output to /dev/null."""

    def call() -> None:
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)

    return timed_sync(name, runs, call, warmup=10)


# -- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> tuple[list[Timing], str]:
    import anyio

    tmp = Path(tempfile.mkdtemp(prefix="pdbm", dir="/tmp"))  # short: Unix socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRONTODB_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    broker = None
    try:
        broker, sock = start_broker(VENV_PYTHON, tmp, env)
        url = f"unix://{sock}"
        regular = regular_install(REPO, tmp)
        check_output([str(regular), "--url", url, "set", "k", "hello"], env, "")
        check_output([str(regular), "--url", url, "get", "k"], env, "hello\n")
        calls = args.calls

        async def sdk_rows() -> list[Timing]:
            return [
                *await through_sdk(mcp_argv(url), env, calls, "MCP"),
                *await through_sdk(echo_argv(), env, calls, "echo"),
                *await through_sdk(sdk_echo_argv(), env, calls, "SDK echo"),
                *await through_sdk(sdk_stdio_mcp_argv(url), env, calls, SDK_STDIO),
            ]

        timings = anyio.run(sdk_rows)
        timings += through_pipe(mcp_argv(url), env, calls, "MCP")
        timings += through_pipe(echo_argv(), env, calls, "echo")
        timings += through_pipe(sdk_echo_argv(), env, calls, "SDK echo")
        timings += through_pipe(sdk_stdio_mcp_argv(url), env, calls, SDK_STDIO)

        with Client.connect(url) as client:
            timings.append(
                timed_sync("ProntoDB client get (no MCP)", calls, lambda: client.get("k"))
            )
            timings.append(
                timed_sync("ProntoDB client set (no MCP)", calls, lambda: client.set("k", "hello"))
            )
        timings.append(
            one_shot(
                "prontodb get (one-shot, regular install)",
                [str(regular), "--url", url, "get", "k"],
                env,
                args.runs,
            )
        )
        timings.append(
            one_shot(
                "prontodb set (one-shot, regular install)",
                [str(regular), "--url", url, "set", "k", "hello"],
                env,
                args.runs,
            )
        )
        editable = VENV_PYTHON.with_name("prontodb")
        timings.append(
            one_shot(
                "prontodb get (one-shot, editable install)",
                [str(editable), "--url", url, "get", "k"],
                env,
                args.runs,
            )
        )
    finally:
        if broker is not None:
            stop(broker)
        shutil.rmtree(tmp, ignore_errors=True)
    return timings, verdict(timings)


def verdict(timings: list[Timing]) -> str:
    by = {t.name: t for t in timings}
    cli = by["prontodb get (one-shot, regular install)"].ms(0.5)
    lines = []
    for op in ("get", "set"):
        mcp = by[f"MCP {op}"].ms(0.5)
        echo = by[f"echo {op}"].ms(0.5)
        vs_cli, vs_echo = mcp / cli, mcp / echo
        lines.append(
            f"MCP {op}: {mcp:.3f} ms = {vs_cli:.3f}x a one-shot `prontodb get` "
            f"(target ≤ {CLI_RATIO}x: {'met' if vs_cli <= CLI_RATIO else 'MISSED'}), "
            f"{vs_echo:.2f}x the echo floor (target ≤ {ECHO_RATIO:g}x: "
            f"{'met' if vs_echo <= ECHO_RATIO else 'MISSED'})."
        )
    return "\n".join(lines)


def breakdown(timings: list[Timing]) -> str:
    """Where an MCP `get` goes, from the medians: the broker's round trip, the server's own part
    (the raw client's call less the echo's and the broker's; of it, what the SDK's server costs
    with an echo tool), the SDK client's part."""
    by = {t.name: t.ms(0.5) for t in timings}
    mcp, raw = by["MCP get"], by["MCP get (raw client)"]
    broker, pipe = by["ProntoDB client get (no MCP)"], by["echo get (raw client)"]
    sdk_raw, sdk = by["SDK echo get (raw client)"], by["SDK echo get"]
    echo = by["echo get"]
    before, before_raw = by[f"{SDK_STDIO} get"], by[f"{SDK_STDIO} get (raw client)"]
    return (
        f"On the SDK's stdio transport (worker threads), as it served before its own, an MCP "
        f"`get` took {before:.3f} ms ({before / echo:.2f}x the echo floor; {before_raw:.3f} ms "
        f"with the raw client); on its own, {mcp:.3f} ms ({mcp / echo:.2f}x; {raw:.3f} ms raw).\n\n"
        f"Where an MCP `get`'s {mcp:.3f} ms goes (medians): {pipe:.3f} ms the pipe and JSON "
        f"(raw echo), {broker:.3f} ms the broker's round trip (ProntoDB client), "
        f"{raw - pipe - broker:.3f} ms the server's own work, of which {sdk_raw - pipe:.3f} ms is "
        f"the SDK's server with an echo tool (raw SDK echo less raw echo) and "
        f"{raw - sdk_raw - broker:.3f} ms ProntoDB's tool and its call to the broker beyond a bare "
        f"client's round trip, and "
        f"{mcp - raw:.3f} ms the SDK's client (the host's side). The SDK's server alone, with an "
        f"echo tool, is {sdk / echo:.2f}x the echo floor through the SDK's client ({sdk:.3f} ms)."
    )


def report(timings: list[Timing], summary: str, args: argparse.Namespace) -> str:
    rows = [
        f"| {t.name} | {len(t.samples)} | {t.ms(0.5):.3f} | {t.ms(0.99):.3f} | {t.rate:,.0f} |"
        for t in timings
    ]
    return "\n".join(
        [
            f"## MCP: a call through `prontodb mcp` vs a one-shot CLI call and the echo floor ({machine()})",
            "",
            f"Sequential calls, one at a time, after {WARMUP} unmeasured; key `k` = `hello`, the broker "
            "on a Unix socket. `MCP` is one long-lived `prontodb mcp` driven by the official SDK's "
            "client (`mcp.ClientSession` over `mcp.client.stdio`); `echo` is a bare JSON-RPC echo "
            "server on stdio (`python -m bench.mcp --echo-server`) driven the same way, calling its "
            "one tool with the same arguments; `SDK echo` is the same tool on the SDK's low-level "
            "server over `prontodb mcp`'s transport (`--sdk-echo-server`); `MCP on the SDK's stdio` "
            "is `prontodb mcp` on the SDK's own stdio transport, as it served before it had its own "
            "(`--sdk-stdio-mcp`). The raw-client rows drive the same servers by writing "
            "one JSON line and reading one (no SDK on the client side); the one-shot rows spawn a "
            f"whole `prontodb` process per call ({args.runs} runs).",
            "",
            "| case | calls | p50 ms | p99 ms | calls/s |",
            "| --- | --- | --- | --- | --- |",
            *rows,
            "",
            summary.replace("\n", "\n\n"),
            "",
            breakdown(timings),
            "",
            "`prontodb mcp` serves through a stdio transport of its own (clients/_mcp_stdio.py), "
            "which reads stdin and writes stdout from the event loop. Profiled before it (py-spy, "
            "cProfile and each thread's CPU time, 5,000 raw `get`s), the SDK's `mcp.server.stdio` "
            "made three thread round trips a call (a readline, a write and a flush through anyio "
            "worker threads, each waking the loop through its self-pipe) and about 20 event-loop "
            "passes: 0.9 ms of the loop thread's CPU a call, 0.1-0.2 ms more on the workers. With "
            "its own transport the server makes about 8 passes on one thread, and what is left of "
            "its own part is the SDK's request path (the `SDK echo` rows: pydantic "
            "validation of the request and the result, the SDK's OpenTelemetry wrapper, a task per "
            "request, the relay of the first request), which no transport removes, and the tool "
            "around its broker round trip (the breakdown above).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per MCP and echo case")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per one-shot CLI case")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/BENCHMARKS.md")
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sdk-echo-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sdk-stdio-mcp", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        serve_echo(sys.stdin.buffer, sys.stdout.buffer)
        return
    if args.sdk_echo_server:
        serve_sdk_echo()
        return
    if args.sdk_stdio_mcp:
        serve_mcp_on_sdk_stdio(args.sdk_stdio_mcp)
        return
    timings, summary = run(args)
    text = report(timings, summary, args)
    print()
    print(text)
    if not args.no_report:
        update_section("mcp", text)
        print("recorded in docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
