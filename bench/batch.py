"""10,000 sets from a script: ``prontodb batch`` against ``redis-cli --pipe``, wall time of the command.

    python -m bench.batch [--lines 10000] [--runs 7] [--no-report]

Both servers run side by side on temporary directories on a real disk (under /var/tmp) and Unix
sockets, each acknowledging a write only after its fsync (ProntoDB ``--fsync always``; Redis
``appendonly yes``, ``appendfsync always``), and both are stopped by pid at the end.

Each command reads a file of ``--lines`` sets on stdin: ``prontodb batch`` one ``set KEY VALUE``
a line, ``redis-cli --pipe`` the same SETs RESP-encoded (what ``--pipe`` takes). The time is the
whole command's, from just before it is started to its exit, so ProntoDB's includes Python
starting and importing the client. The runs alternate between the commands, after one warm-up run
each; the figure is the median. Alongside, what the time is made of: ``prontodb batch`` with an
empty input (start-up, connecting, no request), a bare ``python -I -c pass``, and the same sets
sent by the sync client's ``call_many`` inside this process (the wire and the broker alone).

The target (the batch issue): 10,000 sets through ``prontodb batch`` in well under a second.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from prontodb.clients import Client
from prontodb.clients._cli_batch import parse_line  # what batch runs on each line

from .claims import Counters, counters
from .cli_startup import REPO, regular_install
from .loadgen import CURSOR, PRONTODB, REDIS
from .report import run_and_report
from .servers import Server, running, start_prontodb, start_redis
from .throughput import machine_info

VENV_PYTHON = Path(sys.executable)
PRONTODB_SCRIPT = VENV_PYTHON.with_name("prontodb")
TARGET_SECONDS = 1.0
WELL_UNDER = 0.5  # "well under a second", read as at most half of it
RUN_TIMEOUT = 120.0


def keys(lines: int) -> list[str]:
    return [f"batch.k{i:06d}" for i in range(lines)]


def value(index: int, size: int) -> str:
    return f"{index:0{max(size, 7)}d}"


def batch_input(lines: int, size: int) -> bytes:
    """``prontodb batch``'s stdin: one ``set KEY VALUE`` a line."""
    return "".join(f"set {k} {value(i, size)}\n" for i, k in enumerate(keys(lines))).encode()


def resp_input(lines: int, size: int) -> bytes:
    """``redis-cli --pipe``'s stdin: the same SETs, RESP-encoded."""
    out = []
    for i, k in enumerate(keys(lines)):
        v = value(i, size)
        out.append(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n${len(v)}\r\n{v}\r\n")
    return "".join(out).encode()


@dataclass
class Timed:
    """One command's runs."""

    name: str
    argv: list[str]
    stdin: Path
    check: Callable[[str], str | None]  # its stdout -> what is wrong with it, or None
    server: Server  # the server it talks to (whose CPU time is sampled)
    seconds: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)  # the command's own CPU seconds
    server_cpu: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def median(self) -> float:
        return median(self.seconds)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def run_once(timed: Timed, env: dict[str, str], out: Path) -> None:
    """Run the command once with its input file on stdin; time it from before the fork to its
    exit; check its answer."""
    with timed.stdin.open("rb") as stdin, out.open("wb") as stdout:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = timed.server.cpu_seconds()
        began = time.perf_counter()
        done = subprocess.run(
            timed.argv,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        seconds = time.perf_counter() - began
        server_cpu = timed.server.cpu_seconds() - server_before
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.read_text(errors="replace")
    problem = timed.check(text)
    if done.returncode != 0:
        problem = f"exit {done.returncode}: {done.stderr.decode(errors='replace')[:300]}"
    if problem is not None and len(timed.problems) < 3:
        timed.problems.append(problem)
    timed.seconds.append(seconds)
    timed.server_cpu.append(server_cpu)
    timed.client_cpu.append(after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime)


def expect_oks(lines: int) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        answers = text.splitlines()
        if len(answers) != lines or any(a != "OK" for a in answers):
            wrong = next((a for a in answers if a != "OK"), "")
            return f"{len(answers)} answers, {sum(a == 'OK' for a in answers)} OK; {wrong[:100]}"
        return None

    return check


def expect_pipe(lines: int) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        if f"errors: 0, replies: {lines}" not in text:
            return f"redis-cli --pipe said {text.strip()[-200:]!r}"
        return None

    return check


def nothing(text: str) -> str | None:
    return None if text == "" else f"printed {text[:100]!r}"


def in_process(server: Server, lines: int, size: int) -> tuple[float, float]:
    """The same sets through the sync client's ``call_many`` here: seconds from connecting to
    the last answer, and this process's CPU seconds meanwhile."""
    requests = [
        ("set", {"cursor": CURSOR, "key": k, "value": value(i, size)})
        for i, k in enumerate(keys(lines))
    ]
    began, cpu = time.perf_counter(), time.process_time()
    with Client.connect("unix://" + server.socket, user="bench", cursor=CURSOR) as client:
        results = client.call_many(requests)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"call_many: {len(failed)} sets failed, the first: {failed[0]}")
    return seconds, cpu


def measure_in_process(findings: Findings, server: Server, args: argparse.Namespace) -> None:
    cpu = server.cpu_seconds()
    took, client_cpu = in_process(server, args.lines, args.value_size)
    findings.call_many.append(took)
    findings.call_many_cpu.append(client_cpu)
    findings.call_many_server_cpu.append(server.cpu_seconds() - cpu)


def parse_seconds(lines: list[str]) -> float:
    """How long ``prontodb batch``'s own parser takes over ``lines`` (in this process)."""
    began = time.perf_counter()
    for line in lines:
        parse_line(line, CURSOR)
    return time.perf_counter() - began


@dataclass
class Findings:
    timed: dict[str, Timed] = field(default_factory=dict)
    call_many: list[float] = field(default_factory=list)
    call_many_cpu: list[float] = field(default_factory=list)
    call_many_server_cpu: list[float] = field(default_factory=list)
    parsing: list[float] = field(default_factory=list)  # seconds, batch's parser over the lines
    writes: Counters | None = None  # ProntoDB, over one batch run
    stored: int = 0  # keys ProntoDB holds afterwards
    broker_log: list[str] = field(default_factory=list)


def run_all(args: argparse.Namespace) -> Findings:
    findings = Findings()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-batch-")))
        servers: dict[str, Server] = {}
        for kind, start in ((PRONTODB, start_prontodb), (REDIS, start_redis)):
            directory = stack.enter_context(
                tempfile.TemporaryDirectory(prefix=f"bench-batch-{kind}-", dir=args.tmp_dir)
            )
            servers[kind] = stack.enter_context(running(start(Path(directory))))
        pronto, redis = servers[PRONTODB], servers[REDIS]
        (tmp / "batch.txt").write_bytes(batch_input(args.lines, args.value_size))
        (tmp / "pipe.resp").write_bytes(resp_input(args.lines, args.value_size))
        (tmp / "empty.txt").write_bytes(b"")
        regular = regular_install(REPO, tmp / "install")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRONTODB_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")  # bytecode kept, as installed
        env |= {"PRONTODB_URL": "unix://" + pronto.socket, "PRONTODB_USER": "bench"}
        env["PRONTODB_CURSOR"] = CURSOR
        oks = expect_oks(args.lines)
        batch_file, empty = tmp / "batch.txt", tmp / "empty.txt"
        commands = [
            Timed(
                "redis-cli --pipe",
                ["redis-cli", "-s", redis.socket, "--pipe"],
                tmp / "pipe.resp",
                expect_pipe(args.lines),
                redis,
            ),
            Timed(
                "prontodb batch (editable install)",
                [str(PRONTODB_SCRIPT), "batch"],
                batch_file,
                oks,
                pronto,
            ),
            Timed(
                "prontodb batch (regular install)", [str(regular), "batch"], batch_file, oks, pronto
            ),
            Timed(
                "prontodb batch, empty input (regular install)",
                [str(regular), "batch"],
                empty,
                nothing,
                pronto,
            ),
            Timed(
                "python -I -c pass (regular venv)",
                [str(regular.with_name("python")), "-I", "-c", "pass"],
                empty,
                nothing,
                pronto,
            ),
        ]
        out = tmp / "out.txt"
        for timed in commands:  # warm-up: bytecode written, caches filled
            run_once(timed, env, out)
            timed.seconds.clear()
        batch_lines = batch_file.read_text().splitlines()
        in_process(pronto, args.lines, args.value_size)  # warm-up
        for run in range(args.runs):
            # The in-process runs take their turn too: first in one round, last in the next.
            if run % 2 == 0:
                measure_in_process(findings, pronto, args)
            for timed in commands if run % 2 == 0 else commands[::-1]:
                if timed.name.startswith("prontodb batch (regular") and run == 0:
                    before = counters(pronto)
                    run_once(timed, env, out)
                    findings.writes = counters(pronto) - before
                else:
                    run_once(timed, env, out)
            if run % 2 == 1:
                measure_in_process(findings, pronto, args)
            findings.parsing.append(parse_seconds(batch_lines))
            print(
                f"  run {run + 1}: "
                + ", ".join(f"{t.name} {1000 * t.seconds[-1]:.0f} ms" for t in commands)
                + f", call_many {1000 * findings.call_many[-1]:.0f} ms, "
                f"parsing {1000 * findings.parsing[-1]:.0f} ms",
                flush=True,
            )
        with Client.connect("unix://" + pronto.socket, user="bench", cursor=CURSOR) as client:
            findings.stored = client.count("batch")
        for server in servers.values():
            server.check_running()
        findings.timed = {t.name: t for t in commands}
        findings.broker_log = pronto.log_text().splitlines()
    return findings


def command() -> str:
    return shlex.join(["python", "-m", "bench.batch", *sys.argv[1:]])


def report(findings: Findings, args: argparse.Namespace, info: dict[str, str]) -> str:
    timed = findings.timed
    redis = timed["redis-cli --pipe"].median()
    editable = timed["prontodb batch (editable install)"].median()
    regular = timed["prontodb batch (regular install)"].median()
    empty = timed["prontodb batch, empty input (regular install)"].median()
    python = timed["python -I -c pass (regular venv)"].median()
    call_many = median(findings.call_many)
    parsing = median(findings.parsing)
    lines = [
        f"## Batches: {args.lines:,} sets from `prontodb batch` vs `redis-cli --pipe` ({info['date']})",
        "",
        f"Machine: {info['arch']}, {info['cores']} cores ({info['cpu']}); disk {info['disk']}, "
        f"a 64-byte append plus fdatasync takes {info['fsync']} ms (median). "
        f"Versions: ProntoDB {info['prontodb']} (Python {info['python']}, trio {info['trio']}), "
        f"redis-server {info['redis']} (and its redis-cli). Load average before the run: "
        f"{info['load']}.",
        "",
        f"Command: `{command()}` (run by `./scripts/bench.sh batch`).",
        "",
        "Both servers acknowledge a write only after its fsync (ProntoDB `--fsync always`; Redis "
        "`appendonly yes`, `appendfsync always`). Each command reads a file on stdin: "
        f"`prontodb batch` {args.lines:,} lines `set batch.k<n> VALUE` ({args.value_size}-byte "
        "values), `redis-cli -s SOCK --pipe` the same SETs RESP-encoded; its answers go to a "
        "file and are checked (every line `OK`; `errors: 0, replies: N`). Wall time from just "
        "before the command is started to its exit, Python's start-up included; one warm-up "
        f"run each, then {args.runs} runs alternating between the commands; medians.",
        "",
        "| command | median ms | min ms | max ms | its CPU ms | server CPU ms "
        "| vs redis-cli --pipe |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {t.name} | {1000 * t.median():.0f} | {1000 * min(t.seconds):.0f} | "
        f"{1000 * max(t.seconds):.0f} | {1000 * median(t.client_cpu):.0f} | "
        f"{1000 * median(t.server_cpu):.0f} | {t.median() / redis:.1f}x |"
        for t in timed.values()
    ]
    lines.append(
        "| the same sets by `Client.call_many` in a running process (connect to last answer) "
        f"| {1000 * call_many:.0f} | {1000 * min(findings.call_many):.0f} | "
        f"{1000 * max(findings.call_many):.0f} | {1000 * median(findings.call_many_cpu):.0f} | "
        f"{1000 * median(findings.call_many_server_cpu):.0f} | {call_many / redis:.1f}x |"
    )

    def verdict(limit: float) -> str:
        return "**met**" if regular <= limit else "**not met**"

    batch_cpu = median(timed["prontodb batch (regular install)"].client_cpu)
    batch_server = median(timed["prontodb batch (regular install)"].server_cpu)
    lines += [
        "",
        f"Target from the batch issue: {args.lines:,} sets through `prontodb batch` well under a "
        f"second. Installed, as users run it: {regular:.3f} s, under {TARGET_SECONDS:g} s "
        f"{verdict(TARGET_SECONDS)}; well under it, read here as at most {WELL_UNDER:g} s, "
        f"{verdict(WELL_UNDER)} (from this checkout's editable install: {editable:.3f} s). "
        f"prontodb batch / redis-cli --pipe: {regular / redis:.1f}x installed, "
        f"{editable / redis:.1f}x editable.",
        "",
        f"What the installed {1000 * regular:.0f} ms is made of: {1000 * python:.0f} ms the "
        f"interpreter starting; {1000 * (empty - python):.0f} ms more to import the CLI, connect "
        f"and greet the broker with nothing to send (the empty batch, {1000 * empty:.0f} ms); "
        f"{1000 * (regular - empty):.0f} ms for the {args.lines:,} lines. Of those, batch's own "
        f"parser takes {1000 * parsing:.0f} ms over them ({1e6 * parsing / args.lines:.0f} µs a "
        "line, timed in this process), and the rest is sending them, the broker's work and "
        "fsyncs, and printing the answers; the same requests by `call_many` from a running "
        f"process take {1000 * call_many:.0f} ms (the run's in-process row). CPU: the batch "
        f"process spends {1000 * batch_cpu:.0f} ms, the broker {1000 * batch_server:.0f} ms "
        f"({1e6 * batch_server / args.lines:.0f} µs a set; redis-server "
        f"{1e6 * median(timed['redis-cli --pipe'].server_cpu) / args.lines:.0f} µs).",
    ]
    if findings.writes is not None:
        lines += [
            "",
            "ProntoDB's log over one batch run, from the `records_written` and `fsyncs` that "
            f"`status` reports: {findings.writes.records:,} records in "
            f"{findings.writes.fsyncs:,} fsyncs "
            f"({findings.writes.records / max(1, findings.writes.fsyncs):,.0f} records an fsync).",
        ]
    problems = [f"{t.name}: {p}" for t in timed.values() for p in t.problems]
    if findings.stored != args.lines:
        problems.append(f"ProntoDB holds {findings.stored:,} batch keys afterwards")
    lines += [
        "",
        "Checks: "
        + (
            "; ".join(problems)
            if problems
            else "every run exited 0 and answered every line (`OK` each; redis-cli: "
            f"`errors: 0, replies: {args.lines}`); ProntoDB holds the {args.lines:,} keys"
        )
        + ".",
    ]
    if findings.broker_log:
        lines += [
            "",
            f"The broker logged {len(findings.broker_log)} warning or error lines; the first: "
            f"`{findings.broker_log[0]}`",
        ]
    if info["tmpfs"] == "yes":
        lines += ["", "**Warning: the temporary directory was on tmpfs; fsync cost nothing.**"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000, help="sets per command")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command")
    parser.add_argument("--value-size", type=int, default=16)
    parser.add_argument("--tmp-dir", default="/var/tmp", help="where the servers' files go")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()
    info = machine_info(args.tmp_dir)
    run_and_report(
        "batch", info, args.tmp_dir, args.no_report, lambda: report(run_all(args), args, info)
    )


if __name__ == "__main__":
    main()
