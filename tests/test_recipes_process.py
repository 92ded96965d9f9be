"""Locks, semaphores, elections and barriers between real processes: a broker process on a private
socket, and the real ``prontodb`` console script (``lock``, ``semaphore``, ``elect``, ``barrier``)
in processes that race, are SIGKILLed and SIGSTOPped.

Every CLI process gets ``PRONTODB_URL`` (no auto-start) and runs in a process group of its own, so
that however a test ends, the group (the CLI, the CMD it runs and that CMD's children) is killed by
the CLI's pid. The CMDs say what they do on their stdout (the CLI's pipe, which they inherit) and
the tests wait on those pipes; where nothing signals a change (``prontodb holders`` listing a
waiter), a loop bounded by a deadline looks again.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

import pytest
from brokers import running_broker
from cli_support import PRONTODB_VARIABLES, short_tmpdir

PRONTODB = str(Path(sys.executable).with_name("prontodb"))
TIMEOUT = 30.0  # seconds for anything a test waits for, on a loaded 2-core machine


class Lines:
    """A process's stdout read line by line, each within a deadline (select on the pipe)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.fd = process.stdout.fileno()
        self.buffer = b""

    def line(self, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no whole line within {timeout} s (got {self.buffer!r})"
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                assert chunk, f"end of output (got {self.buffer!r})"
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


@dataclass
class Cli:
    """The ``prontodb`` command pointed at one broker, and the processes a test started."""

    env: dict[str, str]
    work: Path  # the test's files: the CMDs' shared counters, logs and markers
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``prontodb ARGS`` to its end; exit 0 unless ``check`` is false."""
        result = subprocess.run(
            [PRONTODB, *args], env=self.env, capture_output=True, text=True, timeout=TIMEOUT
        )
        if check:
            assert result.returncode == 0, (args, result.returncode, result.stderr)
        return result

    def spawn(self, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        """``argv`` in the background in a process group of its own, its stdout piped and its
        stderr in a file (:meth:`stderr`); stopped by :meth:`stop_all` whatever happens."""
        with (self.work / f"stderr.{len(self.processes)}").open("wb") as errors:
            process = subprocess.Popen(
                argv,
                env={**self.env, **env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        return self.spawn([PRONTODB, *args], **env)

    def stderr(self, process: subprocess.Popen[bytes]) -> str:
        return (self.work / f"stderr.{self.processes.index(process)}").read_text()

    def finish(self, process: subprocess.Popen[bytes]) -> int:
        """Wait for ``process`` to exit by itself; its exit status."""
        status = process.wait(TIMEOUT)
        assert process.stdout is not None
        process.stdout.close()
        return status

    def stop_all(self) -> None:
        """SIGKILL each process group started (the CLI, its CMD, the CMD's children), by the
        CLI's pid, and reap the CLI."""
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # the whole group has exited
            process.wait(TIMEOUT)
            if process.stdout is not None:
                process.stdout.close()

    def states(self, name: str) -> list[str]:
        """``prontodb holders NAME`` as its members' states in line: holding, then waiting."""
        listed = self.run("holders", name, check=False)
        if listed.returncode == 3:  # nobody holds or waits
            return []
        assert listed.returncode == 0, listed.stderr
        return [line.split()[1] for line in listed.stdout.splitlines()[1:]]


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """A broker on a private directory and socket, and the CLI's environment pointing at it."""
    with short_tmpdir() as root, running_broker(root / "data", root / "s.sock") as broker:
        env = {k: v for k, v in os.environ.items() if k not in PRONTODB_VARIABLES}
        env["PRONTODB_URL"] = broker.url
        env["PATH"] = f"{Path(PRONTODB).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["WORK"] = str(tmp_path)
        found = Cli(env, tmp_path)
        try:
            yield found
        finally:
            found.stop_all()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Return once ``condition()`` holds; fail after TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)  # a deadline loop, the last resort: nothing signals this change


def process_state(pid: int) -> str:
    """Process ``pid``'s state letter in /proc (R, S, T for stopped, ...)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


# A read-modify-write of a counter file that loses updates unless the writers take turns; each
# turn also notes the fencing token it ran under.
INCREMENT = (
    'n=$(cat "$WORK/counter"); echo "$PRONTODB_FENCE" >> "$WORK/tokens"; '
    'echo $((n + 1)) > "$WORK/counter"'
)
COUNTER_LOOP = (
    'for i in $(seq "$TURNS"); do prontodb lock counter -- sh -c "$INCREMENT" || exit 1; done'
)


def test_eight_processes_take_turns_on_a_counter_file(cli: Cli) -> None:
    (cli.work / "counter").write_text("0\n")
    loops = [
        cli.spawn(["sh", "-c", COUNTER_LOOP], INCREMENT=INCREMENT, TURNS="10") for _ in range(8)
    ]
    for loop in loops:
        assert cli.finish(loop) == 0, cli.stderr(loop)
    assert (cli.work / "counter").read_text() == "80\n"  # no update lost
    # Holders follow the line, in the order they joined: each turn's token beats the last.
    tokens = [int(t) for t in (cli.work / "tokens").read_text().split()]
    assert len(tokens) == 80
    assert tokens == sorted(set(tokens))
    assert cli.states("counter") == []  # every turn released its lock


# Holds until SIGTERM, saying when it starts (with its token) and when it is terminated.
HOLD_UNTIL_TERM = (
    'trap "echo term; exit 0" TERM; echo "started $PRONTODB_FENCE"; while :; do sleep 0.05; done'
)


def test_a_killed_holder_passes_the_lock_on_at_once_and_its_command_is_terminated(
    cli: Cli,
) -> None:
    holder = cli.start("lock", "job", "--ttl", "60", "--", "sh", "-c", HOLD_UNTIL_TERM)
    held = Lines(holder)
    first = held.line()
    assert first.startswith("started ")
    waiter = cli.start(
        "lock", "job", "--ttl", "60", "--wait", "30", "--", "sh", "-c", "echo took $PRONTODB_FENCE"
    )
    wait_until(lambda: cli.states("job") == ["holding", "waiting"], "the second is in line")
    assert waiter.poll() is None
    holder.kill()  # SIGKILL the CLI itself while its CMD runs
    assert holder.wait(TIMEOUT) == -signal.SIGKILL
    # Its CMD got SIGTERM from the kernel as its parent died (PR_SET_PDEATHSIG).
    assert held.line() == "term"
    # Its session ended with its connection: the waiter holds long before the TTL (60 s) would
    # have ended it, within its own --wait (30 s).
    took = Lines(waiter).line()
    assert took.startswith("took ")
    assert int(took.split()[1]) > int(first.split()[1])
    assert cli.finish(waiter) == 0, cli.stderr(waiter)
    assert cli.states("job") == []


def test_a_token_whose_lock_expired_fences_nothing(cli: Cli) -> None:
    old = cli.run("lock", "fenced", "--ttl", "1").stdout.strip()  # nobody keeps it alive
    cli.run("set", "k", "before", "--fence", f"fenced:{old}")
    new = cli.run("lock", "fenced", "--wait", "30", "--ttl", "30").stdout.strip()
    assert int(new) > int(old)
    late = cli.run("set", "k", "late", "--fence", f"fenced:{old}", check=False)
    assert late.returncode == 5, late.stderr
    assert cli.run("get", "k").stdout == "before\n"
    cli.run("set", "k", "after", "--fence", f"fenced:{new}")
    assert cli.run("get", "k").stdout == "after\n"
    cli.run("unlock", "fenced", "--token", new)
    assert cli.states("fenced") == []


# Writes under the fence, stops itself and its CLI (SIGSTOP: the session is no longer renewed),
# then, continued, writes again and waits for the SIGTERM of a CLI that lost the lock.
STOPPED_HOLDER = """
trap 'terminated=1' TERM
prontodb set k first --fence "$PRONTODB_FENCE_NAME:$PRONTODB_FENCE" || exit 1
echo "stopping $$ $PRONTODB_FENCE"
kill -STOP $PPID $$
prontodb set k second --fence "$PRONTODB_FENCE_NAME:$PRONTODB_FENCE"
echo "second $?"
while [ -z "$terminated" ]; do sleep 0.05; done
echo term
"""


def test_a_holder_stopped_past_its_ttl_loses_the_lock_and_its_late_write(cli: Cli) -> None:
    holder = cli.start("lock", "stop", "--ttl", "2", "--", "sh", "-c", STOPPED_HOLDER)
    said = Lines(holder)
    stopping = said.line()
    assert stopping.startswith("stopping "), cli.stderr(holder)
    _, shell, token = stopping.split()
    # Both are stopped: nothing renews the session any more.
    stopped = (holder.pid, int(shell))
    wait_until(lambda: [process_state(pid) for pid in stopped] == ["T", "T"], "both are stopped")
    assert cli.run("get", "k").stdout == "first\n"
    # Another takes the lock once the TTL (2 s) has ended the stopped holder's session.
    taken = cli.run("lock", "stop", "--wait", "30", "--ttl", "30").stdout.strip()
    assert int(taken) > int(token)
    os.kill(holder.pid, signal.SIGCONT)
    os.kill(int(shell), signal.SIGCONT)
    # The late write is refused; the CLI finds the lock lost, terminates CMD and exits 6.
    assert said.line() == "second 5"
    assert said.line() == "term"
    assert cli.finish(holder) == 6
    assert "lock stop was lost" in cli.stderr(holder)
    assert cli.run("get", "k").stdout == "first\n"
    assert cli.states("stop") == ["holding"]  # the new holder's
    cli.run("set", "k", "third", "--fence", f"stop:{taken}")
    assert cli.run("get", "k").stdout == "third\n"


# Takes one of the free slot directories (mkdir is atomic); none free means a fourth got in.
SLOT_USER = """
slot=
for s in 0 1 2; do
  if mkdir "$WORK/slot.$s" 2>/dev/null; then slot=$s; break; fi
done
if [ -z "$slot" ]; then echo "overflow $ID" >> "$WORK/log"; exit 1; fi
echo "enter $ID" >> "$WORK/log"
while [ ! -e "$WORK/go" ]; do sleep 0.02; done
echo "leave $ID" >> "$WORK/log"
rmdir "$WORK/slot.$slot"
"""


def test_a_semaphore_of_three_lets_ten_through_never_four_at_once(cli: Cli) -> None:
    log = cli.work / "log"
    log.touch()
    semaphore = ("semaphore", "pool", "--limit", "3", "--ttl", "30", "--", "sh", "-c", SLOT_USER)
    contenders = [cli.start(*semaphore, ID=str(i)) for i in range(10)]
    wait_until(
        lambda: cli.states("pool") == ["holding"] * 3 + ["waiting"] * 7, "all ten are in line"
    )
    wait_until(lambda: log.read_text().count("enter") == 3, "three are inside")
    assert sorted(p.name for p in cli.work.glob("slot.*")) == ["slot.0", "slot.1", "slot.2"]
    (cli.work / "go").touch()
    for contender in contenders:
        assert cli.finish(contender) == 0, cli.stderr(contender)
    lines = log.read_text().splitlines()
    assert sorted(lines) == sorted(f"{what} {i}" for what in ("enter", "leave") for i in range(10))
    # Each logged its entry while holding a slot and its leaving before giving it up: those
    # logged in and not yet out were inside together, three at most (and three at first).
    inside = list(accumulate(1 if line.startswith("enter") else -1 for line in lines))
    assert max(inside) == 3
    assert list(cli.work.glob("slot.*")) == []
    assert cli.states("pool") == []


def test_a_barrier_of_five_opens_only_for_the_fifth(cli: Cli) -> None:
    first = [cli.start("barrier", "start", "--count", "5", "--timeout", "30") for _ in range(4)]
    wait_until(lambda: cli.states("start") == ["waiting"] * 4, "four wait at the barrier")
    assert [p.poll() for p in first] == [None] * 4  # all still blocked
    fifth = cli.run("barrier", "start", "--count", "5", "--timeout", "30")
    assert fifth.stdout == ""
    for party in first:
        assert cli.finish(party) == 0, cli.stderr(party)
    assert cli.states("start") == []


def test_a_killed_party_drops_out_of_a_barrier(cli: Cli) -> None:
    first = [cli.start("barrier", "start", "--count", "5", "--timeout", "30") for _ in range(4)]
    wait_until(lambda: cli.states("start") == ["waiting"] * 4, "four wait at the barrier")
    doomed, *rest = first
    doomed.kill()
    assert doomed.wait(TIMEOUT) == -signal.SIGKILL
    wait_until(lambda: cli.states("start") == ["waiting"] * 3, "the killed one has dropped out")
    assert [p.poll() for p in rest] == [None] * 3
    late = [cli.start("barrier", "start", "--count", "5", "--timeout", "30") for _ in range(2)]
    for party in rest + late:
        assert cli.finish(party) == 0, cli.stderr(party)
    assert cli.states("start") == []


def test_a_barrier_that_times_out_exits_4(cli: Cli) -> None:
    alone = cli.run("barrier", "start", "--count", "2", "--timeout", "0.5", check=False)
    assert alone.returncode == 4, alone.stderr
    assert cli.states("start") == []  # it left


ELECTION_TTL = 3  # seconds; a killed leader is followed well within it (its connection closes)
LEAD = 'trap "echo term; exit 0" TERM; echo "leading $PRONTODB_FENCE"; while :; do sleep 0.05; done'


def test_killing_the_leader_elects_the_next_with_a_greater_term(cli: Cli) -> None:
    def candidate(value: str) -> subprocess.Popen[bytes]:
        ttl = str(ELECTION_TTL)
        return cli.start("elect", "leader", "--value", value, "--ttl", ttl, "--", "sh", "-c", LEAD)

    # In line one after the other: c0 leads, then c1, then c2.
    c0 = candidate("c0")
    says = {"c0": Lines(c0)}
    term0 = int(says["c0"].line().removeprefix("leading "))
    assert cli.run("leader", "leader").stdout == f"term={term0} c0\n"
    c1 = candidate("c1")
    wait_until(lambda: cli.states("leader") == ["holding", "waiting"], "c1 is in line")
    c2 = candidate("c2")
    wait_until(lambda: cli.states("leader") == ["holding", "waiting", "waiting"], "c2 is in line")
    says |= {"c1": Lines(c1), "c2": Lines(c2)}

    terms = [term0]
    for leader, killed, follower in ((c0, "c0", "c1"), (c1, "c1", "c2")):
        leader.kill()  # SIGKILL: its session ends as its connection closes
        killed_at = time.monotonic()
        led = says[follower].line()
        assert time.monotonic() - killed_at < ELECTION_TTL  # not the TTL's expiry
        assert says[killed].line() == "term"  # the killed leader's CMD was terminated
        assert leader.wait(TIMEOUT) == -signal.SIGKILL
        terms.append(int(led.removeprefix("leading ")))
        assert cli.run("leader", "leader").stdout == f"term={terms[-1]} {follower}\n"
    assert terms == sorted(set(terms))  # terms only grow

    # The last one steps down cleanly on SIGTERM (passed on to its CMD): nobody leads.
    c2.terminate()
    assert says["c2"].line() == "term"
    assert cli.finish(c2) == 0, cli.stderr(c2)
    assert cli.run("leader", "leader", check=False).returncode == 3


def test_a_lock_held_elsewhere_times_out_with_exit_4(cli: Cli) -> None:
    token = cli.run("lock", "busy", "--ttl", "30").stdout.strip()
    refused = cli.run("lock", "busy", "--wait", "0.5", check=False)
    assert (refused.returncode, refused.stdout) == (4, "")
    assert "timed out: lock busy was not acquired within 0.5 s" in refused.stderr
    assert cli.states("busy") == ["holding"]  # the one that gave up left the line
    cli.run("unlock", "busy", "--token", token)
    assert cli.run("lock", "busy", "--wait", "0.5", "--", "true").returncode == 0
