"""The README's quickstarts run as written, in the order a reader meets them: the CLI quickstart
(which starts a broker, backs up, restores and stops it), then the Python one (after the `ping`
that starts a broker again), on one fresh data directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cli_support import PRONTODB_VARIABLES, stop_brokers

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ACTIVATE = "source .venv/bin/activate"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def test_the_quickstarts_run_in_readme_order(short_dir: Path) -> None:
    shell = blocks("bash")
    cli = next(b for b in shell if "prontodb --user orchestrator" in b)
    start_again = next(b for b in shell if b.strip().startswith("prontodb ping"))
    (python,) = blocks("python")
    work = short_dir / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in PRONTODB_VARIABLES}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        PRONTODB_DATA_DIR=str(short_dir / "data"),
        XDG_RUNTIME_DIR=str(short_dir / "run"),
        PYTHONWARNINGS="error",
    )
    # The activation is the reader's way to get `prontodb` on PATH; the test puts it there.
    assert cli.startswith(ACTIVATE)
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", cli.removeprefix(ACTIVATE)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "1 put queue.task_1=pending" in done.stdout
        started = subprocess.run(
            ["bash", "-c", start_again], cwd=work, env=env, capture_output=True, text=True
        )
        assert started.stdout == "pong\n", started.stderr
        done = subprocess.run(
            [sys.executable, "-c", python],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "['queue.task_1', 'queue.task_2', 'queue.task_3']",
            "queue.task_1",
            "3",
            "1 put workflow.completed 1",
            "2 put workflow.completed 2",
            "3 put workflow.completed 3",
        ]
    finally:
        stop_brokers(short_dir / "data")  # by pid, however the test ended
