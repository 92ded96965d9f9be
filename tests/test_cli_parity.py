"""The fast path and the click commands print the same bytes and exit the same way.

Each argv runs twice, through ``main`` as the console script calls it (the fast path when it
recognises argv) and through the click group, each time on a fresh database loaded with the same
keys, so revisions match too.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from brokers import BrokerProcess, running_broker
from cli_support import Outcome, dispatch, invoke, short_tmpdir

from prontodb.clients import Client, _cli_click

DATA: dict[str, object] = {
    "s": "hello world",
    "n": 41,
    "eq": "a=b",
    "b": b"caf\xe9",
    "m": {"list": [1, 2.5, None, True]},
    "queue.task_1": "pending",
    "queue.task_2": "worker1:Tue",
    "queueing.x": "no",
}

# (argv, whether the fast path handles it). {url} and {cursor} are filled in per run.
CASES: list[tuple[list[str], bool]] = [
    (["get", "s"], True),
    (["get", "n"], True),
    (["get", "b"], True),
    (["get", "m"], True),
    (["get", "missing"], True),
    (["get", "bad key!"], True),
    (["get", "-5"], True),
    (["get", ""], True),
    (["--json", "get", "s"], True),
    (["--json", "get", "b"], True),
    (["--json", "get", "missing"], True),
    (["set", "k", "v"], True),
    (["set", "n", "-12"], True),
    (["set", "k", "007"], True),
    (["set", "k", "caf\udce9"], True),
    (["set", "k", "-"], False),
    (["set", "bad key", "v"], True),
    (["--json", "set", "k", "v"], True),
    (["set", "k", "v", "--fence", "deploy:7"], True),
    (["set", "q.a", "v", "--priority", "3", "--delay", "5m", "--after", "k,s"], True),
    (["set", "q.b", "v", "--at", "1700000000"], True),
    (["set", "q.b", "v", "--delay", "soon"], False),
    (["set", "k", "v", "--fence", "deploy"], False),
    (["del", "s"], True),
    (["del", "missing"], True),
    (["--json", "del", "s"], True),
    (["incr", "n"], True),
    (["incr", "n", "5"], True),
    (["incr", "n", "-5"], True),
    (["incr", "n", "+5"], True),
    (["incr", "n", "9223372036854775807"], True),
    (["decr", "n"], True),
    (["decr", "n", "2"], True),
    (["decr", "fresh"], True),
    (["incr", "s"], True),
    (["--json", "incr", "n"], True),
    (["--json", "decr", "n", "-1"], True),
    (["keys"], True),
    (["keys", "queue"], True),
    (["keys", "none"], True),
    (["--json", "keys", "queue"], True),
    (["scan"], True),
    (["scan", "queue"], True),
    (["--json", "scan"], True),
    (["--user", "alice", "set", "k", "v"], True),
    (["--user=alice", "--cursor={cursor}", "get", "s"], True),
    (["--cursor", "{cursor}", "--json", "--user", "bob", "get", "n"], True),
    (["--url", "{url}", "get", "s"], True),
    (["--url={url}", "--json", "--json", "keys"], True),
    (["--url", "unix:///nonexistent/pdb.sock", "get", "s"], True),
    (["--url", "ftp://nope", "get", "s"], True),
    (["claim", "queue"], True),
    (["claim", "--lease", "30", "queue", "--max-deliveries=3"], True),
    (["claim", "queue", "--wait", "0"], True),
    (["claim", "none", "--wait=0.01"], True),
    (["--json", "claim", "none"], True),
    (["ack", "queue.task_1", "--token", "1"], True),
    (["ack", "--token=7", "queue.task_1", "--json"], True),
    (["release", "queue.task_1", "--token", "1", "--delay", "5"], True),
    (["--user", "w1", "release", "queue.task_2", "--token", "007"], True),
    (["unlock", "deploy", "--token", "1"], True),
    (["--json", "unlock", "--token=1", "deploy"], True),
    (["get", "m", "--meta"], True),
    (["--json", "get", "--meta", "n"], True),
    (["get", "s", "--cursor", "{cursor}"], True),
    (["get", "s", "--url={url}", "--user", "ann"], True),
    (["set", "k", "5", "--string", "--json"], True),
    (["set", "k", "v", "--ttl", "5"], True),
    (["set", "k", "v", "--ttl=0.5", "--if-absent"], True),
    (["set", "s", "v", "--if-rev", "1"], True),
    (["set", "s", "v", "--if-rev=99"], True),
    (["set", "k", "v", "--if-rev", "0"], True),
    (["del", "s", "n", "missing"], True),
    (["--json", "del", "s", "n"], True),
    (["exists", "s"], True),
    (["exists", "missing"], True),
    (["mget", "s", "missing", "n"], True),
    (["--json", "mget", "b", "missing"], True),
    (["mset", "a", "1", "b", "two"], True),
    (["mset", "--string", "a", "1"], True),
    (["cas", "n", "41", "42"], True),
    (["cas", "s", "nope", "x"], True),
    (["cas", "n", "41", "42", "--string"], True),
    (["expire", "s", "5"], True),
    (["expire", "s", "0"], True),
    (["persist", "s"], True),
    (["ttl", "s"], True),
    (["ttl", "missing"], True),
    (["caches"], True),
    (["--json", "caches"], True),
    (["claims"], True),
    (["claims", "queue"], True),
    (["extend", "queue.task_1", "--token", "1", "--lease", "5"], True),
    (["--json", "ping"], True),
    (["--url", "unix:///nonexistent/pdb.sock", "status"], True),
    # Not fast forms: click runs them either way, and the outcome must not depend on the route.
    (["get", "s", "--meta=1"], False),
    (["get", "s", "--cursor"], False),
    (["set", "k", "v", "--ttl", "0"], False),
    (["set", "k", "v", "--if-rev", "-1"], False),
    (["set", "k", "v", "--file", "nowhere"], False),
    (["set", "k"], False),
    (["del"], False),
    (["mget"], False),
    (["mset", "a"], False),
    (["cas", "s", "hello world"], False),
    (["expire", "s", "-1"], False),
    (["extend", "queue.task_1", "--token", "1"], False),
    (["ping", "now"], False),
    (["status", "-5"], False),
    (["claim", "queue", "--lease", "0"], False),
    (["claim", "queue", "--wait", "x"], False),
    (["claim", "queue", "--max-deliveries", "0"], False),
    (["claim", "queue", "--wait"], False),
    (["claim", "queue", "--frob", "1"], False),
    (["claim"], False),
    (["ack", "queue.task_1"], False),
    (["ack", "queue.task_1", "--token", "-1"], False),
    (["unlock", "deploy"], False),
    (["unlock", "deploy", "--token", "x"], False),
    (["release", "queue.task_1", "--token", "1", "--delay", "-2"], False),
    (["get"], False),
    (["get", "s", "t"], False),
    (["get", "--json", "s"], True),
    (["get", "-x"], False),
    (["set", "--string", "k", "5"], True),
    (["set", "k", "v", "--if-absent"], True),
    (["set", "s", "v", "--if-absent"], True),
    (["incr", "n", "x"], False),
    (["incr", "n", "1", "2"], False),
    (["keys", "a", "b"], False),
    (["--user"], False),
    (["--user", "--json", "get", "s"], False),
    (["--json=1", "get", "s"], False),
    (["--cursor", "{cursor}"], False),
    (["ping"], True),
    (["frobnicate", "s"], False),
    (["get", "--", "s"], False),
]


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with short_tmpdir() as tmp, running_broker(tmp / "data", tmp / "s.sock") as process:
        yield process


_names = itertools.count()


def fresh_cursor(url: str) -> str:
    """A new database holding DATA, written in the same order (so the same revisions) each time."""
    cursor = f"parity{next(_names)}"
    with Client.connect(url, cursor=cursor) as client:
        for key, value in DATA.items():
            client.set(key, value)
    return cursor


def run(route: str, broker: BrokerProcess, argv: list[str]) -> Outcome:
    cursor = fresh_cursor(broker.url)
    args = [arg.format(url=broker.url, cursor=cursor) for arg in argv]
    env = {"PRONTODB_CURSOR": cursor, "PRONTODB_URL": broker.url}
    outcome = (dispatch if route == "fast" else invoke)(args, **env)
    # The database's name and the writes' times differ between the two runs; nothing else may.
    return Outcome(same(outcome.stdout, cursor), same(outcome.stderr, cursor), outcome.status)


_TIMES = re.compile(rb"\d{4}-\d\d-\d\dT[\d:.]+Z|(?<=\"time\": )[\d.]+")


def same(output: bytes, cursor: str) -> bytes:
    return _TIMES.sub(b"{time}", output.replace(cursor.encode(), b"{cursor}"))


@pytest.mark.parametrize(("argv", "fast"), CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_fast_path_and_click_agree(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch, argv: list[str], fast: bool
) -> None:
    with monkeypatch.context() as patch:
        if fast:
            # Prove the fast path handled it: click is out of reach for this run.
            patch.delattr(_cli_click, "cli")
        through_main = run("fast", broker, argv)
    through_click = run("click", broker, argv)
    assert through_main == through_click


def test_fast_path_imports_nothing_heavy(broker: BrokerProcess) -> None:
    with Client.connect(broker.url) as client:
        client.set("plain", "text")
    code = (
        "import sys\n"
        "from prontodb.clients.cli import main\n"
        f"status = main(['--url', {broker.url!r}, 'get', 'plain'])\n"
        "heavy = {'click', 'json', 'trio', 'anyio', 'subprocess', 'typing', 'socket', 'dataclasses'}\n"
        "heavy = sorted(heavy & set(sys.modules))\n"
        "print(status, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.splitlines() == ["text", "0 []"]


def test_status_of_a_running_broker_takes_the_fast_path(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its output (uptime, counters) differs from one run to the next, so it is not a parity case.
    monkeypatch.delattr(_cli_click, "cli")
    shown = dispatch(["--url", broker.url, "--json", "status"])
    assert shown.status == 0
    assert f'"pid": {broker.pid}' in shown.out
