"""How long one ``prontodb get KEY`` takes, start to exit, against ``redis-cli get KEY``.

    python -m bench.cli_startup [--runs 200] [--no-report]

The seed runs the CLI hundreds of times in shell loops, so its wall time per call is what a script
feels. hyperfine times four commands on one machine in one run: ``redis-cli -s SOCK get k`` (a
redis-server on a private Unix socket), ``prontodb get k`` from this checkout's venv (an editable
install), ``prontodb get k`` from a regular install of the same sources, and bare interpreters as
the floor. The target (issue "Trunk, part 2") is at most 2.5x redis-cli's median.

Two costs are set apart because users do not pay them: setuptools' editable finder, which every
interpreter of an editable venv imports at start-up (the "regular install" rows leave it out), and
compiling sources when ``PYTHONDONTWRITEBYTECODE`` is set (every run here keeps bytecode in a
private ``PYTHONPYCACHEPREFIX``, as an installed package keeps its ``.pyc`` files).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from .report import machine, update_section

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = Path(sys.executable)
PRONTODB = VENV_PYTHON.with_name("prontodb")
START_TIMEOUT = 30.0
TARGET_RATIO = 2.5


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


def start_broker(tmp: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    """``prontodb serve`` on a private data directory; returns once it listens."""
    sock = tmp / "pronto.sock"
    read_fd, write_fd = os.pipe()
    log = (tmp / "broker.log").open("ab")
    process = subprocess.Popen(
        [
            *(str(VENV_PYTHON), "-m", "prontodb.clients.cli", "serve"),
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


def regular_install(tmp: Path) -> Path:
    """A venv holding the sources laid out as a wheel installs them (no editable finder).

    Returns its ``prontodb`` console script. The dependencies come from this venv's
    site-packages through a ``.pth`` line (which adds a path and imports nothing).
    """
    site = tmp / "site" / "prontodb"
    site.mkdir(parents=True)
    for part in ("protocol", "broker", "clients"):
        (site / part).symlink_to(REPO / part)
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
    # The same text pip writes for the console script.
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


def hyperfine(
    commands: dict[str, list[str]], env: dict[str, str], runs: int, out: Path
) -> dict[str, float]:
    """Median seconds of each command, by name."""
    args = ["hyperfine", "-N", "--warmup", "20", "--runs", str(runs), "--export-json", str(out)]
    for name, argv in commands.items():
        args += ["--command-name", name, subprocess.list2cmdline(argv)]
    subprocess.run(args, check=True, env=env)
    results = json.loads(out.read_text())["results"]
    return {result["command"]: float(result["median"]) for result in results}


# Modules whose import time the report lists: what `prontodb get` pays for, in import order.
PROFILED = (
    "prontodb.clients.cli",
    "typing",
    "dataclasses",
    "msgpack",
    "prontodb.protocol",
    "prontodb.clients._cli_fast",
    "prontodb.clients._sync.client",
    "socket",
    "hashlib",
    "getpass",
)


def import_times(script: Path, env: dict[str, str], rounds: int = 9) -> dict[str, float]:
    """Median cumulative import time (ms) of each PROFILED module during ``script get k``."""
    samples: dict[str, list[float]] = {name: [] for name in PROFILED}
    for _ in range(rounds):
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
            if name in samples and fields[1].strip().isdigit():
                samples[name].append(int(fields[1]) / 1000)
    return {name: sorted(v)[len(v) // 2] for name, v in samples.items() if v}


def check_output(argv: list[str], env: dict[str, str], expected: str) -> None:
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    if out.returncode != 0 or out.stdout != expected:
        raise RuntimeError(f"{argv} printed {out.stdout!r} (status {out.returncode}): {out.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per command")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()
    for tool in ("hyperfine", "redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            sys.exit(f"bench.cli_startup needs {tool} on PATH (Debian: apt-get install {tool})")

    tmp = Path(tempfile.mkdtemp(prefix="pdbb", dir="/tmp"))  # short: Unix socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRONTODB_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        redis, redis_sock = start_redis(tmp)
        processes.append(redis)
        broker, broker_sock = start_broker(tmp, env)
        processes.append(broker)
        # The default route of the CLI: no --url, data directory and socket from the environment.
        env["PRONTODB_DATA_DIR"] = str(tmp / "data")
        env["PRONTODB_SOCKET"] = str(broker_sock)
        regular = regular_install(tmp)
        regular_python = regular.with_name("python")

        redis_get = ["redis-cli", "-s", str(redis_sock), "get", "k"]
        check_output(["redis-cli", "-s", str(redis_sock), "set", "k", "hello"], env, "OK\n")
        check_output(redis_get, env, "hello\n")
        check_output([str(PRONTODB), "set", "k", "hello"], env, "")
        for script in (PRONTODB, regular):
            check_output([str(script), "get", "k"], env, "hello\n")

        commands = {
            "redis-cli get": redis_get,
            "prontodb get (editable install)": [str(PRONTODB), "get", "k"],
            "prontodb get (regular install)": [str(regular), "get", "k"],
            "python -I -c pass (editable venv)": [str(VENV_PYTHON), "-I", "-c", "pass"],
            "python -I -c pass (regular venv)": [str(regular_python), "-I", "-c", "pass"],
            "python -I -S -c pass (bare interpreter)": [
                str(regular_python),
                "-I",
                "-S",
                "-c",
                "pass",
            ],
        }
        medians = hyperfine(commands, env, args.runs, tmp / "hyperfine.json")
        imports = import_times(regular, env)
    finally:
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(tmp, ignore_errors=True)

    redis_ms = medians["redis-cli get"] * 1000
    rows = []
    for name, seconds in medians.items():
        ms = seconds * 1000
        rows.append(f"| {name} | {ms:.1f} | {ms / redis_ms:.1f}x |")
    editable = medians["prontodb get (editable install)"] * 1000
    installed = medians["prontodb get (regular install)"] * 1000
    floor = medians["python -I -c pass (regular venv)"] * 1000
    summary = (
        f"prontodb get / redis-cli get: {installed / redis_ms:.1f}x installed, "
        f"{editable / redis_ms:.1f}x editable (target {TARGET_RATIO}x). "
        f"Of the installed {installed:.1f} ms, {floor:.1f} ms is the interpreter starting."
    )
    import_rows = [f"| `{name}` | {ms:.1f} |" for name, ms in imports.items()]
    print()
    print("\n".join(import_rows))
    print(summary)
    body = "\n".join(
        [
            f"## CLI start-up: `prontodb get` vs `redis-cli get` ({machine()})",
            "",
            f"Median wall time of one call, hyperfine, {args.runs} runs each, key `k` = `hello`, "
            "both over a Unix socket.",
            "",
            "| command | ms | vs redis-cli |",
            "| --- | --- | --- |",
            *rows,
            "",
            summary,
            "",
            "The regular install has the sources laid out as a wheel installs them; the editable one "
            "also imports setuptools' editable finder at every start (a development-only cost). "
            "Both keep bytecode, as installed packages do.",
            "",
            "Where the rest goes: cumulative import time of `prontodb get` (regular install, "
            "`python -X importtime`, median of 9). A module is charged for everything it imports "
            "first, so the rows nest, in import order: `prontodb.clients.cli` includes "
            "`prontodb.clients`, which imports `prontodb.protocol`, which imports `typing` "
            "(for its named tuples; `typing` brings `re`) and `msgpack`; the sync client brings "
            "`socket`. The CLI's own modules are `_cli_fast` (with `_cli_commands`). A module "
            "that is not listed is not imported at all.",
            "",
            "| module | ms |",
            "| --- | --- |",
            *import_rows,
        ]
    )
    if not args.no_report:
        update_section("cli_startup", body)
        print("recorded in docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
