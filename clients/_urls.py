"""Broker addresses as URLs: ``unix:///path/to/socket``, ``tcp://host:port`` and, with TLS,
``tcps://host:port``."""

from __future__ import annotations

from prontodb.protocol import ErrorCode, NamedTuple, ProntoError, split_host_port

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any


class Address(NamedTuple):
    """Where a broker listens: a Unix socket ``path``, or TCP ``host`` and ``port``."""

    scheme: str  # "unix", "tcp" or "tcps"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_url(url: str) -> Address:
    """Parse a broker URL; a bad one raises ProntoError(bad_request) saying what is accepted."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "unix" and rest.startswith("/"):
        return Address("unix", path=rest)
    if sep and scheme in ("tcp", "tcps"):
        pair = split_host_port(rest)
        if pair is not None and pair[1] != 0:  # a client cannot connect to "any port"
            return Address(scheme, host=pair[0], port=pair[1])
    raise ProntoError(
        ErrorCode.BAD_REQUEST,
        f"{url!r} is not a broker URL; use unix:///absolute/path/to/socket, tcp://host:port or "
        "tcps://host:port (TLS).",
    )


def tls_context(ca_file: str | None) -> Any:
    """The client's TLS context for ``tcps://``: the system's trusted CAs, or only ``ca_file``'s
    (a PEM file: the broker's certificate or the CA that signed it)."""
    import ssl  # only for tcps: the CLI's start-up does not pay for it

    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ProntoError(
            ErrorCode.BAD_REQUEST, f"The CA file {ca_file} cannot be used ({exc}); check the path."
        ) from None
