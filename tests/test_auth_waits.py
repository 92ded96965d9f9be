"""Waits already in progress lose the right they started with: a revoke, a removed user or a new
token ends every blocked claim and watch that right allowed, at once, before any write can hand
the old right an item. In-process broker and clients in one trio loop, so that "the claim is
waiting" is a fact (every task blocked), not a guess."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import inprocess
import pytest
import trio
from inprocess import Running, running_broker, until

from prontodb.broker.server._databases import OpenDatabase
from prontodb.clients import AsyncClient, ErrorCode, ProntoError


@pytest.fixture
async def guarded(short_dir: Path) -> AsyncIterator[Running]:
    async with running_broker(inprocess.guarded(short_dir)) as running:
        yield running


async def admin_of(server: Running) -> AsyncClient:
    return await AsyncClient.connect(server.url, user="admin", token=server.admin_token())


async def waiting(server: Running, prefix: str) -> None:
    """Return once a claim waits on ``prefix`` at the broker (checkpoints, not wall time)."""
    await until(lambda: any(db.waiters.queued(prefix) for db in server.broker.databases.opened()))


async def claim_outcome(client: AsyncClient, outcome: list[object]) -> None:
    try:
        outcome.append(await client.claim("queue.jobs", wait=30))
    except ProntoError as err:
        outcome.append(err)


@pytest.mark.parametrize("how", ["revoke", "remove the user", "new token"])
async def test_a_waiting_claim_ends_when_its_right_goes(guarded: Running, how: str) -> None:
    url = "unix://" + guarded.socket
    async with await admin_of(guarded) as admin, trio.open_nursery() as nursery:
        token = await admin.user_add("bob")
        await admin.grant("bob", "write", prefix="queue")
        bob = await AsyncClient.connect(url, user="bob", token=token)
        outcome: list[object] = []
        nursery.start_soon(claim_outcome, bob, outcome)
        await waiting(guarded, "queue.jobs")
        if how == "revoke":
            assert await admin.revoke("bob", "write", prefix="queue") is True
        elif how == "remove the user":
            await admin.user_remove("bob")
        else:
            await admin.user_token("bob")
        await admin.set("queue.jobs.j1", "work")  # would have gone to bob's old right
        await until(lambda: bool(outcome))
        assert isinstance(outcome[0], ProntoError), outcome
        expected = ErrorCode.DENIED if how == "revoke" else ErrorCode.UNAUTHENTICATED
        assert outcome[0].code is expected
        claimed = await admin.claim("queue.jobs")  # the item was never handed to bob
        assert claimed is not None
        assert claimed.key == "queue.jobs.j1"
        await bob.aclose()


async def watch_outcome(client: AsyncClient, cursor: str, outcome: list[object]) -> None:
    try:
        async with client.watch("queue", cursor=cursor) as changes:
            outcome.extend([change async for change in changes])
    except ProntoError as err:
        outcome.append(err)


@pytest.mark.parametrize("how", ["revoke", "remove the user", "new token"])
async def test_a_watch_ends_with_the_reason_its_right_went(guarded: Running, how: str) -> None:
    url = "unix://" + guarded.socket
    async with await admin_of(guarded) as admin, trio.open_nursery() as nursery:
        token = await admin.user_add("bob")
        await admin.grant("bob", "read", prefix="queue")
        await admin.set("other", 1)  # the database exists: the watch is counted once in place
        bob = await AsyncClient.connect(url, user="bob", token=token)
        outcome: list[object] = []
        nursery.start_soon(watch_outcome, bob, "default", outcome)
        await until(lambda: any(db.watchers for db in guarded.broker.databases.opened()))
        if how == "revoke":
            await admin.revoke("bob", "read", prefix="queue")
        elif how == "remove the user":  # a removal is a revoke too: the first reason is kept
            await admin.user_remove("bob")
        else:
            await admin.user_token("bob")
        await until(lambda: bool(outcome))
        assert isinstance(outcome[0], ProntoError), outcome
        expected = ErrorCode.DENIED if how == "revoke" else ErrorCode.UNAUTHENTICATED
        assert outcome[0].code is expected
        await bob.aclose()


async def test_a_claim_that_passed_its_check_before_a_slow_open_is_checked_again(
    guarded: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The right is checked when the claim is read; opening its database can take seconds (a
    # long replay), and a revoke then must still stop it from waiting on the old right.
    url = "unix://" + guarded.socket
    opening, go_on = threading.Event(), threading.Event()
    real_open = OpenDatabase.open

    def slow_open(self: OpenDatabase, *args: Any) -> None:
        if self.name == "jobs":
            opening.set()
            go_on.wait(10)
        real_open(self, *args)

    monkeypatch.setattr(OpenDatabase, "open", slow_open)
    async with await admin_of(guarded) as admin, trio.open_nursery() as nursery:
        token = await admin.user_add("bob")
        await admin.grant("bob", "write", cursor="jobs", prefix="queue")
        bob = await AsyncClient.connect(url, user="bob", token=token, cursor="jobs")
        outcome: list[object] = []
        nursery.start_soon(claim_outcome, bob, outcome)
        await until(opening.is_set)
        await admin.revoke("bob", "write", cursor="jobs", prefix="queue")
        go_on.set()
        await admin.set("queue.jobs.j1", "work", cursor="jobs")
        await until(lambda: bool(outcome))
        assert isinstance(outcome[0], ProntoError), outcome
        assert outcome[0].code is ErrorCode.DENIED
        await bob.aclose()


async def test_waits_end_when_their_cursor_is_bound_elsewhere(
    guarded: Running, short_dir: Path
) -> None:
    # Bob may write `jobs`; the cursor is rebound to another directory: his waits named the
    # database it meant before, and must not go on there (another cursor may name it now).
    url = "unix://" + guarded.socket
    async with await admin_of(guarded) as admin, trio.open_nursery() as nursery:
        token = await admin.user_add("bob")
        await admin.grant("bob", "write", cursor="jobs")
        await admin.set("x", 1, cursor="jobs")
        bob = await AsyncClient.connect(url, user="bob", token=token, cursor="jobs")
        claimed: list[object] = []
        watched: list[object] = []
        nursery.start_soon(claim_outcome, bob, claimed)
        watcher = await AsyncClient.connect(url, user="bob", token=token, cursor="jobs")
        nursery.start_soon(watch_outcome, watcher, "jobs", watched)
        databases = guarded.broker.databases
        await until(lambda: any(db.waiters.queued("queue.jobs") for db in databases.opened()))
        await until(lambda: any(db.watchers for db in databases.opened()))
        await admin.cursor_set("jobs", str(short_dir / "elsewhere.db"))
        await until(lambda: bool(claimed) and bool(watched))
        assert isinstance(claimed[0], ProntoError), claimed
        assert claimed[0].code is ErrorCode.UNAVAILABLE
        assert "bound to another database" in claimed[0].message
        assert isinstance(watched[0], ProntoError), watched
        assert watched[0].code is ErrorCode.COMPACTED
        await bob.aclose()
        await watcher.aclose()
