"""The broker's server (the only trio code): listeners, sessions, durability, shutdown.

``serve(config)`` runs a broker inside a trio program (tests start it in a nursery);
``run(config)`` is ``prontodb serve``.
"""

from ._broker import Broker, BrokerInfo
from ._config import ServerConfig, parse_tcp
from ._lockfile import AlreadyServing
from ._run import run, serve

__all__ = ["AlreadyServing", "Broker", "BrokerInfo", "ServerConfig", "parse_tcp", "run", "serve"]
