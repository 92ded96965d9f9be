"""The demo (./scripts/demo.sh runs it) ends well: every task done once, the killed worker's task
redone by another, exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cli_support import short_tmpdir, stop_brokers

DEMO = Path(__file__).parent.parent / "examples" / "demo_workflow.sh"


def test_the_demo_runs_to_its_summary() -> None:
    with short_tmpdir() as root:
        data = root / "data"
        data.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PRONTODB_", "XDG_"))}
        env.update(
            PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", DEMO_DATA_DIR=str(data)
        )
        try:
            done = subprocess.run(
                ["bash", str(DEMO), "30"], env=env, capture_output=True, text=True, timeout=240
            )
        finally:
            stop_brokers(data)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "tasks:        30 queued, 30 done (one done.TASK record each), 0 left" in done.stdout
    assert "workflow.completed = 30" in done.stdout
    assert re.search(
        r"redelivery: +task_\d+, held by worker3 when it died, was done by worker[12]", done.stdout
    )
    assert "every task was done exactly once" in done.stdout
    assert not data.exists()  # the demo removes its data directory
