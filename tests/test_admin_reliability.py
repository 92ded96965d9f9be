"""Regression tests for the admin operations under concurrency, against real broker processes:
restore and purge while requests run, claimers and watchers of a replaced database, two brokers
on one directory, damaged databases and crafted backup files, and catalog changes racing.

Every wait is bounded: threads are joined with a timeout and checked to have ended.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from brokers import BrokerProcess, running_broker

from prontodb.broker import backup
from prontodb.broker.engine import Engine
from prontodb.clients import Claimed, Client, ErrorCode, ProntoError

JOIN = 30.0  # seconds any helper thread gets to finish; a hang fails the test instead


@pytest.fixture
def broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path / "data", short_dir / "b.sock") as process:
        yield process


@pytest.fixture
def guarded(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    """A broker that wants tokens on its Unix socket too."""
    with running_broker(tmp_path / "data", short_dir / "b.sock", extra=["--require-auth"]) as b:
        yield b


def admin_token(broker: BrokerProcess) -> str:
    return (broker.data_dir / "admin.token").read_text().strip()


def start(target: Callable[..., None], *args: Any) -> threading.Thread:
    # Daemon: a thread that hangs (the bug) must not keep the test run from ending.
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def join_all(threads: list[threading.Thread], timeout: float = JOIN) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"threads still running after {timeout:g} s: {hung}"


def concurrently(calls: list[Callable[[], Any]], timeout: float = JOIN) -> list[Any]:
    """Run ``calls`` at once (released together by a barrier); each one's result or exception.
    Fails the test if one has not returned within ``timeout`` seconds."""
    barrier = threading.Barrier(len(calls), timeout=timeout)
    outcomes: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            barrier.wait()
            outcomes[index] = calls[index]()
        except BaseException as exc:  # reported by the caller
            outcomes[index] = exc

    join_all([start(run, i) for i in range(len(calls))], timeout)
    return outcomes


def within(call: Callable[[], Any], timeout: float = JOIN) -> Any:
    """``call()``'s result (or its exception, raised here), failing the test if it hangs."""
    outcome = concurrently([call], timeout)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def code_of(outcome: Any) -> ErrorCode | None:
    """An outcome's error code, None for a success; anything but a ProntoError is re-raised."""
    if isinstance(outcome, ProntoError):
        return outcome.code
    if isinstance(outcome, BaseException):
        raise outcome
    return None


# -- restore and purge while requests run -------------------------------------------------------


def run_writers(
    url: str, cursor: str, writers: int, writes: int, ready: threading.Barrier
) -> tuple[list[threading.Thread], dict[int, int], list[BaseException]]:
    """Threads that each make ``writes`` writes to ``cursor`` on a connection of their own once
    ``ready`` releases them; each write must succeed or fail with ``unavailable``. Returns the
    threads, the writes each one finished (filled in as they end) and what went wrong."""
    finished: dict[int, int] = {}
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        count = 0
        try:
            with Client.connect(url, user=f"w{n}", cursor=cursor) as client:
                ready.wait()
                for i in range(writes):
                    try:
                        client.set(f"w.{n}.{i % 10}", i)
                    except ProntoError as exc:
                        assert exc.code is ErrorCode.UNAVAILABLE, exc
                    count += 1
            finished[n] = count
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    return [start(writer, n) for n in range(writers)], finished, failures


def test_writers_during_a_restore_each_finish_their_writes(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    writers, writes = 8, 300
    with Client.connect(broker.url, cursor="busy") as client:
        client.set("base", "saved")
        file = client.backup(str(tmp_path / "busy"), cursor="busy")["path"]
        ready = threading.Barrier(writers + 1, timeout=JOIN)
        threads, finished, failures = run_writers(broker.url, "busy", writers, writes, ready)
        ready.wait()
        # Restores while the writers run: a write applied just before one is closed must still
        # be answered (before the fix its answer waited, for ever, on the closed database).
        restores = 0
        while restores < 10 and any(t.is_alive() for t in threads):
            restored = within(partial(client.restore, file, cursor="busy"))
            assert [d["name"] for d in restored["databases"]] == ["busy"]
            restores += 1
        join_all(threads, 20)
        assert not failures, failures
        assert finished == dict.fromkeys(range(writers), writes)
        assert restores >= 1
        assert client.get("base") == "saved"
        client.set("after", "restore")
        assert client.get("after") == "restore"


def test_a_waiting_claim_is_served_from_the_restored_database(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    with Client.connect(broker.url, cursor="work") as client:
        client.set("other", 1)
        file = client.backup(str(tmp_path / "work"), cursor="work")["path"]
    got: list[Claimed | None] = []
    failures: list[BaseException] = []
    with Client.connect(broker.url, cursor="work") as claimer:

        def claim() -> None:
            try:
                got.append(claimer.claim("jobs", wait=30, lease=60))
            except BaseException as exc:
                failures.append(exc)

        began = time.monotonic()
        thread = start(claim)
        # Once the claim is sent, a ping on the same connection is answered only after the
        # broker has read it: requests of one connection are applied in order.
        deadline = time.monotonic() + JOIN
        while claimer.statistics()["in_flight"] < 1 and thread.is_alive():
            assert time.monotonic() < deadline, "the claim was never sent"
        claimer.ping()
        with Client.connect(broker.url, cursor="work") as client:
            within(partial(client.restore, file, cursor="work"))
            client.set("jobs.j1", "do it")
            thread.join(15)
            assert not thread.is_alive(), "the waiting claim did not see the item"
    assert not failures, failures
    assert time.monotonic() - began < 20
    assert len(got) == 1
    assert got[0] is not None
    assert (got[0].key, got[0].value) == ("jobs.j1", "do it")


def test_watchers_of_a_purged_or_restored_cursor_are_told_compacted(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    with Client.connect(broker.url) as client:
        client.cursor_set("gone", str(tmp_path / "gone.db"))
        client.set("k", "v", cursor="gone")
        with client.watch(cursor="gone") as watch:
            client.set("k", "w", cursor="gone")
            assert watch.next_event(timeout=10) is not None
            assert client.cursor_delete("gone", purge=True)["purged"] is True
            with pytest.raises(ProntoError) as purged:
                watch.next_event(timeout=10)
        assert purged.value.code is ErrorCode.COMPACTED
        assert not (tmp_path / "gone.db").exists()

        client.cursor_set("kept", str(tmp_path / "kept.db"))
        client.set("k", "old", cursor="kept")
        file = client.backup(str(tmp_path / "kept-backup"), cursor="kept")["path"]
        with client.watch(cursor="kept") as watch:
            client.set("k", "new", cursor="kept")
            assert watch.next_event(timeout=10) is not None
            client.restore(file, cursor="kept")
            with pytest.raises(ProntoError) as restored:
                watch.next_event(timeout=10)
        assert restored.value.code is ErrorCode.COMPACTED
        assert restored.value.details["restored"] is True
        assert client.get("k", cursor="kept") == "old"


def test_a_purge_racing_writers_leaves_every_cursor_openable(
    tmp_path: Path, short_dir: Path
) -> None:
    data, sock = tmp_path / "data", short_dir / "b.sock"
    writers, writes = 4, 500
    # The data directory's own `racy`: the writers' requests keep reaching the purged directory,
    # and may reopen it as soon as the purge lets them.
    with running_broker(data, sock) as broker, Client.connect(broker.url) as admin:
        admin.set("seed", 0, cursor="racy")
        ready = threading.Barrier(writers + 1, timeout=JOIN)
        threads, finished, failures = run_writers(broker.url, "racy", writers, writes, ready)
        ready.wait()
        purges = purged = 0
        while purges < 200 and any(t.is_alive() for t in threads):
            try:
                purged += within(partial(admin.cursor_delete, "racy", purge=True))["purged"]
            except ProntoError as exc:  # a clean refusal is fine; a hang or a crash is not
                assert exc.code in (ErrorCode.BAD_REQUEST, ErrorCode.UNAVAILABLE), exc
            purges += 1
        join_all(threads, 20)
        assert not failures, failures
        assert finished == dict.fromkeys(range(writers), writes)
        assert purged >= 1  # a purge removed the database while the writers were at it
        admin.ping()
        admin.set("still", "serving")
    with running_broker(data, sock) as broker, Client.connect(broker.url) as client:
        names = {c["name"] for c in client.cursors()}
        assert "default" in names
        for name in names:
            client.get("any", cursor=name)  # no storage error
            client.set("after", "restart", cursor=name)
        assert client.get("still") == "serving"


# -- restore into a directory held elsewhere, or damaged -----------------------------------------


def test_a_restore_into_a_directory_another_broker_holds_is_refused(
    tmp_path: Path, short_dir: Path
) -> None:
    shared = tmp_path / "shared.db"
    with (
        running_broker(tmp_path / "one", short_dir / "1.sock") as first,
        running_broker(tmp_path / "two", short_dir / "2.sock") as second,
        Client.connect(first.url, cursor="shared") as a,
        Client.connect(second.url, cursor="shared") as b,
    ):
        a.cursor_set("shared", str(shared))
        a.set("k", "first")
        file = a.backup(str(tmp_path / "shared-backup"), cursor="shared")["path"]
        a.set("k", "after the backup")
        b.cursor_set("shared", str(shared))
        with pytest.raises(ProntoError) as refused:
            within(partial(b.restore, file, cursor="shared"))
        assert refused.value.code is ErrorCode.UNAVAILABLE, refused.value
        assert "another broker" in refused.value.message
        assert a.get("k") == "after the backup"
        a.set("k2", "still writable")
        assert dict(a.scan("")) == {"k": "after the backup", "k2": "still writable"}
        b.ping()


def test_a_purge_of_a_directory_another_broker_holds_is_refused(
    tmp_path: Path, short_dir: Path
) -> None:
    shared = tmp_path / "shared.db"
    with (
        running_broker(tmp_path / "one", short_dir / "1.sock") as first,
        running_broker(tmp_path / "two", short_dir / "2.sock") as second,
        Client.connect(first.url, cursor="shared") as a,
        Client.connect(second.url, cursor="shared") as b,
    ):
        a.cursor_set("shared", str(shared))
        a.set("k", "kept")
        b.cursor_set("shared", str(shared))
        try:
            b.cursor_delete("shared", purge=True)
        except ProntoError as exc:
            assert exc.code is ErrorCode.UNAVAILABLE, exc
        a.set("k2", "acknowledged")
        assert (shared / "MANIFEST").exists() or list(shared.glob("seg-*"))
    with (
        running_broker(tmp_path / "one", short_dir / "1.sock") as first,
        Client.connect(first.url, cursor="shared") as a,
    ):
        assert dict(a.scan("")) == {"k": "kept", "k2": "acknowledged"}


def test_a_restore_over_a_damaged_database_brings_the_data_back(
    tmp_path: Path, short_dir: Path
) -> None:
    data, sock, target = tmp_path / "data", short_dir / "b.sock", tmp_path / "hurt.db"
    with running_broker(data, sock) as broker, Client.connect(broker.url, cursor="hurt") as client:
        client.cursor_set("hurt", str(target))
        client.set("k", "backed up")
        client.set("n", 7)
        file = client.backup(str(tmp_path / "hurt-backup"), cursor="hurt")["path"]
        client.set("k", "lost with the damage")
    (target / "MANIFEST").unlink()
    with running_broker(data, sock) as broker, Client.connect(broker.url, cursor="hurt") as client:
        done = within(partial(client.restore, file, cursor="hurt"))
        assert done["databases"][0]["path"] == str(target)
        assert dict(client.scan("")) == {"k": "backed up", "n": 7}
        client.set("k", "writable again")
    with running_broker(data, sock) as broker, Client.connect(broker.url, cursor="hurt") as client:
        assert client.get("k") == "writable again"


# -- backup files ----------------------------------------------------------------------------------


def test_two_backups_at_once_to_one_directory(broker: BrokerProcess, tmp_path: Path) -> None:
    out = tmp_path / "backups"
    out.mkdir()
    with Client.connect(broker.url) as client:
        for i in range(50):
            client.set(f"k.{i}", "x" * 200)
    clients = [Client.connect(broker.url) for _ in range(2)]
    try:
        outcomes = concurrently([partial(c.backup, str(out)) for c in clients])
    finally:
        for c in clients:
            c.close()
    codes = [code_of(o) for o in outcomes]
    assert set(codes) <= {None, ErrorCode.EXISTS}, outcomes
    assert None in codes, outcomes
    with Client.connect(broker.url) as client:
        listed = client.backup_list(str(out))
    made = {o["path"] for o in outcomes if not isinstance(o, BaseException)}
    assert {item["path"] for item in listed} == made
    assert all("error" not in item for item in listed), listed


def test_a_backup_that_loses_the_race_for_its_name_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "nightly.db"
    real_link = os.link

    def taken_meanwhile(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        Path(dst).write_bytes(b"the backup that won")  # another backup got the name first
        real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", taken_meanwhile)
    section = backup.Section("default", None, 1, 0)
    with pytest.raises(FileExistsError):
        backup.write(target, time.time(), [(section, Engine().snapshot())])
    monkeypatch.undo()
    assert target.read_bytes() == b"the backup that won"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nightly.db"]


def test_a_shadowed_data_directory_database_is_left_out_of_a_full_backup(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    bound = tmp_path / "elsewhere" / "dup.db"
    default = broker.data_dir / "dup.db"
    with Client.connect(broker.url) as client:
        client.set("where", "data dir", cursor="dup")
        client.set("only.here", 1, cursor="dup")
        assert default.is_dir()
        client.cursor_set("dup", str(bound))
        client.set("where", "bound", cursor="dup")
        client.set("main", "m")
        full = client.backup(str(tmp_path / "full"))
        sections = [d for d in full["databases"] if d["name"] == "dup"]
        assert len(sections) == 1, full["databases"]
        assert sections[0]["keys"] == 1  # the bound database's, not the data directory's
        client.set("where", "changed", cursor="dup")
        done = client.restore(full["path"])
        paths = {d["name"]: d["path"] for d in done["databases"]}
        assert paths["dup"] == str(bound)
        assert str(default) not in paths.values()
        assert dict(client.scan("", cursor="dup")) == {"where": "bound"}
        client.cursor_set("peek", str(default))  # the shadowed database is as it was
        assert dict(client.scan("", cursor="peek")) == {"where": "data dir", "only.here": 1}


def test_a_backup_naming_a_path_outside_the_data_directory_is_refused(
    short_dir: Path, tmp_path: Path
) -> None:
    crafted = tmp_path / "crafted.db"
    section = backup.Section("../../escape", None, 1, 0)
    backup.write(crafted, time.time(), [(section, Engine().snapshot())])
    with (
        running_broker(tmp_path / "deep" / "data", short_dir / "b.sock") as broker,
        Client.connect(broker.url) as client,
    ):
        client.set("k", "v")
        for cursor in (None, "escape"):
            with pytest.raises(ProntoError) as refused:
                client.restore(str(crafted), cursor=cursor)
            assert refused.value.code is ErrorCode.BAD_REQUEST, refused.value
        assert client.get("k") == "v"
    escaped = [str(p) for base in (tmp_path, short_dir) for p in base.rglob("escape*")]
    assert not escaped


def test_a_restore_from_a_fifo_is_refused_promptly(broker: BrokerProcess, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    outcome: list[Any] = []

    def restore() -> None:
        try:
            with Client.connect(broker.url) as client:
                outcome.append(client.restore(str(fifo)))
        except BaseException as exc:
            outcome.append(exc)

    thread = start(restore)
    thread.join(15)
    if thread.is_alive():  # unblock the broker's reader so that it can stop, then fail
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        thread.join(JOIN)
        pytest.fail("a restore from a FIFO hung")
    assert len(outcome) == 1
    assert isinstance(outcome[0], ProntoError), outcome
    assert outcome[0].code is ErrorCode.BAD_REQUEST
    with Client.connect(broker.url) as client:
        client.ping()
        client.set("k", "served")


# -- users and grants -------------------------------------------------------------------------------


def test_concurrent_grants_and_user_adds_apply_once(guarded: BrokerProcess) -> None:
    token = admin_token(guarded)

    def admin() -> Client:
        return Client.connect(guarded.url, user="admin", token=token)

    with admin() as client:
        client.user_add("worker")
    clients = [admin() for _ in range(6)]
    try:
        outcomes = concurrently(
            [partial(c.grant, "worker", "write", cursor="tasks", prefix="queue") for c in clients]
        )
        assert [code_of(o) for o in outcomes] == [None] * 6, outcomes
        added = concurrently([partial(c.user_add, "twin") for c in clients[:4]])
    finally:
        for c in clients:
            c.close()
    with admin() as client:
        wanted = {"user": "worker", "level": "write", "cursor": "tasks", "prefix": "queue"}
        assert client.grants("worker") == [wanted]
        assert client.revoke("worker", "write", cursor="tasks", prefix="queue") is True
        assert client.grants("worker") == []
        codes = [code_of(o) for o in added]
        assert codes.count(None) == 1, added
        assert codes.count(ErrorCode.EXISTS) == 3, added
        assert [u["name"] for u in client.users()].count("twin") == 1


def test_revoke_ends_watches_and_a_new_token_or_removal_ends_connections(
    guarded: BrokerProcess,
) -> None:
    url = guarded.url
    with Client.connect(url, user="admin", token=admin_token(guarded)) as admin:
        token = admin.user_add("reader")
        admin.grant("reader", "read", cursor="public")
        admin.set("news", "first", cursor="public")
        with Client.connect(url, user="reader", token=token, cursor="public") as reader:
            assert reader.get("news") == "first"
            with reader.watch() as watch:
                admin.set("news", "second", cursor="public")
                event = watch.next_event(timeout=10)
                assert event is not None
                assert event.value == "second"
                assert admin.revoke("reader", "read", cursor="public") is True
                with pytest.raises(ProntoError) as ended:
                    watch.next_event(timeout=10)
            assert ended.value.code is ErrorCode.DENIED
            with pytest.raises(ProntoError) as denied:
                reader.get("news")
            assert denied.value.code is ErrorCode.DENIED
            fresh = admin.user_token("reader")
            with pytest.raises(ProntoError) as rekeyed:
                reader.ping()
            assert rekeyed.value.code is ErrorCode.UNAUTHENTICATED
        with Client.connect(url, user="reader", token=fresh, cursor="public") as reader:
            reader.ping()
            admin.user_remove("reader")
            with pytest.raises(ProntoError) as removed:
                reader.ping()
            assert removed.value.code is ErrorCode.UNAUTHENTICATED
        with pytest.raises(ProntoError) as gone:
            Client.connect(url, user="reader", token=fresh)
        assert gone.value.code is ErrorCode.UNAUTHENTICATED
