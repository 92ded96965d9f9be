"""The README's Python quickstart runs as written, against a real broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from brokers import running_broker

README = Path(__file__).resolve().parent.parent / "README.md"


def test_python_quickstart_runs(short_dir: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python quickstart"
    with running_broker(short_dir / "data") as broker:
        for block in blocks:
            done = subprocess.run(
                [sys.executable, "-c", block],
                cwd=short_dir,
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "PYTHONWARNINGS": "error", "PRONTODB_URL": broker.url},
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
