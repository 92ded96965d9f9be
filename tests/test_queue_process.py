"""Work queues drained by real worker processes: priorities, delays and dependencies honoured under
four concurrent workers, and nothing lost or held twice across a broker killed mid-drain.

The test fills queue ``q`` (in-process, one pipelined batch) from a seeded plan: priorities 0..9,
about a fifth delayed by 0.5 to 2 s (half with ``delay``, half with ``at``), about a fifth ``after``
one or two earlier items; each value names its own plan. Each worker is a ``python -c`` process with
its own sync ``Client`` (user ``workerN``): it connects, says ``ready``, waits for ``go`` on stdin
(so the drain starts on a full queue), then claims, appends a JSON line to its own file (the claim's
key, value, token and deliveries, with ``time.time()`` before the claim was sent and after it
came), acks with the same token, and appends the outcome, until a claim comes back empty on an
empty queue. On ``unavailable`` (the broker died) it connects again, polling the socket up to a
deadline, and goes on: a claim that broke is noted ``lost``; an ack that broke is sent again with
the same token (the claim survives the restart, logged, unless its lease ran out meanwhile).

Two views are checked. The workers' files are what the clients saw; the broker's history (``watch``
from revision 1: puts, claims, acks and releases in revision order, with the broker's clock, kept
across restarts) is what it did, and :func:`replay` runs it through a model of the queue that knows
exactly which items were claimable at each claim. All clocks are the one system clock.
"""

from __future__ import annotations

import json
import random
import select
import subprocess
import sys
import textwrap
import time
from bisect import insort
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brokers import BrokerProcess, start_broker

from prontodb.clients import Client, WatchEvent

QUEUE = "q"
SEED = 20261209
WORKERS = 4
TIMEOUT = 60.0  # seconds for anything a test waits for, on a loaded 2-core machine
CLAIM_WAIT = 1.0  # seconds a worker's claim waits before it looks whether the queue is empty

# A worker: claim, note it, ack (again after a reconnect), note the outcome; until a claim finds
# nothing on an empty queue. Its notes are JSON lines in its own file.
WORKER = textwrap.dedent(
    """
    import json, sys, time
    from prontodb.clients import Client, CompareFailed, Unavailable

    url, user, queue, out, wait, lease = sys.argv[1:]

    def connect():
        deadline = time.monotonic() + 30
        while True:
            try:
                return Client.connect(url, user=user)
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # the broker is restarting: poll its socket, up to the deadline

    notes = open(out, "a", buffering=1)

    def note(kind, **fields):
        notes.write(json.dumps({"kind": kind, **fields}) + "\\n")

    def reconnect():
        note("reconnect")
        return connect()

    db = connect()
    print("ready", flush=True)
    if sys.stdin.readline() != "go\\n":
        sys.exit(2)
    while True:
        asked = time.time()
        try:
            task = db.claim(queue, wait=float(wait), lease=float(lease))
        except Unavailable:
            note("lost", asked=asked)  # the claim may have been made, its answer never came
            db = reconnect()
            continue
        got = time.time()
        if task is None:
            try:
                if db.count(queue) == 0:
                    break
            except Unavailable:
                db = reconnect()
            continue
        note("claim", key=task.key, token=task.token, deliveries=task.deliveries,
             value=task.value, asked=asked, got=got)
        sent, retried = time.time(), False
        while True:
            try:
                db.ack(task.key, task.token)
                outcome = "acked"
            except CompareFailed:
                outcome = "stale"  # no longer held under this token (or acked before it broke)
            except Unavailable:
                db, retried = reconnect(), True
                continue
            break
        note(outcome, key=task.key, token=task.token, retried=retried, sent=sent, done=time.time())
    db.close()
    """
)


# -- the plan and the fill --------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One queue item as planned: ``delay`` (seconds from its set) or ``at`` (epoch seconds) or
    neither, and the earlier items it waits for."""

    key: str
    seq: int  # its place in the fill: the order of create revisions
    priority: int
    delay: float | None
    at: float | None
    after: tuple[str, ...]


def plan(rng: random.Random, count: int, now: float) -> list[Item]:
    items: list[Item] = []
    for seq in range(count):
        delay = at = None
        if rng.random() < 0.2:
            offset = round(rng.uniform(0.5, 2.0), 3)
            if rng.random() < 0.5:
                delay = offset
            else:
                at = now + offset
        after: tuple[str, ...] = ()
        if seq >= 2 and rng.random() < 0.2:
            after = tuple(items[i].key for i in rng.sample(range(seq), rng.choice((1, 2))))
        items.append(Item(f"{QUEUE}.i{seq:04d}", seq, rng.randrange(10), delay, at, after))
    return items


@dataclass
class Filled:
    """The items as set, between ``sent`` (before the first set went) and ``done`` (after the
    last answer came): the broker set each one at a moment in between."""

    items: dict[str, Item]
    sent: float
    done: float
    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def earliest(self, item: Item) -> float | None:
        """No claim of ``item`` may come before this (its time was set no earlier)."""
        if item.delay is not None:
            return self.sent + item.delay
        return item.at

    def latest(self, item: Item) -> float:
        """By this moment ``item`` was set and its time had come."""
        if item.delay is not None:
            return self.done + item.delay
        return self.done if item.at is None else max(self.done, item.at)


def fill(client: Client, items: list[Item]) -> Filled:
    """Set every item, pipelined in order; each value names the item's own plan."""
    filled = Filled({item.key: item for item in items}, time.time(), 0.0)
    requests: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        value = {
            "seq": item.seq,
            "priority": item.priority,
            "not_before": filled.earliest(item),
            "after": list(item.after),
        }
        filled.values[item.key] = value
        args: dict[str, Any] = {"cursor": client.cursor, "key": item.key, "value": value}
        args["priority"] = item.priority
        if item.delay is not None:
            args["delay"] = item.delay
        if item.at is not None:
            args["at"] = item.at
        if item.after:
            args["after"] = list(item.after)
        requests.append(("set", args))
    results = client.call_many(requests)
    filled.done = time.time()
    assert all(isinstance(rev, int) for rev in results), [
        r for r in results if not isinstance(r, int)
    ]
    return filled


# -- the workers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A claim a worker got: ``asked`` before its request went, ``got`` after the answer came."""

    worker: int
    key: str
    token: int
    deliveries: int
    value: Any
    asked: float
    got: float


@dataclass(frozen=True)
class End:
    """How a worker's claim ended: ``acked``, or ``stale`` (compare_failed). ``retried``: an ack
    broke with the connection and was sent again; ``sent`` is when the first one went."""

    worker: int
    key: str
    token: int
    outcome: str
    retried: bool
    sent: float
    done: float


@dataclass
class Notes:
    """Everything the workers noted."""

    claims: list[Claim] = field(default_factory=list)  # by token
    ends: dict[int, End] = field(default_factory=dict)  # by token
    lost: list[float] = field(default_factory=list)  # when each claim that broke was sent
    reconnects: Counter[int] = field(default_factory=Counter)  # by worker

    def by_key(self) -> dict[str, list[Claim]]:
        found: dict[str, list[Claim]] = defaultdict(list)
        for claim in self.claims:
            found[claim.key].append(claim)
        return found


@dataclass
class Workers:
    """The worker processes of one test, stopped by pid however it ends."""

    work: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, url: str, lease: float) -> None:
        for n in range(WORKERS):
            with (self.work / f"worker{n}.err").open("wb") as errors:
                argv = [sys.executable, "-c", WORKER, url, f"worker{n}", QUEUE]
                argv += [str(self.work / f"worker{n}.jsonl"), str(CLAIM_WAIT), str(lease)]
                self.processes.append(
                    subprocess.Popen(
                        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
                    )
                )
        for n, process in enumerate(self.processes):
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], TIMEOUT)
            assert ready, f"worker{n} did not start: {self.stderr(n)}"
            assert process.stdout.readline() == b"ready\n", self.stderr(n)

    def go(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            process.stdin.flush()

    def finish(self) -> Notes:
        """Wait for every worker to find the queue empty and exit; what they noted."""
        for n, process in enumerate(self.processes):
            assert process.wait(TIMEOUT) == 0, f"worker{n}: {self.stderr(n)}"
        notes = Notes()
        for n in range(len(self.processes)):
            for line in (self.work / f"worker{n}.jsonl").read_text().splitlines():
                note = json.loads(line)
                kind = note.pop("kind")
                if kind == "claim":
                    notes.claims.append(Claim(n, **note))
                elif kind == "lost":
                    notes.lost.append(note["asked"])
                elif kind == "reconnect":
                    notes.reconnects[n] += 1
                else:
                    end = End(n, outcome=kind, **note)
                    assert end.token not in notes.ends, end
                    notes.ends[end.token] = end
        notes.claims.sort(key=lambda claim: claim.token)
        tokens = [claim.token for claim in notes.claims]
        assert len(set(tokens)) == len(tokens), "a token was handed out twice"
        assert sorted(notes.ends) == tokens, "every claim noted ends once, with its own token"
        return notes

    def stderr(self, n: int) -> str:
        return (self.work / f"worker{n}.err").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(TIMEOUT)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()


# -- the broker's account ---------------------------------------------------------------------


def history(client: Client) -> list[WatchEvent]:
    """Every change to the queue, from revision 1 to the last durable one."""
    events: list[WatchEvent] = []
    with client.watch(QUEUE, from_rev=1) as watch:
        head = watch.head_rev
        assert head is not None
        while watch.next_rev is None or watch.next_rev <= head:
            event = watch.next_event(TIMEOUT)
            assert event is not None, f"the history stopped before revision {head}"
            events.append(event)
        while (event := watch.next_event(0)) is not None:
            events.append(event)
    return events


def replay(events: list[WatchEvent], filled: Filled, lease: float) -> dict[str, list[WatchEvent]]:
    """Run the broker's history through a model of the queue and check every claim against it;
    returns each item's claims, releases and ack, in order.

    An item is claimable at a claim (revision r, broker time t) when it was put before r, is not
    held, every item it waited for (those that existed at its put) was acked before r, and its
    time has come: the broker's not-before is the put's time + ``delay`` (or ``at``, if later
    than the put) and the broker returns due delays with ``<=`` against the very ``now`` it claims
    with. Claims are serialised in the broker, so however many workers ask at once, each claim
    must take the least claimable item by (priority, create revision): exactly, with no slack.
    A release must be a lease running out (``by`` nobody, no earlier than the claim's time +
    ``lease``), and an ack must come from the user holding the claim it ends."""
    ready: list[tuple[int, int, str]] = []  # claimable but perhaps not yet due
    not_before: dict[str, float | None] = {}
    place: dict[str, tuple[int, int, str]] = {}
    waits_for: dict[str, set[str]] = {}
    waited_by: dict[str, set[str]] = defaultdict(set)
    held: dict[str, WatchEvent] = {}
    existing: set[str] = set()
    told: dict[str, list[WatchEvent]] = defaultdict(list)
    for event in events:
        key = event.key
        item = filled.items[key]
        if event.type == "put":
            assert key not in existing, event
            assert event.create_rev == event.rev, event
            existing.add(key)
            place[key] = (item.priority, event.rev, key)
            if item.delay is not None:
                not_before[key] = event.time + float(item.delay)
            else:
                not_before[key] = item.at if item.at is not None and item.at > event.time else None
            waits_for[key] = {dep for dep in item.after if dep in existing}
            for dep in waits_for[key]:
                waited_by[dep].add(key)
            if not waits_for[key]:
                insort(ready, place[key])
            continue
        told[key].append(event)
        if event.type == "claim":
            due = [p for p in ready if (nb := not_before[p[2]]) is None or nb <= event.time]
            assert due, f"{key} claimed at revision {event.rev} while nothing was claimable"
            assert key == due[0][2], (
                f"revision {event.rev} claimed {key} {place.get(key)}, not {due[0]}: "
                f"{'not claimable' if place.get(key) not in due else 'less urgent'}"
            )
            ready.remove(place[key])
            not_before[key] = None
            held[key] = event
        elif event.type == "release":
            claim = held.pop(key)
            assert event.by == "", (claim, event)  # nobody released: the lease ran out
            assert event.time >= claim.time + lease, (claim, event)
            insort(ready, place[key])
        elif event.type == "ack":
            claim = held.pop(key)
            assert event.by == claim.by, (claim, event)
            existing.remove(key)
            for dependent in waited_by.pop(key, ()):
                waits_for[dependent].discard(key)
                if not waits_for[dependent]:
                    insort(ready, place[dependent])
        else:
            raise AssertionError(f"unexpected {event}")
    assert set(place) == set(filled.items), "every item was put"
    assert not existing, f"left in the queue: {sorted(existing)[:10]}"
    assert not held
    return told


# -- the workers' account ---------------------------------------------------------------------


def check_claimed_in_time_and_order(notes: Notes, filled: Filled) -> None:
    """What the workers' clocks prove, without the broker's word for anything.

    - No claim came back before its item's time: ``got`` >= the fill's start + ``delay`` (or
      ``at``), a bound below the broker's not-before.
    - No item was claimed before each of its dependencies was acked: the dependent's claim came
      back no earlier than the dependency's ack was first sent, and its token is the larger (the
      claim was made later).
    - Priority: a claim (token b, sent at ``asked``) was made at or after ``asked``. An item A
      claimed later (a larger token: not held, not acked at b's claim) that was surely claimable
      by ``asked`` (set, its time come and its dependencies acked, all by the clocks' bounds) must
      not be more urgent than b's item, by (priority, fill order): the broker took the least one.
      The bounds only ever shrink the set of pairs judged, so this holds exactly, with no
      tolerance for the four workers' concurrency: their requests race, but the broker serialises
      the claims and each one takes the least claimable item there is at that moment.
    """
    acks = {end.key: end for end in notes.ends.values() if end.outcome == "acked"}
    claims = {claim.key: claim for claim in notes.claims}
    sure: list[float] = []  # by token: when each claim's item was surely claimable
    for claim in notes.claims:
        item = filled.items[claim.key]
        earliest = filled.earliest(item)
        assert earliest is None or claim.got >= earliest, (claim, earliest)
        for dep in item.after:
            assert claim.got >= acks[dep].sent, (claim, acks[dep])
            assert claim.token > claims[dep].token, (claim, claims[dep])
        sure.append(max([filled.latest(item), *(acks[dep].done for dep in item.after)]))
    order = [(filled.items[c.key].priority, filled.items[c.key].seq) for c in notes.claims]
    for b, claim in enumerate(notes.claims):
        for a in range(b + 1, len(order)):
            assert not (sure[a] <= claim.asked and order[a] < order[b]), (
                f"{notes.claims[a].key} {order[a]} was claimable when {claim.key} {order[b]} "
                "was claimed before it"
            )


# -- the tests --------------------------------------------------------------------------------


def test_four_workers_drain_two_thousand_items_by_priority_time_and_dependency(
    short_dir: Path,
) -> None:
    items = plan(random.Random(SEED), 2000, time.time())
    assert sum(i.delay is not None for i in items) > 150
    assert sum(i.at is not None for i in items) > 150
    assert sum(i.after != () for i in items) > 300
    broker = start_broker(short_dir / "data", short_dir / "b.sock")
    workers = Workers(short_dir)
    try:
        workers.start(broker.url, lease=30.0)
        with Client.connect(broker.url, user="test") as client:
            filled = fill(client, items)
            workers.go()
            notes = workers.finish()
            assert client.count(QUEUE) == 0
            events = history(client)
    finally:
        workers.stop()
        broker.kill()

    # Each item was done exactly once: one claim, its first delivery, acked at the first try.
    assert sorted(c.key for c in notes.claims) == sorted(filled.items)
    assert not notes.lost
    assert not notes.reconnects
    assert all(c.deliveries == 1 for c in notes.claims)
    assert all(e.outcome == "acked" and not e.retried for e in notes.ends.values())
    assert all(c.value == filled.values[c.key] for c in notes.claims)
    # The four really shared the work (a worker that never claimed would hide a broken one).
    assert len({c.worker for c in notes.claims}) == WORKERS
    check_claimed_in_time_and_order(notes, filled)

    # The broker's account: the items were put in fill order (the order the workers' check
    # takes for create revisions); claims in token order are its claims in revision order, each
    # the least claimable item (replay), acked by the worker that claimed it.
    assert [e.key for e in events if e.type == "put"] == [item.key for item in items]
    told = replay(events, filled, lease=30.0)
    claimed = sorted((e.rev, e.key, e.by) for t in told.values() for e in t if e.type == "claim")
    assert [(key, by) for _, key, by in claimed] == [
        (c.key, f"worker{c.worker}") for c in notes.claims
    ]
    assert all([e.type for e in t] == ["claim", "ack"] for t in told.values())


LEASE = 3.0  # seconds: claims orphaned by the crash come back soon after the restart
HELD = 3  # items the test claims itself just before the crash and never acks


def test_a_broker_killed_mid_drain_loses_no_item_and_fences_every_stale_token(
    short_dir: Path,
) -> None:
    """kill -9 once half the items are acked, restart on the same directory and socket; the
    workers reconnect and finish.

    At-least-once, exactly: every item is acked once, by the holder of its last claim; every other
    claim of it ended by its lease running out (no earlier than the claim's time + LEASE), and
    the worker that held it, if any, was refused its ack (compare_failed): never two valid
    holders. A claim the broker made but whose answer died with it (an orphan) is seen by nobody
    and can only run out; there are no more of those than claims the workers saw break. A claim
    a worker saw is durable (its answer waited for that): it is the broker's claim with that many
    deliveries, by that worker. An ack that broke is sent again with its token and either lands
    (the claim survived the restart) or is refused: then its first try landed before the crash
    (the history's ack) or the lease ran out meanwhile (a release, and another claim). The test's
    own HELD claims, unacked when the broker died, come back once their lease ends and are done
    by a worker at their next delivery.
    """
    items = plan(random.Random(SEED + 1), 1000, time.time())
    data, socket = short_dir / "data", short_dir / "b.sock"
    brokers: list[BrokerProcess] = [start_broker(data, socket)]
    workers = Workers(short_dir)
    try:
        workers.start(brokers[0].url, lease=LEASE)
        with Client.connect(brokers[0].url, user="test") as client:
            filled = fill(client, items)
            with client.watch(QUEUE) as watch:
                workers.go()
                acked = 0
                while acked < len(items) // 2:  # durable acks: the watch sees nothing else
                    event = watch.next_event(TIMEOUT)
                    assert event is not None, "the drain stalled"
                    acked += event.type == "ack"
            held = []
            for _ in range(HELD):
                asked = time.time()
                taken = client.claim(QUEUE, wait=TIMEOUT, lease=LEASE)
                assert taken is not None
                held.append((taken, asked))
        brokers[0].kill()
        brokers.append(start_broker(data, socket))
        notes = workers.finish()
        with Client.connect(brokers[1].url, user="test") as client:
            assert client.count(QUEUE) == 0
            assert client.count("dead") == 0
            events = history(client)
    finally:
        workers.stop()
        for broker in brokers:
            broker.kill()

    # Every worker lived through the crash: each had a call break and connected again.
    assert sorted(notes.reconnects) == list(range(WORKERS))
    assert all(c.value == filled.values[c.key] for c in notes.claims)
    for noted in notes.claims:  # no claim came back before its item's time
        earliest = filled.earliest(filled.items[noted.key])
        assert earliest is None or noted.got >= earliest, (noted, earliest)
    told = replay(events, filled, lease=LEASE)  # ends in every item acked, by its holder
    mine = notes.by_key()
    orphans = 0
    for key, changes in told.items():
        # The model let a claim only take an item not held, and ended claims only held ones.
        turns = list(zip(changes[::2], changes[1::2], strict=True))  # (claim, its end)
        assert [end.type for _, end in turns] == ["release"] * (len(turns) - 1) + ["ack"]
        seen = {noted.deliveries: noted for noted in mine.get(key, [])}
        assert len(seen) == len(mine.get(key, [])), f"{key}: a delivery count came twice"
        for deliveries, (made, end) in enumerate(turns, 1):
            claim = seen.get(deliveries)
            if claim is None:  # nobody saw this claim's answer: nobody could ack it
                assert end.type == "release", (key, made, end)
                orphans += made.by != "test"
                continue
            assert made.by == f"worker{claim.worker}", (claim, made)
            outcome = notes.ends[claim.token]
            if end.type == "ack":
                assert outcome.outcome == "acked" or outcome.retried, (outcome, made, end)
            else:
                assert outcome.outcome == "stale", (outcome, made, end)  # fenced
        assert set(seen) <= set(range(1, len(turns) + 1)), (key, sorted(seen), len(turns))
    assert orphans <= len(notes.lost), (orphans, notes.lost)

    # The test's own claims ran out after their lease and went to workers at the next delivery.
    for taken, asked in held:
        made, end = told[taken.key][2 * taken.deliveries - 2 : 2 * taken.deliveries]
        assert (made.type, made.by, end.type) == ("claim", "test", "release")
        after = [c for c in mine[taken.key] if c.deliveries == taken.deliveries + 1]
        assert len(after) == 1, (taken, after)
        assert after[0].got >= asked + LEASE, (taken, after)
