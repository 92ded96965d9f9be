"""The CLI's locks, semaphores, elections, barriers, fences and `session run`, through click's
CliRunner against a real broker: stdout, stderr, exit status, and what a command run under a lock
finds in its environment. (Processes killed and stopped: tests/test_recipes_process.py.)"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokers import BrokerProcess, running_broker
from cli_support import Outcome, invoke, short_tmpdir
from test_cli_commands import error_line, ok

# CMD's own `prontodb` calls find the venv's.
PATH = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with short_tmpdir() as tmp, running_broker(tmp / "data", tmp / "s.sock") as process:
        yield process


def cli(broker: BrokerProcess, cursor: str, *args: str) -> Outcome:
    return invoke(["--url", broker.url, "--cursor", cursor, *args], PATH=PATH)


def test_a_lock_without_a_command_prints_its_token_and_unlock_takes_it(
    broker: BrokerProcess, cursor: str
) -> None:
    token = cli(broker, cursor, "lock", "deploy", "--ttl", "600").out.strip()
    assert token.isdigit()
    listed = cli(broker, cursor, "holders", "deploy").out.splitlines()
    assert listed[0] == "deploy lock limit=1"
    assert listed[1].startswith(f"{token} holding session=")
    busy = error_line(cli(broker, cursor, "lock", "deploy", "--wait", "0"), 4)
    assert (
        busy
        == "prontodb: timed out: lock deploy was not acquired within 0 s (see `holders deploy`)"
    )
    gone = error_line(cli(broker, cursor, "unlock", "deploy", "--token", str(int(token) + 99)), 3)
    assert "has no member with token" in gone
    ok(cli(broker, cursor, "unlock", "deploy", "--token", token))
    assert "nobody holds or waits" in error_line(cli(broker, cursor, "holders", "deploy"), 3)
    again = json.loads(cli(broker, cursor, "--json", "lock", "deploy").out)
    assert again["holding"]
    assert again["token"] > int(token)


def test_a_command_runs_under_the_lock_with_its_fence(
    broker: BrokerProcess, cursor: str, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    script = (
        f'echo "$PRONTODB_FENCE $PRONTODB_FENCE_NAME $PRONTODB_CURSOR" > {seen}; '
        'prontodb set result done --fence "$PRONTODB_FENCE_NAME:$PRONTODB_FENCE"; '
        "prontodb holders jobs.nightly >> " + str(seen) + "; exit 7"
    )
    ran = cli(broker, cursor, "lock", "jobs.nightly", "--", "sh", "-c", script)
    assert ran.status == 7  # CMD's own
    token, name, where = seen.read_text().splitlines()[0].split()
    assert (name, where) == ("jobs.nightly", cursor)
    assert f"{token} holding" in seen.read_text()
    ok(cli(broker, cursor, "get", "result"), "done\n")
    stale = error_line(
        cli(broker, cursor, "set", "result", "late", "--fence", f"jobs.nightly:{token}"), 5
    )
    assert "is not held with token" in stale
    for args in (["del", "result"], ["incr", "n"], ["decr", "n"]):
        refused = cli(broker, cursor, *args, "--fence", f"jobs.nightly:{token}")
        assert refused.status == 5, args
    txn = ["--url", broker.url, "--cursor", cursor, "txn", "--fence", f"jobs.nightly:{token}"]
    assert invoke(txn, stdin='{"ops": [{"op": "del", "key": "result"}]}').status == 5
    assert cli(broker, cursor, "set", "x", "1", "--fence", "nonsense").status == 2
    assert cli(broker, cursor, "holders", "jobs.nightly").status == 3  # released at CMD's exit
    missing = cli(broker, cursor, "lock", "jobs.nightly", "--", "no-such-command-here")
    assert missing.status == 127
    assert cli(broker, cursor, "lock", "x", "--session", "1", "--", "true").status == 2


def test_a_semaphore_keeps_its_limit(broker: BrokerProcess, cursor: str) -> None:
    first = cli(broker, cursor, "semaphore", "gpus", "--limit", "2", "--ttl", "600").out.strip()
    second = cli(broker, cursor, "semaphore", "gpus", "--limit", "2", "--ttl", "600").out.strip()
    assert int(second) > int(first)
    assert cli(broker, cursor, "semaphore", "gpus", "--limit", "2", "--wait", "0").status == 4
    mismatch = error_line(cli(broker, cursor, "semaphore", "gpus", "--limit", "3"), 5)
    assert "is a semaphore of 2" in mismatch
    ok(cli(broker, cursor, "locks"), "gpus semaphore limit=2 holding=2 waiting=0\n")
    listed = json.loads(cli(broker, cursor, "--json", "locks").out)
    assert [m["token"] for m in listed[0]["members"]] == [int(first), int(second)]


def test_an_election(broker: BrokerProcess, cursor: str) -> None:
    assert "nobody leads" in error_line(cli(broker, cursor, "leader", "primary"), 3)
    term = cli(broker, cursor, "elect", "primary", "--value", "host-a", "--ttl", "600").out.strip()
    ok(cli(broker, cursor, "leader", "primary"), f"term={term} host-a\n")
    ok(cli(broker, cursor, "observe", "primary", "--count", "1"), f"term={term} host-a\n")
    ok(cli(broker, cursor, "proclaim", "primary", "host-a:2", "--token", term))
    ok(cli(broker, cursor, "leader", "primary"), f"term={term} host-a:2\n")
    other = str(int(term) + 100)
    refused = error_line(cli(broker, cursor, "proclaim", "primary", "x", "--token", other), 5)
    assert f"is not held with token {other}" in refused
    ok(cli(broker, cursor, "resign", "primary", "--token", term))
    assert cli(broker, cursor, "leader", "primary").status == 3
    leader = json.loads(cli(broker, cursor, "--json", "elect", "primary", "--value", "7").out)
    assert leader["value"] == 7  # read as `set` reads a value
    assert leader["token"] > int(term)


def test_a_barrier_returns_once_its_count_is_there(broker: BrokerProcess, cursor: str) -> None:
    ok(cli(broker, cursor, "barrier", "start", "--count", "1"))
    late = error_line(
        cli(broker, cursor, "barrier", "start", "--count", "2", "--timeout", "0.2"), 4
    )
    assert "barrier start was not acquired" in late
    assert cli(broker, cursor, "holders", "start").status == 3  # nobody left behind


def test_session_run_exports_its_session(
    broker: BrokerProcess, cursor: str, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    script = (
        'prontodb set workers.w1 up --session "$PRONTODB_SESSION" && '
        f"prontodb get workers.w1 > {seen}"
    )
    ok(cli(broker, cursor, "session", "run", "--ttl", "30", "--", "sh", "-c", script))
    assert seen.read_text() == "up\n"
    assert cli(broker, cursor, "get", "workers.w1").status == 3  # gone with the session
    ok(cli(broker, cursor, "session", "list"))
    assert (
        cli(broker, cursor, "session", "run", "--ttl", "30", "--", "sh", "-c", "exit 3").status == 3
    )
    assert cli(broker, cursor, "session", "run", "--ttl", "30").status == 2
