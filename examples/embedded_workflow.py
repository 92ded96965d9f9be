"""The cookbook's task workflow on an embedded database (no server yet): fill, claim, count, reopen.

An orchestrator fills a queue, two workers take tasks with a transaction (the atomic form of the cookbook's
get-then-set-then-del claim), a counter tracks completions with ``incr``, a monitor prints progress, and
the database is compacted and reopened to show that nothing was lost.

    python examples/embedded_workflow.py [DATA_DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from prontodb.broker.database import Database
from prontodb.broker.engine import Compare, OpKind, Target, TxnOp

TASKS = 100


def claim_next(db: Database, worker: str, now: float) -> str | None:
    """Move the first pending task from queue.* to claimed.*, atomically; None when the queue is empty."""
    for key in db.engine.keys("queue", limit=1):
        task = key.removeprefix("queue.")
        outcome = db.write(
            db.engine.txn(
                [Compare(key, Target.VALUE, "==", "pending")],
                [
                    TxnOp(OpKind.DELETE, key),
                    TxnOp(OpKind.SET, f"claimed.{task}", f"{worker}:{now}"),
                ],
                writer=worker,
                now=now,
            )
        )
        if outcome.succeeded:
            return task
    return None


def run(path: Path) -> None:
    db = Database.open(path)
    start = time.perf_counter()
    db.write(
        db.engine.set("workflow.status", "initializing", writer="orchestrator", now=time.time())
    )
    db.write(db.engine.set("workflow.total_tasks", TASKS, writer="orchestrator", now=time.time()))
    for i in range(1, TASKS + 1):
        db.write(
            db.engine.set(f"queue.task_{i}", "pending", writer="orchestrator", now=time.time())
        )
    print(f"orchestrator: queued {db.engine.count('queue')} tasks")

    done: dict[str, int] = {"worker1": 0, "worker2": 0}
    while True:
        progressed = False
        for worker in done:
            task = claim_next(db, worker, time.time())
            if task is None:
                continue
            progressed = True
            db.write(db.engine.delete(f"claimed.{task}", writer=worker, now=time.time()))
            completed = db.write(
                db.engine.incr("workflow.completed", 1, writer=worker, now=time.time())
            )
            done[worker] += 1
            if completed % 25 == 0:
                print(f"monitor: {completed}/{TASKS} done, {db.engine.count('queue')} queued")
        if not progressed:
            break
    db.write(db.engine.set("workflow.status", "complete", writer="orchestrator", now=time.time()))
    revision, size = db.engine.revision, db.storage.stats().total_bytes
    db.compact()
    print(
        f"compacted: revision {revision}, {size} -> {db.storage.stats().total_bytes} bytes on disk"
    )
    db.close()

    reopened = Database.open(path)
    completed_entry = reopened.engine.get("workflow.completed")
    if completed_entry is None or completed_entry.value != TASKS or reopened.engine.count("queue"):
        raise SystemExit("demo failed: the reopened database does not hold the finished workflow")
    elapsed = time.perf_counter() - start
    print(
        f"summary: {completed_entry.value} tasks done once each "
        f"(worker1 {done['worker1']}, worker2 {done['worker2']}), "
        f"revision {reopened.engine.revision} after reopen, {elapsed:.2f} s with an fsync per write"
    )
    reopened.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "data_dir", nargs="?", type=Path, help="where the database goes (default: a temporary one)"
    )
    data_dir: Path | None = parser.parse_args().data_dir
    if data_dir is not None:
        run(data_dir)
        return
    with tempfile.TemporaryDirectory(prefix="prontodb-demo-") as tmp:
        run(Path(tmp) / "tasks")


if __name__ == "__main__":
    main()
