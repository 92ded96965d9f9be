"""Broker addresses as URLs: ``unix:///path/to/socket`` and ``tcp://host:port``."""

from __future__ import annotations

from prontodb.protocol import ErrorCode, ProntoError
from prontodb.protocol._named_tuple import NamedTuple


class Address(NamedTuple):
    """Where a broker listens: a Unix socket ``path``, or TCP ``host`` and ``port``."""

    scheme: str  # "unix" or "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_url(url: str) -> Address:
    """Parse a broker URL; a bad one raises ProntoError(bad_request) saying what is accepted."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "unix" and rest.startswith("/"):
        return Address("unix", path=rest)
    if sep and scheme == "tcp" and rest:
        host, colon, port = rest.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if colon and host and port.isdigit() and 0 < int(port) < 65536:
            return Address("tcp", host=host, port=int(port))
    raise ProntoError(
        ErrorCode.BAD_REQUEST,
        f"{url!r} is not a broker URL; use unix:///absolute/path/to/socket or tcp://host:port.",
    )
