"""How long a database of many keys takes to open: replaying its history vs. from a compacted snapshot.

    python -m bench.open_large [--keys 1000000]

The target (issue "Trunk, part 1"): a database of 1 M keys opens in a few seconds, because compaction
keeps the log from growing with history.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from prontodb.broker.database import Database
from prontodb.broker.storage import FsyncPolicy, StorageOptions

from .report import machine, update_section

# Loading is not what is measured, so it skips the fsyncs.
FAST = StorageOptions(fsync=FsyncPolicy.NEVER)
BATCH = 10_000


def build(path: Path, keys: int, rewrites: int) -> None:
    """Write ``keys`` keys ``rewrites`` times each (so history is ``rewrites`` times the live state)."""
    db = Database.open(path, options=FAST)
    try:
        for round_ in range(rewrites):
            for start in range(0, keys, BATCH):
                records = []
                for i in range(start, min(start + BATCH, keys)):
                    key = f"project.queue.task_{i}"
                    applied = db.engine.set(
                        key, f"pending:{round_}", writer="orchestrator", now=1.0
                    )
                    records.extend(applied.records)
                db.writer.wait(db.writer.submit(records))
    finally:
        db.close()


def timed_open(path: Path) -> tuple[float, int]:
    began = time.perf_counter()
    db = Database.open(path, options=FAST)
    elapsed = time.perf_counter() - began
    count = db.engine.count()
    db.close()
    return elapsed, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rewrites", type=int, default=2)
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prontodb-bench-") as tmp:
        path = Path(tmp) / "big"
        began = time.perf_counter()
        build(path, args.keys, args.rewrites)
        load = time.perf_counter() - began
        replay, count = timed_open(path)
        db = Database.open(path, options=FAST)
        began = time.perf_counter()
        db.compact()
        compaction = time.perf_counter() - began
        size = db.storage.stats().total_bytes
        db.close()
        snapshot, count_after = timed_open(path)
    assert count == count_after == args.keys
    lines = [
        f"## Opening a large database ({machine()})",
        "",
        f"{args.keys:,} keys, each written {args.rewrites} times ({args.keys * args.rewrites:,} records of history).",
        "",
        "| step | seconds |",
        "| --- | --- |",
        f"| load through the engine (fsync never) | {load:.2f} |",
        f"| open by replaying the whole history | {replay:.2f} |",
        f"| compaction (snapshot of the live state) | {compaction:.2f} |",
        f"| open from the snapshot | {snapshot:.2f} |",
        "",
        f"Snapshot size on disk: {size / 2**20:.1f} MiB. Target: open 1 M keys in a few seconds.",
    ]
    print("\n".join(lines))
    if not args.no_report:
        update_section("open_large", "\n".join(lines))


if __name__ == "__main__":
    main()
