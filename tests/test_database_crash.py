"""kill -9 of a real process writing through the database: every acknowledged write survives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from prontodb.broker.database import Database
from prontodb.broker.storage import StorageOptions

# The child writes keys forever, printing each one after its write is durable; the parent kills it
# mid-stream. Small segments and a compaction every 300 writes put rolls and compactions in the way.
WRITER = textwrap.dedent(
    """
    import sys
    from prontodb.broker.database import Database
    from prontodb.broker.storage import StorageOptions

    db = Database.open(sys.argv[1], options=StorageOptions(segment_size=8192, compact_min_bytes=1))
    start = db.engine.count("acked")
    i = start
    while True:
        db.write(db.engine.set(f"acked.k{i}", "x" * (i % 300), writer="child", now=float(i)))
        db.write(db.engine.incr("counter", 1, writer="child", now=float(i)))
        print(i, flush=True)
        i += 1
        if i % 300 == 0:
            db.compact()
    """
)


def run_and_kill(path: Path, acks_wanted: int) -> list[int]:
    """Start the writer, read acknowledgements until ``acks_wanted``, then SIGKILL it by pid."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    acked: list[int] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acked.append(int(line))
            if len(acked) >= acks_wanted:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return acked


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "db"
    acked: list[int] = []
    for round_ in range(3):
        acked += run_and_kill(path, acks_wanted=250 + 170 * round_)
        db = Database.open(path, options=StorageOptions(segment_size=8192))
        try:
            keys = set(db.engine.keys("acked"))
            missing = [i for i in acked if f"acked.k{i}" not in keys]
            assert missing == []
            counter = db.engine.get("counter")
            assert counter is not None
            # Each key's write precedes its counter bump; each kill may land between the two.
            assert len(keys) - (round_ + 1) <= counter.value <= len(keys)
            for key in keys:
                entry = db.engine.get(key)
                assert entry is not None
                assert entry.value == "x" * (int(key.removeprefix("acked.k")) % 300)
        finally:
            db.close()
