"""The MCP server's tools are held to the op registry: every operation with a CLI command is a tool
or is left out with its reason, each tool takes only its operation's arguments (and never a user),
says truthfully whether it writes, and docs/MCP.md lists them. No process, no SDK needed."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

from prontodb.broker.server import REGISTRY
from prontodb.clients import _mcp_prompts as mcp_prompts
from prontodb.clients import _mcp_tools as mcp_tools
from prontodb.clients._cli_click import cli
from prontodb.protocol import ErrorCode

ROOT = Path(__file__).parent.parent
DOC = (ROOT / "docs" / "MCP.md").read_text(encoding="utf-8")
WITH_CLI = {name for name, spec in REGISTRY.items() if spec.cli is not None}
# The commands that send an operation besides the one the registry names (cas is a set with a
# compare; semaphore, elect and barrier are lock's siblings).
ALSO_NAMED = {"set": ("cas",), "acquire": ("semaphore", "elect", "barrier")}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mcp_ops_script", ROOT / "scripts" / "mcp_ops.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_operations_match_the_registry() -> None:
    current = (ROOT / "clients" / "_mcp_ops.py").read_text(encoding="utf-8")
    assert generator().render() == current, "run python scripts/mcp_ops.py"


@pytest.mark.parametrize("name", sorted(WITH_CLI))
def test_each_operation_with_a_command_is_a_tool_or_left_out_with_a_reason(name: str) -> None:
    tools = {t.op for t in mcp_tools.TOOLS}
    assert (name in tools) != (name in mcp_tools.LEFT_OUT), (
        f"{name}: make it a tool in clients/_mcp_tools.py, or say in LEFT_OUT why not (not both)"
    )
    if name in mcp_tools.LEFT_OUT:
        assert mcp_tools.LEFT_OUT[name].strip()


def test_nothing_left_out_is_unknown_to_the_registry() -> None:
    assert set(mcp_tools.LEFT_OUT) <= WITH_CLI


@pytest.mark.parametrize("tool", mcp_tools.TOOLS, ids=lambda t: t.name)
def test_each_tool_is_named_and_shaped_as_its_operation(tool: mcp_tools.Tool) -> None:
    spec = REGISTRY[tool.op]
    assert spec.cli is not None
    command = tool.name.replace("_", " ")
    named = (spec.cli, *ALSO_NAMED.get(tool.op, ()))
    assert command in named, f"{tool.name}: not the CLI command {spec.cli!r}"
    assert command.split()[0] in cli.commands, f"{tool.name}: no such CLI command"
    declared = {arg.name for arg in spec.args}
    assert set(tool.args) <= declared, f"{tool.name}: arguments the registry lacks"
    schema = tool.input_schema()
    assert "user" not in schema["properties"], f"{tool.name}: no tool may take a user"
    assert set(schema["required"]) <= set(schema["properties"])
    assert tool.read_only is (not spec.writes)
    assert tool.description
    assert tool.output_schema()["type"] == "object"
    if tool.read_only:
        assert not tool.destructive


def test_read_only_offers_only_the_tools_that_change_nothing() -> None:
    offered = mcp_tools.offered(read_only=True)
    assert offered
    assert all(not REGISTRY[t.op].writes for t in offered)
    assert {t.name for t in offered} >= {"get", "keys", "scan", "ttl", "claims", "status"}
    assert len(mcp_tools.offered(read_only=False)) == len(mcp_tools.TOOLS)


def test_docs_list_every_tool_with_its_kind() -> None:
    table = DOC.split("## The tools")[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (read|write) \|", table, re.MULTILINE))
    expected = {t.name: "read" if t.read_only else "write" for t in mcp_tools.TOOLS}
    assert rows == expected


def test_the_command_names_the_extra_when_the_sdk_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import prontodb.clients

    # As on an install without the extra: nothing of the server loaded (another test may have
    # imported it, which also leaves it as an attribute of the package).
    monkeypatch.delitem(sys.modules, "prontodb.clients._mcp_server", raising=False)
    monkeypatch.delattr(prontodb.clients, "_mcp_server", raising=False)
    for name in ("mcp", "mcp_types"):
        monkeypatch.setitem(sys.modules, name, None)
    result = CliRunner().invoke(cli, ["mcp"])
    assert result.exit_code == 1
    assert "pip install 'prontodb[mcp]'" in result.output
    assert result.output.count("\n") == 1


@pytest.mark.parametrize("pattern", mcp_prompts.PATTERNS, ids=lambda p: p.name)
def test_each_prompt_names_only_tools_there_are(pattern: mcp_prompts.Pattern) -> None:
    given = {a.name: "x" for a in pattern.arguments}
    text = pattern.render(given)
    errors = {code.value for code in ErrorCode}
    named = set(re.findall(r"`([a-z_]+)`", text)) - {"x"} - errors
    arguments = {name for t in mcp_tools.TOOLS for name in t.input_schema()["properties"]}
    arguments |= {name for t in mcp_tools.TOOLS for name in t.output_schema().get("properties", {})}
    arguments |= {"writer", "time", "by"}  # get's meta and watch's events
    tools = set(mcp_tools.BY_NAME)
    assert named & tools, f"{pattern.name}: names no tool"
    assert named <= tools | arguments, f"{pattern.name}: {named - tools - arguments} are no tools"
    assert "http" not in text
