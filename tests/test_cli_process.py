"""The real ``prontodb`` console script in real processes: the embedded default (auto-start), ten
CLIs racing to start it, stop, and the seed's shell idioms.

Each test gets a private data directory and socket under a short /tmp directory, and stops every
broker serving that directory by pid when it ends, whichever way it ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from brokers import running_broker, start_broker
from cli_support import (
    PRONTODB_VARIABLES,
    serve_processes,
    short_tmpdir,
    stop_brokers,
    wait_for_exit,
)

from prontodb.clients import Client
from prontodb.protocol import NEED_DATA, Connection, Hello, Request, Role

PRONTODB = str(Path(sys.executable).with_name("prontodb"))
RUN_TIMEOUT = 60.0  # seconds; one CLI call, auto-start included, on a loaded machine


@dataclass
class Home:
    """A private installation: where the data lives and the environment that points there."""

    root: Path
    data_dir: Path
    env: dict[str, str]
    socket: str = ""  # the broker's, once start_home_broker has started it

    @property
    def url(self) -> str:
        assert self.socket, "start_home_broker(home) first"
        return "unix://" + self.socket

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [PRONTODB, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        if check:
            assert result.returncode == 0, (args, result.stderr)
        return result

    def start(self, *args: str) -> subprocess.Popen[str]:
        """``prontodb ARGS`` running in the background, its output piped as text."""
        return subprocess.Popen(
            [PRONTODB, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def make_home(root: Path, **variables: str) -> Home:
    env = {k: v for k, v in os.environ.items() if k not in PRONTODB_VARIABLES}
    env.pop("XDG_RUNTIME_DIR", None)
    env["XDG_STATE_HOME"] = str(root / "state")  # its brokers' roster, unless a runtime dir
    env["PRONTODB_DATA_DIR"] = str(root / "data")
    env.update(variables)
    return Home(root, root / "data", env)


@pytest.fixture
def home() -> Iterator[Home]:
    """Data in a private directory; the socket where $XDG_RUNTIME_DIR puts it."""
    with short_tmpdir() as root:
        (root / "run").mkdir(mode=0o700)
        home = make_home(root, XDG_RUNTIME_DIR=str(root / "run"))
        try:
            yield home
        finally:
            stop_brokers(home.data_dir)


def test_a_bare_cli_call_starts_the_broker(home: Home) -> None:
    assert not home.data_dir.exists()
    home.run("set", "workflow.status", "initializing")
    assert home.run("get", "workflow.status").stdout == "initializing\n"
    status = json.loads(home.run("status", "--json").stdout)
    assert serve_processes(home.data_dir) == [status["pid"]]
    assert status["data_dir"] == str(home.data_dir)
    assert status["socket"].startswith(str(home.root / "run" / "prontodb"))
    # It was started detached, with its log in the data directory (rotated by size, so that it
    # cannot fill the disk), and the lock file names it.
    assert (home.data_dir / "broker.log").exists()
    argv = Path(f"/proc/{status['pid']}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"--log-file") + 1] == bytes(home.data_dir / "broker.log")
    assert (home.data_dir / "autostart.lock").read_text() == f"{status['pid']}\n"
    assert home.data_dir.stat().st_mode & 0o777 == 0o700
    # The socket is for its owner only: mode 0600 in a 0700 directory.
    socket = Path(status["socket"])
    assert socket.stat().st_mode & 0o777 == 0o600
    assert socket.parent.stat().st_mode & 0o777 == 0o700
    # Later calls use it rather than starting another.
    home.run("incr", "workflow.completed")
    assert serve_processes(home.data_dir) == [status["pid"]]


def test_stop_and_status_never_start_a_broker(home: Home) -> None:
    stop = home.run("stop")
    assert stop.stdout == ""
    assert "no broker is running" in stop.stderr
    status = home.run("status", check=False)
    assert (status.returncode, status.stdout) == (1, "")
    assert status.stderr.startswith("prontodb: error: no broker is running at unix://")
    assert serve_processes(home.data_dir) == []


def test_stop_ends_an_auto_started_broker_and_the_next_call_starts_one(home: Home) -> None:
    home.run("set", "k", "kept")
    pid = json.loads(home.run("--json", "status").stdout)["pid"]
    assert home.run("stop").stdout == ""
    assert wait_for_exit(pid, 0)  # stop returns once the broker has exited
    assert home.run("status", check=False).returncode == 1
    # The data outlives the broker; the next call brings one back.
    assert home.run("get", "k").stdout == "kept\n"
    assert serve_processes(home.data_dir) != [pid]


def test_a_killed_broker_is_replaced_on_the_next_call(home: Home) -> None:
    home.run("set", "k", "acknowledged")
    pid = json.loads(home.run("--json", "status").stdout)["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for_exit(pid, RUN_TIMEOUT)
    # Its socket file is left behind, refusing connections; the next call starts a broker anyway.
    assert home.run("get", "k").stdout == "acknowledged\n"
    assert len(serve_processes(home.data_dir)) == 1


def test_ten_racing_clis_start_exactly_one_broker() -> None:
    with short_tmpdir() as root:
        home = make_home(root, PRONTODB_SOCKET=str(root / "s.sock"))
        try:
            processes = [
                subprocess.Popen(
                    [PRONTODB, "--user", f"worker{i}", "set", f"race.key_{i}", str(i)],
                    env=home.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for i in range(10)
            ]
            results = [(p.wait(RUN_TIMEOUT), *p.communicate()) for p in processes]
            assert results == [(0, "", "")] * 10
            brokers = serve_processes(home.data_dir)
            assert len(brokers) == 1
            assert json.loads(home.run("status", "--json").stdout)["pid"] == brokers[0]
            listing = home.run("scan", "race").stdout.splitlines()
            assert listing == sorted(f"race.key_{i}={i}" for i in range(10))
        finally:
            stop_brokers(home.data_dir)


def test_a_broker_that_cannot_start_is_reported_with_its_log() -> None:
    with short_tmpdir() as root:
        (root / "file").write_text("not a directory")
        home = make_home(root, PRONTODB_SOCKET=str(root / "file" / "s.sock"))
        try:
            result = home.run("set", "k", "v", check=False)
            assert (result.returncode, result.stdout) == (1, "")
            assert result.stderr.startswith(
                "prontodb: error: The broker started in the background exited"
            )
            assert str(home.data_dir / "broker.log") in result.stderr
            assert len(result.stderr.splitlines()) > 1  # the log's last lines follow
            assert "Traceback" not in result.stderr.splitlines()[0]
        finally:
            stop_brokers(home.data_dir)


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_output_is_whole_or_the_reader_left(home: Home, unbuffered: str) -> None:
    big = "x" * 100_000  # more than a pipe holds (64 KiB), less than one argument may (128 KiB)
    home.run("set", "big", big)
    env = dict(home.env, PYTHONUNBUFFERED=unbuffered)
    whole = subprocess.run([PRONTODB, "get", "big"], env=env, capture_output=True, timeout=60)
    assert (whole.returncode, len(whole.stdout)) == (0, len(big) + 1)
    # A reader that leaves early (`| head -c 1`): exit 1, quietly, as click does.
    process = subprocess.Popen(
        [PRONTODB, "get", "big"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    assert process.stdout.read(1) == b"x"
    process.stdout.close()
    assert process.wait(RUN_TIMEOUT) == 1
    assert process.stderr.read() == b""
    process.stderr.close()


SEED_SCRIPT = r"""
set -u
# Section 1: the orchestrator fills a queue; a worker claims a task as the seed writes it.
prontodb --user orchestrator --cursor main set workflow.completed 0
for i in 1 2 3; do
  prontodb --user orchestrator --cursor tasks set queue.task_$i "pending"
done
prontodb --user worker1 --cursor tasks get queue.task_1 >/dev/null
if [ $? -eq 0 ]; then
  prontodb --user worker1 --cursor tasks set claimed.task_1 "worker1:Tue"
  prontodb --user worker1 --cursor tasks del queue.task_1
fi
# Section 2: read-modify-write through the shell's arithmetic.
CURRENT=$(prontodb --user orchestrator --cursor main get workflow.completed)
NEW_COUNT=$((CURRENT + 1))
prontodb --user orchestrator --cursor main set workflow.completed $NEW_COUNT
# Section 8: a missing counter reads as 0.
CURRENT_CALLS=$(prontodb get rate_limits.api.worker1_calls 2>/dev/null || echo "0")
echo "calls=$CURRENT_CALLS"
# Section 5: scan piped into read.
prontodb --user orchestrator --cursor tasks scan claimed | while IFS='=' read -r key value; do
  WORKER=$(echo $value | cut -d':' -f1)
  echo "scanned $key by $WORKER"
done
# Section 6: counting keys.
echo "queue=$(prontodb --user orchestrator --cursor tasks keys queue | wc -l)"
echo "completed=$(prontodb --user orchestrator --cursor main get workflow.completed)"
"""


def test_the_seed_shell_idioms(home: Home) -> None:
    env = dict(home.env, PATH=f"{Path(PRONTODB).parent}{os.pathsep}{home.env.get('PATH', '')}")
    result = subprocess.run(
        ["bash", "-c", SEED_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT * 5,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "calls=0",
        "scanned claimed.task_1 by worker1",
        "queue=2",
        "completed=1",
    ]


def test_a_call_while_the_broker_stops_waits_and_starts_a_new_one(home: Home) -> None:
    home.run("set", "kept", "yes")
    first = json.loads(home.run("status", "--json").stdout)
    # A client that asks for megabytes and never reads them keeps the broker in its grace period
    # after a stop: it holds the data directory but no longer listens.
    conn = Connection(Role.CLIENT)
    data = conn.send(Hello(client="stuck", user="u"))
    data += conn.send(Request(1, "set", {"key": "big", "value": "x" * 900_000}))
    data += b"".join(conn.send(Request(i, "get", {"key": "big"})) for i in range(2, 100))
    stopper = Connection(Role.CLIENT)
    with socket.socket(socket.AF_UNIX) as stuck, socket.socket(socket.AF_UNIX) as stop:
        stuck.connect(first["socket"])
        stuck.sendall(data)
        stop.connect(first["socket"])
        stop.sendall(
            stopper.send(Hello(client="t", user="u")) + stopper.send(Request(1, "stop", {}))
        )
        answers: list[object] = []
        while len(answers) < 2:  # the Welcome, then the answer to stop: the stop has begun
            stopper.receive_data(stop.recv(65536))
            while (event := stopper.next_event()) is not NEED_DATA:
                answers.append(event)
        # The old broker no longer listens but holds the data directory for its grace period.
        # This call waits for it to go, then starts a new one, which has the data.
        try:
            result = home.run("get", "kept")
        finally:
            stuck.close()
    assert result.stdout == "yes\n"
    assert result.stderr == ""
    second = json.loads(home.run("status", "--json").stdout)
    assert second["pid"] != first["pid"]


def test_an_auto_started_broker_exits_once_idle_and_the_next_call_starts_one(home: Home) -> None:
    home.env["PRONTODB_IDLE_EXIT"] = "0.5"
    home.run("set", "k", "kept")
    [pid] = serve_processes(home.data_dir)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"--idle-exit") + 1] == b"0.5"
    assert b"--auto-started" in argv
    assert wait_for_exit(pid, RUN_TIMEOUT)  # half a second after the CLI left
    log = (home.data_dir / "broker.log").read_text()
    assert "no connection for 0.5 s: stopping (--idle-exit)" in log
    assert f"broker {pid} stopped" in log
    assert home.run("get", "k").stdout == "kept\n"
    assert serve_processes(home.data_dir) not in ([], [pid])


def test_an_auto_started_broker_says_its_idle_time(home: Home) -> None:
    home.run("ping")
    status = json.loads(home.run("status", "--json").stdout)
    assert (status["idle_exit"], status["auto_started"]) == (600.0, True)
    assert "idle_exit    10m 0s (auto-started)" in home.run("status").stdout
    home.run("stop")
    home.env["PRONTODB_IDLE_EXIT"] = "0"  # never
    home.run("ping")
    status = json.loads(home.run("status", "--json").stdout)
    assert (status["idle_exit"], status["auto_started"]) == (None, True)
    home.run("stop")
    home.env["PRONTODB_IDLE_EXIT"] = "soon"
    refused = home.run("ping", check=False)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert "PRONTODB_IDLE_EXIT='soon' is not a number of seconds" in refused.stderr
    assert serve_processes(home.data_dir) == []


def test_calls_racing_a_broker_that_keeps_going_idle_all_succeed(home: Home) -> None:
    # A broker that leaves 20 ms after its last connection, less than a CLI takes to start: calls
    # come as it decides to go, as it stops, and once it has gone; each is served, by it or by
    # the next one.
    home.env["PRONTODB_IDLE_EXIT"] = "0.02"
    env = {**home.env, "PATH": f"{Path(PRONTODB).parent}:{home.env.get('PATH', '/usr/bin:/bin')}"}
    loop = "for i in $(seq 12); do prontodb incr n >/dev/null || exit 1; done"
    loops = [
        subprocess.Popen(["bash", "-c", loop], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for process in loops:
            _, err = process.communicate(timeout=600)
            assert (process.returncode, err) == (0, "")
    finally:
        for process in loops:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert home.run("get", "n").stdout == "24\n"
    starts = (home.data_dir / "broker.log").read_text().count(" serving ")
    assert starts > 1, "the broker never went idle between calls"


def test_ps_lists_every_broker_of_the_user_and_stop_all_stops_them(home: Home) -> None:
    # Two data directories touched by the CLI, and one broker run with `prontodb serve`.
    home.run("set", "k", "a")
    other = {**home.env, "PRONTODB_DATA_DIR": str(home.root / "other")}
    subprocess.run([PRONTODB, "set", "k", "b"], env=other, check=True, timeout=RUN_TIMEOUT)
    served = start_broker(
        home.root / "served",
        home.root / "served.sock",
        tcp=True,
        env={**home.env, "PRONTODB_DATA_DIR": str(home.root / "served")},
    )
    try:
        [first] = serve_processes(home.data_dir)
        [second] = serve_processes(home.root / "other")
        with Client.connect(served.url) as held:  # one connection that stays while ps looks
            held.ping()
            listed = json.loads(home.run("ps", "--json").stdout)
        assert [(b["pid"], b["data_dir"]) for b in listed] == [
            (first, str(home.data_dir)),
            (second, str(home.root / "other")),
            (served.pid, str(home.root / "served")),
        ]
        # Connections not counting ps's own; the served one's idle exit is never.
        assert [b["connections"] for b in listed] == [0, 0, 1]
        assert [(b["auto_started"], b["idle_exit"]) for b in listed] == [
            (True, 600.0),
            (True, 600.0),
            (False, None),
        ]
        assert listed[2]["socket"] == str(home.root / "served.sock")
        assert listed[2]["tcp"] == served.tcp
        assert all(b["uptime"] >= 0 and b["version"] for b in listed)
        table = home.run("ps").stdout.splitlines()
        assert table[0].split() == [
            "PID",
            "UPTIME",
            "CONNECTIONS",
            "IDLE",
            "EXIT",
            "DATA",
            "DIR",
            "ADDRESS",
        ]
        assert [line.split()[0] for line in table[1:]] == [str(first), str(second), str(served.pid)]
        assert table[3].endswith(f"{served.socket} tcp://{served.tcp}")
        assert "10m 0s (auto-started)" in table[1]
        # stop --all: each one, whatever its data directory; it returns once they have exited.
        stopped = home.run("stop", "--all")
        assert stopped.stdout.splitlines() == [
            f"stopped {first} {home.data_dir}",
            f"stopped {second} {home.root / 'other'}",
            f"stopped {served.pid} {home.root / 'served'}",
        ]
        assert served.process.wait(0) == 0  # a clean stop (SIGTERM)
        assert wait_for_exit(first, 0)
        assert wait_for_exit(second, 0)
        assert [line.split() for line in home.run("ps").stdout.splitlines()] == [table[0].split()]
        assert list((home.root / "run" / "prontodb" / "brokers").iterdir()) == []
        again = home.run("stop", "--all")
        assert (again.stdout, again.stderr) == (
            "",
            "prontodb: no broker is running; nothing to stop.\n",
        )
        assert home.run("--json", "stop", "--all").stdout == "[]\n"
        assert home.run("ps", "--json").stdout == "[]\n"
    finally:
        stop_brokers(home.root / "other")
        if served.process.poll() is None:
            served.kill()


def test_ps_forgets_a_killed_broker_and_stop_all_never_signals_its_pid(home: Home) -> None:
    home.run("ping")
    [pid] = serve_processes(home.data_dir)
    roster = home.root / "run" / "prontodb" / "brokers"
    [entry] = roster.iterdir()
    os.kill(pid, signal.SIGKILL)  # no clean stop: its entry stays behind
    assert wait_for_exit(pid, RUN_TIMEOUT)
    # Say the pid was taken since by a process that is no broker: only the lock counts.
    bystander = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    try:
        entry.write_text(entry.read_text().replace(f'"pid": {pid}', f'"pid": {bystander.pid}'))
        assert (
            home.run("stop", "--all").stderr == "prontodb: no broker is running; nothing to stop.\n"
        )
        assert bystander.poll() is None
        assert not entry.exists()  # removed on the way
        assert home.run("ps", "--json").stdout == "[]\n"
    finally:
        bystander.kill()
        bystander.communicate()


def test_ps_shows_a_broker_that_does_not_answer(home: Home) -> None:
    home.run("ping")
    [pid] = serve_processes(home.data_dir)
    os.kill(pid, signal.SIGSTOP)  # alive (its lock held) but answering nothing
    try:
        listed = home.run("ps")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert listed.stderr == ""
    [row] = listed.stdout.splitlines()[1:]
    pid_text, _uptime, connections, *_ = row.split()
    assert (pid_text, connections) == (str(pid), "-")  # listed, its connections unknown
    assert json.loads(home.run("ps", "--json").stdout)[0]["connections"] == 0  # answering again


def start_home_broker(home: Home) -> str:
    """Start the home's broker the way users do (any command), and return its socket."""
    home.run("ping")
    home.socket = json.loads(home.run("status", "--json").stdout)["socket"]
    return home.socket


# A worker: claim, "do" the task, ack it and say so; stop when nothing is left (claim exits 4).
WORKER = r"""
while out=$(prontodb --cursor tasks --json claim queue --lease 30); do
  [[ $out =~ \"key\":\ \"([^\"]+)\" ]] && key=${BASH_REMATCH[1]}
  [[ $out =~ \"token\":\ ([0-9]+) ]] && token=${BASH_REMATCH[1]}
  prontodb --cursor tasks ack "$key" --token "$token" && echo "$key"
done
"""


def test_four_workers_drain_a_thousand_tasks_each_exactly_once(home: Home) -> None:
    with Client.connect("unix://" + start_home_broker(home), cursor="tasks") as client:
        for start in range(0, 1000, 100):
            ops = [
                {"op": "set", "key": f"queue.task_{i}", "value": "pending"}
                for i in range(start, start + 100)
            ]
            client.txn([], ops)
    env = {**home.env, "PATH": f"{Path(PRONTODB).parent}:{home.env.get('PATH', '/usr/bin:/bin')}"}
    workers = [
        subprocess.Popen(
            ["bash", "-c", WORKER],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    finished: list[str] = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=600)
            assert worker.returncode == 0, err
            # One line each: the claim that found nothing left. No ack was refused.
            assert err.splitlines() == ["prontodb: nothing to claim under queue (cursor tasks)"]
            finished += out.split()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.communicate()
    assert len(finished) == 1000
    assert set(finished) == {f"queue.task_{i}" for i in range(1000)}  # each exactly once
    with Client.connect(home.url, cursor="tasks") as client:
        assert client.keys("queue") == []


KILLED_WORKER = """
import sys
import time
from prontodb.clients import Client
with Client.connect(cursor="tasks", user="doomed") as client:
    task = client.claim("queue", lease=2)
    print(task.key, flush=True)
    sys.stdin.read()  # working on it until killed
"""


def test_a_task_of_a_killed_worker_comes_back_after_its_lease(home: Home) -> None:
    with Client.connect("unix://" + start_home_broker(home), cursor="tasks") as client:
        client.set("queue.task_1", "pending")
    doomed = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER],
        env={**home.env, "PRONTODB_URL": home.url},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert doomed.stdout is not None
        assert doomed.stdout.readline().strip() == "queue.task_1"  # claimed, working
        doomed.kill()  # SIGKILL mid-task
        doomed.wait(RUN_TIMEOUT)
    finally:
        if doomed.poll() is None:
            doomed.kill()
        doomed.communicate()
    # Nobody else may have it while the lease runs; once it ends, it comes back (once).
    taken = home.run("--cursor", "tasks", "--json", "claim", "queue", "--wait", "60")
    document = json.loads(taken.stdout)
    assert (document["key"], document["deliveries"]) == ("queue.task_1", 2)
    home.run("--cursor", "tasks", "ack", "queue.task_1", "--token", str(document["token"]))
    assert home.run("--cursor", "tasks", "claim", "queue", check=False).returncode == 4


def test_eight_processes_incr_one_counter_exactly(home: Home) -> None:
    start_home_broker(home)
    env = {**home.env, "PATH": f"{Path(PRONTODB).parent}:{home.env.get('PATH', '/usr/bin:/bin')}"}
    loop = "for i in $(seq 500); do prontodb incr metrics.done >/dev/null || exit 1; done"
    counters = [subprocess.Popen(["bash", "-c", loop], env=env) for _ in range(8)]
    try:
        for counter in counters:
            assert counter.wait(timeout=600) == 0
    finally:
        for counter in counters:
            if counter.poll() is None:
                counter.kill()
                counter.wait()
    assert home.run("get", "metrics.done").stdout == "4000\n"


def test_watch_prints_each_change_as_it_happens(home: Home) -> None:
    home.run("set", "jobs.a", "one")
    watcher = home.start("watch", "jobs", "--from-rev", "1")
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline() == "1 put jobs.a=one\n"  # replayed
        # Each line arrives before the next change is made: flushed per event.
        home.run("set", "jobs.b", "two")
        assert watcher.stdout.readline() == "2 put jobs.b=two\n"
        home.run("del", "jobs.a")
        assert watcher.stdout.readline() == "3 delete jobs.a\n"
    finally:
        watcher.terminate()
        watcher.communicate(timeout=RUN_TIMEOUT)


def test_watch_in_a_shell_loop_with_count_and_timeout(home: Home) -> None:
    for i in range(3):
        home.run("set", f"jobs.j{i}", f"v{i}")
    env = {**home.env, "PATH": f"{Path(PRONTODB).parent}:{home.env.get('PATH', '/usr/bin:/bin')}"}
    script = (
        "prontodb watch jobs --from-rev 2 --count 2 | while read -r rev type kv; do "
        'echo "$type ${kv%%=*}"; done'
    )
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "put jobs.j1\nput jobs.j2\n")
    quiet = home.run("watch", "nothing.here", "--timeout", "0.2", check=False)
    assert (quiet.returncode, quiet.stdout) == (4, "")
    lines = home.run("--json", "watch", "--from-rev", "3", "--count", "1").stdout.splitlines()
    event = json.loads(lines[0])
    assert (event["rev"], event["type"], event["key"], event["value"]) == (
        3,
        "put",
        "jobs.j2",
        "v2",
    )


def test_watch_from_a_revision_no_longer_kept_says_where_to_resume() -> None:
    with short_tmpdir() as root:
        home = make_home(root, PRONTODB_SOCKET=str(root / "s.sock"))
        extra = ["--history-revisions", "2"]
        with running_broker(home.data_dir, root / "s.sock", extra=extra):
            for i in range(5):
                home.run("set", "k", str(i))
            refused = home.run("watch", "--from-rev", "1", check=False)
        assert refused.returncode == 1
        assert "Revision 1 is no longer kept; the oldest still available is 4" in refused.stderr


def test_ctrl_c_ends_a_watch_and_a_waiting_claim_with_status_130(home: Home) -> None:
    client = Client.connect("unix://" + start_home_broker(home), cursor="tasks")
    with client:
        home.run("--cursor", "tasks", "set", "jobs.a", "one")
        watcher = home.start("--cursor", "tasks", "watch", "jobs", "--from-rev", "1")  # click
        claimer = home.start("--cursor", "tasks", "claim", "queue", "--wait", "300")  # fast path
        try:
            assert watcher.stdout is not None
            assert watcher.stdout.readline() == "1 put jobs.a=one\n"  # watching
            deadline = time.monotonic() + RUN_TIMEOUT
            while client.status()["connections"] < 3:  # ours, the watch's, the claim's
                assert time.monotonic() < deadline, "the claim never connected"
            for process in (watcher, claimer):
                process.send_signal(signal.SIGINT)
                _, err = process.communicate(timeout=RUN_TIMEOUT)
                assert process.returncode == 130, err
                assert err.endswith("Aborted!\n"), err
        finally:
            for process in (watcher, claimer):
                if process.poll() is None:
                    process.kill()
                    process.communicate()
    # The interrupted claim holds nothing: the next item goes to the next claimer, first time.
    home.run("--cursor", "tasks", "set", "queue.t1", "work")
    taken = home.run("--cursor", "tasks", "--json", "claim", "queue", "--wait", "60")
    assert (json.loads(taken.stdout)["key"], json.loads(taken.stdout)["deliveries"]) == (
        "queue.t1",
        1,
    )
