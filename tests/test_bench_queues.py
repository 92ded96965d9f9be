"""bench/queues.py and bench/batch.py: the Redis side of a comparison must do what ProntoDB does,
or its figures say nothing. The claim script is run against a real redis-server when there is one."""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Iterator

import pytest
import trio
from cli_support import short_tmpdir

from bench.batch import batch_input, resp_input
from bench.floor_server import parse
from bench.loadgen import REDIS, RespClient
from bench.queues import (
    BAND,
    CLAIM_SHA,
    DELAYED,
    PROCESSING,
    READY,
    Item,
    fill,
    index_of,
    load_script,
    make_items,
)
from bench.servers import Server, start_redis


def test_items_are_drawn_as_asked() -> None:
    items = make_items(5000, 0.2, 1.5, seed=3)
    assert items == make_items(5000, 0.2, 1.5, seed=3)  # the same queue for both servers
    assert {item.priority for item in items} == set(range(10))
    delayed = [item.offset for item in items if item.offset is not None]
    assert 800 < len(delayed) < 1200
    assert all(0 <= offset <= 1.5 for offset in delayed)
    item = items[42]
    assert index_of(item.key()) == index_of(item.member(16).decode()) == 42
    assert len(item.value(16)) == 16


def test_batch_inputs_hold_the_same_sets() -> None:
    lines = batch_input(3, 16).decode().splitlines()
    buffer = bytearray(resp_input(3, 16))
    for line in lines:
        op, key, value = shlex.split(line)
        assert op == "set"
        assert parse(buffer) == [b"SET", key.encode(), value.encode()]
        assert len(value) == 16
    assert buffer == b""


@pytest.fixture
def redis() -> Iterator[Server]:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH")
    with short_tmpdir() as tmp:
        server = start_redis(tmp)
        try:
            yield server
        finally:
            server.stop()


async def test_the_redis_recipe_claims_most_urgent_ready_first(redis: Server) -> None:
    await load_script(redis.socket)
    go = time.time()
    items = [
        Item(0, 5, None),
        Item(1, 2, None),
        Item(2, 2, None),
        Item(3, 0, 0.3),  # most urgent, but not before go + 0.3 s
        Item(4, 9, 3600.0),  # not during this test
    ]
    await fill(REDIS, redis.socket, items, 16, go)
    resp = await RespClient.connect(redis.socket)

    async def claim() -> tuple[int, bytes | int]:
        found, what = await resp.command(
            b"EVALSHA", CLAIM_SHA, b"3", READY, DELAYED, PROCESSING, b"60000"
        )
        return found, what

    try:
        taken = []
        for _ in range(3):
            found, member = await claim()
            assert found == 1
            assert isinstance(member, bytes)
            taken.append(index_of(member.decode()))
            lease_end = int(await resp.command(b"HGET", PROCESSING, member))
            assert 59_000 < lease_end - 1000 * time.time() <= 60_000
            assert await resp.command(b"HDEL", PROCESSING, member) == 1
        assert taken == [1, 2, 0]  # by priority, then the one ready longest (then by member)
        found, due = await claim()
        assert found == 0  # item 3 is not due yet: the answer says when it is
        assert due == -int(-(go + 0.3) * 1000 // 1)
        await trio.sleep(max(0.0, go + 0.35 - time.time()))
        found, member = await claim()
        assert found == 1
        assert isinstance(member, bytes)
        assert index_of(member.decode()) == 3
        assert await resp.command(b"ZSCORE", READY, member) is None
        found, due = await claim()
        assert (found, due) == (0, -int(-(go + 3600) * 1000 // 1))  # only item 4 is left
        assert await resp.command(b"ZCARD", READY) == 0
        assert await resp.command(b"HLEN", PROCESSING) == 1  # item 3, never acked
        await resp.command(b"DEL", DELAYED)
        assert await claim() == (0, -1)  # nothing ready, nothing delayed: empty
    finally:
        await resp.aclose()
    assert 1000 * time.time() < BAND  # a priority's band holds every ready time in ms
