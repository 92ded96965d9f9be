"""The broker's server (the only trio code): listeners, sessions, durability, shutdown.

``serve(config)`` runs a broker inside a trio program (tests start it in a nursery);
``run(config)`` is ``prontodb serve``. ``REGISTRY`` holds every operation it serves, as declared
(docs/ARCHITECTURE.md).
"""

from ._broker import Broker, BrokerInfo, CannotListen
from ._config import ServerConfig, parse_tcp
from ._lockfile import AlreadyServing
from ._registry import REGISTRY, Layer, OpSpec
from ._run import run, serve

__all__ = [
    "REGISTRY",
    "AlreadyServing",
    "Broker",
    "BrokerInfo",
    "CannotListen",
    "Layer",
    "OpSpec",
    "ServerConfig",
    "parse_tcp",
    "run",
    "serve",
]
