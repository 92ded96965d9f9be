"""The permission matrix over TCP, where every connection must prove its user with a token: every
operation tried as every kind of user, and each outcome held against the permission table of
docs/PROTOCOL.md written out here by hand (not computed by the broker's own code). Then the waits
already in progress (a blocked claim, a watch) when their right goes: a revoke, a removed user, a
new token each end them at once, and the item they waited for goes to no one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import BrokerProcess, running_broker
from reliability_kit import Figures, Scale

from prontodb.clients import Client, ErrorCode, ProntoError

Op = Callable[[Client, str], Any]
WAIT_LIMIT = 60.0  # seconds any thread of a case gets; a hang fails the case


@pytest.fixture
def broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    # TCP without --insecure: tokens on every connection.
    with running_broker(
        tmp_path / "data", short_dir / "b.sock", extra=["--tcp", "127.0.0.1:0"]
    ) as b:
        yield b


def admin_token(broker: BrokerProcess) -> str:
    return (broker.data_dir / "admin.token").read_text().strip()


def connect(broker: BrokerProcess, user: str, token: str, cursor: str = "tasks") -> Client:
    return Client.connect("tcp://" + str(broker.tcp), user=user, token=token, cursor=cursor)


def watch_briefly(client: Client, prefix: str) -> None:
    with client.watch(prefix):  # open: the broker has checked it
        pass


def operations(broker: BrokerProcess, tmp_path: Path, files: dict[str, str]) -> dict[str, Op]:
    mine, elsewhere = broker.data_dir / "backups", tmp_path / "elsewhere"
    return {
        "ping": lambda c, u: c.ping(),
        "status": lambda c, u: c.status(),
        "get in prefix": lambda c, u: c.get("queue.t1"),
        "get outside prefix": lambda c, u: c.get("other.k"),
        "ttl in prefix": lambda c, u: c.ttl("queue.t1"),
        "keys of prefix": lambda c, u: c.keys("queue"),
        "keys of everything": lambda c, u: c.keys(),
        "scan of prefix": lambda c, u: c.scan("queue"),
        "count of prefix": lambda c, u: c.count("queue"),
        "claims of prefix": lambda c, u: c.claims("queue"),
        "watch prefix": lambda c, u: watch_briefly(c, "queue"),
        "watch everything": lambda c, u: watch_briefly(c, ""),
        "set in prefix": lambda c, u: c.set(f"queue.by-{u}", "new"),
        "set outside prefix": lambda c, u: c.set("other.k", "w"),
        "delete in prefix": lambda c, u: c.delete(f"queue.gone-{u}"),
        "incr in prefix": lambda c, u: c.incr("queue.count"),
        "expire in prefix": lambda c, u: c.expire("queue.t1", 3600),
        "claim from prefix": lambda c, u: c.claim("queue.jobs"),
        "claim from outside": lambda c, u: c.claim("other"),
        "ack a stale claim in prefix": lambda c, u: _ack_stale(c),
        "txn in prefix": lambda c, u: c.txn([], [{"op": "set", "key": "queue.t3", "value": 1}]),
        "txn reading outside": lambda c, u: c.txn(
            [{"key": "other.k", "target": "exists", "value": True}],
            [{"op": "set", "key": "queue.t3", "value": 1}],
        ),
        "caches": lambda c, u: c.caches(),
        "create a cache in prefix": lambda c, u: c.create_cache("queue.cache", 60),
        "get in another cursor": lambda c, u: c.get("k", cursor="logs"),
        "set in another cursor": lambda c, u: c.set("k", u, cursor="logs"),
        "backup of tasks into the broker's backups": lambda c, u: c.backup(
            str(mine / f"t-{u}"), cursor="tasks"
        ),
        "backup of tasks elsewhere": lambda c, u: c.backup(str(elsewhere / u), cursor="tasks"),
        "backup of tasks out of the broker's backups by ..": lambda c, u: c.backup(
            str(mine / ".." / f"escaped-{u}"), cursor="tasks"
        ),
        "backup of everything": lambda c, u: c.backup(str(mine / f"all-{u}")),
        "restore tasks from the broker's backups": lambda c, u: c.restore(
            files["inside"], cursor="tasks"
        ),
        "restore tasks from elsewhere": lambda c, u: c.restore(files["outside"], cursor="tasks"),
        "list backups": lambda c, u: c.backup_list(str(mine)),
        "list cursors": lambda c, u: c.cursors(),
        "bind a cursor": lambda c, u: c.cursor_set(f"scratch-{u}", str(tmp_path / f"s-{u}.db")),
        "add a user": lambda c, u: c.user_add(f"new-{u}"),
        "grant": lambda c, u: c.grant(f"new-{u}", "read", cursor="tasks"),
        "own grants": lambda c, u: c.grants(u),
        "everyone's grants": lambda c, u: c.grants(),
    }


def _ack_stale(client: Client) -> None:
    try:
        client.ack("queue.t1", 999_999)  # allowed or not is the question; the token is wrong
    except ProntoError as err:
        if err.code is ErrorCode.DENIED:
            raise


# What each user may do, from the permission table of docs/PROTOCOL.md.
OPEN = {"ping", "status", "own grants", "list cursors"}
READ_QUEUE = {
    "get in prefix",
    "ttl in prefix",
    "keys of prefix",
    "scan of prefix",
    "count of prefix",
    "claims of prefix",
    "watch prefix",
}
WRITE_QUEUE = {
    "set in prefix",
    "delete in prefix",
    "incr in prefix",
    "expire in prefix",
    "claim from prefix",
    "ack a stale claim in prefix",
    "txn in prefix",
    "create a cache in prefix",
}
CURSOR_WIDE = {
    "get outside prefix",
    "keys of everything",
    "watch everything",
    "set outside prefix",
    "claim from outside",
    "txn reading outside",
    "caches",
}
OWN_BACKUPS = {
    "backup of tasks into the broker's backups",
    "restore tasks from the broker's backups",
}


def allowed(ops: dict[str, Op]) -> dict[str, set[str]]:
    return {
        "admin": set(ops),
        "reader": OPEN | READ_QUEUE,
        "writer": OPEN | READ_QUEUE | WRITE_QUEUE,
        "owner": OPEN | READ_QUEUE | WRITE_QUEUE | CURSOR_WIDE | OWN_BACKUPS,
        "other": OPEN | {"get in another cursor", "set in another cursor"},
        "nobody": set(OPEN),
    }


def test_the_permission_matrix_over_tcp(
    broker: BrokerProcess, tmp_path: Path, figures: Figures, scale: Scale
) -> None:
    figures.scenario = "the permission matrix over TCP"
    files: dict[str, str] = {}
    with connect(broker, "admin", admin_token(broker)) as admin:
        tokens = {"admin": admin_token(broker)}
        for name in ("reader", "writer", "owner", "other", "nobody"):
            tokens[name] = admin.user_add(name)
        admin.grant("reader", "read", cursor="tasks", prefix="queue")
        admin.grant("writer", "write", cursor="tasks", prefix="queue")
        admin.grant("owner", "admin", cursor="tasks")
        admin.grant("other", "write", cursor="logs")
        admin.set("queue.t1", "pending")
        admin.set("other.k", "v")
        files["inside"] = admin.backup(str(broker.data_dir / "backups" / "seed"), cursor="tasks")[
            "path"
        ]
        files["outside"] = admin.backup(str(tmp_path / "elsewhere" / "seed"), cursor="tasks")[
            "path"
        ]
    ops = operations(broker, tmp_path, files)
    expected = allowed(ops)
    for _ in range(scale.pick(1, 3)):
        for user, token in tokens.items():
            with connect(broker, user, token) as client:
                for name, op in ops.items():
                    figures.add("cases")
                    try:
                        op(client, user)
                    except ProntoError as err:
                        if err.code is not ErrorCode.DENIED:
                            # Past the permission check, refused for another reason (a second
                            # round's backup exists already): allowed, as far as rights go.
                            bug = err.code in (ErrorCode.INTERNAL, ErrorCode.UNAUTHENTICATED)
                            assert not bug, f"{user}: {name}: {err}"
                            figures.add("allowed")
                            figures.add("wrongly allowed", name not in expected[user])
                            assert name in expected[user], (user, name, err.message)
                            continue
                        figures.add("denied")
                        figures.add("wrongly denied", name in expected[user])
                        assert name not in expected[user], (user, name, err.message)
                        # A refusal says what is missing and how to get it.
                        clear = "prontodb grant" in err.message and user in err.message
                        figures.add("unclear", 0 if clear else 1)
                        assert clear, err.message
                    else:
                        figures.add("allowed")
                        figures.add("wrongly allowed", name not in expected[user])
                        assert name in expected[user], (user, name)
    for bad in ("", "not-a-token", tokens["reader"]):  # none, wrong, another user's
        figures.add("cases")
        with pytest.raises(ProntoError) as refused:
            connect(broker, "writer", bad)
        assert refused.value.code is ErrorCode.UNAUTHENTICATED
        figures.add("denied")
    figures.add("wrongly allowed", 0)
    assert figures["wrongly allowed"] == 0
    assert figures["unclear"] == 0


# -- waits in progress ------------------------------------------------------------------------------


def run_in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def body() -> None:
        try:
            outcome.append(target())
        except ProntoError as err:
            outcome.append(err)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def until(condition: Callable[[], bool]) -> None:
    """Poll the broker's state (status) until ``condition`` holds: the broker's own view is the
    only way to know a claim is waiting in it; bounded, a hang fails the test."""
    import time

    deadline = time.monotonic() + WAIT_LIMIT
    while not condition():
        assert time.monotonic() < deadline, "the broker never reached the state waited for"


@pytest.mark.parametrize("how", ["revoke", "remove the user", "new token"])
def test_waits_in_progress_end_when_their_right_goes(
    broker: BrokerProcess, figures: Figures, how: str
) -> None:
    figures.scenario = "the permission matrix over TCP"
    with connect(broker, "admin", admin_token(broker)) as admin:
        token = admin.user_add("bob")
        admin.grant("bob", "write", cursor="tasks", prefix="queue")
        claimer, watcher = connect(broker, "bob", token), connect(broker, "bob", token)
        try:
            claim, claimed = run_in_thread(lambda: claimer.claim("queue.jobs", wait=WAIT_LIMIT))
            changes: list[object] = []

            def watch() -> object:
                with watcher.watch("queue") as stream:
                    changes.extend(stream)
                return "the watch ended without an error"

            watch_thread, watched = run_in_thread(watch)
            until(lambda: _claimers(admin) == 1 and _watchers(admin) == 1)
            if how == "revoke":
                admin.revoke("bob", "write", cursor="tasks", prefix="queue")
            elif how == "remove the user":
                admin.user_remove("bob")
            else:
                admin.user_token("bob")
            admin.set("queue.jobs.j1", "work")  # what the old right would have been handed
            claim.join(WAIT_LIMIT)
            watch_thread.join(WAIT_LIMIT)
            assert not claim.is_alive(), "the claim kept waiting"
            assert not watch_thread.is_alive(), "the watch kept going"
            for outcome in (claimed[0], watched[0]):
                figures.add("waits ended")
                ended = isinstance(outcome, ProntoError) and outcome.code in (
                    ErrorCode.DENIED,
                    ErrorCode.UNAUTHENTICATED,
                    ErrorCode.UNAVAILABLE,  # the connection itself ended (removed, new token)
                )
                figures.add("wrongly allowed", 0 if ended else 1)
                assert ended, outcome
            assert changes == []  # nothing after the right went reached the watcher
            item = admin.claim("queue.jobs", cursor="tasks")
            assert item is not None  # never handed to bob
            assert item.key == "queue.jobs.j1"
        finally:
            claimer.close()
            watcher.close()


def _claimers(admin: Client) -> int:
    return sum(db.get("claimers", 0) for db in admin.status()["databases"])


def _watchers(admin: Client) -> int:
    return sum(db.get("watchers", 0) for db in admin.status()["databases"])
