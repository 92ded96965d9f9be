"""The example agents in examples/ (orchestrator, worker, monitor, resource manager, pipeline) as
real bash processes on the real CLI, checked by their outcomes: every task done exactly once, the
counters right, the monitor saw every completion, no over-allocation.

Each test gets a private data directory and socket under a short /tmp directory. Every script
runs in its own session (process group), so that whatever a failed test leaves running is killed
by group id; every broker serving the directory is stopped by pid at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from cli_support import PRONTODB_VARIABLES, serve_processes, short_tmpdir, stop_brokers

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PRONTODB = str(Path(sys.executable).with_name("prontodb"))
SCRIPTS = [
    "orchestrator_agent.sh",
    "worker_agent.sh",
    "monitor_agent.sh",
    "resource_manager.sh",
    "pipeline_processor.sh",
]
TIMEOUT = 120.0  # seconds for any one script or wait; the runs take a few seconds each


class Agent:
    """One example script running in the background; threads collect its output line by line,
    so that a test can wait for a line (with a timeout) while the script goes on."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.name = Path(argv[1]).name
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._changed = threading.Condition()
        self._open = 2  # output streams not yet at their end
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(stream, into), daemon=True)
            for stream, into in (
                (self.process.stdout, self.lines),
                (self.process.stderr, self.errors),
            )
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self, stream: IO[str], into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()
        stream.close()
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """The first output line (seen so far or to come) that matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            checked = 0
            while True:
                for line in self.lines[checked:]:
                    if match := regex.search(line):
                        return match
                checked = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._open == 0:
                    raise AssertionError(f"{self.name}: no line matches {pattern!r}: {self}")
                self._changed.wait(remaining)

    def finish(self, timeout: float = TIMEOUT) -> int:
        """Wait for the script to exit and for the end of its output; its exit status."""
        status = self.process.wait(timeout)
        with self._changed:
            self._changed.wait_for(lambda: self._open == 0, timeout)
        return status

    def kill_group(self) -> None:
        """SIGKILL the script's whole process group (the script and its children), if any is left."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(TIMEOUT)

    def __repr__(self) -> str:
        return (
            f"{self.name}: status {self.process.poll()}, stdout {self.lines}, stderr {self.errors}"
        )


class Home:
    """A private data directory, the environment that points the CLI at it, and the scripts run."""

    def __init__(self, root: Path) -> None:
        self.data_dir = root / "data"
        (root / "run").mkdir(mode=0o700)
        (root / "tmp").mkdir()  # the scripts' temporary files, even those of a killed one
        self.env = {k: v for k, v in os.environ.items() if k not in PRONTODB_VARIABLES}
        self.env.update(
            PATH=f"{Path(PRONTODB).parent}{os.pathsep}{self.env.get('PATH', '/usr/bin:/bin')}",
            PRONTODB_DATA_DIR=str(self.data_dir),
            XDG_RUNTIME_DIR=str(root / "run"),
            TMPDIR=str(root / "tmp"),
        )
        self.agents: list[Agent] = []

    def start(self, script: str, *args: str) -> Agent:
        agent = Agent(["bash", str(EXAMPLES / script), *args], self.env)
        self.agents.append(agent)
        return agent

    def run(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(EXAMPLES / script), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [PRONTODB, *args], env=self.env, capture_output=True, text=True, timeout=TIMEOUT
        )
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    def scan(self, cursor: str, prefix: str) -> dict[str, object]:
        document = json.loads(self.cli("--cursor", cursor, "--json", "scan", prefix))
        assert isinstance(document, dict)
        return document

    def get(self, cursor: str, key: str) -> object:
        return json.loads(self.cli("--cursor", cursor, "--json", "get", key))["value"]


@pytest.fixture
def home() -> Iterator[Home]:
    with short_tmpdir() as root:
        home = Home(root)
        try:
            yield home
        finally:
            for agent in home.agents:
                agent.kill_group()
            stop_brokers(home.data_dir)


def tasks_done(agent: Agent) -> list[str]:
    """The tasks a worker reported done."""
    return [m[1] for line in agent.lines if (m := re.fullmatch(r"\w+: done (task_\d+)", line))]


def monitor_completions(monitor: Agent) -> dict[str, list[str]]:
    """Each task the monitor reported done, with the workers it named (one, if all went well)."""
    seen: dict[str, list[str]] = {}
    for line in monitor.lines:
        if match := re.fullmatch(r"monitor: \[\d+/\d+\] (task_\d+) done by (\w+) \|.*", line):
            seen.setdefault(match[1], []).append(match[2])
    return seen


def check_audit_trail(home: Home, kind: str) -> list[str]:
    """Entries of the logs cursor's audit trail KIND: one per number handed out, none lost."""
    entries = home.scan("logs", kind)
    assert len(entries) == home.get("logs", f"seq.{kind}")
    return [str(value) for value in entries.values()]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_and_usage_errors_start_no_broker(home: Home, script: str) -> None:
    shown = home.run(script, "--help")
    assert (shown.returncode, shown.stderr) == (0, "")
    assert shown.stdout.startswith(f"Usage: {script} [OPTIONS]\n")
    assert "Options:" in shown.stdout
    assert "(default" in shown.stdout
    # --help needs no prontodb on PATH (nor a broker); anything else says what is missing.
    bare = {**home.env, "PATH": "/usr/bin:/bin"}
    for args, status in ((["--help"], 0), (["--init", "1"] if "resource" in script else [], 1)):
        result = subprocess.run(
            ["bash", str(EXAMPLES / script), *args],
            env=bare,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == status, result
    assert "prontodb is not on PATH" in result.stderr
    wrong = home.run(script, "--no-such-option")
    assert (wrong.returncode, wrong.stdout) == (2, "")
    assert "unknown option '--no-such-option'" in wrong.stderr
    assert serve_processes(home.data_dir) == []


def test_three_workers_do_every_task_exactly_once_and_the_monitor_sees_each(home: Home) -> None:
    tasks = 30
    # The monitor starts first, before there is anything to see; it replays from revision 1.
    monitor = home.start("monitor_agent.sh", "--expect", str(tasks), "--timeout", "110")
    monitor.expect("watching")
    orchestrator = home.start(
        "orchestrator_agent.sh", "--tasks", str(tasks), "--wait", "--timeout", "110"
    )
    workers = [
        home.start("worker_agent.sh", "--name", f"worker{i}", "--work-seconds", "0.01")
        for i in (1, 2, 3)
    ]
    for agent in (*workers, orchestrator, monitor):
        assert agent.finish() == 0, agent
        assert agent.errors == [], agent

    everything = {f"task_{i}" for i in range(1, tasks + 1)}
    reported = Counter(task for worker in workers for task in tasks_done(worker))
    assert reported == Counter(everything)  # every task, each exactly once
    done_by = {task: f"worker{i}" for i, w in enumerate(workers, 1) for task in tasks_done(w)}
    for i, worker in enumerate(workers, 1):
        count = len(tasks_done(worker))
        assert worker.lines[-1] == f"worker{i}: stopped (workflow-complete) after {count} tasks"
    # The broker agrees: one done.task_N per task, naming the worker that said it did it.
    assert home.scan("tasks", "done") == {f"done.{task}": w for task, w in done_by.items()}
    assert home.get("main", "workflow.completed") == tasks
    assert home.get("main", "workflow.status") == "completed"
    assert home.get("main", "workflow.progress_percent") == 100
    assert home.cli("--cursor", "tasks", "keys", "queue") == ""
    assert home.cli("--cursor", "tasks", "claims") == ""
    # Section 9: each worker's metric is what it did, and they add up to every task.
    metrics = home.scan("logs", "metrics")
    completed = [int(str(metrics[f"metrics.worker{i}.tasks_completed"])) for i in (1, 2, 3)]
    assert completed == [len(tasks_done(worker)) for worker in workers]
    assert sum(completed) == tasks
    assert metrics["metrics.system.completions_seen"] == tasks
    # The monitor saw every completion exactly once, by the worker that did it.
    seen = monitor_completions(monitor)
    assert seen == {task: [worker] for task, worker in done_by.items()}
    assert monitor.lines[-2] == (
        f"monitor: summary: saw {tasks} completions of {tasks} distinct tasks, "
        "0 duplicates, 0 releases, 0 lost heartbeats"
    )
    # Every decision is in the audit trail, none overwritten; the workers signed off cleanly.
    decisions = check_audit_trail(home, "decisions")
    assert any(f"workflow_completed:completed={tasks}" in entry for entry in decisions)
    assert sum("scale_decision:" in entry for entry in decisions) >= 3
    assert home.cli("--cursor", "main", "keys", "sessions") == ""
    assert {home.get("main", f"agents.worker{i}.status") for i in (1, 2, 3)} == {"offline"}


def test_a_task_found_done_already_is_acked_and_not_counted_again(home: Home) -> None:
    assert home.run("orchestrator_agent.sh", "--tasks", "2").returncode == 0
    # As if a worker had recorded task_1 and died before its ack: the task is redelivered.
    home.cli("--cursor", "tasks", "set", "done.task_1", "ghost")
    worker = home.run("worker_agent.sh", "--name", "w", "--idle-exit", "1", "--poll", "0.2")
    assert (worker.returncode, worker.stderr) == (0, "")
    assert "w: task_1 was already done by ghost; not counted again" in worker.stdout
    assert "w: done task_2" in worker.stdout.splitlines()
    assert worker.stdout.endswith("w: stopped (idle) after 1 tasks\n")
    assert home.scan("tasks", "done") == {"done.task_1": "ghost", "done.task_2": "w"}
    assert home.get("main", "workflow.completed") == 1
    assert home.scan("logs", "metrics.w") == {
        "metrics.w.duplicates": 1,
        "metrics.w.tasks_completed": 1,
        "metrics.w.work_ms": home.get("logs", "metrics.w.work_ms"),
    }
    assert home.cli("--cursor", "tasks", "keys", "queue") == ""


def watch_events(home: Home, cursor: str, prefix: str, count: int) -> list[dict[str, object]]:
    """The first ``count`` changes under cursor:PREFIX since revision 1 (waiting for them)."""
    args = ["--cursor", cursor, "--json", "watch", prefix, "--from-rev", "1"]
    lines = home.cli(*args, "--count", str(count), "--timeout", "60").splitlines()
    return [json.loads(line) for line in lines]


def history_of(home: Home, key: str, events: int) -> list[tuple[object, object]]:
    """The first ``events`` changes of tasks:KEY since revision 1, as (type, who) pairs."""
    return [(event["type"], event["by"]) for event in watch_events(home, "tasks", key, events)]


def test_stopped_and_killed_workers_lose_no_task(home: Home) -> None:
    tasks = 20
    orchestrator = home.start(
        "orchestrator_agent.sh", "--tasks", str(tasks), "--wait", "--timeout", "110"
    )
    orchestrator.expect("scale_decision")  # the queue is filled
    # No --expect: it runs until stopped, so that it cannot leave before the lost heartbeat.
    monitor = home.start("monitor_agent.sh", "--timeout", "110")
    # Two workers that take a task each and would work on it for a minute: one is stopped with
    # SIGTERM, the other killed (the whole process group, heartbeat included) with SIGKILL.
    stopped = home.start("worker_agent.sh", "--name", "stopped", "--work-seconds", "60")
    killed = home.start(
        "worker_agent.sh", "--name", "killed", "--work-seconds", "60",
        "--lease", "3", "--session-ttl", "2",
    )  # fmt: skip
    stopped_task = stopped.expect(r"working on (task_\d+)")[1]
    killed_task = killed.expect(r"working on (task_\d+)")[1]
    workers = [home.start("worker_agent.sh", "--name", f"worker{i}") for i in (1, 2)]
    workers[0].expect("done task_")  # mid-run
    os.kill(stopped.pid, signal.SIGTERM)
    os.killpg(killed.pid, signal.SIGKILL)

    assert stopped.finish() == 0, stopped
    assert stopped.lines[-2:] == [
        f"stopped: released {stopped_task}",
        "stopped: stopped (signal) after 0 tasks",
    ]
    assert killed.finish() == -signal.SIGKILL
    for agent in (*workers, orchestrator):
        assert agent.finish() == 0, agent
        assert agent.errors == [], agent
    # The monitor saw every completion, both tasks come back, the clean sign-off and the lost
    # heartbeat; then SIGTERM stops it with its summary.
    monitor.expect(rf"\[{tasks}/{tasks}\]")
    for line in (
        f"monitor: {stopped_task} is back in the queue (released, or its lease ran out)",
        f"monitor: {killed_task} is back in the queue (released, or its lease ran out)",
        "monitor: stopped signed off",
        "monitor: heartbeat lost: killed (its session expired); marking it offline",
    ):
        monitor.expect(f"^{re.escape(line)}$")
    os.kill(monitor.pid, signal.SIGTERM)
    assert monitor.finish() == 0, monitor
    assert monitor.errors == []
    assert monitor.lines[-2] == (
        f"monitor: summary: saw {tasks} completions of {tasks} distinct tasks, "
        "0 duplicates, 2 releases, 1 lost heartbeats"
    )

    reported = Counter(task for worker in workers for task in tasks_done(worker))
    assert reported == Counter({f"task_{i}": 1 for i in range(1, tasks + 1)})
    assert monitor_completions(monitor) == {
        task: [f"worker{i}"] for i, w in enumerate(workers, 1) for task in tasks_done(w)
    }
    assert home.get("main", "workflow.completed") == tasks
    assert len(home.scan("tasks", "done")) == tasks
    assert home.cli("--cursor", "tasks", "claims") == ""
    # The stopped worker gave its task back itself; the killed one's came back when its lease
    # ran out (a release by nobody). Then one other worker did each, once.
    for task, victim, releaser in (
        (stopped_task, "stopped", "stopped"),
        (killed_task, "killed", ""),
    ):
        history = history_of(home, f"queue.{task}", 5)
        assert [kind for kind, _ in history] == ["put", "claim", "release", "claim", "ack"]
        assert history[1:3] == [("claim", victim), ("release", releaser)]
        assert history[3][1] == history[4][1] in {"worker1", "worker2"}
    assert home.get("main", "agents.killed.status") == "offline"  # marked by the monitor
    assert any(
        "task_released:" + stopped_task in entry for entry in check_audit_trail(home, "audit")
    )


def test_racing_allocations_never_over_allocate(home: Home) -> None:
    assert home.run("resource_manager.sh", "--init", "6").returncode == 0
    racers = [home.start("resource_manager.sh", "--allocate", f"w{i}", "2") for i in range(8)]
    assert sorted(agent.finish() for agent in racers) == [0, 0, 0, 5, 5, 5, 5, 5]
    winners = {f"w{i}" for i, agent in enumerate(racers) if agent.process.returncode == 0}
    for i, agent in enumerate(racers):
        expected = "allocated 2 cpu_cores to" if f"w{i}" in winners else "refused: 2 cpu_cores for"
        assert (agent.lines + agent.errors)[0].startswith(f"{expected} w{i}"), agent
    assert home.get("allocation", "pools.cpu_cores") == 0
    assert home.scan("allocation", "allocated") == {f"allocated.{w}.cpu_cores": 2 for w in winners}
    decisions = check_audit_trail(home, "decisions")
    assert sum(":allocated:" in entry for entry in decisions) == 3
    assert sum(":refused:" in entry for entry in decisions) == 5

    # A second allocation for a holder is refused (it would leak the first).
    first, second, *_ = sorted(winners)
    assert home.run("resource_manager.sh", "--allocate", first, "1").returncode == 5
    # --wait blocks until a release frees enough, watching the pool rather than polling it.
    waiter = home.start("resource_manager.sh", "--allocate", "late", "2", "--wait", "100")
    released = home.run("resource_manager.sh", "--release", first)
    assert (released.returncode, released.stdout) == (0, f"released 2 cpu_cores from {first}\n")
    assert waiter.finish() == 0, waiter
    assert waiter.lines == ["allocated 2 cpu_cores to late"]
    assert home.get("allocation", "pools.cpu_cores") == 0
    # A release is done once: the second finds nothing.
    assert home.run("resource_manager.sh", "--release", first).returncode == 3
    assert home.run("resource_manager.sh", "--release", second).returncode == 0
    status = home.run("resource_manager.sh", "--status")
    assert status.stdout.splitlines()[0] == "pools.cpu_cores=2"


def test_the_pipeline_moves_every_item_through_every_stage_once(home: Home) -> None:
    items = 10
    run = home.start("pipeline_processor.sh", "--items", str(items), "--workers", "2")
    assert run.finish() == 0, run
    assert run.errors == []
    moves = Counter(
        (m[1], m[2])
        for line in run.lines
        if (m := re.fullmatch(r"\w+_worker\d: (item_\d+) (\w+) -> \S+", line))
    )
    names = [f"item_{i}" for i in range(1, items + 1)]
    stages = ("ingest", "process", "output")
    assert moves == Counter({(item, stage): 1 for item in names for stage in stages})
    assert home.scan("tasks", "results") == {
        f"results.{item}": f"raw:{item[5:]}|ingest|process|output" for item in names
    }
    assert home.scan("tasks", "stage") == {}  # every queue drained
    assert home.cli("--cursor", "tasks", "claims") == ""
    assert len(home.scan("tasks", "passed")) == items * len(stages)
    counters = home.scan("tasks", "pipeline")
    assert counters["pipeline.total_items"] == items
    assert [counters[f"pipeline.passed.{stage}"] for stage in stages] == [items] * 3
    # Section 4's progress tracking: the last stage each item was in, and who did it.
    logs = home.scan("logs", "pipeline")
    for item in names:
        assert logs[f"pipeline.{item}.stage"] == "output"
        assert str(logs[f"pipeline.{item}.worker"]).startswith("output_worker")
    assert home.get("main", "pipeline.stages") == "ingest,process,output"


def group_is_gone(agent: Agent) -> bool:
    """True if nothing the script started (in its process group) is still running."""
    try:
        os.killpg(agent.pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_scripts_stop_cleanly_on_sigint_and_sigterm(home: Home) -> None:
    # An idle worker, polling an empty queue: SIGINT, and it signs off.
    worker = home.start("worker_agent.sh", "--name", "idle")
    worker.expect("started, claiming")
    os.kill(worker.pid, signal.SIGINT)
    assert worker.finish() == 0, worker
    assert worker.lines[-1] == "idle: stopped (signal) after 0 tasks"
    assert home.cli("--cursor", "main", "keys", "sessions") == ""
    assert home.get("main", "agents.idle.status") == "offline"
    # The orchestrator waiting for workers that never come: SIGINT ends the wait and its watch.
    orchestrator = home.start("orchestrator_agent.sh", "--tasks", "2", "--wait")
    orchestrator.expect("scale_decision")
    os.kill(orchestrator.pid, signal.SIGINT)
    assert orchestrator.finish() == 0, orchestrator
    assert orchestrator.lines[-1] == "orchestrator: stopped_waiting:completed=0"
    assert home.get("main", "workflow.status") == "running"  # the workers may still come
    # A pipeline whose ingest worker is in the middle of an item: SIGTERM, the item goes back.
    pipeline = home.start("pipeline_processor.sh", "--items", "2", "--work-seconds", "60")
    # Two puts, then the claim: the ingest worker holds an item.
    watch_events(home, "tasks", "stage.ingest", 3)
    os.kill(pipeline.pid, signal.SIGTERM)
    assert pipeline.finish() == 0, pipeline
    released = [
        line for line in pipeline.lines if re.fullmatch(r"ingest_worker1: released item_[12]", line)
    ]
    assert len(released) == 1, pipeline
    assert "ingest_worker1: stopped after moving 0 items" in pipeline.lines
    assert home.cli("--cursor", "tasks", "claims") == ""
    assert home.cli("--cursor", "tasks", "keys", "stage").split() == [
        "stage.ingest.item_1",
        "stage.ingest.item_2",
    ]
    for agent in (worker, orchestrator, pipeline):
        assert agent.errors == [], agent
        assert group_is_gone(agent), agent
