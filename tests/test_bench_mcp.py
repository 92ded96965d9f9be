"""bench/mcp.py's echo floor: it must answer what the SDK's client sends, or its figures say
nothing."""

from __future__ import annotations

import io
import json

from bench.mcp import Timing, serve_echo, verdict


def test_the_echo_server_answers_requests_and_not_notifications() -> None:
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "X"}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"key": "k"}},
        },
        {"jsonrpc": "2.0", "id": 4, "method": "resources/list"},
    ]
    out = io.BytesIO()
    serve_echo(io.BytesIO(b"".join(json.dumps(m).encode() + b"\n" for m in lines)), out)
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["id"] for r in replies] == [1, 2, 3, 4]
    assert replies[0]["result"]["protocolVersion"] == "X"
    assert [t["name"] for t in replies[1]["result"]["tools"]] == ["echo"]
    assert replies[2]["result"]["structuredContent"] == {"key": "k"}
    assert replies[2]["result"]["isError"] is False
    assert replies[3]["error"]["code"] == -32601


def test_the_verdict_says_whether_each_target_is_met() -> None:
    def row(name: str, ms: float) -> Timing:
        return Timing(name, [ms / 1000] * 3, 1.0)

    timings = [
        row("MCP get", 1.0),
        row("MCP set", 3.0),
        row("echo get", 0.6),
        row("echo set", 0.6),
        row("prontodb get (one-shot, regular install)", 10.0),
    ]
    get, set_ = verdict(timings).splitlines()
    assert "0.100x" in get
    assert "(target ≤ 0.3x: met)" in get
    assert "(target ≤ 2x: met)" in get
    assert "(target ≤ 0.3x: met)" in set_
    assert "5.00x the echo floor (target ≤ 2x: MISSED)" in set_
