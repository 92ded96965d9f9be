"""Shared test settings: hypothesis profiles sized for a 2-core CI machine, short temp dirs, and
the reliability suite's marker, scale and figures."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from reliability_kit import Figures, Scale

from prontodb.broker.storage import FAULTS, FaultPoints

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# A suite started with SIGINT ignored (a background job of a non-interactive shell) would pass
# that on to every process it starts, and a Ctrl-C test would hang: handled here, SIGINT is reset
# to its default in each of them (tests/test_harness.py).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Every broker `prontodb serve` runs lists itself in the user's roster, under $XDG_RUNTIME_DIR or
# $XDG_STATE_HOME (docs/CLI.md, "Your brokers"), where `prontodb ps` and `stop --all` find it. The
# session gets both of its own, so that no test broker shows in the developer's `prontodb ps` (or
# is stopped by their `stop --all`), and no test's `stop --all` reaches the developer's brokers.
# Tests that look at rosters give each broker its own (tests/test_cli_process.py, make_home).
_XDG = Path(tempfile.mkdtemp(prefix="pdb-xdg-", dir="/tmp"))
for _name in ("run", "state"):
    (_XDG / _name).mkdir(mode=0o700)
os.environ["XDG_RUNTIME_DIR"] = str(_XDG / "run")
os.environ["XDG_STATE_HOME"] = str(_XDG / "state")

_FIGURES: list[dict[str, object]] = []  # every reliability case's figures, in the order they ran


@pytest.fixture
def faults() -> Iterator[FaultPoints]:
    """Storage's fault-injection hooks, cleared again however the test ends."""
    try:
        yield FAULTS
    finally:
        FAULTS.fsync = None


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh private directory with a short path: a Unix socket path must fit in 107 bytes,
    and pytest's tmp_path can be longer than that."""
    path = Path(tempfile.mkdtemp(prefix="pdb-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- the reliability suite (tests/reliability/) ---------------------------------------------------

RELIABILITY_DIR = Path(__file__).resolve().parent / "reliability"


# The modules whose tests start broker or CLI processes by the hundred, or run the shell recipes,
# examples and demo end to end: `-m "not slow"` leaves them out (with the reliability suite), and
# the unit layer left runs in about a minute.
SLOW_MODULES = frozenset(
    {
        "test_admin_reliability",
        "test_broker_process",
        "test_cli_process",
        "test_quota_process",
        "test_cookbook",
        "test_database_crash",
        "test_demo",
        "test_examples_python",
        "test_examples_shell",
        "test_mcp",
        "test_mcp_agents",
        "test_mcp_http",
        "test_queue_process",
        "test_readme",
        "test_recipes_process",
        "test_seed",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of tests/reliability/ ``reliability`` (``-m reliability`` runs the suite
    alone, ``-m 'not reliability'`` everything else), and it and the slow modules ``slow``."""
    for item in items:
        if RELIABILITY_DIR in item.path.parents:
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.slow)
        elif item.path.stem in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def scale() -> Scale:
    """How hard the reliability suite pushes: the quick counts in ./scripts/test.sh, the long
    ones under ./scripts/torture.sh (PRONTODB_TORTURE=1)."""
    return Scale(os.environ.get("PRONTODB_TORTURE", "") not in ("", "0"))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """What a reliability case checked, reported under its scenario. Kept for the session and
    written as JSON to $PRONTODB_RELIABILITY_FIGURES if set (torture.sh turns it into
    docs/RELIABILITY.md)."""
    found = Figures(request.node.name)
    yield found
    if found.values:
        _FIGURES.append(found.as_dict())


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("PRONTODB_RELIABILITY_FIGURES")
    if target and _FIGURES:
        Path(target).write_text(json.dumps(_FIGURES, indent=1) + "\n")
    shutil.rmtree(_XDG, ignore_errors=True)


@pytest.fixture
def cursor(request: pytest.FixtureRequest) -> str:
    """A database of the test's own, so tests sharing a broker do not see each other's keys."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[-60:]
    return name
