"""Durable set and get throughput: ProntoDB against redis-server, with 1 and with 50 clients.

    python -m bench.throughput [--seconds 5] [--warmup 1] [--no-report]

Both servers run side by side, each on a temporary directory on a real disk (under /var/tmp) and a
Unix socket, with an fsync before every write is acknowledged (ProntoDB ``--fsync always``; Redis
``appendonly yes``, ``appendfsync always``); only one is loaded at a time, the two servers' runs of
each case back to back, and both are stopped by pid at the end. The load comes from
separate load-generator processes (bench/loadgen.py), the same harness for both servers: each
client sends one request and waits for its answer before the next, on random keys out of 1,000,
16-byte values. ProntoDB's clients are the real ``AsyncClient`` under trio; Redis's a minimal RESP
client over the same trio sockets. ``redis-benchmark`` (C) also runs once, for reference.

The targets (issue 4, for later tuning): durable set with 50 clients >= 0.5x Redis, get with
50 clients >= 0.4x Redis.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trio

from prontodb.clients import Client

from .loadgen import CURSOR, PRONTODB, REDIS, Job, Outcome, Window, fill, run_worker
from .report import run_and_report
from .servers import Server, running, start_prontodb, start_redis

NAMES = {PRONTODB: "ProntoDB", REDIS: "Redis"}
WORKER_TIMEOUT = 60.0  # seconds a load generator may take to connect or to report
TARGETS = (("set", 0.5), ("get", 0.4))  # op at the many-clients level, least ProntoDB/Redis ratio


@dataclass(frozen=True)
class Sample:
    """A server's counters at one instant; ``records``/``fsyncs`` only where the server tells."""

    cpu: float
    records: int | None = None
    fsyncs: int | None = None


@dataclass
class CaseResult:
    """One server, one op, one number of clients."""

    server: str
    op: str
    clients: int
    seconds: float
    ops: int = 0
    latencies: list[float] = field(default_factory=list)  # sorted, seconds
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    records: int | None = None
    fsyncs: int | None = None

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return 1000 * self.latencies[min(len(self.latencies) - 1, int(q * len(self.latencies)))]

    def cpu_us_per_op(self, seconds: float) -> float:
        return 1e6 * seconds / self.ops if self.ops else float("nan")

    @property
    def writes_per_fsync(self) -> float | None:
        if self.records is None or not self.fsyncs:
            return None
        return self.records / self.fsyncs


# -- running one case ----------------------------------------------------------------------


def expect(pipe: Connection, kind: str, timeout: float) -> Any:
    """The payload of the next message from a load generator, which must be ``kind``."""
    if not pipe.poll(timeout):
        raise RuntimeError(f"a load generator sent no {kind!r} within {timeout:g} s")
    try:
        got, payload = pipe.recv()
    except EOFError:
        raise RuntimeError(f"a load generator exited before sending {kind!r}") from None
    if got == "failed":
        raise RuntimeError(f"a load generator failed:\n{payload}")
    assert got == kind, (got, kind)
    return payload


def _sleep_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.monotonic()))


def run_case(
    server: Server,
    kind: str,
    op: str,
    clients: int,
    args: argparse.Namespace,
    sample: Callable[[], Sample],
) -> CaseResult:
    """Split ``clients`` over the load generators, run the window, gather what they measured."""
    processes = min(args.processes, clients)
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no trio state forked
    workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    try:
        for index, share in enumerate(shares):
            parent, child = context.Pipe()
            job = Job(
                kind, server.socket, op, share, args.keyspace, args.value_size, seed=index + 1
            )
            process = context.Process(target=run_worker, args=(job, child), daemon=True)
            process.start()
            child.close()
            workers.append((process, parent))
        for _, pipe in workers:
            expect(pipe, "ready", WORKER_TIMEOUT)
        # Every client is connected: connecting is not part of what is measured.
        start = time.monotonic() + 0.05
        window = Window(start, start + args.warmup, start + args.warmup + args.seconds)
        for _, pipe in workers:
            pipe.send(window)
        _sleep_until(window.measure_from)
        before = sample()
        _sleep_until(window.measure_to)
        after = sample()
        outcomes: list[Outcome] = [
            expect(pipe, "done", WORKER_TIMEOUT + args.seconds) for _, pipe in workers
        ]
    finally:
        for worker, pipe in workers:
            pipe.close()
            worker.join(10)
            if worker.is_alive():
                worker.kill()  # by this Process object's own pid
                worker.join()
    server.check_running()
    result = CaseResult(kind, op, clients, args.seconds, server_cpu=after.cpu - before.cpu)
    for outcome in outcomes:
        result.ops += outcome.ops
        result.latencies += outcome.latencies
        result.errors += outcome.errors
        result.error_samples += outcome.error_samples
        result.client_cpu += outcome.cpu_seconds
    result.latencies.sort()
    if before.records is not None and after.records is not None:
        result.records = after.records - before.records
    if before.fsyncs is not None and after.fsyncs is not None:
        result.fsyncs = after.fsyncs - before.fsyncs
    return result


# -- the servers ---------------------------------------------------------------------------


@contextmanager
def sampler(kind: str, server: Server) -> Iterator[Callable[[], Sample]]:
    """Samples of the server's CPU time, and for ProntoDB its group-commit counters."""
    if kind != PRONTODB:  # Redis's INFO has no fsync count to compare with
        yield lambda: Sample(server.cpu_seconds())
        return
    with Client.connect("unix://" + server.socket, user="bench", cursor=CURSOR) as client:

        def sample() -> Sample:
            for db in client.status()["databases"]:
                if db["name"] == CURSOR:
                    return Sample(server.cpu_seconds(), db["records_written"], db["fsyncs"])
            return Sample(server.cpu_seconds())

        yield sample


@dataclass
class Findings:
    """Everything one run measured."""

    cases: dict[str, list[CaseResult]] = field(default_factory=lambda: {PRONTODB: [], REDIS: []})
    redis_benchmark: dict[str, Any] | None = None
    broker_log: list[str] = field(default_factory=list)  # its warnings and errors


def run_all(args: argparse.Namespace, cases: list[tuple[str, int]]) -> Findings:
    """Start both servers on fresh directories, fill both keyspaces, run every case, stop them.

    The two servers' runs of one case follow each other (only one is loaded at a time), so a
    change in background load on the machine skews a ratio less than if one server ran first.
    """
    findings = Findings()
    with ExitStack() as stack:
        servers: dict[str, tuple[Server, Callable[[], Sample]]] = {}
        for kind, start in ((PRONTODB, start_prontodb), (REDIS, start_redis)):
            tmp = stack.enter_context(
                tempfile.TemporaryDirectory(prefix=f"bench-{kind}-", dir=args.tmp_dir)
            )
            server = stack.enter_context(running(start(Path(tmp))))
            trio.run(fill, kind, server.socket, args.keyspace, args.value_size)
            servers[kind] = server, stack.enter_context(sampler(kind, server))
        for op, clients in cases:
            for kind, (server, sample) in servers.items():
                result = run_case(server, kind, op, clients, args, sample)
                print(_progress(result), flush=True)
                findings.cases[kind].append(result)
        if not args.no_redis_benchmark:
            findings.redis_benchmark = redis_benchmark(servers[REDIS][0], args)
        findings.broker_log = servers[PRONTODB][0].log_text().splitlines()
    return findings


def redis_benchmark(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """redis-benchmark (C, pipelining off) against the same server, for reference."""
    requests = args.redis_benchmark_requests or int(20_000 * args.seconds)
    argv = [
        "redis-benchmark",
        "-s",
        server.socket,
        "-c",
        str(args.clients),
        "-n",
        str(requests),
        "-t",
        "set,get",
        "-d",
        str(args.value_size),
        "-r",
        str(args.keyspace),
        "--csv",
    ]
    command = shlex.join(["redis-benchmark", "-s", "SOCK", *argv[3:]])
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        # A reference figure only: losing it must not lose the run's own measurements.
        print(f"warning: redis-benchmark failed: {exc}", file=sys.stderr)
        return {"command": command, "rows": {}, "error": str(exc)}
    rows = {row["test"]: row for row in csv.DictReader(done.stdout.splitlines())}
    return {"command": command, "rows": rows}


# -- the report ----------------------------------------------------------------------------


def _progress(result: CaseResult) -> str:
    return (
        f"  {NAMES[result.server]:8} {result.op} x{result.clients:<3} {result.rate:10,.0f} ops/s"
        f"  p50 {result.percentile_ms(0.5):7.3f} ms  p99 {result.percentile_ms(0.99):7.3f} ms"
        f"  errors {result.errors}"
    )


def command() -> str:
    """This run's command line, as someone would type it to repeat it."""
    return shlex.join(["python", "-m", "bench.throughput", *sys.argv[1:]])


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "?"
    return out.strip().splitlines()[0] if out.strip() else "?"


def machine_info(tmp_dir: str) -> dict[str, str]:
    """Where the figures came from: cores, CPU model, the disk under the temporary directory."""
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    df = _first_line(["sh", "-c", f"df -T -P {shlex.quote(tmp_dir)} | tail -n 1"]).split()
    device, fstype = (df[0], df[1]) if len(df) > 1 else ("?", "?")
    rotational = "?"
    block = Path("/sys/class/block") / Path(device).name
    if block.exists():
        if (block / "partition").exists():
            block = block.resolve().parent
        flag = block / "queue" / "rotational"
        if flag.exists():
            rotational = "rotational" if flag.read_text().strip() == "1" else "non-rotational"
    if rotational == "rotational" and Path(device).name.startswith("vd"):
        rotational = "virtio, medium unknown"  # virtio disks report rotational whatever backs them
    redis = _first_line(["redis-server", "--version"])
    redis_version = next((p[2:] for p in redis.split() if p.startswith("v=")), redis)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cores": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "arch": platform.machine(),
        "disk": f"{device} ({fstype}, {rotational}) under {tmp_dir}",
        "fsync": f"{fsync_ms(tmp_dir):.2f}",
        "tmpfs": "yes" if fstype == "tmpfs" else "no",
        "python": sys.version.split()[0],
        "prontodb": version("prontodb"),
        "trio": version("trio"),
        "redis": redis_version,
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def fsync_ms(directory: str, rounds: int = 200) -> float:
    """Median milliseconds of a small append plus fdatasync in ``directory``: what one durable
    write costs the disk, whoever makes it."""
    times = []
    with tempfile.NamedTemporaryFile(dir=directory, prefix="fsync-probe-") as probe:
        for _ in range(rounds):
            began = time.perf_counter()
            probe.write(b"x" * 64)
            probe.flush()
            os.fdatasync(probe.fileno())
            times.append(time.perf_counter() - began)
    return 1000 * sorted(times)[rounds // 2]


def _ms(value: float) -> str:
    return f"{value:.3f}"


def report(findings: Findings, args: argparse.Namespace, info: dict[str, str]) -> str:
    """The section for docs/BENCHMARKS.md (also printed)."""
    many = args.clients
    pronto_cases = findings.cases[PRONTODB]
    by_case = {(r.op, r.clients): r for r in findings.cases[REDIS]}
    lines = [
        f"## Durable set/get throughput, ProntoDB vs Redis ({info['date']})",
        "",
        f"Machine: {info['arch']}, {info['cores']} cores ({info['cpu']}); disk {info['disk']}, "
        f"a 64-byte append plus fdatasync takes {info['fsync']} ms (median). "
        f"Versions: ProntoDB {info['prontodb']} (Python {info['python']}, trio {info['trio']}), "
        f"redis-server {info['redis']}. Load average before the run: {info['load']} (other "
        "work on the machine skews the figures; the two servers' runs of each case are back to "
        "back to keep the ratios fair).",
        "",
        f"Command: `{command()}` (run by `./scripts/bench.sh throughput`).",
        "",
        f"Each client sends one request and waits for its answer (no pipelining); keys are drawn "
        f"at random from {args.keyspace:,} (filled beforehand), values are {args.value_size} bytes; "
        f"{args.warmup:g} s warm-up, then {args.seconds:g} s measured. Both servers acknowledge a "
        "write only after its fsync: ProntoDB `--fsync always`, Redis `appendonly yes`, "
        "`appendfsync always`. Latency is one request's round trip as the client sees it.",
        "",
        "| case | ProntoDB ops/s | p50 ms | p99 ms | Redis ops/s | p50 ms | p99 ms | ProntoDB/Redis |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ratios: dict[tuple[str, int], float] = {}
    for p in pronto_cases:
        r = by_case[(p.op, p.clients)]
        ratio = p.rate / r.rate if r.rate else float("nan")
        ratios[(p.op, p.clients)] = ratio
        noun = "client" if p.clients == 1 else "clients"
        lines.append(
            f"| {p.op}, {p.clients} {noun} | {p.rate:,.0f} | {_ms(p.percentile_ms(0.5))} | "
            f"{_ms(p.percentile_ms(0.99))} | {r.rate:,.0f} | {_ms(r.percentile_ms(0.5))} | "
            f"{_ms(r.percentile_ms(0.99))} | {ratio:.2f}x |"
        )
    lines += ["", "Targets from issue 4, for later tuning:", ""]
    for op, least in TARGETS:
        ratio = ratios.get((op, many), float("nan"))
        verdict = "met" if ratio >= least else "not met"
        lines.append(
            f"- durable {op}, {many} clients >= {least}x Redis: {ratio:.2f}x, **{verdict}**"
        )
    group = [
        f"{p.clients} {'client' if p.clients == 1 else 'clients'}: {p.writes_per_fsync:.1f}"
        for p in pronto_cases
        if p.op == "set" and p.writes_per_fsync is not None
    ]
    lines += [
        "",
        "Group commit (ProntoDB, set): writes per fsync, from the `records_written` and `fsyncs` "
        "that `status` reports for the database, over the measured window: "
        + ("; ".join(group) if group else "not available (status gave no counters)")
        + ".",
    ]
    bench = findings.redis_benchmark
    if bench is not None:
        parts = []
        for test in ("SET", "GET"):
            row = bench["rows"].get(test)
            if row:
                parts.append(
                    f"{test} {float(row['rps']):,.0f} ops/s (p50 {row['p50_latency_ms']} ms, "
                    f"p99 {row['p99_latency_ms']} ms)"
                )
        if not parts:
            parts.append(f"it failed ({bench.get('error', 'no figures in its output')})")
        lines += [
            "",
            f"For reference, redis-benchmark (a C client, so this is what Redis does with a client "
            f"that costs almost nothing; not used for the ratios): {'; '.join(parts)}. "
            f"Command: `{bench['command']}`.",
        ]
    lines += [
        "",
        "Where the time goes: CPU time of the server process (all its threads) and of all load "
        "generators together, per op and over the measured window (the broker runs Python on one "
        "core at a time, so near 1.00 cores busy it is CPU-bound):",
        "",
        "| case | server | max ms | errors | server CPU µs/op | server cores busy "
        "| client CPU µs/op |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in pronto_cases:
        for result in (p, by_case[(p.op, p.clients)]):
            lines.append(
                f"| {result.op}, {result.clients} | {NAMES[result.server]} | "
                f"{_ms(result.percentile_ms(1.0))} | {result.errors} | "
                f"{result.cpu_us_per_op(result.server_cpu):.0f} | "
                f"{result.server_cpu / result.seconds:.2f} | "
                f"{result.cpu_us_per_op(result.client_cpu):.0f} |"
            )
    samples = [s for results in findings.cases.values() for r in results for s in r.error_samples]
    if samples:
        lines += ["", "Errors seen: " + "; ".join(sorted(set(samples))[:5])]
    if findings.broker_log:
        lines += [
            "",
            f"The broker logged {len(findings.broker_log)} warning or error lines; the first: "
            f"`{findings.broker_log[0]}`",
        ]
    lines += [
        "",
        f"How to read it: the load generators ({args.processes} processes under trio, splitting "
        f"the clients) share the machine's {info['cores']} cores with the server, so a server "
        "that needs less CPU per op leaves more to its clients; the client CPU column shows "
        "what each side's Python client costs (ProntoDB's is the full `AsyncClient` with msgpack "
        "framing, Redis's a few lines of RESP). Both servers group their fsyncs: Redis fsyncs once "
        "per event-loop turn, ProntoDB once per turn of its event loop (one batch of every write that turn produced). The get cases run "
        "with no writes going on.",
    ]
    if info["tmpfs"] == "yes":
        lines += ["", "**Warning: the temporary directory was on tmpfs; fsync cost nothing.**"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per case")
    parser.add_argument("--clients", type=int, default=50, help="the many-clients level")
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--keyspace", type=int, default=1000)
    parser.add_argument("--value-size", type=int, default=16)
    parser.add_argument("--tmp-dir", default="/var/tmp", help="where the servers' files go")
    parser.add_argument("--redis-benchmark-requests", type=int, default=0, help="0: 20,000/s")
    parser.add_argument("--no-redis-benchmark", action="store_true")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()
    info = machine_info(args.tmp_dir)
    cases = [("set", 1), ("set", args.clients), ("get", 1), ("get", args.clients)]
    run_and_report(
        "throughput",
        info,
        args.tmp_dir,
        args.no_report,
        lambda: report(run_all(args, cases), args, info),
    )


if __name__ == "__main__":
    main()
