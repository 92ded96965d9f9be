"""How long one ``prontodb`` call takes, start to exit, against the bare interpreter's start.

    python -m bench.cli_startup [--runs 100] [--baseline SRC] [--no-report]

Scripts run the CLI hundreds of times in shell loops, so the time of one call is what a script
feels. The target (issue 23) is at most 1.5x the same venv's ``python -I -c pass`` for every common
command. Timed here: ``get``, ``set``, ``incr``, ``keys``, ``claim`` and ``extend`` (a claim's
follow-up, the shape of ``ack`` and ``release``, and repeatable with one token), each against a
broker on a private Unix socket, from a regular install of the sources of the checkout this file is
in (``--baseline SRC`` adds a second install built from another checkout's sources, say the commit
before a change, timed in the same rounds), with ``redis-cli get`` as a yardstick.

The commands run in turn, one of each per round (A B C ... A B C ...), so a machine whose speed
drifts moves them all alike; the figures are medians of wall time and of CPU time (user + sys, the
kernel's own accounting of the child), whose ratios to the bare interpreter are the ones to read on
a shared machine. Every run keeps bytecode in a private ``PYTHONPYCACHEPREFIX``, as an installed
package keeps its ``.pyc`` files, and the regular install leaves out setuptools' editable finder,
which every interpreter of an editable venv imports at start-up (a development-only cost).
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from .report import machine, update_section

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = Path(sys.executable)
START_TIMEOUT = 30.0
TARGET_RATIO = 1.5
WARMUP_ROUNDS = 5


def wait_for_line(stream: int, needle: bytes, timeout: float) -> bytes:
    """Read ``stream`` until ``needle`` (lower case) arrives, in any case; everything read so far."""
    deadline = time.monotonic() + timeout
    seen = b""
    while needle not in seen.lower():
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([stream], [], [], max(remaining, 0))
        chunk = os.read(stream, 65536) if ready else b""
        if not chunk:
            raise RuntimeError(f"gave up waiting for {needle!r}; output so far:\n{seen.decode()}")
        seen += chunk
    return seen


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A redis-server on a private Unix socket, no TCP port, no persistence."""
    sock = tmp / "redis.sock"
    process = subprocess.Popen(
        [
            *("redis-server", "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    # "Ready to accept connections tcp" or "... ready to accept connections at SOCK", by version.
    # The pipe stays open (redis logs a few lines more, well within its buffer) until stop().
    wait_for_line(process.stdout.fileno(), b"ready to accept connections", START_TIMEOUT)
    return process, sock


def start_broker(
    python: Path, tmp: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], Path]:
    """``prontodb serve`` (run by ``python``) on a private data directory; returns once it
    listens."""
    sock = tmp / "pronto.sock"
    read_fd, write_fd = os.pipe()
    log = (tmp / "broker.log").open("ab")
    process = subprocess.Popen(
        [
            *(str(python), "-m", "prontodb.clients.cli", "serve"),
            *("--data-dir", str(tmp / "data"), "--socket", str(sock), "--ready-fd", str(write_fd)),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        pass_fds=(write_fd,),
        env=env,
    )
    log.close()
    os.close(write_fd)
    try:
        wait_for_line(read_fd, b"\n", START_TIMEOUT)
    finally:
        os.close(read_fd)
    return process, sock


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid, SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def regular_install(src: Path, tmp: Path) -> Path:
    """A venv in ``tmp`` holding the sources of the checkout ``src`` laid out as a wheel installs
    them (no editable finder).

    Returns its ``prontodb`` console script. The dependencies come from this venv's
    site-packages through a ``.pth`` line (which adds a path and imports nothing).
    """
    site = tmp / "site" / "prontodb"
    site.mkdir(parents=True)
    for part in ("protocol", "broker", "clients"):
        (site / part).symlink_to(src.resolve() / part)
    venv = tmp / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    Path(purelib, "prontodb-bench.pth").write_text(f"{tmp / 'site'}\n{deps}\n")
    script = venv / "bin" / "prontodb"
    # The same text pip writes for the console script (it imports nothing but sys itself).
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\n"
        "import sys\n"
        "from prontodb.clients.cli import main\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = sys.argv[0].removesuffix('.exe')\n"
        "    sys.exit(main())\n"
    )
    script.chmod(0o755)
    return script


class Timings:
    """Each command's runs: wall and CPU (user + sys) seconds."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def median_ms(self) -> tuple[float, float]:
        return statistics.median(self.wall) * 1000, statistics.median(self.cpu) * 1000


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """One run of ``argv``, output thrown away: wall seconds and the child's user + sys seconds."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    assert process.stderr is not None
    errors = process.stderr.read()
    process.stderr.close()
    if status != 0:
        raise RuntimeError(f"{argv} exited with status {status}: {errors.decode()}")
    return wall, usage.ru_utime + usage.ru_stime


def interleaved(
    commands: dict[str, list[str]], env: dict[str, str], runs: int
) -> dict[str, Timings]:
    """Run every command once per round, in turn, ``runs`` rounds after a few warm-up ones."""
    timings = {name: Timings() for name in commands}
    for round_number in range(WARMUP_ROUNDS + runs):
        for name, argv in commands.items():
            wall, cpu = run_once(argv, env)
            if round_number >= WARMUP_ROUNDS:
                timings[name].wall.append(wall)
                timings[name].cpu.append(cpu)
    return timings


# Modules whose import time the report lists: what `prontodb get` pays for, in import order.
PROFILED = (
    "prontodb.clients.cli",
    "prontodb.protocol",
    "msgpack",
    "datetime",
    "collections",
    "enum",
    "prontodb.protocol._errors",
    "prontodb.protocol._connection",
    "prontodb.clients._cli_fast",
    "prontodb.clients._cli_wire",
    "_socket",
    "prontodb.clients._types",
    "prontodb.clients._sync.client",
    "prontodb.clients._sync_backend",
    "threading",
    "getpass",
)


def import_times(
    scripts: dict[str, Path], env: dict[str, str], rounds: int = 15
) -> dict[str, dict[str, float]]:
    """Median cumulative import time (ms) of each PROFILED module during ``SCRIPT get k``, by
    install; the installs take turns, as the timed commands do."""
    samples: dict[str, dict[str, list[float]]] = {
        label: {name: [] for name in PROFILED} for label in scripts
    }
    for _ in range(rounds):
        for label, script in scripts.items():
            out = subprocess.run(
                [str(script.with_name("python")), "-X", "importtime", str(script), "get", "k"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            for line in out.stderr.splitlines():
                fields = line.removeprefix("import time:").split("|")
                name = fields[-1].strip() if len(fields) == 3 else ""
                if name in samples[label] and fields[1].strip().isdigit():
                    samples[label][name].append(int(fields[1]) / 1000)
    return {
        label: {name: statistics.median(v) for name, v in found.items() if v}
        for label, found in samples.items()
    }


def check_output(argv: list[str], env: dict[str, str], expected: str | None) -> str:
    """Run ``argv``; what it printed, which must be ``expected`` (None: anything)."""
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    if out.returncode != 0 or expected not in (None, out.stdout):
        raise RuntimeError(f"{argv} printed {out.stdout!r} (status {out.returncode}): {out.stderr}")
    return out.stdout


def cli_commands(script: Path, env: dict[str, str], queue: str) -> dict[str, list[str]]:
    """The timed calls of one install: its own queue item for ``extend`` (claimed once, here)."""
    claimed = check_output([str(script), "--json", "claim", queue, "--lease", "3600"], env, None)
    token = claimed.split('"token": ')[1].split(",")[0]
    key = claimed.split('"key": "')[1].split('"')[0]
    p = str(script)
    return {
        "get": [p, "get", "k"],
        "set": [p, "set", "counter.name", "hello"],
        "incr": [p, "incr", "counter.n"],
        "keys": [p, "keys", "counter"],
        "claim": [p, "claim", queue],
        "extend": [p, "extend", key, "--token", token, "--lease", "3600"],
    }


def fill_queue(script: Path, env: dict[str, str], queue: str, count: int) -> None:
    """``count`` items under ``queue``, in one ``mset`` per hundred."""
    for first in range(0, count, 100):
        pairs = [f"{queue}.{i:06d}=x" for i in range(first, min(first + 100, count))]
        argv = [str(script), "mset"]
        for pair in pairs:
            argv += pair.split("=")
        check_output(argv, env, "")


def ratio(ms: float, floor: float) -> str:
    verdict = "met" if ms <= TARGET_RATIO * floor else "not met"
    return f"{ms / floor:.2f}x ({verdict})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="timed rounds")
    parser.add_argument(
        "--baseline", type=Path, help="also time a regular install of this checkout's sources"
    )
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            sys.exit(f"bench.cli_startup needs {tool} on PATH (Debian: apt-get install {tool})")

    tmp = Path(tempfile.mkdtemp(prefix="pdbb", dir="/tmp"))  # short: Unix socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRONTODB_", "PYTHON"))}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    processes: list[subprocess.Popen[bytes]] = []
    installs = {"this checkout": regular_install(REPO, tmp / "this")}
    if args.baseline is not None:
        installs["baseline"] = regular_install(args.baseline, tmp / "baseline")
    items = (WARMUP_ROUNDS + args.runs) + 10
    try:
        redis, redis_sock = start_redis(tmp)
        processes.append(redis)
        this_python = installs["this checkout"].with_name("python")
        broker, broker_sock = start_broker(this_python, tmp, env)
        processes.append(broker)
        # The default route of the CLI: no --url, data directory and socket from the environment.
        env["PRONTODB_DATA_DIR"] = str(tmp / "data")
        env["PRONTODB_SOCKET"] = str(broker_sock)
        redis_get = ["redis-cli", "-s", str(redis_sock), "get", "k"]
        check_output(["redis-cli", "-s", str(redis_sock), "set", "k", "hello"], env, "OK\n")
        check_output([str(installs["this checkout"]), "set", "k", "hello"], env, "")
        commands: dict[str, list[str]] = {
            "python -I -c pass": [str(this_python), "-I", "-c", "pass"],
            "redis-cli get": redis_get,
        }
        for label, script in installs.items():
            check_output([str(script), "get", "k"], env, "hello\n")
            queue = f"jobs.{label.replace(' ', '_')}"
            fill_queue(script, env, queue, items)
            for name, argv in cli_commands(script, env, queue).items():
                commands[f"{name} ({label})"] = argv
        timings = interleaved(commands, env, args.runs)
        imports = import_times(installs, env)
    finally:
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, timings, imports)


def report(
    args: argparse.Namespace, timings: dict[str, Timings], imports: dict[str, dict[str, float]]
) -> None:
    floor_wall, floor_cpu = timings["python -I -c pass"].median_ms()
    labels = list(imports)
    rows = []
    for command in ("get", "set", "incr", "keys", "claim", "extend"):
        cells = []
        for label in reversed(labels):  # the baseline first: before, then after
            wall, cpu = timings[f"{command} ({label})"].median_ms()
            cells.append(
                f"{wall:.1f} / {cpu:.1f} | {ratio(wall, floor_wall)} / {ratio(cpu, floor_cpu)}"
            )
        rows.append(f"| `prontodb {command}` | " + " | ".join(cells) + " |")
    for name in ("python -I -c pass", "redis-cli get"):
        wall, cpu = timings[name].median_ms()
        filler = " | " * (2 * len(labels) - 2)
        rows.append(f"| `{name}` | {wall:.1f} / {cpu:.1f} | {wall / floor_wall:.2f}x{filler} |")
    heads = " | ".join(f"{label}: ms (wall / cpu) | {label}: ratio" for label in reversed(labels))
    import_names = [name for name in PROFILED if any(name in found for found in imports.values())]
    import_rows = [
        f"| `{name}` | "
        + " | ".join(
            f"{imports[label][name]:.1f}" if name in imports[label] else "not imported"
            for label in reversed(labels)
        )
        + " |"
        for name in import_names
    ]
    body = "\n".join(
        [
            f"## CLI start-up: one `prontodb` call vs the bare interpreter ({machine()})",
            "",
            f"Medians of {args.runs} rounds, every command once per round in turn; wall time and "
            "CPU time (user + sys) in ms, and each one's ratio to the same venv's "
            f"`python -I -c pass` (target: at most {TARGET_RATIO}x, every common command). A "
            "regular install (no editable finder), a broker on a private Unix socket, key `k` = "
            "`hello`; `claim` takes an item of a queue filled beforehand, `extend` renews one "
            "claimed item's lease (the shape of `ack` and `release`).",
            "",
            "| command | " + heads + " |",
            "| --- | " + " | ".join("---" for _ in range(2 * len(labels))) + " |",
            *rows,
            "",
            "Cumulative import time of `prontodb get` (`python -X importtime`, median of 15; "
            "the rows nest: a module is charged for everything it imports first):",
            "",
            "| module | " + " | ".join(f"{label}: ms" for label in reversed(labels)) + " |",
            "| --- | " + " | ".join("---" for _ in labels) + " |",
            *import_rows,
        ]
    )
    print(body)
    if not args.no_report:
        update_section("cli_startup", body)
        print("recorded in docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
