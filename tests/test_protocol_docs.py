"""docs/PROTOCOL.md stays in step with the code: the error table and the byte-level examples."""

from __future__ import annotations

import re
from pathlib import Path

import prontodb.protocol
from prontodb.protocol import (
    ERROR_TABLE,
    NEED_DATA,
    Connection,
    Hello,
    Request,
    Response,
    Role,
    Welcome,
)

DOC = (Path(__file__).parent.parent / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")


def hex_bytes(text: str) -> bytes:
    """The bytes a line of a hex dump shows: its leading two-digit hex words, up to the comment."""
    words = []
    for word in text.split():
        if not re.fullmatch(r"[0-9a-f]{2}", word):
            break
        words.append(word)
    return bytes.fromhex("".join(words))


def test_error_table_matches_the_code() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d) \| (.+) \|$", DOC, flags=re.MULTILINE)
    assert rows == [
        (code.value, str(info.exit_status), info.message) for code, info in ERROR_TABLE.items()
    ]


def test_hello_example_is_what_the_code_sends() -> None:
    block = DOC.split("### Example: a Hello frame, byte by byte")[1].split("```")[1]
    documented = b"".join(hex_bytes(line) for line in block.splitlines())
    sent = Connection(Role.CLIENT).send(Hello(client="prontodb-cli/0.1", user="alice"))
    assert documented == sent
    assert len(sent) == 51


def test_request_and_response_examples() -> None:
    block = DOC.split("A request `Request(")[1].split("```")[1]
    request_line, response_line = block.strip().splitlines()
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    request = Request(1, "get", {"key": "a.b"})
    sent = client.send(Hello("c", "u")) + client.send(request)
    assert sent.endswith(hex_bytes(request_line))
    server.receive_data(sent)
    while server.next_event() is not NEED_DATA:
        pass
    server.send(Welcome("s", 1, {}))
    assert server.send(Response(1, None, "hi")) == hex_bytes(response_line)


def test_public_names() -> None:
    expected = {
        "ErrorCode", "ERROR_TABLE", "ErrorInfo", "ProntoError", "Limits", "PROTOCOL_VERSION",
        "Hello", "Welcome", "Request", "Response", "Push", "Goodbye", "ConnectionClosed",
        "NEED_DATA", "Event", "Role", "Connection", "ProtocolError", "RemoteProtocolError",
        "LocalProtocolError",
    }  # fmt: skip
    assert expected <= set(prontodb.protocol.__all__)
    for name in prontodb.protocol.__all__:
        assert hasattr(prontodb.protocol, name)
