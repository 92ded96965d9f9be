"""Claims under worker SIGKILL and SIGSTOP: a queue worked by real worker processes, some killed
mid-task and some frozen past their lease, still has every task acked exactly once, by the worker
that held it at that moment, and no ack with a lease's old token gets through.

Each worker is a ``python -c`` process with its own sync ``Client``: it claims from the queue with
a short lease, prints ``claimed KEY TOKEN DELIVERIES``, waits for the test's go-ahead on stdin (its
"work"), acks, and prints ``acked`` or ``refused`` (compare_failed). The queue is filled in rounds
of TASKS tasks; in each, the go-ahead lets the test act at KILLS + STOPS claims (seeded random
ordinals among the round's first deliveries: progress, not wall time):

- kill: SIGKILL the worker (by pid) while it holds its task, and start a replacement. The task
  must come back when its lease runs out, be claimed again (deliveries >= 2) and acked by another.
- stop: SIGSTOP the worker while it holds its task. Another worker's blocking claim returning that
  task with a larger token is the event that says the lease ran out; then the stopped worker is
  SIGCONT'd and acks with its old token (it must be refused), and ``prontodb ack KEY --token OLD``
  must exit 5 (both count as stale acks refused); the task must still be there, no longer under
  the old token, before its new holder gets the go-ahead to ack it.

At the end the broker's history (``watch`` from revision 1) is replayed per task: put, then claims
each released (by a lease running out) or finally acked, never two holders at once, the ack made
by the user of the claim it ends, nothing after it. The workers' own ack reports must agree, an
ack refused without a plan (a lease that ran out on a loaded machine) must be one whose lease the
history shows running out, and the queue must be empty.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import textwrap
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from brokers import BrokerProcess, running_broker
from reliability_kit import Figures, Scale

from prontodb.clients import Client, WatchEvent

SCENARIO = "claims under worker SIGKILL and SIGSTOP"
SEED = 20261208
CURSOR = "claims"
PREFIX = "jobs"
LEASE = 2.0  # seconds: short, so a killed or stopped worker's task comes back soon
CLAIM_WAIT = 30.0  # seconds a worker's claim waits for a task (longer than a lease)
WAIT = 60.0  # seconds the test waits for any one report before it fails
TASKS, KILLS, STOPS = 30, 2, 2  # per round

# A worker: claim, report, wait for the go-ahead, ack, report; until nothing comes in CLAIM_WAIT.
WORKER = textwrap.dedent(
    """
    import sys
    from prontodb.clients import Client, ErrorCode, ProntoError

    url, cursor, user, prefix, lease, wait = sys.argv[1:]
    with Client.connect(url, user=user, cursor=cursor) as db:
        while (task := db.claim(prefix, wait=float(wait), lease=float(lease))) is not None:
            print("claimed", task.key, task.token, task.deliveries, flush=True)
            if sys.stdin.readline() != "ack\\n":
                break
            try:
                db.ack(task.key, task.token)
            except ProntoError as exc:
                if exc.code != ErrorCode.COMPARE_FAILED:
                    raise
                print("refused", task.key, task.token, flush=True)
            else:
                print("acked", task.key, task.token, flush=True)
    """
)


@dataclass(eq=False)
class Worker:
    """A worker process and what the test knows of it."""

    name: str
    process: subprocess.Popen[bytes]
    stderr: Path
    buffer: bytes = b""
    stopped: bool = False
    killed: bool = False

    def go(self) -> None:
        """The go-ahead: the worker acks the task it reported last."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(b"ack\n")
        stdin.flush()

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)  # by pid


@dataclass
class StaleAck:
    """A task whose holder was stopped past its lease, and the worker that holds it now."""

    stopped: Worker
    old_token: int
    holder: Worker | None = None


@dataclass
class Run:
    """The workers, the plan, and every report they made."""

    broker: BrokerProcess
    work_dir: Path
    figures: Figures
    kill_at: set[int]
    stop_at: set[int]
    workers: list[Worker] = field(default_factory=list)
    selector: selectors.DefaultSelector = field(default_factory=selectors.DefaultSelector)
    lines: deque[tuple[Worker, str]] = field(default_factory=deque)
    claims: int = 0  # first deliveries reported: the ordinals kill_at and stop_at refer to
    tokens: dict[str, int] = field(default_factory=dict)  # the newest token each task was given
    orphans: dict[str, Worker] = field(default_factory=dict)  # tasks of killed workers
    stale: dict[str, StaleAck] = field(default_factory=dict)  # tasks of stopped workers
    acks: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # reported acks
    refused: list[tuple[str, str]] = field(default_factory=list)  # (task, worker) acks refused
    problems: list[str] = field(default_factory=list)

    # -- workers -----------------------------------------------------------------------------

    def spawn(self) -> Worker:
        name = f"worker{len(self.workers):02d}"
        args = [self.broker.url, CURSOR, name, PREFIX, str(LEASE), str(CLAIM_WAIT)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRONTODB_")}
        stderr = self.work_dir / f"{name}.stderr"
        with stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-c", WORKER, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                # A session of its own, as a real worker has: in the test's process group, a
                # SIGSTOPped worker gets SIGHUP from the kernel whenever another member exits
                # while that group has no parent in the session (a run started in the background).
                start_new_session=True,
            )
        worker = Worker(name, process, stderr)
        self.workers.append(worker)
        assert process.stdout is not None
        self.selector.register(process.stdout, selectors.EVENT_READ, worker)
        self.figures.add("workers started")
        return worker

    def active(self) -> int:
        return sum(not (w.killed or w.stopped) and w.process.poll() is None for w in self.workers)

    def next_line(self) -> tuple[Worker, str]:
        """The next report of any worker, waiting at most WAIT seconds for one; ``""`` when a
        worker's output ended."""
        while not self.lines:
            ready = self.selector.select(WAIT)
            assert ready, f"no worker reported for {WAIT:g} s: {self.state()}"
            for key, _ in ready:
                worker: Worker = key.data
                data = os.read(key.fd, 65536)
                if not data:
                    self.selector.unregister(key.fileobj)
                    self.lines.append((worker, ""))
                    continue
                *complete, worker.buffer = (worker.buffer + data).split(b"\n")
                self.lines.extend((worker, line.decode()) for line in complete)
        return self.lines.popleft()

    def stop_all(self) -> None:
        """Every worker still running, SIGKILLed by pid (a stopped one too), and reaped."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
            worker.process.wait(WAIT)
            for stream in (worker.process.stdin, worker.process.stdout):
                if stream is not None:
                    stream.close()
        self.selector.close()

    def state(self) -> str:
        return (
            f"seed {SEED}; acked {len(self.acks)}; orphans {sorted(self.orphans)}; "
            f"stale {sorted(self.stale)}; workers "
            + ", ".join(f"{w.name}:{w.process.poll()}" for w in self.workers)
        )

    # -- reports -----------------------------------------------------------------------------

    def on_report(self, worker: Worker, line: str) -> None:
        what, _, rest = line.partition(" ")
        if what == "claimed":
            key, token, deliveries = rest.split()
            self.on_claimed(worker, key, int(token), int(deliveries))
        elif what == "acked":
            key, token = rest.split()
            self.on_acked(worker, key, int(token))
        elif what == "refused":
            key, token = rest.split()
            self.on_refused(worker, key, int(token))
        elif what == "" and not worker.killed:
            # A worker ends by itself only when no task came in CLAIM_WAIT: none may be left.
            status = worker.process.wait(WAIT)
            errors = worker.stderr.read_text(errors="replace")
            assert status == 0, f"{worker.name} exited {status}: {errors}"
        elif what:
            raise AssertionError(f"{worker.name} said {line!r}")

    def on_acked(self, worker: Worker, key: str, token: int) -> None:
        self.acks.setdefault(key, []).append((worker.name, token))
        if token != self.tokens.get(key):
            self.problems.append(f"{worker.name} acked {key} with {token}, not its newest")
        stale = self.stale.get(key)
        if stale is not None and stale.stopped is worker:  # the defect looked for: let it show
            self.figures.add("wrongly allowed")
            del self.stale[key]
            assert stale.holder is not None
            stale.holder.go()

    def on_claimed(self, worker: Worker, key: str, token: int, deliveries: int) -> None:
        if token <= self.tokens.get(key, 0):
            self.problems.append(f"{key} handed out with token {token}, not above the last")
        self.tokens[key] = token
        if deliveries > 1:
            self.figures.add("redeliveries")
        if self.orphans.pop(key, None) is not None:  # the killed worker's task came back
            self.figures.add("killed workers' tasks redelivered")
        if key in self.stale:  # the stopped holder's lease ran out: it acks with its old token
            stale = self.stale[key]
            stale.holder = worker
            stale.stopped.signal(signal.SIGCONT)
            stale.stopped.stopped = False
            stale.stopped.go()
            return  # the new holder waits for the stale ack to be refused
        if deliveries == 1:
            self.claims += 1
            if self.claims in self.kill_at:
                self.kill(worker, key)
                return
            if self.claims in self.stop_at:
                self.stop(worker, key, token)
                return
        worker.go()

    def kill(self, worker: Worker, key: str) -> None:
        """SIGKILL ``worker`` mid-task (by pid) and start another in its place."""
        worker.killed = True
        worker.process.kill()
        worker.process.wait(WAIT)
        self.orphans[key] = worker
        self.figures.add("workers killed")
        self.spawn()

    def stop(self, worker: Worker, key: str, token: int) -> None:
        """SIGSTOP ``worker`` mid-task (by pid) until its task is claimed again."""
        worker.signal(signal.SIGSTOP)
        worker.stopped = True
        self.stale[key] = StaleAck(worker, token)
        self.figures.add("workers stopped past lease")
        if self.active() < 2:  # someone must be there to claim the task when its lease ends
            self.spawn()

    def on_refused(self, worker: Worker, key: str, token: int) -> None:
        self.refused.append((key, worker.name))
        stale = self.stale.get(key)
        if stale is None or stale.stopped is not worker or stale.old_token != token:
            # Not planned: this worker's lease ran out before its ack (a loaded machine). The
            # task went back to the queue; the history audit checks someone else finished it.
            self.figures.add("late acks refused")
            return
        del self.stale[key]
        self.figures.add("stale acks refused")
        status, said = cli_ack(self.broker, worker.name, key, token)
        if status == 5 and key in said:  # refused, with a message that names the task
            self.figures.add("stale acks refused")
        else:
            self.problems.append(f"prontodb ack {key} --token {token} (stale): {status} {said!r}")
            self.figures.add("wrongly allowed" if status == 0 else "unclear")
        with Client.connect(self.broker.url, user="auditor", cursor=CURSOR) as db:
            info = db.get_info(key)
        if info is None or (info.claim is not None and info.claim.token == token):
            self.problems.append(f"a stale ack of {key} took it from its new holder: {info}")
        assert stale.holder is not None
        stale.holder.go()


def cli_ack(broker: BrokerProcess, user: str, key: str, token: int) -> tuple[int, str]:
    """``prontodb ack KEY --token T`` as a process of its own: its exit status and stderr."""
    args = ["--url", broker.url, "--cursor", CURSOR, "--user", user]
    command = [sys.executable, "-m", "prontodb.clients.cli", *args, "ack", key, "--token"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRONTODB_")}
    done = subprocess.run([*command, str(token)], capture_output=True, timeout=WAIT, env=env)
    return done.returncode, done.stderr.decode(errors="replace")


def history(broker: BrokerProcess) -> Iterator[WatchEvent]:
    """Every change of the database from revision 1 to now, from the broker's history."""
    with Client.connect(broker.url, user="auditor", cursor=CURSOR) as db:
        (status,) = [d for d in db.status()["databases"] if d["name"] == CURSOR]
        with db.watch("", from_rev=1) as watch:
            rev = 0
            while rev < status["revision"]:
                event = watch.next_event(WAIT)
                assert event is not None, f"the history stopped at revision {rev}"
                rev = event.rev
                yield event


@dataclass
class Audit:
    """What the history shows: who acked each task, whose leases ran out, every breach."""

    acker: dict[str, str] = field(default_factory=dict)
    expired: set[tuple[str, str]] = field(default_factory=set)  # (task, holder)
    errors: list[str] = field(default_factory=list)


def audit(events: Iterator[WatchEvent], figures: Figures) -> Audit:
    """Replay each task's changes: put, then claims each released or finally acked by its
    holder, nothing after the ack."""
    holder: dict[str, str | None] = {}  # task -> who holds it (None: claimable)
    found = Audit()
    acker, errors = found.acker, found.errors
    for event in events:
        key, by = event.key, event.by
        if event.type == "put" and key not in holder and key not in acker:
            holder[key] = None
        elif key in acker or key not in holder:
            errors.append(f"rev {event.rev}: {event.type} of {key} by {by!r} after its ack")
        elif event.type == "claim" and holder[key] is None:
            holder[key] = by
        elif event.type == "release" and (held := holder[key]) is not None and by in ("", held):
            if by == "":
                found.expired.add((key, held))
                figures.add("leases run out")
            holder[key] = None
        elif event.type == "ack" and holder[key] == by:
            acker[key] = by
            del holder[key]
        else:
            errors.append(
                f"rev {event.rev}: {event.type} of {key} by {by!r}, held by {holder[key]}"
            )
    return found


FIGURES = (  # in the order the report shows them
    "tasks",
    "workers",
    "workers started",
    "workers killed",
    "killed workers' tasks redelivered",
    "workers stopped past lease",
    "stale acks refused",
    "late acks refused",
    "redeliveries",
    "leases run out",
    "lost",
    "wrong values",
    "wrongly allowed",
    "unclear",
)


def enqueue(run: Run, rng: random.Random, round_: int) -> list[str]:
    """Put a round's tasks in the queue and pick the claims among theirs at which to kill and
    stop a worker: first deliveries only, not the last few (work must remain to come back to)."""
    tasks = [f"{PREFIX}.r{round_:02d}t{i:02d}" for i in range(TASKS)]
    with Client.connect(run.broker.url, user="orchestrator", cursor=CURSOR) as db:
        for task in tasks:
            db.set(task, f"payload of {task}")
    first = run.claims + 1  # every earlier task has been delivered by now
    planned = rng.sample(range(first, first + len(tasks) - 3), KILLS + STOPS)
    run.kill_at.update(planned[:KILLS])
    run.stop_at.update(planned[KILLS:])
    return tasks


def judge(run: Run, found: Audit, tasks: list[str], left: list[str]) -> dict[str, list[str]]:
    """Every failure, by the figure it counts towards."""
    lost = sorted((set(tasks) - set(found.acker)) | set(left))
    wrong = list(found.errors)  # two holders at once, an ack by a non-holder, a change after it
    wrong += [f"{k} acked {len(a)} times: {a}" for k, a in run.acks.items() if len(a) > 1]
    wrong += [
        f"{key}: acked by {by} per the history, by {run.acks.get(key)} per the workers"
        for key, by in found.acker.items()
        if [by] != [name for name, _ in run.acks.get(key, [])]
    ]
    # A refused ack is right only if that worker's lease had run out (the history shows it).
    wrong += [
        f"{w}'s ack of {k} refused while it held it"
        for k, w in run.refused
        if (k, w) not in found.expired
    ]
    return {"lost": lost, "wrong values": wrong + run.problems}


@pytest.fixture
def broker(tmp_path: Path, short_dir: Path) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path / "data", short_dir / "b.sock") as process:
        yield process


def test_every_task_acked_once_by_its_holder_through_kills_and_stops(
    broker: BrokerProcess, tmp_path: Path, figures: Figures, scale: Scale
) -> None:
    figures.scenario = SCENARIO
    for name in FIGURES:
        figures[name] = 0
    rng = random.Random(SEED)
    # Rounds of a queue each, with KILLS kills and STOPS stops: a round lasts about a lease, so
    # few workers are stopped at once however long the run.
    run = Run(broker, tmp_path, figures, kill_at=set(), stop_at=set())
    tasks: list[str] = []
    figures["workers"] = scale.pick(4, 6)
    try:
        for _ in range(int(figures["workers"])):
            run.spawn()
        for round_ in range(scale.pick(2, 20)):
            tasks += enqueue(run, rng, round_)
            while len(run.acks) < len(tasks) or run.stale:
                run.on_report(*run.next_line())
    finally:
        run.stop_all()
    figures["tasks"] = len(tasks)
    found = audit(history(broker), figures)
    with Client.connect(broker.url, user="auditor", cursor=CURSOR) as db:
        left = db.keys(PREFIX) + db.keys("dead")
    failures = judge(run, found, tasks, left)
    for name, cases in failures.items():
        figures[name] = len(cases)
    assert not any(failures.values()), f"seed {SEED}: {failures}"
    kills, stops = len(run.kill_at), len(run.stop_at)
    assert figures["workers killed"] == figures["killed workers' tasks redelivered"] == kills
    assert figures["workers stopped past lease"] == stops
    assert figures["stale acks refused"] == 2 * stops  # the worker's own and the CLI's
    assert figures["wrongly allowed"] == figures["unclear"] == 0
