"""Who a connection acts for: the user it names, or the owner of its token when it names none
(``PRONTODB_TOKEN`` alone is enough), and what a refused login says. In-process broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import inprocess
import pytest
from inprocess import Running, running_broker

from prontodb.broker.server import ServerConfig
from prontodb.clients import AsyncClient, ErrorCode, ProntoError, Unauthenticated


@pytest.fixture
async def guarded(short_dir: Path) -> AsyncIterator[Running]:
    async with running_broker(inprocess.guarded(short_dir)) as running:
        yield running


@pytest.fixture
def no_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRONTODB_USER", raising=False)
    monkeypatch.delenv("PRONTODB_TOKEN", raising=False)


@pytest.mark.usefixtures("no_user")
async def test_a_token_alone_acts_for_its_owner(guarded: Running) -> None:
    url = guarded.url
    async with await AsyncClient.connect(url, token=guarded.admin_token()) as admin:
        assert admin.user == "admin"
        assert "user='admin'" in repr(admin)
        bob_token = await admin.user_add("bob")
        await admin.grant("bob", "write", prefix="queue")
    async with await AsyncClient.connect(url, token=bob_token) as bob:
        assert bob.user == "bob"
        await bob.set("queue.a", 1)  # bob's grant, not admin's
        with pytest.raises(ProntoError) as denied:
            await bob.set("elsewhere", 1)
        assert denied.value.code is ErrorCode.DENIED
        assert denied.value.message.startswith("bob needs write")


@pytest.mark.usefixtures("no_user")
async def test_the_environment_token_alone_is_enough(
    guarded: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRONTODB_TOKEN", guarded.admin_token())
    async with await AsyncClient.connect(guarded.url) as admin:
        assert admin.user == "admin"


async def test_a_named_user_with_someone_elses_token_is_told_whose_it_is(
    guarded: Running,
) -> None:
    url = guarded.url
    with pytest.raises(Unauthenticated) as refused:
        await AsyncClient.connect(url, user="root", token=guarded.admin_token())
    assert "belongs to 'admin', not 'root'" in refused.value.message
    assert "--user admin" in refused.value.message


@pytest.mark.usefixtures("no_user")
@pytest.mark.parametrize("token", [None, "not-a-token"])
async def test_a_login_without_a_valid_token_says_what_to_set(
    guarded: Running, token: str | None
) -> None:
    with pytest.raises(Unauthenticated) as refused:
        await AsyncClient.connect(guarded.url, user="bob", token=token)
    assert "PRONTODB_TOKEN" in refused.value.message


@pytest.mark.usefixtures("no_user")
async def test_a_socket_that_trusts_its_mode_still_names_the_tokens_owner(
    short_dir: Path,
) -> None:
    config = ServerConfig(data_dir=short_dir / "data", socket_path=short_dir / "s.sock")
    async with running_broker(config) as running:
        url = running.url
        async with await AsyncClient.connect(url, token=running.admin_token()) as admin:
            assert admin.user == "admin"
        # An unknown token is no reason to refuse where none is needed: the login name stays.
        async with await AsyncClient.connect(url, token="stale") as anyone:
            assert anyone.user not in ("", "admin")
        async with await AsyncClient.connect(url, user="carol", token="stale") as carol:
            assert carol.user == "carol"
