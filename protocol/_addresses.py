"""``HOST:PORT``, the one text form of a TCP address, read alike by the broker and the clients.

Pure text, as the rest of the protocol package: each caller says in its own words what is wrong
with an address it cannot use.
"""

from __future__ import annotations

# The hosts that are this machine alone: where TCP may go without tokens, HTTP without TLS.
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def split_host_port(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6: the brackets are taken off) as ``(host, port)``
    with the port from 0 to 65535; None when ``text`` is not of that form."""
    host, colon, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or int(port) >= 65536:
        return None
    return host, int(port)
