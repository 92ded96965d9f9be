"""The CLI's queue options and commands through click's CliRunner against a real broker:
`set --priority/--delay/--at/--after`, `release --priority`, `queue config/show`, `queues`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from brokers import BrokerProcess, running_broker
from cli_support import Outcome, invoke, short_tmpdir
from test_cli_commands import ok


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    with short_tmpdir() as tmp, running_broker(tmp / "data", tmp / "s.sock") as process:
        yield process


def cli(broker: BrokerProcess, cursor: str, *args: str) -> Outcome:
    return invoke(["--url", broker.url, "--cursor", cursor, *args])


def test_items_are_claimed_by_priority_time_and_dependencies(
    broker: BrokerProcess, cursor: str
) -> None:
    ok(cli(broker, cursor, "set", "q.low", "1", "--priority", "200"))
    ok(cli(broker, cursor, "set", "q.urgent", "2", "--priority", "0"))
    ok(cli(broker, cursor, "set", "q.tomorrow", "3", "--delay", "1d"))
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=100)
    ok(cli(broker, cursor, "set", "q.xmas", "4", "--at", soon.isoformat().replace("+00:00", "Z")))
    ok(cli(broker, cursor, "set", "q.then", "5", "--after", "q.urgent,q.missing"))
    meta = cli(broker, cursor, "get", "q.then", "--meta").out.splitlines()
    assert "after=q.urgent" in meta
    xmas = json.loads(cli(broker, cursor, "--json", "get", "q.xmas", "--meta").out)
    assert xmas["ready_at"] == soon.timestamp()
    assert "priority=0" in cli(broker, cursor, "get", "q.urgent", "--meta").out.splitlines()
    ok(cli(broker, cursor, "claim", "q"), "q.urgent=2\n")
    ok(cli(broker, cursor, "claim", "q"), "q.low=1\n")
    assert cli(broker, cursor, "claim", "q").status == 4  # the rest wait for time or q.urgent
    line = cli(broker, cursor, "queues").out
    assert line == (
        "q ready=0 delayed=2 waiting=1 claimed=2 dead=0 oldest_ready=- redeliveries=0\n"
    )
    for bad in (
        ["--delay", "soon"],
        ["--at", "tomorrow"],
        ["--after", "a,,b"],
        ["--priority", "-1"],
    ):
        assert cli(broker, cursor, "set", "q.bad", "1", *bad).status == 2, bad


def test_a_release_changes_the_priority(broker: BrokerProcess, cursor: str) -> None:
    ok(cli(broker, cursor, "set", "q.a", "1"))
    ok(cli(broker, cursor, "set", "q.b", "2"))
    task = json.loads(cli(broker, cursor, "--json", "claim", "q").out)
    assert task["key"] == "q.a"
    ok(cli(broker, cursor, "release", "q.a", "--token", str(task["token"]), "--priority", "300"))
    ok(cli(broker, cursor, "claim", "q"), "q.b=2\n")


def test_queue_config_and_show(broker: BrokerProcess, cursor: str) -> None:
    ok(
        cli(
            broker,
            cursor,
            "queue",
            "config",
            "jobs",
            "--lease",
            "2m",
            "--max-deliveries",
            "5",
            "--backoff",
            "1s:5m",
        ),
        "lease=120\nmax_deliveries=5\nbackoff=1:300\n",
    )
    ok(cli(broker, cursor, "set", "jobs.a", "1"))
    shown = cli(broker, cursor, "queue", "show", "jobs").out.splitlines()
    assert shown[:3] == ["lease=120", "max_deliveries=5", "backoff=1:300"]
    assert shown[3].startswith("jobs ready=1 delayed=0 waiting=0 claimed=0 dead=0 oldest_ready=")
    task = json.loads(cli(broker, cursor, "--json", "claim", "jobs").out)
    assert (
        task["lease"]
        - json.loads(cli(broker, cursor, "--json", "get", "jobs.a", "--meta").out)["time"]
        <= 121
    )
    stats = json.loads(cli(broker, cursor, "--json", "queue", "show", "jobs").out)
    assert stats["config"] == {"lease": 120.0, "max_deliveries": 5, "backoff": [1.0, 300.0]}
    assert stats["claimed"] == 1
    assert cli(broker, cursor, "queue", "config", "jobs", "--backoff", "5m:1s").status == 2
    ok(
        cli(broker, cursor, "queue", "config", "jobs"),
        "defaults (lease 60 s, no delivery limit, no backoff)\n",
    )
