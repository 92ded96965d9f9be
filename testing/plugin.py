"""The pytest plugin: a live broker and connected clients as fixtures (docs/TESTING.md).

One broker serves the whole session (started by the first test that needs it, stopped by pid
when the session ends); each test gets a database of its own on it (:func:`prontodb_cursor`).
A test that needs a broker of its own (to stop, kill or restart it, to start it with other
options, or to change users, grants and cursor bindings) starts one with
:func:`prontodb_broker_factory`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from ._factory import BrokerFactory
from ._process import FSYNC_POLICIES, BrokerProcess

# Every pytest run of the environment imports this module, most of them for tests that never use
# ProntoDB: the clients load when a fixture first needs them, not here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from prontodb.clients import AsyncClient, Client

    from ._shared import SharedBroker

USER = "pytest"  # whom the fixtures' clients connect as: the writer of the tests' changes


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("prontodb", "ProntoDB brokers for tests (prontodb.testing)")
    text = "The --fsync policy of the brokers the prontodb fixtures start (default: always)."
    group.addoption("--prontodb-fsync", choices=FSYNC_POLICIES, help=text)
    parser.addini("prontodb_fsync", text, default="always")


def pytest_configure(config: pytest.Config) -> None:
    _fsync(config)  # a bad policy is a usage error at once, not an error in each test


def _fsync(config: pytest.Config) -> str:
    policy = config.getoption("prontodb_fsync") or config.getini("prontodb_fsync")
    if policy not in FSYNC_POLICIES:
        raise pytest.UsageError(f"prontodb_fsync = {policy}: use {', '.join(FSYNC_POLICIES)}")
    return str(policy)


def _factory(tmp_path_factory: pytest.TempPathFactory, config: pytest.Config) -> BrokerFactory:
    return BrokerFactory(lambda: tmp_path_factory.mktemp("prontodb"), fsync=_fsync(config))


@pytest.fixture(scope="session")
def _prontodb_shared(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[SharedBroker]:
    from ._shared import SharedBroker

    with _factory(tmp_path_factory, pytestconfig) as start:
        yield SharedBroker(start(), USER)


@pytest.fixture(scope="session")
def prontodb_broker(_prontodb_shared: SharedBroker) -> BrokerProcess:
    """The session's broker, shared by every test: a :class:`~prontodb.testing.BrokerProcess`
    (``url``, ``pid``, ``data_dir``, ``log``), started by the first test that asks for it and
    stopped when the session ends. Do not stop it: a test that stops, kills or restarts a
    broker starts its own with ``prontodb_broker_factory``."""
    return _prontodb_shared.broker


@pytest.fixture(scope="session")
def prontodb_url(prontodb_broker: BrokerProcess) -> str:
    """The session's broker's URL (``unix://...``)."""
    return prontodb_broker.url


@pytest.fixture
def prontodb_cursor(
    _prontodb_shared: SharedBroker, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A cursor name no other test of the session has (``t<n>_<test name>``, at most 48
    characters): a database of the session's broker that is this test's alone. When the test
    ends, it is purged, with any database named ``<cursor>-<suffix>``."""
    name = _prontodb_shared.begin(request.node.nodeid, request.node.name)
    yield name
    _prontodb_shared.end(name)


@pytest.fixture
def prontodb_client(prontodb_url: str, prontodb_cursor: str) -> Iterator[Client]:
    """A :class:`~prontodb.clients.Client` connected to the session's broker, its cursor the
    test's own (``prontodb_cursor``), as user ``pytest``; closed after the test."""
    from prontodb.clients import Client

    with Client.connect(prontodb_url, user=USER, cursor=prontodb_cursor) as client:
        yield client


@pytest.fixture
async def prontodb_async_client(
    prontodb_url: str, prontodb_cursor: str
) -> AsyncIterator[AsyncClient]:
    """An :class:`~prontodb.clients.AsyncClient`, as ``prontodb_client`` is a Client. An async
    fixture: for trio tests under pytest-trio, and for trio or asyncio tests under anyio's
    plugin (``@pytest.mark.anyio``)."""
    from prontodb.clients import AsyncClient

    client = await AsyncClient.connect(prontodb_url, user=USER, cursor=prontodb_cursor)
    async with client:
        yield client


@pytest.fixture
def prontodb_environ(
    prontodb_broker: BrokerProcess, prontodb_cursor: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """``PRONTODB_URL``, ``PRONTODB_CURSOR`` and ``PRONTODB_USER`` set for the test, so the
    ``prontodb`` CLI (in-process or a subprocess) uses the test's database of the session's
    broker; the variables set, returned. (``Client.connect()`` reads the URL, not the cursor.)"""
    variables = {
        **prontodb_broker.environ(),
        "PRONTODB_CURSOR": prontodb_cursor,
        "PRONTODB_USER": USER,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


@pytest.fixture
def prontodb_broker_factory(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[BrokerFactory]:
    """Start brokers of the test's own: ``prontodb_broker_factory(*serve_args, fsync=None)``
    returns a running :class:`~prontodb.testing.BrokerProcess` on a new temporary directory,
    to stop, kill and start again at will. Every one still running is stopped after the test."""
    with _factory(tmp_path_factory, pytestconfig) as start:
        yield start
