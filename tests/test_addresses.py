"""HOST:PORT: the protocol's one parser, and the broker's (--tcp) and the clients' (tcp:// URLs)
readings of it, each with its own port range and its own error."""

from __future__ import annotations

import pytest

from prontodb.broker.server import parse_tcp
from prontodb.clients._urls import Address, parse_url
from prontodb.protocol import ErrorCode, ProntoError, split_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7400", ("127.0.0.1", 7400)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:65535", ("::1", 65535)),
        ("::1:80", ("::1", 80)),  # the last colon splits
        ("host:65536", None),
        ("host:", None),
        (":80", None),
        ("[]:80", None),
        ("host", None),
        ("host:-1", None),
        ("host:8o", None),
        ("", None),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int] | None) -> None:
    assert split_host_port(text) == expected


def test_the_broker_listens_on_any_port_and_says_what_it_expects() -> None:
    assert parse_tcp("[::1]:0") == ("::1", 0)
    with pytest.raises(ValueError, match=r"'nope' is not HOST:PORT \(for example 127.0.0.1:7400"):
        parse_tcp("nope")


def test_a_client_connects_to_a_port_and_says_what_a_url_is() -> None:
    assert parse_url("tcps://[::1]:7400") == Address("tcps", host="::1", port=7400)
    assert parse_url("unix:///run/p.sock") == Address("unix", path="/run/p.sock")
    for url in ("tcp://host:0", "tcp://", "tcp://host", "http://host:80", "unix://relative"):
        with pytest.raises(ProntoError) as caught:
            parse_url(url)
        assert caught.value.code is ErrorCode.BAD_REQUEST
        assert f"{url!r} is not a broker URL" in caught.value.message
