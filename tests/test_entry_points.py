"""Every entry point a user may run answers --help (and -h): exit 0, its usage on stdout, and
nothing done (no setup, no broker, no file made)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [
    *(p for p in sorted((ROOT / "scripts").glob("*.sh")) if p.name != "setup.sh"),  # sourced
    *sorted((ROOT / "examples").glob("*.sh")),
]
PROGRAMS = [
    ROOT / "scripts" / "unasync.py",
    *sorted((ROOT / "examples").glob("*.py")),
    *sorted((ROOT / "examples" / "python").glob("*.py")),
]


def command_for(path: Path) -> list[str]:
    return ["bash", str(path)] if path.suffix == ".sh" else [sys.executable, str(path)]


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("path", SCRIPTS + PROGRAMS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_entry_point_answers_help(path: Path, flag: str, tmp_path: Path) -> None:
    env = {**os.environ, "PRONTODB_DATA_DIR": str(tmp_path / "data")}  # where a run would write
    done = subprocess.run(
        [*command_for(path), flag],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, ""), done
    assert len(done.stdout.splitlines()) >= 2, done.stdout  # more than a bare line
    assert list(tmp_path.iterdir()) == [], "--help made files"


def test_the_embedded_workflow_runs_on_the_directory_it_is_given(tmp_path: Path) -> None:
    program = ROOT / "examples" / "embedded_workflow.py"
    done = subprocess.run(
        [sys.executable, str(program), str(tmp_path / "tasks")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done
    assert "100 tasks done once each" in done.stdout
    assert (tmp_path / "tasks" / "MANIFEST").is_file()


def test_the_cli_produces_its_completion_script_and_completes() -> None:
    prontodb = str(Path(sys.executable).parent / "prontodb")
    env = {**os.environ, "_PRONTODB_COMPLETE": "bash_source"}
    script = subprocess.run([prontodb], env=env, capture_output=True, text=True, check=True)
    assert "complete -o nosort -F _prontodb_completion prontodb" in script.stdout
    env.update(_PRONTODB_COMPLETE="bash_complete", COMP_WORDS="prontodb cu", COMP_CWORD="1")
    done = subprocess.run([prontodb], env=env, capture_output=True, text=True, check=True)
    assert "plain,cursor" in done.stdout.splitlines()
