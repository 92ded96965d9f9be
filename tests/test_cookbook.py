"""docs/COOKBOOK.md runs as written: every command in one bash session, every output as shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cli_support import short_tmpdir, stop_brokers

COOKBOOK = Path(__file__).parent.parent / "docs" / "COOKBOOK.md"
MARK = "@@prontodb-cookbook@@"


def commands(text: str) -> list[tuple[str, list[str]]]:
    """Each ``$`` command of the console blocks, with ``>`` lines joined on, and its output."""
    found: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append((line[2:], []))
            elif line.startswith("> ") or line == ">":
                found[-1] = (found[-1][0] + "\n" + line[2:], found[-1][1])
            else:
                found[-1][1].append(line)
    return found


def matches(expected: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


def test_the_cookbook_runs_as_written() -> None:
    steps = commands(COOKBOOK.read_text())
    script = "".join(f"echo {MARK}\n{command}\n" for command, _ in steps)
    with short_tmpdir() as root:
        work = root / "work"
        work.mkdir()
        (root / "run").mkdir(mode=0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PRONTODB_", "XDG_"))}
        env.update(
            PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
            PRONTODB_DATA_DIR=str(root / "data"),
            XDG_RUNTIME_DIR=str(root / "run"),
        )
        try:
            done = subprocess.run(
                ["bash", "-c", script + f"echo {MARK}\n"],
                cwd=work,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=300,
            )
        finally:
            stop_brokers(root / "data")
    outputs = done.stdout.split(MARK + "\n")[1:-1]
    assert len(outputs) == len(steps), done.stdout[-2000:]
    wrong = [
        (command, expected, output.splitlines())
        for (command, expected), output in zip(steps, outputs, strict=True)
        if len(expected) != len(output.splitlines())
        or not all(map(matches, expected, output.splitlines()))
    ]
    assert not wrong, "\n".join(f"$ {c}\n  shown: {e}\n  got:   {g}" for c, e, g in wrong)
