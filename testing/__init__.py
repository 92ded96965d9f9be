"""ProntoDB for the tests of programs that use it: real brokers, run as processes on temporary
directories and stopped by pid.

The pytest plugin (``prontodb.testing.plugin``, registered as ``prontodb`` through the
``pytest11`` entry point, so installing ProntoDB enables it) gives tests a broker and connected
clients as fixtures: ``prontodb_client``, ``prontodb_async_client``, ``prontodb_cursor``,
``prontodb_url``, ``prontodb_environ``, ``prontodb_broker`` and ``prontodb_broker_factory``
(docs/TESTING.md). What they hand out is defined here, with the standard library alone, and
serves without pytest too::

    with BrokerFactory(lambda: Path(tempfile.mkdtemp(dir=scratch))) as start:
        broker = start(fsync="never")
        with Client.connect(broker.url) as client:
            ...
"""

from __future__ import annotations

from ._factory import BrokerFactory
from ._process import FSYNC_POLICIES, BrokerProcess, BrokerStartError

__all__ = ["FSYNC_POLICIES", "BrokerFactory", "BrokerProcess", "BrokerStartError"]
