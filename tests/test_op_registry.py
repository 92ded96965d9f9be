"""The operation registry is the one list of operations: the clients, the CLI and docs/PROTOCOL.md
must agree with it. Each test names the operation that is missing, and from where."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from prontodb.broker.server import REGISTRY, Layer
from prontodb.clients import AsyncClient, Client
from prontodb.clients._cli_click import cli

ROOT = Path(__file__).parent.parent
DOC = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
# Operations the Python client never sends, and why.
NOT_SENT = {"unwatch": "a client watch has a connection of its own, and ends it by closing it"}


def client_sources() -> str:
    return "".join(p.read_text() for p in sorted((ROOT / "clients" / "_async").glob("*.py")))


def ops_the_client_sends() -> set[str]:
    """Every operation name the async client puts on the wire (a quoted name passed to a call,
    or an ``op`` of a request it builds)."""
    found = set(re.findall(r"""_call\(\s*["']([a-z_]+)["']""", client_sources()))
    found |= set(re.findall(r"""["']([a-z_]+)["']\s*,\s*\{""", client_sources())) & set(REGISTRY)
    return found


def documented_ops() -> dict[str, str]:
    """Each operation of the table in "Operations" with its row's arguments cell."""
    table = DOC.split("## Operations")[1].split("\n## ")[0]
    rows: dict[str, str] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([a-z_]+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def cli_commands() -> set[str]:
    """Every command path of the click tree ("get", "cursor set"), and each with each of its
    options ("backup --restore")."""
    paths: set[str] = set()

    def walk(group: click.Group, prefix: str) -> None:
        for name, command in group.commands.items():
            path = f"{prefix}{name}"
            paths.add(path)
            for param in command.params:
                paths.update(f"{path} {flag}" for flag in param.opts if flag.startswith("--"))
            if isinstance(command, click.Group):
                walk(command, path + " ")

    walk(cli, "")
    return paths


def test_the_registry_holds_every_layer() -> None:
    layers = {spec.layer for spec in REGISTRY.values()}
    assert layers == set(Layer)
    assert {"get", "claim", "watch", "cursor_set", "status"} <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_operation_has_a_client_method(name: str) -> None:
    spec = REGISTRY[name]
    if spec.client is None:  # sent by the client on its own (a cancel), or not at all
        assert name in NOT_SENT or f'"{name}"' in client_sources(), (
            f"{name}: declared as sent by the client internally, but the client never sends it"
        )
        return
    for client in (AsyncClient, Client):
        assert callable(getattr(client, spec.client, None)), (
            f"{name}: {client.__name__} has no method {spec.client!r}"
        )


def test_the_client_sends_only_declared_operations() -> None:
    unknown = ops_the_client_sends() - set(REGISTRY)
    assert not unknown, f"the client sends operations the broker does not declare: {unknown}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_operation_has_its_cli_command(name: str) -> None:
    spec = REGISTRY[name]
    if spec.cli is not None:
        assert spec.cli in cli_commands(), f"{name}: the CLI has no command {spec.cli!r}"
    else:
        dashed = name.replace("_", "-")
        assert dashed not in cli_commands(), (
            f"{name}: declared without a CLI command, but `prontodb {dashed}` exists"
        )


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_operation_is_documented_with_its_arguments(name: str) -> None:
    rows = documented_ops()
    assert name in rows, f"{name}: missing from the table in docs/PROTOCOL.md, Operations"
    for arg in REGISTRY[name].args:
        if arg.name == "cursor" and REGISTRY[name].layer is not Layer.BROKER:
            continue  # "every operation takes cursor?" is said once, above the table
        assert f"`{arg.name}" in rows[name] or "the same" in rows[name], (
            f"{name}: the argument {arg.name!r} is not in its row of docs/PROTOCOL.md"
        )


def test_the_documentation_lists_no_undeclared_operation() -> None:
    extra = set(documented_ops()) - set(REGISTRY)
    assert not extra, f"docs/PROTOCOL.md documents operations the broker lacks: {extra}"
