"""`prontodb batch` through click's CliRunner against a real broker: one answer a line in order,
errors in place, --json, --atomic, and lines it refuses before sending anything."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from brokers import BrokerProcess, running_broker
from cli_support import Outcome, invoke, short_tmpdir
from test_cli_commands import ok


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with short_tmpdir() as tmp, running_broker(tmp / "data", tmp / "s.sock") as process:
        yield process


def batch(broker: BrokerProcess, cursor: str, lines: str, *args: str) -> Outcome:
    return invoke(["--url", broker.url, "--cursor", cursor, "batch", *args], stdin=lines)


def test_one_answer_a_line_in_order(broker: BrokerProcess, cursor: str) -> None:
    lines = (
        "set a 1\nget a\nincr a 5\n# a comment\n\nget missing\nset 'bad key' x\n"
        "set q.x 'two words' --priority 0\nclaim q\nttl a\nexists a\ndel a\nexists a\n"
        "cas b 1 2\n--cursor other set c 3\n"
    )
    done = batch(broker, cursor, lines)
    assert done.status == 1  # the first failure's: bad_key
    out = done.out.splitlines()
    assert out[:5] == ["OK", "1", "6", "(nil)", out[4]]
    assert out[4].startswith("ERR bad_key: ")
    assert out[5:] == ["OK", out[6], "-1", "1", "1", "0", out[11], "OK"]
    assert out[6].startswith("q.x=two words token=")
    assert out[11].startswith("ERR compare_failed: ")
    other = invoke(["--url", broker.url, "--cursor", "other", "get", "c"])
    ok(other, "3\n")  # a line's own --cursor


def test_json_lines_and_other_cursors(broker: BrokerProcess, cursor: str) -> None:
    done = batch(broker, cursor, "set a 1\nget a\nget a --cursor elsewhere\nincr a x\n", "--json")
    assert done.status == 2  # `incr a x` is no batch form: nothing was sent
    done = batch(broker, cursor, "set a 1\nget a\nget a --cursor elsewhere\nincr s\n", "--json")
    assert done.status == 0
    answers = [json.loads(line) for line in done.out.splitlines()]
    assert answers[1:3] == [{"line": 2, "result": 1}, {"line": 3, "result": None}]
    assert answers[0]["line"] == 1  # its result is the revision
    assert answers[3] == {"line": 4, "result": 1}
    done = batch(broker, cursor, "set a x\nincr a\n", "--json")
    assert done.status == 1
    wrong = json.loads(done.out.splitlines()[1])
    assert (wrong["line"], wrong["error"]) == (2, "wrong_type")


def test_atomic_is_all_or_nothing(broker: BrokerProcess, cursor: str) -> None:
    ok(batch(broker, cursor, "set a 1\nincr a\nget a\n", "--atomic"), "OK\n2\n2\n")
    refused = batch(broker, cursor, "set b 1\nincr a x\n", "--atomic")
    assert refused.status == 2
    assert "line 2" in refused.err
    failed = batch(broker, cursor, "set b 1\nset 'bad key' 2\n", "--atomic")
    assert failed.status == 1
    assert invoke(["--url", broker.url, "--cursor", cursor, "exists", "b"]).status == 3
    assert batch(broker, cursor, "claim q\n", "--atomic").status == 2


def test_lines_it_cannot_run_stop_it_before_anything_is_sent(
    broker: BrokerProcess, cursor: str
) -> None:
    for line in ("watch a", "set a", "get 'unclosed", "set a 1 --nope"):
        refused = batch(broker, cursor, f"set first 1\n{line}\n")
        assert refused.status == 2, line
        assert refused.out == ""
        assert "line 2" in refused.err
    assert invoke(["--url", broker.url, "--cursor", cursor, "exists", "first"]).status == 3
