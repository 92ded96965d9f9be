"""The sync client where it has no async original: how the package hands it out.

Its behaviour is tested by tests/_sync/, generated from the async client's tests (tests/_async/)
by scripts/unasync.py, with threads in place of tasks.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from prontodb.clients import ErrorCode, ProntoError


def test_package_exports_load_lazily() -> None:
    import prontodb.clients as clients
    from prontodb.clients import _sync, _types

    assert clients.Client is _sync.client.Client
    assert clients.KeyInfo is _types.KeyInfo
    assert clients.ProntoError is ProntoError
    assert {"AsyncClient", "Client", "MISSING", "TxnResult"} <= set(dir(clients))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        clients.Nope  # noqa: B018


def test_a_failed_renewal_is_raised_at_the_end_of_the_block() -> None:
    # The sync client's keep_session renews from a thread, which cannot stop the block: the
    # failure comes out at its end. The block waits for the failure itself, not for time.
    import threading

    from prontodb.clients._sync_backend import Renewing

    failed = threading.Event()

    def renew() -> None:
        failed.set()
        raise RuntimeError("lost")

    def lost(failure: Exception) -> Exception:
        return ValueError(f"told: {failure}")

    with pytest.raises(ValueError, match="told: lost"), Renewing(renew, 0.001, lost):
        assert failed.wait(10)


def test_a_lost_session_makes_every_call_raise_until_its_block_ends(
    tmp_path: Path, short_dir: Path
) -> None:
    # A thread cannot stop the block, so the sync client tells its caller at the next call.
    from brokers import running_broker

    from prontodb.clients import Client, SessionLost

    with (
        running_broker(tmp_path / "data", short_dir / "b.sock") as broker,
        Client.connect(broker.url) as client,
        Client.connect(broker.url) as other,
    ):

        def call_until_refused(held_session: int) -> SessionLost:
            other.session_revoke(held_session)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the next renewal (0.1 s) finds it gone
                try:
                    client.get("anything")
                except SessionLost as lost:
                    return lost
            raise AssertionError("no call was refused")

        refused: list[SessionLost] = []

        def hold() -> None:
            with client.lock("deploy", ttl=0.3) as held:
                refused.append(call_until_refused(held.session))
                assert refused[0].session == held.session

        with pytest.raises(SessionLost) as at_the_end:
            hold()
        assert refused[0].code is ErrorCode.NOT_FOUND
        assert at_the_end.value is refused[0]
        assert client.get("anything") is None  # the block is over: calls go through again
