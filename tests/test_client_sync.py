"""The sync client (generated from the async one) against real brokers and a scripted peer.

Threads take the place of tasks: several threads share one client, and the scripted peer
(``ThreadedPeer``, the broker's end of a real Unix socket) is driven from the test's own thread.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from brokers import BrokerProcess, running_broker

from prontodb.clients import BrokerUnavailable, Client, ErrorCode, KeyInfo, ProntoError
from prontodb.protocol import (
    NEED_DATA,
    Connection,
    Event,
    Goodbye,
    Hello,
    Limits,
    Message,
    Request,
    Response,
    Role,
    Welcome,
)


@pytest.fixture
def broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path / "data", short_dir / "b.sock") as process:
        yield process


def expect_error(code: ErrorCode, call: Callable[[], Any]) -> ProntoError:
    with pytest.raises(ProntoError) as info:
        call()
    assert info.value.code is code, info.value
    return info.value


def test_every_method_round_trips(broker: BrokerProcess) -> None:
    with Client.connect(broker.url, user="bob", cursor="work") as client:
        assert (client.url, client.user, client.cursor) == (broker.url, "bob", "work")
        client.ping()
        assert client.get("job.missing") is None
        assert client.get_info("job.missing") is None
        rev = client.set("job.a", {"state": "new"})
        assert client.get("job.a") == {"state": "new"}
        info = client.get_info("job.a")
        assert isinstance(info, KeyInfo)
        assert (info.writer, info.mod_rev, info.version) == ("bob", rev, 1)
        assert client.set("job.a", "done", if_value={"state": "new"}) == rev + 1
        assert client.incr("job.n", 3) == 3
        assert client.decr("job.n") == 2
        assert client.keys("job") == ["job.a", "job.n"]
        assert client.scan("job", limit=1) == [("job.a", "done")]
        assert client.count("job") == 2
        result = client.txn([{"key": "job.n", "value": 2}], [{"op": "incr", "key": "job.n"}])
        assert (result.succeeded, result.results) == (True, [3])
        assert client.delete("job.a") is True
        assert client.delete("job.a") is False
        assert client.get("job.n", cursor="default") is None
        assert client.status()["pid"] == broker.pid
        assert client.call("get", {"key": "job.n", "cursor": "work"}) == 3


def test_operation_errors(broker: BrokerProcess) -> None:
    with Client.connect(broker.url) as client:
        client.set("app.name", "text")
        err = expect_error(ErrorCode.COMPARE_FAILED, lambda: client.set("app.name", 1, if_rev=0))
        assert err.exit_status == 5
        expect_error(ErrorCode.COMPARE_FAILED, lambda: client.set("app.name", 1, if_absent=True))
        expect_error(ErrorCode.WRONG_TYPE, lambda: client.incr("app.name"))
        expect_error(ErrorCode.BAD_KEY, lambda: client.set("no spaces", 1))
        expect_error(ErrorCode.BAD_REQUEST, lambda: client.set("app.x", {3: "int key"}))
        expect_error(ErrorCode.UNKNOWN_OP, lambda: client.call("frobnicate", {}))
        assert client.get("app.name") == "text"


def test_pages_of_keys_and_scan(tmp_path: Path, short_dir: Path) -> None:
    total = 10_001
    names = sorted(f"many.k{i:05}" for i in range(total))
    with (
        running_broker(tmp_path / "data", short_dir / "b.sock", extra=("--fsync", "never")) as b,
        Client.connect(b.url) as client,
    ):
        for start in range(0, total, 128):
            ops = [{"op": "set", "key": k, "value": 1} for k in names[start : start + 128]]
            assert client.txn([], ops).succeeded
        assert client.count("many") == total
        assert client.keys("many") == names
        assert client.keys("many", limit=10_001) == names
        assert client.keys("many", limit=3) == names[:3]
        assert client.scan("many") == [(name, 1) for name in names]


def test_scan_follows_pages_cut_by_size(broker: BrokerProcess) -> None:
    big = b"x" * 400_000  # a scan page stops after 1 MiB of values
    with Client.connect(broker.url) as client:
        for i in range(5):
            client.set(f"blob.v{i}", big)
        assert client.call("scan", {"prefix": "blob"})["more"] is True
        assert client.scan("blob") == [(f"blob.v{i}", big) for i in range(5)]
        assert client.scan("blob", limit=3) == [(f"blob.v{i}", big) for i in range(3)]


def test_package_exports_load_lazily() -> None:
    import prontodb.clients as clients
    from prontodb.clients import _sync, _types

    assert clients.Client is _sync.client.Client
    assert clients.KeyInfo is _types.KeyInfo
    assert clients.ProntoError is ProntoError
    assert {"AsyncClient", "Client", "MISSING", "TxnResult"} <= set(dir(clients))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        clients.Nope  # noqa: B018


def test_threads_share_one_client(broker: BrokerProcess) -> None:
    with Client.connect(broker.url) as client:

        def work(thread: int) -> list[Any]:
            seen = []
            for i in range(25):
                key = f"t{thread}.k{i}"
                client.set(key, [thread, i])
                seen.append(client.get(key))
                client.incr("total")
            return seen

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(work, range(16)))
        for thread, seen in enumerate(results):
            assert seen == [[thread, i] for i in range(25)]
        assert client.get("total") == 16 * 25
        stats = client.statistics()
        assert (stats["in_flight"], stats["waiting"], stats["queued"]) == (0, 0, 0)


def test_tcp_url(tmp_path: Path, short_dir: Path) -> None:
    with (
        running_broker(tmp_path / "data", short_dir / "b.sock", tcp=True) as broker,
        Client.connect(broker.tcp_url) as client,
    ):
        client.set("net.k", b"bytes")
        assert client.get("net.k") == b"bytes"


def test_nothing_listening_is_broker_unavailable(short_dir: Path) -> None:
    url = f"unix://{short_dir}/nobody.sock"
    with pytest.raises(BrokerUnavailable) as info:
        Client.connect(url)
    assert info.value.code is ErrorCode.UNAVAILABLE
    assert url in info.value.message
    assert "start one with `prontodb serve`" in info.value.message


def test_stopped_broker_fails_later_calls(broker: BrokerProcess) -> None:
    with Client.connect(broker.url) as client, Client.connect(broker.url) as other:
        client.stop()
        assert broker.process.wait() == 0
        expect_error(ErrorCode.UNAVAILABLE, client.ping)
        expect_error(ErrorCode.UNAVAILABLE, other.ping)
    with pytest.raises(BrokerUnavailable):
        Client.connect(broker.url)


def test_closed_client_refuses_calls(broker: BrokerProcess) -> None:
    client = Client.connect(broker.url)
    client.close()
    client.close()
    assert "closed" in expect_error(ErrorCode.UNAVAILABLE, client.ping).message


# -- a scripted peer ---------------------------------------------------------------------------


class ThreadedPeer:
    """The broker's end of one connection, driven by the test's thread."""

    def __init__(self, sock: socket.socket, max_in_flight: int) -> None:
        self.sock = sock
        self.conn = Connection(Role.SERVER, Limits(max_in_flight=max_in_flight))

    def next_message(self) -> Event:
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            self.conn.receive_data(self.sock.recv(65536))

    def request(self) -> Request:
        message = self.next_message()
        assert isinstance(message, Request), message
        return message

    def send(self, message: Message) -> None:
        self.sock.sendall(self.conn.send(message))

    def answer(self, request: Request, result: Any) -> None:
        self.send(Response(request.id, None, result))


@contextmanager
def scripted(short_dir: Path, max_in_flight: int = 1024) -> Iterator[tuple[Client, ThreadedPeer]]:
    path = str(short_dir / "fake.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()
        peers: list[ThreadedPeer] = []

        def accept() -> None:
            peer = ThreadedPeer(listener.accept()[0], max_in_flight)
            peers.append(peer)
            assert isinstance(peer.next_message(), Hello)
            peer.send(Welcome("fake/1", 3, {"max_in_flight": max_in_flight}))

        greeter = threading.Thread(target=accept)
        greeter.start()
        try:
            client = Client.connect("unix://" + path, user="tester")
        finally:
            greeter.join()
        with peers[0].sock, client:
            yield client, peers[0]


def test_threads_wait_for_slots_and_get_their_own_answers(short_dir: Path) -> None:
    with scripted(short_dir, max_in_flight=2) as (client, peer), ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client.get, f"k{i}") for i in range(6)]
        for _ in range(3):
            # Two in flight at most (the peer's Connection enforces it); answer the later first.
            first, second = peer.request(), peer.request()
            peer.answer(second, second.args["key"].upper())
            peer.answer(first, first.args["key"].upper())
        assert [f.result() for f in futures] == [f"K{i}" for i in range(6)]


def test_goodbye_fails_every_waiting_thread(short_dir: Path) -> None:
    with scripted(short_dir) as (client, peer), ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(client.get, key) for key in "abc"]
        for _ in futures:
            peer.request()
        peer.send(Goodbye(ErrorCode.UNAVAILABLE, "The broker is stopping."))
        for future in futures:
            error = future.exception()
            assert isinstance(error, ProntoError)
            assert (error.code, error.message) == (ErrorCode.UNAVAILABLE, "The broker is stopping.")


def test_close_wakes_a_thread_blocked_reading(short_dir: Path) -> None:
    with scripted(short_dir) as (client, peer), ThreadPoolExecutor(1) as pool:
        waiting: Future[Any] = pool.submit(client.get, "never.answered")
        peer.request()  # sent: its thread now reads, and no answer will come
        client.close()
        error = waiting.exception()
        assert isinstance(error, ProntoError)
        assert error.code is ErrorCode.UNAVAILABLE


def test_ttls_and_caches(broker: BrokerProcess) -> None:
    with Client.connect(broker.url, cursor="ttl") as client:
        client.create_cache("sessions", 3600)
        assert client.caches() == {"sessions": 3600.0}
        client.set("sessions.w1", "on")
        remaining = client.ttl("sessions.w1")
        assert remaining is not None
        assert 3500 < remaining <= 3600
        client.set("plain", 1)
        assert client.ttl("plain") is None
        expect_error(ErrorCode.NOT_FOUND, lambda: client.ttl("missing"))
        assert client.expire("plain", 100) is True
        info = client.get_info("plain")
        assert info is not None
        assert info.expires is not None
        assert client.persist("plain") is True
        assert client.persist("plain") is False
        assert client.expire("missing", 5) is False
        assert client.expire("plain", 0) is True  # now: gone
        assert client.get("plain") is None
        client.set("short", 1, ttl=0.5)
        assert client.drop_cache("sessions") is True
        assert client.caches() == {}
        expect_error(ErrorCode.BAD_REQUEST, lambda: client.set("k", 1, ttl=-1))


def test_claims(broker: BrokerProcess) -> None:
    with Client.connect(broker.url, cursor="claims", user="w1") as client:
        for n in range(3):
            client.set(f"jobs.j{n}", n)
        task = client.claim("jobs", lease=30)
        assert task is not None
        assert (task.key, task.value, task.deliveries) == ("jobs.j0", 0, 1)
        info = client.get_info("jobs.j0")
        assert info is not None
        assert info.claim is not None
        assert (info.claim.holder, info.claim.token, info.deliveries) == ("w1", task.token, 1)
        assert [c.key for c in client.claims("jobs")] == ["jobs.j0"]
        assert client.extend(task.key, task.token, 100) > task.lease
        client.release(task.key, task.token)
        expect_error(ErrorCode.COMPARE_FAILED, lambda: client.ack(task.key, task.token))
        with client.claiming("jobs") as done:  # acked when the block ends
            assert done.key == "jobs.j0"
            assert done.deliveries == 2
        assert client.get("jobs.j0") is None

        def fail_the_work() -> None:
            with client.claiming("jobs") as failed:
                assert failed.key == "jobs.j1"
                raise RuntimeError("the work failed")

        with pytest.raises(RuntimeError):
            fail_the_work()
        again = client.claim("jobs")  # released: it comes back first
        assert again is not None
        assert (again.key, again.deliveries) == ("jobs.j1", 2)
        client.ack(again.key, again.token)
        last = client.claim("jobs")
        assert last is not None
        client.ack(last.key, last.token)
        assert client.claim("jobs") is None
        expect_error(ErrorCode.TIMED_OUT, lambda: client.claiming("jobs").__enter__())
