"""The sync client where it has no async original: how the package hands it out.

Its behaviour is tested by tests/_sync/, generated from the async client's tests (tests/_async/)
by scripts/unasync.py, with threads in place of tasks.
"""

from __future__ import annotations

import pytest

from prontodb.clients import ProntoError


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
