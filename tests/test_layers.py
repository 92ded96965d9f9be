"""The layering rules of DESIGN.md, checked in a fresh interpreter: what each part may not import."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

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
