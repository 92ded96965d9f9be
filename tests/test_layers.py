"""The layering rules of DESIGN.md, checked in a fresh interpreter: what each part may not import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from prontodb.clients import Client
from prontodb.clients.cli import main

IO_MODULES = {"trio", "anyio", "socket", "selectors", "asyncio", "threading", "subprocess"}


def imported_modules(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def imported_by(module: str) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(module)}


@pytest.mark.parametrize("module", ["prontodb.protocol", "prontodb.broker.engine"])
def test_sans_io_layers_import_no_io(module: str) -> None:
    assert imported_by(module) & IO_MODULES == set()


def test_cli_imports_neither_trio_nor_anyio() -> None:
    assert imported_by("prontodb.clients.cli") & {"trio", "anyio"} == set()


# What a fast-path command must not load (docs/CLI.md, "Start-up time"): click (the other front
# end), the event loops, the sync client's stack (the protocol, msgpack, enum, threading: its own
# client speaks the wire itself), and what it imports only when it needs it: importlib
# (clients/__init__), zlib (the default socket's name), getpass (the login name).
NOT_ON_THE_FAST_PATH = {
    *("click", "trio", "anyio", "asyncio", "threading", "importlib", "zlib", "getpass"),
    *("msgpack", "enum", "typing", "collections"),
}

_RUN_FORMS = """
import json, sys
from prontodb.clients import cli
for argv in json.loads(sys.argv[1]):
    if cli.main(argv) != 0:
        sys.exit(f"{argv} failed")
print(" ".join(sorted(sys.modules)))
"""


def test_the_fast_path_runs_without_click_or_event_loops(
    prontodb_url: str, prontodb_cursor: str, prontodb_client: Client
) -> None:
    # The commands run for real against the broker, in one fresh interpreter each run's forms.
    prontodb_client.set("jobs.a", "x")
    prontodb_client.set("jobs.b", "y")
    held = prontodb_client.claim("jobs", lease=60)
    assert held is not None
    lock = prontodb_client.acquire("deploy", "lock", prontodb_client.session_grant(60))
    assert lock is not None
    given = ["--url", prontodb_url, "--cursor", prontodb_cursor]
    forms = [
        ["set", "k", "1"],
        ["get", "k"],
        ["incr", "k"],
        ["decr", "k", "2"],
        ["exists", "k"],
        ["keys", "jobs"],
        ["scan", "jobs"],
        ["expire", "k", "60"],
        ["ttl", "k"],
        ["cas", "k", "0", "5"],
        ["claim", "jobs"],
        ["extend", held.key, "--token", str(held.token), "--lease", "30"],
        ["ack", held.key, "--token", str(held.token)],
        ["unlock", "deploy", "--token", str(lock.token)],
        ["del", "k"],
    ]
    out = subprocess.run(
        [sys.executable, "-c", _RUN_FORMS, json.dumps([[*given, *form] for form in forms])],
        check=True,
        capture_output=True,
        text=True,
    )
    # What the interpreter loads before any of it (an editable install's finder imports
    # importlib) is not the fast path's doing.
    modules = set(out.stdout.splitlines()[-1].split()) - imported_modules("sys")
    assert {name.split(".")[0] for name in modules} & NOT_ON_THE_FAST_PATH == set()
    assert "prontodb.clients._cli_wire" in modules
    assert {"prontodb.clients._cli_click", "prontodb.protocol"} & modules == set()


@pytest.mark.parametrize("module", ["prontodb.clients.cli", "prontodb.clients._cli_click"])
def test_only_top_imports_rich(module: str) -> None:
    # Every other command would pay for it at start-up (docs/CLI.md, "Start-up time").
    assert "rich" not in imported_by(module)
    assert "rich" in imported_by("prontodb.clients._cli_top")


@pytest.mark.parametrize("module", ["prontodb.clients", "prontodb.clients._sync.client"])
def test_sync_client_imports_neither_trio_nor_anyio(module: str) -> None:
    assert imported_by(module) & {"trio", "anyio", "asyncio"} == set()


def test_storage_imports_no_event_loop() -> None:
    assert imported_by("prontodb.broker.storage") & {"trio", "anyio", "asyncio"} == set()


def test_the_testing_package_is_the_standard_library_alone() -> None:
    # Its brokers start through it (python -m prontodb.testing._serve): importing pytest would
    # add about 0.1 s to each start (of about 0.2 s). Only its plugin module imports pytest.
    found = imported_by("prontodb.testing")
    assert found & {"pytest", "_pytest", "trio", "anyio", "asyncio", "prontodb"} == {"prontodb"}
    assert "prontodb.clients" not in imported_modules("prontodb.testing")


def test_the_pytest_plugin_loads_the_clients_only_for_its_fixtures() -> None:
    # Every pytest run of an environment with ProntoDB installed imports the plugin.
    loaded = imported_modules("prontodb.testing.plugin")
    assert not {"prontodb.clients", "prontodb.protocol", "prontodb.broker", "msgpack"} & loaded


def test_cli_has_help_and_version() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "coordination broker" in result.output
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "0.1.0" in result.output
