"""Waits already in progress lose the right they started with: a revoke, a removed user or a new
token ends every blocked claim and watch that right allowed, at once, before any write can hand
the old right an item. In-process broker and clients in one trio loop, so that "the claim is
waiting" is a fact (every task blocked), not a guess."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from inprocess import Running, running_broker, until

from prontodb.broker.server import ServerConfig
from prontodb.clients import AsyncClient, ErrorCode, ProntoError


@pytest.fixture
async def guarded(short_dir: Path) -> AsyncIterator[Running]:
    config = ServerConfig(
        data_dir=short_dir / "data", socket_path=short_dir / "s.sock", require_auth=True
    )
    async with running_broker(config) as running:
        yield running


async def admin_of(server: Running) -> AsyncClient:
    token = (server.broker.config.data_dir / "admin.token").read_text().strip()
    return await AsyncClient.connect("unix://" + server.socket, user="admin", token=token)


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
