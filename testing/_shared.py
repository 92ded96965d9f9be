"""The session's broker as its tests share it: a database of its own for each test, and a
broker that a test stopped or killed reported once and started again.

One bad test (one that stops the shared broker instead of starting its own) is then one error,
not an error in every test after it.
"""

from __future__ import annotations

import contextlib
import subprocess
from typing import NoReturn

import pytest

from prontodb.clients import Unavailable

from ._cursors import CursorNames, purge
from ._process import BrokerProcess

LOG_TAIL = 2000  # characters of the broker's log shown when it is found gone


class SharedBroker:
    """``broker`` and the cursor names handed to the tests on it; ``user`` purges their
    databases."""

    def __init__(self, broker: BrokerProcess, user: str) -> None:
        self.broker = broker
        self.user = user
        self._names = CursorNames()
        self._last = ""  # the test that last had a database on it

    def begin(self, test_id: str, test_name: str) -> str:
        """A cursor name of ``test_name``'s own; a failure if the broker is found gone."""
        previous, self._last = self._last, test_id
        if not self.broker.running:
            after = f" (the last test with a database on it: {previous})" if previous else ""
            self._restart_and_fail(f"before this test{after}")
        return self._names.fresh(test_name)

    def end(self, cursor: str) -> None:
        """Purge the test's databases; a failure if the broker went away meanwhile."""
        try:
            purge(self.broker.url, cursor, self.user)
        except Unavailable:
            # A stop request is answered before the broker exits: give it time to.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.broker.wait()
            if self.broker.running:
                raise  # running, not answering: the error says it as it is
            self._restart_and_fail("during this test")

    def _restart_and_fail(self, when: str) -> NoReturn:
        broker = self.broker
        pid, status, log = broker.pid, broker.returncode, broker.log_text()[-LOG_TAIL:]
        broker.start()
        pytest.fail(
            f"The session's broker (pid {pid}) exited {when}, status {status}; it runs again "
            "for the tests after this one. A test that stops, kills or restarts a broker needs "
            f"one of its own: prontodb_broker_factory. Its log, {broker.log}, ended with:\n{log}",
            pytrace=False,
        )
