"""prontodb.testing's brokers, used directly: started and stopped by pid, restarted on the same
socket, refused with their log, and given a short socket when the directory is too long for one.

The pytest plugin built on them is tested as a user runs it: tests/test_testing_plugin.py.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import wait_for_exit

from prontodb.clients import Client
from prontodb.testing import BrokerFactory, BrokerProcess, BrokerStartError


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    made = iter(range(100))
    with BrokerFactory(lambda: tmp_path / f"b{next(made)}", fsync="never") as start:
        yield start


def test_a_broker_stops_cleanly_and_starts_again_on_the_same_url(factory: BrokerFactory) -> None:
    broker = factory()
    first_pid, url = broker.pid, broker.url
    with Client.connect(url) as client:
        client.set("kept", 1)
    assert broker.stop() == 0
    assert not broker.running
    assert broker.returncode == 0
    broker.start()
    assert (broker.url, broker.running) == (url, True)
    assert broker.pid != first_pid
    with Client.connect(url) as client:
        assert client.get("kept") == 1
    assert "stop" in broker.log_text().lower()


def test_a_killed_broker_keeps_what_it_answered(factory: BrokerFactory) -> None:
    broker = factory()
    with Client.connect(broker.url) as client:
        client.set("answered", "yes")
    broker.kill()
    assert broker.returncode == -signal.SIGKILL
    broker.restart()  # stopping a stopped broker is nothing
    with Client.connect(broker.url) as client:
        assert client.get("answered") == "yes"


def test_a_broker_that_cannot_serve_says_why(factory: BrokerFactory, tmp_path: Path) -> None:
    first = factory()
    second = BrokerProcess(first.data_dir, tmp_path / "other.sock", tmp_path / "other.log")
    with pytest.raises(BrokerStartError, match=r"exited before it listened(.|\n)*pid"):
        second.start()
    assert not second.running
    assert first.running
    with pytest.raises(RuntimeError, match="running already"):
        first.start()


def test_close_stops_every_broker_by_pid(tmp_path: Path) -> None:
    made = iter(range(3))
    with BrokerFactory(lambda: tmp_path / f"b{next(made)}") as start:
        brokers = [start(), start(fsync="never")]
        brokers[1].kill()
        pids = [b.pid for b in brokers]
    assert all(pid is not None and wait_for_exit(pid, 0) for pid in pids)
    assert [b.returncode for b in brokers] == [0, -signal.SIGKILL]


def test_a_directory_too_long_for_a_socket_gets_one_under_tmp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with BrokerFactory(lambda: deep) as start:
        broker = start()
        assert broker.socket.parent.parent == Path("/tmp")
        assert broker.data_dir == deep / "data"
        with Client.connect(broker.url) as client:
            client.ping()
    assert not broker.socket.parent.exists()


def test_tcp_and_tokens_for_tests_of_authentication(factory: BrokerFactory) -> None:
    broker = factory("--require-auth", "--tcp", "127.0.0.1:0")
    assert broker.tcp_url is not None
    assert broker.tcp_url.startswith("tcp://127.0.0.1:")
    assert broker.environ() == {"PRONTODB_URL": broker.url}
    assert repr(broker) == f"<BrokerProcess {broker.url} pid {broker.pid}>"
    with Client.connect(broker.tcp_url, user="admin", token=broker.admin_token) as client:
        assert client.user_add("worker")


def test_a_bad_fsync_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sometimes"):
        BrokerFactory(lambda: tmp_path, fsync="sometimes")
    with BrokerFactory(lambda: tmp_path) as start, pytest.raises(ValueError, match="often"):
        start(fsync="often")
    assert BrokerProcess(tmp_path, tmp_path / "s", tmp_path / "l").stop() is None


def test_the_broker_shuts_down_when_the_process_that_started_it_is_gone(
    factory: BrokerFactory,
) -> None:
    # The test process keeps the write end of the broker's lifeline pipe; closing it is what
    # the kernel does when that process dies, however it dies.
    broker = factory()
    pid = broker.pid
    assert pid is not None
    lifeline = broker._lifeline
    assert lifeline is not None
    os.close(lifeline)
    broker._lifeline = None
    assert wait_for_exit(pid, 30)
    assert broker.stop() == 0  # a clean shutdown (SIGTERM), reaped here
