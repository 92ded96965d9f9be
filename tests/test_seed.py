"""The seed's shell patterns, as written, on a fresh data directory with no broker started by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import serve_processes, stop_brokers

SEED_SCRIPT = Path(__file__).parent / "seed" / "sections.sh"
SEED_11_12 = Path(__file__).parent / "seed" / "sections_11_12.sh"


class Shell:
    """Runs commands with an environment that points the CLI at a private data directory."""

    def __init__(self, root: Path) -> None:
        self.data_dir = root / "data"
        runtime = root / "run"
        runtime.mkdir(mode=0o700)
        bin_dir = str(Path(sys.executable).parent)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PRONTODB_", "XDG_"))}
        self.env.update(
            PATH=f"{bin_dir}:{self.env.get('PATH', '/usr/bin:/bin')}",
            PRONTODB_DATA_DIR=str(self.data_dir),
            XDG_RUNTIME_DIR=str(runtime),
        )

    def run(self, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=300, check=False, cwd=cwd
        )

    def get(self, cursor: str, key: str) -> str:
        result = self.run("prontodb", "--cursor", cursor, "get", key)
        assert result.returncode == 0, result.stderr
        return result.stdout.rstrip("\n")

    def ttl(self, key: str) -> float:
        result = self.run("prontodb", "ttl", key)
        assert result.returncode == 0, result.stderr
        return float(result.stdout)

    def keys(self, cursor: str, prefix: str) -> list[str]:
        return self.run("prontodb", "--cursor", cursor, "keys", prefix).stdout.split()


@pytest.fixture
def shell(short_dir: Path) -> Iterator[Shell]:
    shell = Shell(short_dir)
    try:
        yield shell
    finally:
        stop_brokers(shell.data_dir)


def test_sections_1_to_10_work_as_written(shell: Shell) -> None:
    assert serve_processes(shell.data_dir) == []  # nothing is running: the first call starts it
    result = shell.run("bash", str(SEED_SCRIPT))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # 1: the queue, the registration; task_1 was claimed, then section 5 handed it back
    assert len(shell.keys("tasks", "queue")) == 100
    assert shell.get("tasks", "queue.task_1") == "pending"
    assert shell.keys("tasks", "claimed") == []
    assert shell.get("main", "agents.worker1.capabilities") == "processing,analysis"
    # 2: the read-modify-write counter and the progress
    assert shell.get("main", "workflow.completed") == "1"
    assert shell.get("main", "workflow.progress_percent") == "1"
    # 3: the allocation went through once
    assert shell.get("allocation", "pools.cpu_cores") == "6"
    assert shell.get("allocation", "allocated.worker1.cpu_cores") == "2"
    # 4: the pipeline stages
    assert shell.get("tasks", "stage.process.item_42") == "processing"
    assert shell.get("logs", "pipeline.item_42.worker") == "process_worker"
    # 6: 100 queued tasks for 1 worker: scale up to 3
    assert shell.get("main", "scaling.action") == "scale_up"
    assert shell.get("main", "scaling.target_workers") == "3"
    # 7: caches give the sessions and the coordination keys their TTLs
    caches = shell.run("prontodb", "caches").stdout.split()
    assert caches == ["coordination.temp=300", "rate_limits.api=60", "sessions.active=3600"]
    assert shell.get("default", "sessions.active.worker1").startswith("active:task_processing:")
    assert 3500 < shell.ttl("sessions.active.worker1") <= 3600
    assert 250 < shell.ttl("coordination.temp.priority_shift") <= 300
    # 8: the first call of the window, counted under a 60-second TTL
    assert shell.get("default", "rate_limits.api.worker1_calls") == "1"
    assert 0 < shell.ttl("rate_limits.api.worker1_calls") <= 60
    # 9 and 10: metrics, the audit trail and the decision log
    assert "metrics.system.active_agents=4" in result.stdout
    assert "Queue Depth: 100" in result.stdout
    assert "Active Workers: 1" in result.stdout
    assert len(shell.keys("logs", "audit")) == 1
    assert shell.get("logs", shell.keys("logs", "decisions")[0]).endswith("action=scale_up")
    # each cursor is its own database in the data directory
    assert {p.name for p in shell.data_dir.glob("*.db")} == {
        "main.db",
        "tasks.db",
        "allocation.db",
        "logs.db",
        "default.db",
    }


def test_sections_11_and_12_work_as_written(shell: Shell, tmp_path: Path) -> None:
    work = tmp_path / "project"
    work.mkdir()
    result = shell.run("bash", str(SEED_11_12), cwd=work)
    assert result.returncode == 0, result.stderr
    # 11: each environment is a database in the working directory, made by its first write
    assert {p.name for p in work.glob("*.db")} == {"dev.db", "staging.db", "prod.db"}
    assert shell.get("dev", "config.debug_mode") == "true"
    assert shell.get("dev", "workflow.status") == "testing"
    assert shell.get("prod", "workflow.status") == "production"
    # 12: the backups are files ending in .db that find(1) rotates
    backups = sorted(p.name for p in (work / "backups").iterdir())
    stamp = subprocess.run(["date", "+%Y%m%d"], capture_output=True, text=True).stdout.strip()
    assert backups == ["last-known-good.db", "main-backup.db", f"pre-deployment-{stamp}.db"]
    # the emergency recovery put back what last-known-good held
    assert shell.get("prod", "config.debug_mode") == "false"
    # main is now a database restored from main-backup.db, in the data directory
    shown = shell.run("prontodb", "cursor", "show", "main").stdout.splitlines()
    path = Path(next(line[5:] for line in shown if line.startswith("path=")))
    assert path.parent == shell.data_dir / "restored"
    assert path.name.startswith("main-")
    assert shell.get("main", "workflow.status") == "running"
    # cursor delete of a name that was never bound said so and changed nothing
    assert "corrupted_db has no definition" in result.stderr
