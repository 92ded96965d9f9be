"""Helpers for the CLI tests: a short-path broker, CliRunner calls with a clean environment."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from prontodb.clients.cli import main

# Variables the developer's shell may have set that would send the CLI elsewhere.
PRONTODB_VARIABLES = (
    "PRONTODB_USER",
    "PRONTODB_CURSOR",
    "PRONTODB_URL",
    "PRONTODB_DATA_DIR",
    "PRONTODB_SOCKET",
    "PRONTODB_TOKEN",
    "PRONTODB_IDLE_EXIT",
)


@dataclass
class Outcome:
    """What one CLI run printed and how it exited."""

    stdout: bytes
    stderr: bytes
    status: int

    @property
    def out(self) -> str:
        return self.stdout.decode()

    @property
    def err(self) -> str:
        return self.stderr.decode()


def clean_env(**extra: str | None) -> dict[str, str | None]:
    """CliRunner overrides: every PRONTODB_ variable unset, then ``extra``."""
    env: dict[str, str | None] = dict.fromkeys(PRONTODB_VARIABLES)
    env.update(extra)
    return env


def invoke(args: Sequence[str], stdin: str | None = None, **env: str | None) -> Outcome:
    """Run the click group (not the fast path) in-process on ``args``, with ``stdin``."""
    runner = CliRunner(env=clean_env(**env))
    result = runner.invoke(main, list(args), input=stdin, prog_name="prontodb")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.stdout_bytes, result.stderr_bytes, result.exit_code)


def dispatch(args: Sequence[str], **env: str | None) -> Outcome:
    """Run ``main`` as the console script does (fast path first) in-process on ``args``."""
    runner = CliRunner(env=clean_env(**env))
    with runner.isolation() as (stdout, stderr, _):
        try:
            status = main(list(args))
        except SystemExit as exc:
            status = exc.code
        sys.stdout.flush()
        sys.stderr.flush()
    assert isinstance(status, int), status
    return Outcome(stdout.getvalue(), stderr.getvalue(), status)


@contextmanager
def short_tmpdir(prefix: str = "pdb") -> Iterator[Path]:
    """A private directory under /tmp with a short path (a Unix socket path has ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def serve_processes(data_dir: Path) -> list[int]:
    """The pids of every ``prontodb serve`` process running on ``data_dir`` (Linux /proc)."""
    pids = []
    needle = str(data_dir).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if b"serve" in argv and needle in argv:
            pids.append(int(entry))
    return pids


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` (not necessarily our child) exits; False on timeout."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def stop_by_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout``; reaps it if it is our child."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        if wait_for_exit(pid, timeout):
            break
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_brokers(data_dir: Path) -> None:
    """Stop, by pid, every broker serving ``data_dir`` (however the test ended)."""
    for pid in serve_processes(data_dir):
        stop_by_pid(pid)
