"""The pytest plugin (prontodb.testing.plugin) as its users meet it: a test file of theirs, run
by pytest with the plugin the installed ``pytest11`` entry point loads.

Runs are in-process (pytester's inline run: the same interpreter, a session of their own) but for
the one that kills its pytest. Each writes down what its tests saw (broker pid, cursor, data
directory) in a file, read here once the session is over.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from cli_support import wait_for_exit

# Loaded here, not first by a run: pytester forgets the modules a run imported, and a later
# import would make second copies of the client classes.
from prontodb.clients import AsyncClient, Client  # noqa: F401

pytest_plugins = ["pytester"]

HEADER = """
import json
import pytest
from pathlib import Path
from typing import Any

SEEN = Path({seen!r})


def note(broker, cursor="", **more):
    entry = dict(pid=broker.pid, data_dir=str(broker.data_dir), cursor=cursor, **more)
    with SEEN.open("a") as seen:
        seen.write(json.dumps(entry) + "\\n")
"""


def users_tests(pytester: pytest.Pytester, body: str) -> Path:
    """Write ``body`` as the user's test file (after HEADER); the file its notes go to."""
    seen = pytester.path / "seen.jsonl"
    pytester.makepyfile(test_users=HEADER.format(seen=str(seen)) + body)
    return seen


def notes(seen: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in seen.read_text().splitlines()]


def gone(pid: object) -> bool:
    """Whether process ``pid`` has exited (it is reaped by whoever stopped it)."""
    return isinstance(pid, int) and wait_for_exit(pid, 0)


EACH_KIND_OF_TEST = """
import subprocess
import sys

import trio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_sync(prontodb_client, prontodb_broker, prontodb_cursor, pytestconfig):
    note(prontodb_broker, prontodb_cursor)
    assert pytestconfig.pluginmanager.get_plugin("prontodb").__name__ == "prontodb.testing.plugin"
    assert prontodb_client.cursor == prontodb_cursor
    assert prontodb_client.incr("hits") == 1


@pytest.mark.trio
async def test_trio(prontodb_async_client, prontodb_broker, prontodb_cursor):
    note(prontodb_broker, prontodb_cursor)
    trio.lowlevel.current_trio_token()  # on trio
    assert await prontodb_async_client.incr("hits") == 1  # its own counter


@pytest.mark.anyio
async def test_asyncio(prontodb_async_client, prontodb_broker, prontodb_cursor):
    import asyncio

    note(prontodb_broker, prontodb_cursor)
    asyncio.get_running_loop()  # on asyncio
    assert await prontodb_async_client.incr("hits") == 1


def test_the_cli(prontodb_environ, prontodb_client, prontodb_broker, prontodb_cursor):
    note(prontodb_broker, prontodb_cursor)
    cli = [sys.executable, "-m", "prontodb.clients.cli"]
    subprocess.run([*cli, "set", "from_shell", "1"], check=True)
    assert prontodb_client.get_info("from_shell").writer == "pytest"
"""


def test_sync_trio_and_asyncio_tests_share_one_broker_a_database_each(
    pytester: pytest.Pytester,
) -> None:
    seen = users_tests(pytester, EACH_KIND_OF_TEST)
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=4)
    tests = notes(seen)
    assert len({t["pid"] for t in tests}) == 1
    assert len({t["cursor"] for t in tests}) == 4
    assert gone(tests[0]["pid"])  # stopped (and reaped) as the session ended
    assert list(Path(str(tests[0]["data_dir"])).glob("*.db")) == []  # every database purged


ISOLATION = """
BOUND = SEEN.parent / "bound.db"  # outside the data directory
STRAY = SEEN.parent / "stray"  # holds a file of the user's: forgotten, not deleted

def test_first(prontodb_client, prontodb_broker, prontodb_cursor):
    note(prontodb_broker, prontodb_cursor)
    prontodb_client.set("left.behind", 1)
    prontodb_client.set("elsewhere", 1, cursor=prontodb_cursor + "-more")
    prontodb_client.cursor_set(prontodb_cursor + "-bound", str(BOUND))
    prontodb_client.set("bound", 1, cursor=prontodb_cursor + "-bound")
    STRAY.mkdir()
    (STRAY / "notes.txt").write_text("not a database's")
    prontodb_client.cursor_set(prontodb_cursor + "-stray", str(STRAY))
    assert len(prontodb_cursor) <= 48


@pytest.mark.parametrize("case", ["a[1]", "b/2"])
def test_second(prontodb_client, prontodb_broker, prontodb_cursor, case):
    first = json.loads(SEEN.read_text().splitlines()[0])["cursor"]
    note(prontodb_broker, prontodb_cursor)
    assert prontodb_client.keys("") == []
    assert prontodb_client.get("left.behind", cursor=first) is None
    names = [c["name"] for c in prontodb_client.cursors()]
    assert not [n for n in names if n.startswith(first)], names


def test_with_a_name_longer_than_a_cursor_may_be_and_then_some_more_words(prontodb_cursor):
    assert 40 < len(prontodb_cursor) <= 48  # cut short, and still a name of its own
"""


def test_a_tests_keys_and_databases_are_gone_before_the_next_test(
    pytester: pytest.Pytester,
) -> None:
    seen = users_tests(pytester, ISOLATION)
    pytester.runpytest_inprocess().assert_outcomes(passed=4)
    cursors = [str(t["cursor"]) for t in notes(seen)]
    assert len(set(cursors)) == 3
    assert all(c.startswith("t") for c in cursors), cursors
    assert not (pytester.path / "bound.db").exists()  # purged, and its binding forgotten
    assert (pytester.path / "stray" / "notes.txt").exists()  # its binding forgotten only


FAULTS = """
def test_stops_the_shared_broker(prontodb_client, prontodb_broker):
    note(prontodb_broker)
    prontodb_client.stop()
    prontodb_broker.wait()  # gone before the teardown looks


def test_after_it(prontodb_client, prontodb_broker):
    note(prontodb_broker)  # started again
    prontodb_client.ping()


def test_kills_it_without_a_database(prontodb_broker):
    prontodb_broker.kill()


def test_after_that(prontodb_client):
    pass


def test_and_after_that(prontodb_client):
    prontodb_client.ping()


def test_with_brokers_of_its_own(prontodb_broker_factory):
    from prontodb.clients import Client

    broker = prontodb_broker_factory()
    with Client.connect(broker.url) as client:
        client.set("kept", 1)
    broker.kill()
    broker.start()
    with Client.connect(broker.url) as client:
        assert client.get("kept") == 1
    other = prontodb_broker_factory("--history-revisions", "10", fsync="always")
    note(broker, args=list(broker.args))
    note(other, args=list(other.args))
"""


def test_a_test_that_stops_the_shared_broker_is_one_error_and_told_why(
    pytester: pytest.Pytester,
) -> None:
    seen = users_tests(pytester, FAULTS)
    result = pytester.runpytest_inprocess("--prontodb-fsync", "never")
    result.assert_outcomes(passed=5, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_stops_the_shared_broker*",
            "*The session's broker (pid *) exited during this test, status 0; it runs again*"
            "prontodb_broker_factory*",
            "*ERROR at setup of test_after_that*",
            "*exited before this test (the last test with a database on it: "
            "test_users.py::test_after_it), status -9*",
        ]
    )
    stopped, restarted, own, other = notes(seen)
    assert stopped["pid"] != restarted["pid"]
    assert all(gone(t["pid"]) for t in (stopped, restarted, own, other))
    assert own["args"] == ["--fsync", "never"]  # the command line's policy
    assert other["args"] == ["--fsync", "always", "--history-revisions", "10"]


def test_a_bad_fsync_policy_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nprontodb_fsync = sometimes\n")
    pytester.makepyfile(test_users="def test_nothing():\n    pass\n")
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*prontodb_fsync = sometimes: use always, interval, never*"])


def test_the_plugin_is_the_entry_point_named_prontodb(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_users="def test_needs_it(prontodb_url):\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:prontodb")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'prontodb_url' not found*"])


KILLED = """
import os
import signal


def test_killed_mid_way(prontodb_client, prontodb_broker):
    note(prontodb_broker)
    os.kill(os.getpid(), signal.SIGKILL)  # no teardown, no end of session
"""


def test_a_killed_test_run_leaves_no_broker_behind(pytester: pytest.Pytester) -> None:
    seen = users_tests(pytester, KILLED)
    result = pytester.runpytest_subprocess(timeout=120)
    assert result.ret == -9, result.stdout.str()
    (killed,) = notes(seen)
    pid = killed["pid"]
    assert isinstance(pid, int)
    assert wait_for_exit(pid, 30)  # its lifeline pipe closed with the killed pytest
    assert os.path.isdir(str(killed["data_dir"]))


def python_blocks() -> list[str]:
    text = (Path(__file__).resolve().parent.parent / "docs" / "TESTING.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_test_files_of_the_docs_run_as_written(pytester: pytest.Pytester) -> None:
    files = [b for b in python_blocks() if b.startswith("# test_")]
    for text in files:
        pytester.path.joinpath(text.split("\n", 1)[0].removeprefix("# ")).write_text(text)
    assert len(files) == 2
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=6)


def test_the_docs_use_without_pytest_runs_as_written() -> None:
    (script,) = [b for b in python_blocks() if not b.startswith("# test_")]
    exec(compile(script, "docs/TESTING.md", "exec"), {})
