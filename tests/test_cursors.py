"""Cursors against real broker processes: bindings, per-user shadowing, restarts, purge, locks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from brokers import running_broker, serve_command

from prontodb.clients import Client, ErrorCode, ProntoError

PRONTODB = str(Path(sys.executable).with_name("prontodb"))


def test_a_bound_cursor_writes_where_it_points_and_survives_a_restart(
    tmp_path: Path, short_dir: Path
) -> None:
    data, sock, dev = tmp_path / "data", short_dir / "b.sock", tmp_path / "envs" / "dev.db"
    with running_broker(data, sock) as broker, Client.connect(broker.url) as client:
        bound = client.cursor_set("dev", str(dev))
        assert (bound["path"], bound["owner"], bound["exists"]) == (str(dev), None, False)
        client.set("config.debug_mode", "true", cursor="dev")
        assert (dev / "MANIFEST").exists() or list(dev.glob("seg-*"))
        assert not (data / "dev.db").exists()
    with running_broker(data, sock) as broker, Client.connect(broker.url, cursor="dev") as client:
        assert client.get("config.debug_mode") == "true"
        assert client.cursor_show("dev")["path"] == str(dev)


def test_a_users_cursor_shadows_the_global_one_for_that_user_only(
    tmp_path: Path, short_dir: Path
) -> None:
    with running_broker(tmp_path / "data", short_dir / "b.sock") as broker:
        with Client.connect(broker.url, user="admin") as admin:
            admin.cursor_set("dev", str(tmp_path / "shared.db"))
            admin.set("owner", "shared", cursor="dev")
        with Client.connect(broker.url, user="bob", cursor="dev") as bob:
            assert bob.cursor_set("dev", str(tmp_path / "bob.db"), mine=True)["shadows"] is True
            bob.set("owner", "bob")
            assert bob.get("owner") == "bob"
            listed = [(c["name"], c["owner"], c["shadows"]) for c in bob.cursors()]
            assert listed == [("dev", "bob", True), ("dev", None, False)]
        with Client.connect(broker.url, user="alice", cursor="dev") as alice:
            assert alice.get("owner") == "shared"
            assert [c["owner"] for c in alice.cursors() if c["name"] == "dev"] == [None]
        with Client.connect(broker.url, user="bob", cursor="dev") as bob:
            bob.cursor_delete("dev", mine=True)  # bob now sees the global one again
            assert bob.get("owner") == "shared"


def test_delete_forgets_and_keeps_the_data_purge_removes_it(
    tmp_path: Path, short_dir: Path
) -> None:
    target = tmp_path / "staging.db"
    with (
        running_broker(tmp_path / "data", short_dir / "b.sock") as broker,
        Client.connect(broker.url) as client,
    ):
        client.cursor_set("staging", str(target))
        client.set("k", 1, cursor="staging")
        gone = client.cursor_delete("staging")
        assert (gone["forgotten"], gone["purged"]) == (True, False)
        assert target.is_dir()
        assert client.get("k", cursor="staging") is None  # now the default staging.db
        client.cursor_set("staging", str(target))
        assert client.get("k", cursor="staging") == 1
        (target / "notes.txt").write_text("mine")
        with pytest.raises(ProntoError) as refused:
            client.cursor_delete("staging", purge=True)
        assert "notes.txt" in refused.value.message
        (target / "notes.txt").unlink()
        assert client.cursor_delete("staging", purge=True)["purged"] is True
        assert not target.exists()
        unknown = client.cursor_delete("never_defined")
        assert unknown["forgotten"] is False


def test_cli_resolves_a_relative_path_against_the_callers_directory(
    tmp_path: Path, short_dir: Path
) -> None:
    work = tmp_path / "project"
    work.mkdir()
    with running_broker(tmp_path / "data", short_dir / "b.sock") as broker:
        env = {**os.environ, "PRONTODB_URL": broker.url}

        def cli(*args: str) -> str:
            done = subprocess.run(
                [PRONTODB, *args], cwd=work, env=env, capture_output=True, text=True, check=True
            )
            return done.stdout

        cli("cursor", "set", "dev", "./dev.db")
        cli("--cursor", "dev", "set", "config.debug_mode", "true")
        assert (work / "dev.db").is_dir()
        assert cli("cursor", "list").splitlines() == [f"dev {work / 'dev.db'} global"]
        assert f"path={work / 'dev.db'}" in cli("cursor", "show", "dev").splitlines()


def test_a_database_directory_is_open_in_one_broker_at_a_time(
    tmp_path: Path, short_dir: Path
) -> None:
    shared = tmp_path / "shared.db"
    with (
        running_broker(tmp_path / "one", short_dir / "1.sock") as first,
        running_broker(tmp_path / "two", short_dir / "2.sock") as second,
        Client.connect(first.url) as a,
        Client.connect(second.url) as b,
    ):
        a.cursor_set("s", str(shared))
        b.cursor_set("s", str(shared))
        a.set("k", "first", cursor="s")
        with pytest.raises(ProntoError) as refused:
            b.set("k", "second", cursor="s")
        assert refused.value.code is ErrorCode.UNAVAILABLE
        assert "open in another broker" in refused.value.message


def test_a_damaged_catalog_stops_the_broker_with_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "catalog.json").write_text("{not json")
    done = subprocess.run(
        serve_command("--data-dir", str(data), "--socket", str(tmp_path / "s.sock")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "catalog.json" in done.stderr
    assert "restore it from a backup or move it away" in done.stderr
