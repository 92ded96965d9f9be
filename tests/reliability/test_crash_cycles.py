"""kill -9 cycles under concurrent writers with compaction: a real broker process (fsync always) is
SIGKILLed at random moments while 20+ writers write and compactions run, and restarted on the same
data directory; every restart must succeed and every acknowledged write must read back.

Each writer is a thread with its own sync ``Client``. Its write ``n`` is one transaction of two
sets: ``wNN.blob.<n % BLOBS>`` gets a blob of a few KB naming ``(writer, n)`` (a bounded key set
overwritten again and again, so the log is mostly garbage and passes the 8 MiB compaction floor
every few hundred writes), and ``wNN.done.<n>`` gets ``n`` (a key per write, so every acknowledged
write, not only the last of each blob, can be read back). A writer counts a write acknowledged
once its answer came; the one in flight when the broker died may or may not be there.

The kill comes after a seeded random number of acknowledged writes (progress, not wall time);
every other kill then goes on, looking at the database directory at each acknowledgement, until a
compaction is underway (a snapshot being written, or a new one beside files it replaces), so that
kills land inside compactions too. After each restart the checker reads every writer's keys: each
acknowledged write's ``done`` key must hold ``n``, each blob the newest write to it that landed,
nothing may be there that was never written, and the in-flight transaction must have landed whole
or not at all (a write found landed then counts as acknowledged: later restarts must keep it too).
Compactions are counted from the broker log ("compacted database"), kills that cut one short from
the files the dead broker left.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brokers import BrokerProcess, start_broker
from reliability_kit import Figures, Scale

from prontodb.clients import Client, ProntoError

SCENARIO = "kill -9 cycles under concurrent writers with compaction"
SEED = 20261207
CURSOR = "crash"
BLOBS = 16  # blob keys per writer: the bounded live set that compaction shrinks the log to
BLOB_SIZE = 8 * 1024
# A short watch history: with the default (64 MiB of it) the old blobs would count as live.
EXTRA = ("--history-revisions", "64")
FILE = re.compile(r"(snap|seg)-(\d+)\.(?:snap|log)(\.tmp)?")  # a database's data files
HUNT = 4000  # writes a kill aimed at a compaction waits for one at most (one comes every ~1000)
WAIT = 60.0  # seconds any wait may take on a loaded 2-core machine before the test fails


@dataclass
class Writer:
    """One writer's account: writes ``0 .. acked-1`` were acknowledged; ``in_flight`` was sent and
    not answered when the broker died (None: nothing was)."""

    index: int
    acked: int = 0
    in_flight: int | None = None

    @property
    def prefix(self) -> str:
        return f"w{self.index:02d}"

    def blob_key(self, n: int) -> str:
        return f"{self.prefix}.blob.{n % BLOBS}"

    def done_key(self, n: int) -> str:
        return f"{self.prefix}.done.{n:07d}"

    def blob(self, n: int) -> str:
        """Write ``n``'s blob: its stamp repeated, so an older blob or a mix of two shows."""
        stamp = f"w{self.index}n{n}|"
        return (stamp * (BLOB_SIZE // len(stamp) + 1))[:BLOB_SIZE]

    def ops(self, n: int) -> list[dict[str, Any]]:
        return [
            {"op": "set", "key": self.blob_key(n), "value": self.blob(n)},
            {"op": "set", "key": self.done_key(n), "value": n},
        ]


class Progress:
    """The acknowledged writes of one cycle, counted by the writers; the test waits on it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.acked = 0
        self.killed = False  # set just before the kill: errors after it are the crash's
        self.failures: list[str] = []

    def count(self) -> None:
        with self._changed:
            self.acked += 1
            self._changed.notify_all()

    def fail(self, why: str) -> None:
        with self._changed:
            self.failures.append(why)
            self._changed.notify_all()

    def wait_for(self, acked: int) -> bool:
        """Whether ``acked`` writes were acknowledged (False: a writer failed, or time ran out)."""
        with self._changed:
            self._changed.wait_for(lambda: self.acked >= acked or bool(self.failures), WAIT)
            return self.acked >= acked and not self.failures


def kill_moment(progress: Progress, database: Path, target: int, aim: bool) -> bool:
    """Wait for ``target`` acknowledged writes; with ``aim``, then on until a compaction is seen
    underway (looked for at each acknowledgement) or HUNT more writes. False: a writer failed."""
    if not progress.wait_for(target):
        return False
    seen = progress.acked
    while aim and seen < target + HUNT and not compaction_underway(database):
        if not progress.wait_for(seen + 1):
            return False
        seen = progress.acked
    return True


def write_until_killed(url: str, writer: Writer, progress: Progress) -> None:
    """Write ``writer``'s next writes one after another until the broker goes away."""
    try:
        with Client.connect(url, user=writer.prefix, cursor=CURSOR, timeout=WAIT) as db:
            while True:
                n = writer.acked
                writer.in_flight = n
                result = db.txn([], writer.ops(n))
                if not result.succeeded:
                    progress.fail(f"{writer.prefix}: write {n} refused: {result}")
                    return
                writer.acked, writer.in_flight = n + 1, None
                progress.count()
    except (ProntoError, OSError) as exc:
        if not progress.killed:  # before the kill nothing may fail
            progress.fail(f"{writer.prefix}: write {writer.in_flight} failed: {exc!r}")
    except Exception as exc:  # any other error is a failure, reported by the test thread
        progress.fail(f"{writer.prefix}: {exc!r}")


@dataclass
class Tally:
    """What one check after a restart found."""

    checked: int = 0
    in_flight_landed: int = 0
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def check_writer(db: Client, writer: Writer, tally: Tally) -> None:
    """Read back ``writer``'s keys: every acknowledged write there, nothing never written, the
    in-flight transaction whole or absent. Then count a landed in-flight write acknowledged."""
    done = {int(key.rsplit(".", 1)[1]): value for key, value in db.scan(f"{writer.prefix}.done")}
    for n in range(writer.acked):
        if n not in done:
            tally.lost.append(f"{writer.done_key(n)} (acknowledged) is missing")
        elif done.pop(n) != n:
            tally.wrong.append(f"{writer.done_key(n)} holds a wrong value")
        else:
            tally.checked += 1
    landed = writer.in_flight is not None and done.pop(writer.in_flight, None) == writer.in_flight
    tally.wrong += [
        f"{writer.done_key(n)}={value!r} was never written" for n, value in done.items()
    ]
    writes = writer.acked + landed  # the writes that are there: the blobs must be their newest
    for slot in range(min(BLOBS, writes)):
        newest = slot + (writes - 1 - slot) // BLOBS * BLOBS
        value = db.get(writer.blob_key(slot))
        if value == writer.blob(newest):
            continue
        where = f"{writer.blob_key(slot)}: wanted write {newest}'s blob"
        doubtful = writer.in_flight
        if doubtful is not None and (newest == doubtful or value == writer.blob(doubtful)):
            tally.wrong.append(f"{where}; the in-flight transaction landed in part")
        elif value is None or any(value == writer.blob(n) for n in range(slot, newest, BLOBS)):
            tally.lost.append(f"{where}, found an older one (or none)")
        else:
            tally.wrong.append(f"{where}, found {str(value)[:40]!r}...")
    if landed:
        tally.in_flight_landed += 1
        writer.acked += 1
    writer.in_flight = None


def compaction_underway(database: Path) -> bool:
    """Whether ``database`` holds a compaction's files half done (docs/FORMAT.md, "Compaction"):
    a snapshot being written, or a new snapshot beside the old one or beside segments it covers."""
    names = (FILE.fullmatch(path.name) for path in database.iterdir())
    files = [(found[1], int(found[2]), bool(found[3])) for found in names if found]
    if any(kind == "snap" and tmp for kind, _, tmp in files):
        return True
    snapshots = [number for kind, number, _ in files if kind == "snap"]
    covered = [n for kind, n, _ in files if kind == "seg" and snapshots and n <= max(snapshots)]
    return len(snapshots) > 1 or bool(covered)


@contextmanager
def writers_running(url: str, writers: list[Writer], progress: Progress) -> Iterator[None]:
    """Every writer in a thread of its own for the block; the block must make them end (the
    kill does), and all must have ended within WAIT seconds after it."""
    threads = [
        threading.Thread(target=write_until_killed, args=(url, w, progress), daemon=True)
        for w in writers
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        deadline = time.monotonic() + WAIT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    hung = [w.prefix for w, t in zip(writers, threads, strict=True) if t.is_alive()]
    assert not hung, f"writers still running {WAIT:g} s after the kill: {hung}"


def kill_while_writing(
    broker: BrokerProcess, writers: list[Writer], target: int, aim: bool, figures: Figures
) -> None:
    """Run the writers until the kill moment, then SIGKILL the broker by its pid."""
    database = broker.data_dir / f"{CURSOR}.db"
    progress = Progress()
    with writers_running(broker.url, writers, progress):
        try:
            reached = kill_moment(progress, database, target, aim)
        finally:  # however this ends, the kill is what stops the writers
            progress.killed = True
            broker.kill()
    figures.add("cycles")
    assert reached, f"cycle {figures['cycles']} (seed {SEED}): {progress.failures}"
    figures.add("kills aimed at a compaction", aim)
    figures.add("kills mid-compaction", compaction_underway(database))
    figures.add("in flight at kills", sum(w.in_flight is not None for w in writers))
    figures.add("writes acknowledged", progress.acked)


def restart(broker: BrokerProcess, figures: Figures) -> BrokerProcess:
    """A new broker on the dead one's data directory and socket; a failure fails the test."""
    figures.add("restarts")
    try:
        return start_broker(broker.data_dir, Path(broker.socket), extra=EXTRA)
    except RuntimeError as exc:
        figures.add("restarts failed")
        raise AssertionError(f"restart {figures['restarts']} failed (seed {SEED}): {exc}") from exc


def check_all(broker: BrokerProcess, writers: list[Writer]) -> Tally:
    tally = Tally()
    with Client.connect(broker.url, user="checker", cursor=CURSOR, timeout=WAIT) as db:
        for writer in writers:
            check_writer(db, writer, tally)
    return tally


FIGURES = (  # in the order the report shows them
    "cycles",
    "writers",
    "restarts",
    "restarts failed",
    "kills aimed at a compaction",
    "kills mid-compaction",
    "compactions",
    "in flight at kills",
    "in flight found",
    "writes acknowledged",
    "writes checked",
    "lost",
    "wrong values",
)


def test_acknowledged_writes_survive_kill_9_cycles_with_compaction(
    tmp_path: Path, short_dir: Path, figures: Figures, scale: Scale
) -> None:
    figures.scenario = SCENARIO
    for name in FIGURES:
        figures[name] = 0
    rng = random.Random(SEED)
    most = scale.pick(1200, 3000)  # acknowledged writes before a kill: 200 to this many
    writers = [Writer(i) for i in range(scale.pick(20, 32))]
    figures["writers"] = len(writers)
    lost: list[str] = []
    wrong: list[str] = []
    broker = start_broker(tmp_path / "data", short_dir / "b.sock", extra=EXTRA)
    try:
        for cycle in range(scale.pick(6, 60)):
            aim = cycle % 2 == 1  # every other kill waits for a compaction to be underway
            kill_while_writing(broker, writers, rng.randint(200, most), aim, figures)
            broker = restart(broker, figures)
            tally = check_all(broker, writers)
            lost += tally.lost
            wrong += tally.wrong
            figures.add("in flight found", tally.in_flight_landed)
            # Every write acknowledged (or found landed) so far, read back after the last kill.
            figures["writes checked"] = tally.checked
    finally:
        broker.kill()
    figures["compactions"] = broker.log_text().count("compacted database")
    figures["lost"] = len(lost)
    figures["wrong values"] = len(wrong)
    assert not lost, f"acknowledged writes lost (seed {SEED}): {lost[:10]}"
    assert not wrong, f"wrong values (seed {SEED}): {wrong[:10]}"
    assert figures["compactions"], "no compaction ran: the cycles did not test it"
