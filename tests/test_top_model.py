"""``prontodb top``'s numbers (clients/_top_model.py): rates and percentiles from the difference of
two ``stats`` snapshots, the tables' order, how figures print, and how a frame is drawn and cut to
the terminal (clients/_cli_top.py). Snapshots are built here in the broker's shape, and one pair
is taken from a real broker to hold the model to that shape."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from inprocess import running_broker

from prontodb.broker.server import ServerConfig
from prontodb.broker.storage import FsyncPolicy
from prontodb.clients import AsyncClient
from prontodb.clients import _top_model as model

LATENCY = [0.001, 0.01, 0.1, 1.0]


def histogram(
    counts: list[int], bounds: list[float] | None = None, total: float = 0.0
) -> dict[str, Any]:
    bounds = LATENCY if bounds is None else bounds
    assert len(counts) == len(bounds) + 1
    return {"bounds": bounds, "counts": counts, "sum": total, "count": sum(counts)}


def snapshot(
    time: float,
    *,
    uptime: float | None = None,
    pid: int = 100,
    requests: dict[str, dict[str, int]] | None = None,
    timed: dict[str, list[int]] | None = None,
    fsyncs: list[int] | None = None,
    commits: tuple[int, float] = (0, 0.0),
    cpu: float = 1.0,
    databases: dict[str, dict[str, Any]] | None = None,
    connections: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A snapshot as the broker's ``stats`` answers it, of a broker started at time 1000."""
    commit_counts = [0, 0, 0, 0, 0]
    commit_counts[0] = commits[0]
    return {
        "time": time,
        "uptime": time - 1000 if uptime is None else uptime,
        "process": {"pid": pid, "rss_bytes": 50 * 1024 * 1024, "cpu_seconds": cpu},
        "requests": requests or {},
        "request_seconds": {op: histogram(c) for op, c in (timed or {}).items()},
        "fsync_seconds": histogram(fsyncs or [0, 0, 0, 0, 0]),
        "commit_records": histogram(commit_counts, [1, 2, 4, 8], commits[1]),
        "compactions": {"ok": 0, "failed": 0},
        "compaction_seconds": histogram([0, 0, 0, 0, 0]),
        "connections": connections or [],
        "databases": databases or {},
        "databases_untracked": 0,
        "caps": {"queues": 100, "databases": 100, "users": 100, "watches": 10},
    }


def database(
    revision: int = 1,
    *,
    queues: dict[str, dict[str, Any]] | None = None,
    watches: list[dict[str, Any]] | None = None,
    claims: int = 0,
    dead_letters: int = 0,
) -> dict[str, Any]:
    return {
        "path": "/data/x.db",
        "revision": revision,
        "first_revision": 1,
        "keys": revision,
        "disk_bytes": {"snapshot": 1000, "segments": 24},
        "claims_in_flight": 0,
        "claims": claims,
        "redeliveries": 0,
        "dead_letters": dead_letters,
        "expired_leases": 0,
        "claimers_waiting": 0,
        "watchers": len(watches or []),
        "watch_lag": max((w["lag"] for w in watches or []), default=0),
        "watches": watches or [],
        "watch_overflows": 0,
        "sessions": 0,
        "recipe_holders": 0,
        "recipe_waiting": 0,
        "failed": None,
        "queues": queues or {},
        "queues_untracked": 0,
    }


def queue(ready: int, claimed: int = 0, dead: int = 0, age: float | None = None) -> dict[str, Any]:
    return {
        "ready": ready,
        "delayed": 0,
        "claimed": claimed,
        "dead": dead,
        "waiting": 0,
        "oldest_ready_age": age,
    }


# -- percentiles ---------------------------------------------------------------------------------


def test_a_quantile_is_interpolated_within_its_bucket() -> None:
    # 100 observations between 1 ms and 10 ms: the 99th is 99% of the way up that bucket.
    assert model.quantile(0.99, histogram([0, 100, 0, 0, 0])) == pytest.approx(0.00991)
    # The first bucket starts at 0.
    assert model.quantile(0.5, histogram([10, 0, 0, 0, 0])) == pytest.approx(0.0005)
    # 98 fast and 2 slow: the 99th is among the slow ones.
    p99 = model.quantile(0.99, histogram([98, 0, 2, 0, 0]))
    assert p99 is not None
    assert 0.01 < p99 <= 0.1


def test_a_quantile_above_every_bound_is_the_highest_bound_and_none_without_observations() -> None:
    assert model.quantile(0.99, histogram([0, 0, 0, 0, 5])) == 1.0
    assert model.quantile(0.99, histogram([0, 0, 0, 0, 0])) is None


# -- two snapshots -------------------------------------------------------------------------------


def test_rates_and_p99_come_from_the_difference_of_two_snapshots() -> None:
    before = snapshot(
        1010.0,
        requests={"set": {"ok": 1000}, "get": {"ok": 50}},
        # Slow sets before the interval must not weigh on its p99.
        timed={"set": [0, 0, 0, 1000, 0], "get": [50, 0, 0, 0, 0]},
        fsyncs=[0, 500, 0, 0, 0],
        commits=(500, 1000.0),
        cpu=2.0,
    )
    after = snapshot(
        1012.0,
        requests={"set": {"ok": 1400, "compare_failed": 10}, "get": {"ok": 50}},
        timed={"set": [410, 0, 0, 1000, 0], "get": [50, 0, 0, 0, 0]},
        fsyncs=[0, 700, 0, 0, 0],
        commits=(700, 1800.0),
        cpu=2.5,
    )
    view = model.frame(after, before)
    assert view.interval == 2.0
    assert [row.op for row in view.ops] == ["set"]  # get did nothing in the interval
    (sets,) = view.ops
    assert sets.rate == 205.0
    assert sets.errors == 5.0
    assert sets.total == 1410
    assert sets.p99 is not None
    assert sets.p99 <= 0.001
    assert (view.requests, view.errors) == (205.0, 5.0)
    assert view.fsyncs == 100.0
    assert view.fsync_p99 is not None
    assert 0.001 < view.fsync_p99 <= 0.01
    assert view.commit_records == 4.0  # 800 records in 200 group commits
    assert view.cpu_percent == pytest.approx(25.0)


def test_one_snapshot_gives_the_figures_since_the_broker_started() -> None:
    only = snapshot(1100.0, requests={"set": {"ok": 1000}}, timed={"set": [1000, 0, 0, 0, 0]})
    view = model.frame(only)
    assert view.interval is None
    assert view.ops[0].rate == 10.0  # 1000 sets in 100 s of uptime
    assert view.cpu_percent == pytest.approx(1.0)


@pytest.mark.parametrize(
    "restarted",
    [{"pid": 101}, {"uptime": 1.0}],
    ids=["another process", "uptime went back"],
)
def test_a_restarted_broker_counts_from_zero(restarted: dict[str, Any]) -> None:
    before = snapshot(1050.0, requests={"set": {"ok": 5000}})
    after = snapshot(1051.0, requests={"set": {"ok": 10}}, **restarted)
    view = model.frame(after, before)
    assert view.interval is None
    assert view.ops[0].total == 10
    assert view.ops[0].rate > 0  # not a negative difference


def test_databases_count_their_claims_and_writes_in_the_interval() -> None:
    before = snapshot(1010.0, databases={"jobs": database(100, claims=10)})
    after = snapshot(
        1011.0,
        databases={"jobs": database(150, claims=30, dead_letters=1), "new": database(7, claims=2)},
    )
    jobs, new = model.frame(after, before).databases
    assert (jobs.cursor, jobs.writes, jobs.claims, jobs.dead_letters) == ("jobs", 50.0, 20.0, 1.0)
    assert jobs.disk_bytes == 1024
    # Opened in the interval: its counters count from zero, its revision has no rate yet.
    assert (new.cursor, new.writes, new.claims) == ("new", 0.0, 2.0)


def test_queues_watches_and_users_are_listed_busiest_first() -> None:
    current = snapshot(
        1010.0,
        databases={
            "a": database(
                queues={"small": queue(1), "idle": queue(0)},
                watches=[
                    {"user": "bob", "prefix": "", "lag": 0, "next_rev": 2},
                    {"user": "eve", "prefix": "jobs", "lag": 7, "next_rev": 1},
                ],
            ),
            "b": database(queues={"deep": queue(5, claimed=2, dead=1, age=3.5)}),
        },
        connections=[
            {"transport": "unix", "user": "bob", "connections": 1, "watchers": 1},
            {"transport": "tcp", "user": "ann", "connections": 4, "watchers": 0},
        ],
    )
    view = model.frame(current)
    assert [(q.cursor, q.queue, q.depth) for q in view.queues] == [
        ("b", "deep", 8),
        ("a", "small", 1),
        ("a", "idle", 0),
    ]
    assert view.queues[0].oldest_ready_age == 3.5
    assert [(w.user, w.lag) for w in view.watches] == [("eve", 7), ("bob", 0)]
    assert [u.user for u in view.users] == ["ann", "bob"]
    assert (view.connections, view.watchers) == (5, 1)
    assert view.disk_bytes == 2048


def test_the_json_form_is_plain_data() -> None:
    current = snapshot(1010.0, databases={"a": database(queues={"q": queue(3, claimed=1)})})
    document = model.frame(current).as_json()
    assert json.loads(json.dumps(document)) == document
    assert document["queues"] == [
        {
            "cursor": "a",
            "queue": "q",
            "ready": 3,
            "delayed": 0,
            "claimed": 1,
            "dead": 0,
            "waiting": 0,
            "oldest_ready_age": None,
            "depth": 4,
        }
    ]
    assert document["interval"] is None


async def test_two_snapshots_of_a_real_broker(short_dir: Path) -> None:
    config = ServerConfig(
        data_dir=short_dir / "data", socket_path=short_dir / "s.sock", fsync=FsyncPolicy.ALWAYS
    )
    async with (
        running_broker(config) as running,
        await AsyncClient.connect(running.url, user="ops") as client,
    ):
        await client.set("warm-up", 1)
        before = await client.stats()
        for n in range(20):
            await client.set(f"jobs.j{n}", n)
        assert await client.claim("jobs") is not None
        after = await client.stats()
    view = model.frame(after, before)
    assert view.interval is not None
    assert view.interval > 0
    rates = {row.op: row for row in view.ops}
    assert rates["set"].total == 21
    assert rates["set"].rate == pytest.approx(20 / view.interval)
    assert rates["set"].p99 is not None
    assert view.fsyncs > 0
    assert view.fsync_p99 is not None
    assert view.rss_bytes is not None
    (jobs,) = view.queues
    assert (jobs.queue, jobs.ready, jobs.claimed) == ("jobs", 19, 1)
    assert [u.user for u in view.users] == ["ops"]
    (db,) = view.databases
    assert db.writes == pytest.approx(21 / view.interval)  # 20 sets and the claim
    assert db.claims == pytest.approx(1 / view.interval)


# -- printing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (0.5, "0.5"),
        (3.0, "3"),
        (12.4, "12"),
        (1234, "1,234"),
        (12345, "12.3k"),
        (2.5e6, "2.5M"),
    ],
)
def test_rates_print_short(value: float, text: str) -> None:
    assert model.rate(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.00025, "250µs"), (0.0012, "1.2ms"), (0.25, "250ms"), (2.5, "2.5s")],
)
def test_durations_print_in_their_unit(seconds: float | None, text: str) -> None:
    assert model.duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.42, "0.4s"),
        (42.9, "42s"),
        (185, "3m05s"),
        (7380, "2h03m"),
        (273600, "3d04h"),
    ],
)
def test_ages_print_in_their_unit(seconds: float | None, text: str) -> None:
    assert model.age(seconds) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (None, "-"),
        (512, "512 B"),
        (1536, "1.5 KiB"),
        (12 * 2**20, "12.0 MiB"),
        (3 * 2**30, "3.0 GiB"),
    ],
)
def test_sizes_print_in_binary_units(count: int | None, text: str) -> None:
    assert model.size(count) == text


def test_rows_are_shared_out_a_row_at_a_time() -> None:
    assert model.budget(100, [3, 50, 2]) == [3, 50, 2]
    assert model.budget(7, [3, 50, 2]) == [3, 2, 2]
    assert model.budget(2, [3, 50, 2]) == [1, 1, 0]
    assert model.budget(0, [3]) == [0]
    assert sum(model.budget(10, [0, 0])) == 0


# -- the frame drawn (clients/_cli_top.py) ------------------------------------------------------


def drawn(
    view: model.Frame, width: int, height: int | None, lost: tuple[str, float] | None = None
) -> list[str]:
    """The lines ``top`` draws for ``view`` on a terminal of that size."""
    from rich.console import Console

    from prontodb.clients import _cli_top

    screen = io.StringIO()
    console = Console(file=screen, width=width, color_system=None)
    console.print(_cli_top.draw(view, "unix:///s.sock", 1.0, lost, width, height))
    return screen.getvalue().splitlines()


def test_a_frame_is_cut_to_the_terminal_each_table_keeping_its_first_rows() -> None:
    queues = {f"q{n:02d}": queue(100 - n) for n in range(30)}
    current = snapshot(1010.0, databases={"a": database(queues=queues)})
    lines = drawn(model.frame(current, snapshot(1009.0)), 80, 24)
    assert len(lines) <= 24
    assert all(len(line) <= 80 for line in lines)
    assert any(line.split()[:2] == ["a", "q00"] for line in lines)  # the deepest first
    (more,) = [line for line in lines if "more" in line]
    shown = sum(1 for line in lines if line.startswith("a ") and " q" in line)
    assert more.split() == ["…", str(30 - shown), "more"]
    assert "(none)" in "\n".join(lines)  # the empty tables keep their line
    everything = drawn(model.frame(current, snapshot(1009.0)), 160, None)
    assert sum(1 for line in everything if " q" in line and line.startswith("a ")) == 30


def test_a_wide_terminal_shows_each_database_s_claim_rates() -> None:
    current = snapshot(1010.0, databases={"a": database()})
    assert "CLAIMS/S" not in "\n".join(drawn(model.frame(current), 100, None))
    assert "CLAIMS/S" in "\n".join(drawn(model.frame(current), 160, None))


def test_a_lost_broker_is_said_with_the_age_of_the_figures() -> None:
    view = model.frame(snapshot(1010.0))
    lines = drawn(
        view, 160, 50, lost=("No broker answers at unix:///s.sock (no socket there).", 12.0)
    )
    assert (
        "No broker answers at unix:///s.sock (no socket there). Asking again every 1 s; the figures below are 12s old."
        in lines
    )
    assert "Rates since the broker started; next, over each 1 s." in lines
