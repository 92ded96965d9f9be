"""``connect(autostart=True)``: the Python clients start a broker on the default socket as the CLI
does; without the switch they start nothing. Real broker processes, stopped by pid."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from cli_support import PRONTODB_VARIABLES, serve_processes, short_tmpdir, stop_brokers

from prontodb.clients import AsyncClient, BrokerUnavailable, Client


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The default data directory and socket, private to the test."""
    for name in PRONTODB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with short_tmpdir() as root:
        (root / "run").mkdir(mode=0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(root / "run"))
        monkeypatch.setenv("PRONTODB_DATA_DIR", str(root / "data"))
        try:
            yield root / "data"
        finally:
            stop_brokers(root / "data")


def test_connect_starts_nothing_unless_asked(data_dir: Path) -> None:
    with pytest.raises(BrokerUnavailable):
        Client.connect()
    assert serve_processes(data_dir) == []


def test_autostart_starts_one_broker_and_later_clients_use_it(data_dir: Path) -> None:
    with Client.connect(autostart=True) as first:
        first.set("k", "v")
        pid = first.status()["pid"]
    assert serve_processes(data_dir) == [pid]
    with Client.connect(autostart=True) as again, Client.connect() as plain:
        assert again.status()["pid"] == plain.status()["pid"] == pid
        assert plain.get("k") == "v"


def test_autostart_applies_to_the_default_socket_only(data_dir: Path) -> None:
    with pytest.raises(BrokerUnavailable):
        Client.connect(f"unix://{data_dir.parent}/elsewhere.sock", autostart=True)
    assert serve_processes(data_dir) == []


async def test_the_async_client_starts_it_from_a_worker_thread(data_dir: Path) -> None:
    ticks = 0

    async def tick() -> None:  # the event loop goes on while the broker starts
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        async with AsyncClient.connect(autostart=True) as client:
            assert await client.incr("n") == 1
        nursery.cancel_scope.cancel()
    assert ticks > 1
    assert len(serve_processes(data_dir)) == 1
