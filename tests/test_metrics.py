"""``serve --http``: ``/metrics`` shows the broker's figures in the Prometheus text format (parsed
back with prometheus_client's own parser), ``/healthz`` and ``/readyz`` answer, bad requests get
clear answers while the broker serves on; and the HTTP layer alone (a streamed answer, the cap on
connections), which a later page builds on.

In-process brokers in the test's trio run; the HTTP requests go over real TCP sockets on port 0.
"""

from __future__ import annotations

import logging
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from inprocess import running_broker
from prometheus_client.parser import text_string_to_metric_families

from prontodb.broker.server import ServerConfig
from prontodb.broker.server._http import HttpRequest, HttpResponse, HttpServer, Write
from prontodb.broker.storage import FsyncPolicy
from prontodb.clients import AsyncClient


def config(directory: Path, **extra: Any) -> ServerConfig:
    return ServerConfig(data_dir=directory / "data", socket_path=directory / "s.sock", **extra)


async def http_get(address: str, path: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` from ``host:port`` over a plain socket: (status, headers, body)."""
    host = address.rpartition(":")[0]
    request = f"GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n{headers}\r\n"
    return parse_response(await raw_exchange(address, request.encode()))


async def raw_exchange(address: str, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes."""
    host, _, port = address.rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        try:
            await stream.send_all(data)
            await stream.send_eof()  # nothing more: a kept-alive connection then ends
        except trio.BrokenResourceError:
            pass  # the server answered and closed before taking it all
        received = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def one(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def test_metrics_page_health_and_readiness(short_dir: Path) -> None:
    async with running_broker(config(short_dir, http=("127.0.0.1", 0))) as running:
        address = running.info.http
        assert address is not None
        assert address.startswith("127.0.0.1:")
        assert not address.endswith(":0")
        async with await AsyncClient.connect(running.url, user="ops") as client:
            await client.set("jobs.a", 1)
            await client.set("jobs.b", 2)
            assert await client.claim("jobs") is not None
            status, headers, body = await http_get(address, "/metrics")
            assert status == 200
            assert headers["content-type"].startswith("text/plain; version=")
            found = samples(body.decode())
            assert one(found, "prontodb_requests_total", op="set", code="ok") == 2
            assert one(found, "prontodb_request_duration_seconds_count", op="set") == 2
            assert (
                one(found, "prontodb_queue_depth", cursor="default", queue="jobs", state="ready")
                == 1
            )
            assert (
                one(found, "prontodb_queue_depth", cursor="default", queue="jobs", state="claimed")
                == 1
            )
            assert one(found, "prontodb_claims_in_flight", cursor="default") == 1
            assert one(found, "prontodb_connections", transport="unix", user="ops") == 1
            assert one(found, "prontodb_fsync_duration_seconds_count") >= 2
            assert one(found, "prontodb_disk_bytes", cursor="default", kind="segments") > 0
            assert one(found, "prontodb_watch_lag_revisions", cursor="default") == 0
            assert one(found, "prontodb_process_resident_memory_bytes") > 1024 * 1024
            assert one(found, "prontodb_process_cpu_seconds_total") > 0
            await client.set("jobs.c", 3)
            _, _, later = await http_get(address, "/metrics")
            assert one(samples(later.decode()), "prontodb_requests_total", op="set", code="ok") == 3
        assert (await http_get(address, "/healthz"))[:1] == (200,)
        status, _, body = await http_get(address, "/readyz")
        assert (status, body) == (200, b"ready\n")


async def test_readiness_says_a_stopping_broker_is_not_ready(short_dir: Path) -> None:
    async with running_broker(config(short_dir, http=("127.0.0.1", 0))) as running:
        address = running.info.http
        assert address is not None
        # A connection open keeps the broker in its grace period once the stop begins.
        async with await AsyncClient.connect(running.url, user="ops") as client:
            await client.set("k", 1)
            running.broker.request_stop()
            status, _, body = await http_get(address, "/readyz")
            assert status == 503
            assert b"stopping" in body
            assert (await http_get(address, "/healthz"))[0] == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi", 405),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"GET /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 9000\r\n\r\n" + b"b" * 9000, 413),
    ],
)
async def test_bad_requests_are_answered_and_the_broker_serves_on(
    short_dir: Path, request_bytes: bytes, status: int
) -> None:
    async with running_broker(config(short_dir, http=("127.0.0.1", 0))) as running:
        address = running.info.http
        assert address is not None
        got, _, body = parse_response(await raw_exchange(address, request_bytes))
        assert got == status
        assert body.strip()  # it says what went wrong
        assert (await http_get(address, "/healthz"))[0] == 200
        async with await AsyncClient.connect(running.url, user="ops") as client:
            await client.ping()


async def test_a_quiet_http_client_is_dropped_after_the_read_timeout(
    short_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cfg = config(short_dir, http=("127.0.0.1", 0), fsync=FsyncPolicy.NEVER)
    async with running_broker(cfg) as running:
        address = running.info.http
        assert address is not None
        host, _, port = address.rpartition(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(b"GET /metr")  # and nothing more
            with trio.fail_after(60):
                assert await stream.receive_some(100) == b""
            assert trio.current_time() >= 10


async def test_keep_alive_serves_several_requests_on_one_connection(short_dir: Path) -> None:
    async with running_broker(config(short_dir, http=("127.0.0.1", 0))) as running:
        address = running.info.http
        assert address is not None
        two = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nHEAD /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        raw = await raw_exchange(address, two)
        assert raw.count(b"HTTP/1.1 200 OK") == 2
        assert raw.lower().endswith(b"content-length: 6\r\nconnection: close\r\n\r\n")  # HEAD


# -- the HTTP layer alone: what a later page builds on ------------------------------------------


async def serving(server: HttpServer, nursery: trio.Nursery) -> str:
    sockets = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listeners: list[trio.abc.Listener[Any]] = list(sockets)
    nursery.start_soon(server.serve, listeners)
    host, port = sockets[0].socket.getsockname()[:2]
    return f"{host}:{port}"


async def test_a_streamed_answer_goes_chunk_by_chunk_until_the_client_goes() -> None:
    ended = trio.Event()
    send_event, next_event = trio.open_memory_channel[int](0)

    async def events(request: HttpRequest) -> HttpResponse:
        async def produce(write: Write) -> None:
            try:
                async for n in next_event:  # as a watch's changes come
                    await write(f"data: {n}\n\n".encode())
            finally:
                ended.set()

        return HttpResponse(200, content_type="text/event-stream", stream=produce)

    async with trio.open_nursery() as nursery:
        address = await serving(HttpServer({"/events": events}, server_name="t"), nursery)
        host, _, port = address.rpartition(":")
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
        received = b""
        with trio.fail_after(10):
            for n in range(3):
                await send_event.send(n)
                while f"data: {n}\n".encode() not in received:
                    received += await stream.receive_some(65536)
        assert b"transfer-encoding: chunked" in received.lower()
        assert b"content-type: text/event-stream" in received
        await stream.aclose()  # the client goes: the stream stops, though no event comes
        with trio.fail_after(10):
            await ended.wait()
        nursery.cancel_scope.cancel()


async def test_connections_past_the_cap_are_answered_503() -> None:
    async def hello(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, b"hi")

    async with trio.open_nursery() as nursery:
        server = HttpServer({"/": hello}, server_name="t", max_connections=1)
        address = await serving(server, nursery)
        host, _, port = address.rpartition(":")
        first = await trio.open_tcp_stream(host, int(port))
        await first.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        with trio.fail_after(10):
            assert b"200 OK" in await first.receive_some(65536)  # kept alive: holds the slot
        status, _, body = parse_response(await raw_exchange(address, b"GET / HTTP/1.1\r\n\r\n"))
        assert status == 503
        assert b"Too many connections" in body
        await first.aclose()
        # Its slot frees once the server has read the close: each try is a real exchange.
        for _ in range(1000):
            got = parse_response(await raw_exchange(address, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"))
            if got[0] == 200:
                break
        assert got[0] == 200
        nursery.cancel_scope.cancel()


async def test_a_streamed_answer_whose_client_resets_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ended = trio.Event()

    async def flood(request: HttpRequest) -> HttpResponse:
        async def produce(write: Write) -> None:
            try:
                while True:  # more than the socket buffers take: a write is under way
                    await write(b"data: " + b"x" * 65536 + b"\n\n")
            finally:
                ended.set()

        return HttpResponse(200, content_type="text/event-stream", stream=produce)

    async with trio.open_nursery() as nursery:
        address = await serving(HttpServer({"/flood": flood}, server_name="t"), nursery)
        host, _, port = address.rpartition(":")
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(b"GET /flood HTTP/1.1\r\nhost: x\r\n\r\n")
        with trio.fail_after(10):
            assert b"200 OK" in await stream.receive_some(65536)
        # Closed with unread data and no linger: the server's side is reset, not closed.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
        with trio.fail_after(10):
            await ended.wait()
        nursery.cancel_scope.cancel()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
