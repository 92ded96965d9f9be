"""The dashboard's routes over plain HTTP (the page itself runs in a browser in
test_dashboard_browser.py): the page's files, ``/api/fleet`` after a load, and ``/api/stream``'s
server-sent events (resuming from ``Last-Event-ID`` after a reconnect, the cap on streams, bad
requests answered clearly); off loopback, a user's token and grants decide what shows.

In-process brokers in the test's trio run; HTTP over real TCP sockets on port 0, read with h11.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing
import trustme
from inprocess import running_broker

from prontodb.broker.engine import HistoryLimits
from prontodb.broker.server import ServerConfig
from prontodb.broker.server._dashboard import SAMPLES, DepthHistory
from prontodb.broker.server._dashboard_stream import MAX_STREAMS, VALUE_PREVIEW, preview
from prontodb.clients import AsyncClient

TIMEOUT = 10


def config(directory: Path, **extra: Any) -> ServerConfig:
    extra.setdefault("http", ("127.0.0.1", 0))
    return ServerConfig(data_dir=directory / "data", socket_path=directory / "s.sock", **extra)


class Http:
    """One HTTP/1.1 exchange over a real socket, parsed by h11: the answer's status and headers,
    then its body whole (``text``) or as server-sent events as they come (``event``)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.pending = ""  # received event text not yet split into events
        self.ended = False

    async def _next(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(bytes(await self.stream.receive_some(65536)))

    async def text(self) -> str:
        body = b""
        with trio.fail_after(TIMEOUT):
            while isinstance(event := await self._next(), h11.Data):
                body += event.data
        return body.decode()

    async def event(self) -> dict[str, Any]:
        """The next event: its ``event``, ``id`` and ``data`` (parsed JSON); comments skipped."""
        with trio.fail_after(TIMEOUT):
            while "\n\n" not in self.pending:
                got = await self._next()
                if not isinstance(got, h11.Data):
                    raise AssertionError(f"the stream ended ({got!r}) with {self.pending!r} left")
                self.pending += got.data.decode()
        block, _, self.pending = self.pending.partition("\n\n")
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name and not line.startswith(":"):
                fields[name] = value
        fields["data"] = json.loads(fields.get("data", "null"))
        return fields

    async def changes(self, count: int) -> list[dict[str, Any]]:
        """Events of ``changes`` until ``count`` changes came; each change gets its event's id."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            event = await self.event()
            if event["event"] == "changes":
                found += [{**e, "id": int(event["id"])} for e in event["data"]["events"]]
        return found


@asynccontextmanager
async def get(
    address: str,
    target: str,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> AsyncIterator[Http]:
    """GET ``target`` from ``host:port``; the connection closes when the block ends."""
    host, _, port = address.rpartition(":")
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, int(port))
    if context is not None:
        stream = trio.SSLStream(stream, context, server_hostname=host)
    async with stream:
        http = Http(stream)
        head = [("host", host), *(headers or {}).items()]
        await stream.send_all(
            http.conn.send(h11.Request(method="GET", target=target, headers=head))
        )
        await stream.send_all(http.conn.send(h11.EndOfMessage()))
        with trio.fail_after(TIMEOUT):
            response = await http._next()
        assert isinstance(response, h11.Response)
        http.status = response.status_code
        http.headers = {k.decode(): v.decode() for k, v in response.headers}
        yield http


async def fetch_json(address: str, path: str, **options: Any) -> Any:
    async with get(address, path, **options) as http:
        assert http.status == 200, await http.text()
        return json.loads(await http.text())


async def test_the_page_and_its_files_come_from_the_package(short_dir: Path) -> None:
    async with running_broker(config(short_dir)) as running:
        address = running.info.http
        assert address is not None
        for path, kind, marker in (
            ("/", "text/html", "<title>ProntoDB fleet</title>"),
            ("/dashboard.js", "text/javascript", "EventSource"),
            ("/dashboard.css", "text/css", "svg.spark"),
        ):
            async with get(address, path) as http:
                assert http.status == 200
                assert http.headers["content-type"].startswith(kind)
                assert "script-src 'self'" in http.headers["content-security-policy"]
                assert marker in await http.text()
        async with get(address, "/nothing") as http:
            assert http.status == 404
            assert "/api/fleet" in await http.text()


async def test_the_fleet_shows_depths_claims_dead_letters_and_agents(short_dir: Path) -> None:
    async with (
        running_broker(config(short_dir)) as running,
        await AsyncClient.connect(running.url, user="boss") as boss,
        await AsyncClient.connect(running.url, user="worker-7") as worker,
    ):
        address = running.info.http
        assert address is not None
        for n in range(3):
            await boss.set(f"jobs.j{n}", {"n": n})
        held = await worker.claim("jobs", lease=90)
        assert held is not None
        await boss.set("mail.m", "hi")
        dying = await worker.claim("mail", max_deliveries=1)
        assert dying is not None
        await worker.release(dying.key, dying.token)
        assert await worker.claim("mail", max_deliveries=1) is None  # delivered once: buried
        fleet = await fetch_json(address, "/api/fleet")
    db = fleet["databases"]["default"]
    assert "path" not in db  # the data directory is not the page's business
    assert db["queues"]["jobs"] | {"oldest_ready_age": 0} == {
        "ready": 2,
        "delayed": 0,
        "claimed": 1,
        "dead": 0,
        "waiting": 0,
        "oldest_ready_age": 0,
    }
    assert db["queues"]["mail"]["dead"] == 1
    assert db["dead_letters"] == 1
    [claim] = fleet["claims"]
    assert (claim["cursor"], claim["key"], claim["holder"]) == ("default", held.key, "worker-7")
    assert claim["deliveries"] == 1
    assert fleet["time"] + 80 < claim["lease"] <= fleet["time"] + 90  # a deadline, to count down
    assert [d["key"] for d in fleet["dead"]] == ["dead.mail.m"]
    users = {row["user"]: row["connections"] for row in fleet["connections"]}
    assert users == {"boss": 1, "worker-7": 1}
    assert fleet["viewer"] is None  # loopback: nobody to name, everything shown
    assert fleet["history"]["every"] > 0
    assert fleet["streams"] == {"open": 0, "max": MAX_STREAMS}


def test_the_depth_history_is_a_bounded_ring_of_the_deepest_queues() -> None:
    history = DepthHistory(every=5, size=3, queues=2)

    def queues(**depths: int) -> dict[str, Any]:
        counts = {q: {"ready": d, "delayed": 0, "claimed": 1, "dead": 0} for q, d in depths.items()}
        return {"default": {"queues": counts}}

    history.record(100.0, queues(a=1, b=5, c=9))  # three queues: the two deepest are kept
    for t in (105.0, 110.0, 115.0):
        history.record(t, queues(a=int(t) - 100))
    assert history.span == 15
    assert history.series() == [
        {"cursor": "default", "queue": "a", "points": [[105.0, 5, 0, 1, 0], [110.0, 10, 0, 1, 0], [115.0, 15, 0, 1, 0]]},
    ]  # fmt: skip
    assert SAMPLES * DepthHistory().every == 600  # ten minutes, as the docs say


async def test_the_stream_resumes_after_its_last_event_id(short_dir: Path) -> None:
    async with (
        running_broker(config(short_dir)) as running,
        await AsyncClient.connect(running.url, user="writer") as client,
    ):
        address = running.info.http
        assert address is not None
        await client.set("jobs.before", 0)
        async with get(address, "/api/stream?cursor=default&prefix=jobs") as first:
            assert first.status == 200
            assert first.headers["content-type"] == "text/event-stream"
            ready = await first.event()
            assert ready["event"] == "ready"
            assert ready["data"] == {"next_rev": 2, "head_rev": 1}
            assert ready["id"] == "1"
            assert ready["retry"] == "2000"
            await client.set("jobs.a", "x" * (VALUE_PREVIEW + 50))
            await client.set("other.a", 1)  # not under the prefix
            await client.set("jobs.b", {"n": 2})
            seen = await first.changes(2)
        assert [(c["key"], c["rev"], c["type"]) for c in seen] == [
            ("jobs.a", 2, "put"),
            ("jobs.b", 4, "put"),
        ]
        assert seen[0]["truncated"]
        assert len(seen[0]["value"]) == VALUE_PREVIEW
        assert seen[1]["value"] == '{"n": 2}'
        assert seen[1]["by"] == "writer"
        last_id = seen[-1]["id"]
        assert last_id == 4  # the last revision sent whole
        # Gone; meanwhile more changes. The browser reconnects with the last id it had.
        await client.set("jobs.c", 3)
        await client.delete("jobs.a")
        await client.set("jobs.d", 4)
        headers = {"last-event-id": str(last_id)}
        async with get(address, "/api/stream?prefix=jobs&from=1", headers) as again:
            ready = await again.event()
            assert ready["data"]["next_rev"] == last_id + 1  # the header wins over from=
            resumed = await again.changes(3)
        assert [(c["key"], c["type"]) for c in resumed] == [
            ("jobs.c", "put"),
            ("jobs.a", "delete"),
            ("jobs.d", "put"),
        ]
        # from= starts a page's first stream where it says.
        async with get(address, "/api/stream?prefix=jobs&from=2") as replay:
            await replay.event()
            assert [c["key"] for c in await replay.changes(2)][:2] == ["jobs.a", "jobs.b"]


async def test_a_stream_too_old_to_resume_ends_with_the_reason(short_dir: Path) -> None:
    cfg = config(short_dir, history=HistoryLimits(revisions=5))
    async with (
        running_broker(cfg) as running,
        await AsyncClient.connect(running.url, user="writer") as client,
    ):
        address = running.info.http
        assert address is not None
        for n in range(20):
            await client.set(f"jobs.k{n}", n)
        async with get(address, "/api/stream?prefix=jobs", {"last-event-id": "3"}) as http:
            assert http.status == 200
            end = await http.event()
            assert end["event"] == "end"
            assert end["data"]["code"] == "compacted"
            assert end["data"]["oldest_rev"] > 4
            assert await http.text() == ""  # and the stream is over


async def test_bad_stream_requests_are_answered_in_plain_words(short_dir: Path) -> None:
    async with running_broker(config(short_dir)) as running:
        address = running.info.http
        assert address is not None
        for target, headers, words in (
            ("/api/stream?cursor=no/such", {}, "is not a cursor name"),
            ("/api/stream?prefix=jobs..x", {}, "is not a valid key"),
            ("/api/stream?from=soon", {}, "from must be a revision"),
            ("/api/stream", {"last-event-id": "x1"}, "Last-Event-ID must be a revision"),
        ):
            async with get(address, target, headers) as http:
                assert http.status == 400, target
                assert words in await http.text()


async def test_streams_past_the_cap_are_refused_until_one_closes(short_dir: Path) -> None:
    async with running_broker(config(short_dir)) as running:
        address = running.info.http
        assert address is not None
        async with trio.open_nursery() as nursery:
            opened: list[trio.Event] = []
            closing = [trio.Event() for _ in range(MAX_STREAMS)]

            async def hold(done: trio.Event, ready: trio.Event) -> None:
                async with get(address, "/api/stream?prefix=jobs") as http:
                    assert (await http.event())["event"] == "ready"
                    ready.set()
                    await done.wait()

            for done in closing:
                ready = trio.Event()
                opened.append(ready)
                nursery.start_soon(hold, done, ready)
            for ready in opened:
                await ready.wait()
            async with get(address, "/api/stream?prefix=jobs") as refused:
                assert refused.status == 503
                assert f"Too many dashboard streams are open ({MAX_STREAMS}" in await refused.text()
            assert (await fetch_json(address, "/api/fleet"))["streams"]["open"] == MAX_STREAMS
            closing[0].set()  # one page goes: its slot frees once the broker reads the close
            with trio.fail_after(TIMEOUT):
                while (await fetch_json(address, "/api/fleet"))["streams"]["open"] == MAX_STREAMS:
                    pass  # each pass is a real exchange with the broker
            async with get(address, "/api/stream?prefix=jobs") as http:
                assert http.status == 200
            for done in closing:
                done.set()


def test_a_value_preview_is_short_text() -> None:
    assert preview("abc") == ("abc", False)
    assert preview(b"\x00\x01") == ("<2 bytes>", False)
    assert preview({"a": [1, b"xy"]}) == ('{"a": [1, "<2 bytes>"]}', False)
    assert preview({b"k": 1}) == ("{b'k': 1}", False)  # no JSON form: shown as Python would
    assert preview(list(range(100))) == (json.dumps(list(range(100)))[:VALUE_PREVIEW], True)


# -- off loopback: TLS, a user's token, and its grants -----------------------------------------


@pytest.fixture
def tls(tmp_path: Path) -> tuple[tuple[Path, Path], ssl.SSLContext]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.2")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return (cert_file, key_file), context


async def test_off_loopback_a_token_decides_what_the_page_shows(
    short_dir: Path, tls: tuple[tuple[Path, Path], ssl.SSLContext]
) -> None:
    files, context = tls
    # 127.0.0.2 is a loopback address, but not one the broker treats as such: the rules off
    # loopback apply, and no packet leaves the machine.
    cfg = config(short_dir, http=("127.0.0.2", 0), tls=files)
    async with running_broker(cfg) as running:
        address = running.info.http
        assert address is not None
        async with await AsyncClient.connect(
            running.url, user="admin", token=running.admin_token()
        ) as admin:
            viewer = await admin.user_add("viewer")
            await admin.grant("viewer", "read", cursor="default", prefix="jobs")
            await admin.set("jobs.a", 1)
            await admin.set("secret.b", 2)
            assert await admin.claim("jobs") is not None
            assert await admin.claim("secret") is not None
            bearer = {"authorization": f"Bearer {viewer}"}

            async with get(address, "/", context=context) as page:  # the page holds no data
                assert page.status == 200
            async with get(address, "/api/fleet", context=context) as refused:
                assert refused.status == 401
                assert "Authorization: Bearer" in await refused.text()
            fleet = await fetch_json(address, "/api/fleet", headers=bearer, context=context)
            assert fleet["viewer"] == "viewer"
            assert [c["key"] for c in fleet["claims"]] == ["jobs.a"]  # not secret.b
            assert set(fleet["databases"]["default"]["queues"]) == {"jobs", "secret"}  # counts

            stream = f"/api/stream?prefix=jobs&access_token={viewer}"
            async with get(address, stream.replace("jobs", "secret"), context=context) as denied:
                assert denied.status == 403
                assert "viewer needs read on cursor default, prefix secret" in await denied.text()
            async with get(
                address, "/api/stream?prefix=jobs&access_token=nope", context=context
            ) as h:
                assert h.status == 401
            async with get(address, "/api/fleet?access_token=" + viewer, context=context) as h:
                assert h.status == 401  # a token in the URL is for the stream alone
            async with get(address, stream, context=context) as http:
                assert http.status == 200
                assert (await http.event())["event"] == "ready"
                await admin.set("jobs.b", 1)
                assert [c["key"] for c in await http.changes(1)] == ["jobs.b"]
                await admin.revoke("viewer", "read", cursor="default", prefix="jobs")
                await admin.set("jobs.c", 1)  # never shown: the right went before it
                end = await http.event()
                assert end["event"] == "end"
                assert end["data"]["code"] == "denied"


async def test_a_failing_depth_sample_is_skipped_and_the_sampler_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    history = DepthHistory(every=5, size=10)
    calls = 0

    def snapshot() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls in (2, 3):
            raise RuntimeError("a bug")
        return {"time": float(calls), "databases": {"db": {"queues": {}}}}

    with trio.move_on_after(5 * 5 - 1):  # five samples: the 2nd and 3rd fail
        await history.run(snapshot)
    assert [time for time, _ in history.samples] == [1.0, 4.0, 5.0]
    assert [r.getMessage() for r in caplog.records] == ["dashboard: a depth sample failed"]
