"""Backups against real broker processes: naming, a consistent copy under concurrent writers,
atomic restore, refusal of damaged files, and what watchers hear."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import BrokerProcess, running_broker
from cli_support import dispatch

from prontodb.clients import Client, ErrorCode, ProntoError


@pytest.fixture
def broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path / "data", short_dir / "b.sock") as process:
        yield process


def everything(client: Client, cursor: str) -> dict[str, Any]:
    return dict(client.scan("", cursor=cursor))


def test_the_output_path_names_a_new_file(broker: BrokerProcess, tmp_path: Path) -> None:
    with Client.connect(broker.url) as client:
        client.set("k", 1)
        out = tmp_path / "backups"
        assert client.backup(str(out / "nightly"))["path"] == str(out / "nightly.db")
        assert client.backup(str(out / "kept.db"))["path"] == str(out / "kept.db")
        inside = Path(client.backup(str(out))["path"])  # a directory: a timestamped file in it
        assert inside.parent == out
        assert inside.name.startswith("backup-")
        assert inside.suffix == ".db"
        with pytest.raises(ProntoError) as refused:
            client.backup(str(out / "nightly"))
        assert refused.value.code is ErrorCode.EXISTS
        listed = client.backup_list(str(out))
        assert [Path(item["path"]).name for item in listed] == sorted(p.name for p in out.iterdir())
        assert listed[0]["databases"] == [
            {"name": "default", "owner": None, "revision": 1, "keys": 1}
        ]


def test_restore_puts_back_every_database_and_only_them(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    with Client.connect(broker.url, user="ops") as client:
        client.cursor_set("dev", str(tmp_path / "dev.db"))
        client.set("config.debug", "true", cursor="dev")
        client.set("workflow.status", "running", cursor="main")
        client.set("queue.t1", "pending", cursor="tasks")
        saved = {c: everything(client, c) for c in ("dev", "main", "tasks")}
        file = client.backup(str(tmp_path / "all"))["path"]
        client.set("config.debug", "broken", cursor="dev")
        client.delete("workflow.status", cursor="main")
        client.set("queue.t2", "new", cursor="tasks")
        before = client.get_info("queue.t2", cursor="tasks")
        assert before is not None
        only = client.restore(file, cursor="tasks")
        assert [d["name"] for d in only["databases"]] == ["tasks"]
        assert everything(client, "tasks") == saved["tasks"]
        assert everything(client, "main") == {}  # untouched by a one-cursor restore
        done = client.restore(file)
        # status shows the restored databases at once, not only once each is touched again
        shown = {d["name"]: d for d in client.status()["databases"]}
        assert {d["name"]: d["revision"] for d in done["databases"]}.items() <= {
            name: d["revision"] for name, d in shown.items()
        }.items()
        assert {c: everything(client, c) for c in saved} == saved
        # Revisions go on above what each database had, never back.
        revisions = {d["name"]: d["revision"] for d in done["databases"]}
        assert revisions["tasks"] > before.mod_rev


def _random_writer(url: str, n: int, stop: threading.Event, errors: list[BaseException]) -> None:
    """Writer ``n``: sets, counters, deletes and transactions on a few keys until ``stop``."""
    rng = random.Random(n)
    try:
        with Client.connect(url, user=f"w{n}", cursor="busy") as client:
            while not stop.is_set():
                key = f"k.{rng.randrange(12)}"
                roll = rng.random()
                if roll < 0.4:
                    client.set(key, f"{n}:{rng.random()}")
                elif roll < 0.7:
                    client.set(f"c.{n}", rng.randrange(1000))
                elif roll < 0.85:
                    client.delete(key)
                else:
                    client.txn(
                        [],
                        [{"op": "set", "key": key, "value": n}, {"op": "incr", "key": "total"}],
                    )
    except BaseException as exc:  # reported by the test that runs it
        errors.append(exc)


def _state_at(client: Client, revision: int) -> dict[str, Any]:
    """The keys and values at ``revision``, replayed from the history of every change."""
    expected: dict[str, Any] = {}
    with client.watch(from_rev=1) as watch:
        for event in watch:
            if event.rev > revision:
                break
            if event.type in ("put", "claim", "release"):
                expected[event.key] = event.value
            else:
                expected.pop(event.key, None)
    return expected


def test_a_backup_taken_during_twenty_writers_is_the_state_at_one_revision(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    threads = [
        threading.Thread(target=_random_writer, args=(broker.url, n, stop, errors))
        for n in range(20)
    ]
    for thread in threads:
        thread.start()
    try:
        with Client.connect(broker.url, cursor="busy") as client:
            while (client.get_info("total") or client.get_info("k.0")) is None:
                pass  # until the writers are under way
            done = client.backup(str(tmp_path / "busy"), cursor="busy")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    revision = done["databases"][0]["revision"]
    with Client.connect(broker.url, cursor="busy") as client:
        head = client.set("marker", "end")
        expected = _state_at(client, revision)
        assert 0 < revision < head
        client.cursor_set("copy", done["path"])
        assert everything(client, "copy") == expected


def test_a_damaged_or_foreign_file_is_refused_and_nothing_changes(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    with Client.connect(broker.url) as client:
        for i in range(200):
            client.set(f"k.{i}", "x" * 100)
        good = Path(client.backup(str(tmp_path / "good"))["path"])
        client.set("k.0", "changed after the backup")
        data = good.read_bytes()
        broken = {
            "truncated.db": data[: len(data) // 2],
            "cut-at-the-end.db": data[:-3],
            "flipped.db": data[:5000] + bytes([data[5000] ^ 1]) + data[5001:],
            "foreign.db": b"SQLite format 3\x00" + bytes(2000),
            "empty.db": b"",
        }
        for name, content in broken.items():
            (tmp_path / name).write_bytes(content)
            with pytest.raises(ProntoError) as refused:
                client.restore(str(tmp_path / name))
            assert refused.value.code is ErrorCode.BAD_REQUEST, name
            assert "Nothing was restored" in refused.value.message
            assert client.get("k.0") == "changed after the backup"
        listed = {Path(i["path"]).name: i for i in client.backup_list(str(tmp_path))}
        assert "error" not in listed["good.db"]
        assert all("error" in listed[name] for name in broken)


def test_watchers_of_a_restored_database_are_told_to_re_read(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    with Client.connect(broker.url) as client:
        client.set("k", "old")
        file = client.backup(str(tmp_path / "b"))["path"]
        with client.watch() as watch:
            client.set("k", "newer")
            assert watch.next_event(timeout=10) is not None
            client.restore(file)
            with pytest.raises(ProntoError) as told:
                watch.next_event(timeout=10)
        assert told.value.code is ErrorCode.COMPACTED
        assert told.value.details["restored"] is True
        assert client.get("k") == "old"


def test_one_database_that_cannot_open_does_not_cost_the_others_their_backup(
    tmp_path: Path, short_dir: Path
) -> None:
    data = tmp_path / "data"
    with running_broker(data, short_dir / "b.sock") as broker, Client.connect(broker.url) as c:
        for cursor in ("good", "hurt", "fine"):
            c.set("k", cursor, cursor=cursor)
    (data / "hurt.db" / "seg-00000001.log").unlink()  # damaged while the broker was stopped
    with running_broker(data, short_dir / "b.sock") as broker:
        with Client.connect(broker.url) as client:
            done = client.backup(str(tmp_path / "all"))
            assert [d["name"] for d in done["databases"]] == ["fine", "good"]
            (failed,) = done["failed"]
            assert failed["name"] == "hurt"
            assert failed["code"] == "unavailable"
            assert "seg-00000001.log" in failed["message"]
            listed = client.backup_list(done["path"])
            assert [d["name"] for d in listed[0]["databases"]] == ["fine", "good"]
        cli = dispatch(["--url", broker.url, "backup", "--output", str(tmp_path / "cli")])
        assert cli.status == 1
        assert cli.out == str(tmp_path / "cli.db") + "\n"
        assert cli.err.startswith("prontodb: hurt was not backed up: The database 'hurt'")
