"""Users, tokens, grants and TLS against real broker processes."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from brokers import BrokerProcess, running_broker

from prontodb.clients import Client, ErrorCode, ProntoError


def admin_token(broker: BrokerProcess) -> str:
    return (broker.data_dir / "admin.token").read_text().strip()


@pytest.fixture
def guarded(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    """A broker that wants tokens on its Unix socket too."""
    with running_broker(tmp_path / "data", short_dir / "b.sock", extra=["--require-auth"]) as b:
        yield b


def test_a_new_data_directory_gets_an_admin_whose_token_only_the_owner_reads(
    tmp_path: Path, short_dir: Path
) -> None:
    data, sock = tmp_path / "data", short_dir / "b.sock"
    with running_broker(data, sock) as broker:
        token_file = data / "admin.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = admin_token(broker)
        with Client.connect(broker.url) as client:
            assert [u["name"] for u in client.users()] == ["admin"]
            assert client.grants("admin") == [
                {"user": "admin", "level": "admin", "cursor": None, "prefix": ""}
            ]
            client.user_remove("admin")
    with running_broker(data, sock) as broker, Client.connect(broker.url) as client:
        assert client.users() == []  # made once per data directory, not again
        assert admin_token(broker) == token


def test_tcp_wants_a_valid_token(tmp_path: Path, short_dir: Path) -> None:
    with running_broker(
        tmp_path / "data", short_dir / "b.sock", extra=["--tcp", "127.0.0.1:0"]
    ) as broker:
        url = "tcp://" + str(broker.tcp)
        for token in (None, "wrong"):
            with pytest.raises(ProntoError) as refused:
                Client.connect(url, user="admin", token=token)
            assert refused.value.code is ErrorCode.UNAUTHENTICATED
            assert "PRONTODB_TOKEN" in refused.value.message
        with Client.connect(url, user="admin", token=admin_token(broker)) as client:
            client.set("k", "over tcp")
        with Client.connect(broker.url, user="anyone") as local:  # the socket trusts its mode
            assert local.get("k") == "over tcp"


def test_restarts_keep_users_grants_and_tokens(tmp_path: Path, short_dir: Path) -> None:
    data, sock = tmp_path / "data", short_dir / "b.sock"
    with running_broker(data, sock, extra=["--require-auth"]) as broker:
        admin = Client.connect(broker.url, user="admin", token=admin_token(broker))
        token = admin.user_add("worker1")
        admin.grant("worker1", "write", cursor="tasks", prefix="queue")
        admin.close()
    with running_broker(data, sock, extra=["--require-auth"]) as broker:
        with Client.connect(broker.url, user="worker1", token=token, cursor="tasks") as worker:
            worker.set("queue.t1", "mine")
            with pytest.raises(ProntoError) as denied:
                worker.set("other.k", "not mine")
            assert denied.value.code is ErrorCode.DENIED
        with Client.connect(broker.url, user="admin", token=admin_token(broker)) as admin:
            fresh = admin.user_token("worker1")
        with pytest.raises(ProntoError):
            Client.connect(broker.url, user="worker1", token=token)  # the old one is gone
        Client.connect(broker.url, user="worker1", token=fresh).close()


def watch_briefly(client: Client) -> None:
    with client.watch("queue"):  # open: the broker has checked it
        pass


def test_the_permission_matrix(guarded: BrokerProcess, tmp_path: Path) -> None:
    with Client.connect(guarded.url, user="admin", token=admin_token(guarded)) as admin:
        tokens = {name: admin.user_add(name) for name in ("reader", "writer", "owner", "other")}
        admin.grant("reader", "read", cursor="tasks", prefix="queue")
        admin.grant("writer", "write", cursor="tasks", prefix="queue")
        admin.grant("owner", "admin", cursor="tasks")
        admin.grant("other", "write", cursor="logs")
        admin.set("queue.t1", "pending", cursor="tasks")
        admin.set("other.k", "v", cursor="tasks")
    # A cursor's admin may name only the broker's own backup directory (any other path reaches
    # any directory the broker can write or read).
    mine, elsewhere = guarded.data_dir / "backups", tmp_path / "elsewhere"
    with Client.connect(guarded.url, user="admin", token=admin_token(guarded)) as admin:
        inside = admin.backup(str(mine / "seed"), cursor="tasks")["path"]
        outside = admin.backup(str(elsewhere / "seed"), cursor="tasks")["path"]
    ops: dict[str, Callable[[Client], Any]] = {
        "get in prefix": lambda c: c.get("queue.t1"),
        "get outside prefix": lambda c: c.get("other.k"),
        "keys of prefix": lambda c: c.keys("queue"),
        "keys of everything": lambda c: c.keys(),
        "watch prefix": watch_briefly,
        "set in prefix": lambda c: c.set("queue.t2", "new"),
        "set outside prefix": lambda c: c.set("other.k", "w"),
        "incr in prefix": lambda c: c.incr("queue.count"),
        "claim from prefix": lambda c: c.claim("queue"),
        "txn reading outside": lambda c: c.txn(
            [{"key": "other.k", "target": "exists", "value": True}],
            [{"op": "set", "key": "queue.t3", "value": 1}],
        ),
        "backup of tasks": lambda c: c.backup(str(mine / f"t-{c.user}"), cursor="tasks"),
        "backup of tasks elsewhere": lambda c: c.backup(str(elsewhere / c.user), cursor="tasks"),
        "backup of tasks out through ..": lambda c: c.backup(
            str(mine / ".." / f"t-{c.user}"), cursor="tasks"
        ),
        "backup of everything": lambda c: c.backup(str(mine / f"all-{c.user}")),
        "restore tasks": lambda c: c.restore(inside, cursor="tasks"),
        "restore tasks from elsewhere": lambda c: c.restore(outside, cursor="tasks"),
        "bind the cursor tasks": lambda c: c.cursor_set("tasks", str(tmp_path / "t.db")),
        "add a user": lambda c: c.user_add("newcomer"),
        "own grants": lambda c: c.grants(c.user),
        "everyone's grants": lambda c: c.grants(),
    }
    allowed = {
        "reader": {"get in prefix", "keys of prefix", "watch prefix", "own grants"},
        "writer": {
            "get in prefix",
            "keys of prefix",
            "watch prefix",
            "set in prefix",
            "incr in prefix",
            "claim from prefix",
            "own grants",
        },
        # Binding a cursor, or a backup path outside the broker's own backups, reaches any
        # directory: an admin's of everything, not of one cursor.
        "owner": set(ops)
        - {
            "backup of everything",
            "backup of tasks elsewhere",
            "backup of tasks out through ..",
            "restore tasks from elsewhere",
            "add a user",
            "everyone's grants",
            "bind the cursor tasks",
        },
        "other": {"own grants"},
    }
    for user, token in tokens.items():
        with Client.connect(guarded.url, user=user, token=token, cursor="tasks") as client:
            for name, op in ops.items():
                try:
                    op(client)
                except ProntoError as exc:
                    assert exc.code is ErrorCode.DENIED, (user, name, exc)
                    assert name not in allowed[user], (user, name, exc.message)
                    assert "prontodb grant" in exc.message
                else:
                    assert name in allowed[user], (user, name)


def test_tls_round_trip_with_a_certificate_made_here(tmp_path: Path, short_dir: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    tls = ["--tcp", "127.0.0.1:0", "--tls-cert", str(cert_file), "--tls-key", str(key_file)]
    with running_broker(tmp_path / "data", short_dir / "b.sock", extra=tls) as broker:
        token = admin_token(broker)
        url = f"tcps://127.0.0.1:{str(broker.tcp).rpartition(':')[2]}"
        with Client.connect(url, user="admin", token=token, ca_file=str(ca_file)) as client:
            client.set("secret", "over tls")
            assert client.get("secret") == "over tls"
        os.environ.pop("PRONTODB_CA_FILE", None)
        with pytest.raises(ProntoError) as untrusted:  # the system's CAs never signed it
            Client.connect(url, user="admin", token=token)
        assert "TLS handshake" in untrusted.value.message
        with pytest.raises(ProntoError):  # plain TCP to a TLS port gets no Welcome
            Client.connect(url.replace("tcps", "tcp"), user="admin", token=token, timeout=5)
