"""The examples in examples/python run together against a real broker and do the workflow right.

Each test starts a broker of its own on a private data directory and runs the scripts as separate
processes, as a user would: the orchestrator (trio), workers (asyncio) and the monitor (sync client).
Every process runs under a timeout and is killed by the test if it is still running at the end.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from brokers import BrokerProcess, running_broker

from prontodb.clients import Client

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "python"
TIMEOUT = 60.0  # seconds for any one process; generous for a loaded 2-core CI machine
TASKS = 40


class Script:
    """One example running as a subprocess; a thread collects its output lines as they come."""

    def __init__(self, broker: BrokerProcess, name: str, *args: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PRONTODB_URL": broker.url, "PYTHONWARNINGS": "error"},
        )
        self.lines: list[str] = []
        self._fresh: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._fresh.put(line.rstrip("\n"))
        self._fresh.put(None)  # end of output

    def wait_for(self, wanted: Callable[[str], bool], count: int = 1) -> list[str]:
        """The first ``count`` new lines that are ``wanted``; fails if the output ends first or
        they take longer than TIMEOUT."""
        found: list[str] = []
        while len(found) < count:
            try:
                line = self._fresh.get(timeout=TIMEOUT)
            except queue.Empty:
                pytest.fail(f"{self.name} printed no wanted line in {TIMEOUT} s:\n{self.output}")
            if line is None:
                pytest.fail(f"{self.name} ended before the wanted line:\n{self.output}")
            if wanted(line):
                found.append(line)
        return found

    def finish(self) -> int:
        """Wait for the process to exit and for its last line; its exit status."""
        status = self.process.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        return status

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def launcher(broker: BrokerProcess) -> Iterator[Callable[..., Script]]:
    """``launch(name, *args)`` starts an example; whatever still runs at the end is killed."""
    started: list[Script] = []

    def launch(name: str, *args: str) -> Script:
        started.append(Script(broker, name, *args))
        return started[-1]

    try:
        yield launch
    finally:
        for script in started:
            if script.process.poll() is None:
                script.process.kill()
            script.finish()  # the reader is done with the pipe before it is closed
            if script.process.stdout is not None:
                script.process.stdout.close()


def worker_tasks(script: Script, what: str) -> list[str]:
    """The word after ``NAME: what`` in each of a worker's lines that says it: the task done,
    released or worked on."""
    found = []
    for line in script.lines:
        said = line.partition(": ")[2]
        if said.startswith(what + " "):
            found.append(said.removeprefix(what + " ").split(" ")[0])
    return found


def check_state(broker: BrokerProcess, workers: set[str]) -> dict[str, Any]:
    """The broker holds a finished workflow: every task marked done by one of ``workers``, the
    queue empty, the counter right. The done marks, task -> worker."""
    with Client.connect(broker.url, user="test", cursor="tasks") as client:
        done = {key.removeprefix("done."): value for key, value in client.scan("done")}
        assert sorted(done) == sorted(f"task_{i}" for i in range(1, TASKS + 1))
        assert set(done.values()) <= workers
        assert client.keys("queue") == []
        assert client.claims() == []
        assert client.get("workflow.completed", cursor="main") == TASKS
        assert client.get("workflow.status", cursor="main") == "completed"
        for worker in workers:  # registered, and signed off: the session key is gone
            assert client.get(f"agents.{worker}.status", cursor="main") == "stopped"
        assert client.keys("sessions.active", cursor="main") == []
        audit = [entry for _, entry in client.scan("audit", cursor="logs")]
        assert sum(":task_completed:" in entry for entry in audit) == TASKS
        assert sum(":orchestrator:workflow_" in entry for entry in audit) == 2  # started, completed
        metrics = dict(client.scan("metrics", cursor="logs"))
        for worker in workers:
            mine = sum(1 for by in done.values() if by == worker)
            assert metrics.get(f"metrics.{worker}.tasks_completed", 0) == mine
        assert metrics["metrics.system.completed"] == TASKS
    return done


def test_orchestrator_workers_and_monitor(tmp_path: Path, short_dir: Path) -> None:
    with running_broker(tmp_path / "data", short_dir / "b.sock") as broker, launcher(broker) as run:
        limit = ["--timeout", str(TIMEOUT)]
        monitor = run("monitor_sync.py", "--expect", str(TASKS), "--json", *limit)
        monitor.wait_for(lambda line: line.startswith("monitor: watching"))
        orchestrator = run("orchestrator_trio.py", "--tasks", str(TASKS), "--batch", "16", *limit)
        orchestrator.wait_for(lambda line: "queued" in line)
        workers = [
            run("worker_asyncio.py", "--name", name, "--concurrency", "2", "--idle-exit", "2")
            for name in ("w1", "w2")
        ]
        assert orchestrator.finish() == 0, orchestrator.output
        assert "workflow completed" in orchestrator.lines[-1], orchestrator.output
        for worker in workers:
            assert worker.finish() == 0, worker.output
            assert "duplicate:" not in worker.output
        assert monitor.finish() == 0, monitor.output
        done = check_state(broker, {"w1", "w2"})

    # Each worker reported each of its tasks once, and the marks agree with the reports.
    reported = {
        name: worker_tasks(w, "done") for name, w in zip(("w1", "w2"), workers, strict=True)
    }
    for name, tasks in reported.items():
        assert sorted(tasks) == sorted(t for t, by in done.items() if by == name)
    assert sorted(reported["w1"] + reported["w2"]) == sorted(done)
    seen = json.loads(monitor.lines[-1])
    assert seen["completions"] == TASKS
    assert seen["tasks"] == TASKS
    assert seen["repeated"] == []
    assert seen["by_worker"] == {name: len(tasks) for name, tasks in reported.items() if tasks}


def test_a_stopped_worker_gives_its_tasks_back(tmp_path: Path, short_dir: Path) -> None:
    with running_broker(tmp_path / "data", short_dir / "b.sock") as broker, launcher(broker) as run:
        limit = ["--timeout", str(TIMEOUT)]
        monitor = run("monitor_sync.py", "--expect", str(TASKS), "--json", *limit)
        orchestrator = run("orchestrator_trio.py", "--tasks", str(TASKS), *limit)
        orchestrator.wait_for(lambda line: "queued" in line)
        # Slow work, so that the signal finds both of its loops holding a task.
        slow = run("worker_asyncio.py", "--name", "w1", "--concurrency", "2", "--work", "5")
        slow.wait_for(lambda line: line.startswith("w1: working on"), count=2)
        slow.process.send_signal(signal.SIGTERM)
        assert slow.finish() == 0, slow.output
        assert "w1: exiting (stopped by SIGTERM)" in slow.lines[-1], slow.output
        held = set(worker_tasks(slow, "working on")) - {
            f"queue.{t}" for t in worker_tasks(slow, "done")
        }
        assert held, slow.output
        assert set(worker_tasks(slow, "released")) == held, slow.output

        fast = run("worker_asyncio.py", "--name", "w2", "--concurrency", "2", "--idle-exit", "2")
        assert fast.finish() == 0, fast.output
        assert orchestrator.finish() == 0, orchestrator.output
        assert monitor.finish() == 0, monitor.output
        done = check_state(broker, {"w1", "w2"})

    for key in held:  # each came back, and the other worker did it
        assert done[key.removeprefix("queue.")] == "w2"
        assert f"w2: working on {key} (delivery 2)" in fast.lines
    assert "duplicate:" not in fast.output
    seen = json.loads(monitor.lines[-1])
    assert seen["completions"] == TASKS
    assert seen["tasks"] == TASKS
    assert seen["repeated"] == []
    assert set(seen["redelivered"]) == held


@pytest.mark.parametrize("name", ["orchestrator_trio.py", "worker_asyncio.py", "monitor_sync.py"])
def test_help(name: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--help"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert "--url" in done.stdout
