"""``watch``: a stream of every durable change under a prefix, from a past revision or from now.

A watcher keeps no queue of its own. It reads the database's history (the engine's bounded window
of recent batches) from its next revision up to the durable revision, sends that, and sleeps until
the durable revision moves. So the history window is every watcher's backlog, shared and bounded:
a slow reader costs no memory, it only falls behind, and once the window has moved past it, it is
told ``overflow`` with the revision to resume from, and its stream ends. Nobody waits for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import trio

from prontodb.protocol import ErrorCode, ProntoError

from ..engine import Batch, Change, change_cost, validate_prefix
from ._args import Arg, Kind
from ._database_ops import MAX_KEY_LEN
from ._databases import Databases, OpenDatabase, WatchPosition

# A push closes at this many bytes of events (about) or events, whichever comes first: well inside
# the frame limit even with a 1 MiB value in it, and small enough to interleave with answers.
PUSH_BYTES = 256 * 1024
PUSH_EVENTS = 1000
# Batches one history read looks at before the watcher lets other tasks run.
READ_BATCHES = 4096
# A watcher whose prefix sees no change is told how far it has read this often (in revisions),
# so that a reconnect resumes near the head instead of far back in (or before) the window.
PROGRESS_EVERY = 1000

# Sends one push (encoded by Connection.pack_event) that resumes at the given revision.
Send = Callable[[bytes, int], Awaitable[None]]
Pack = Callable[[dict[str, Any]], bytes]
# One revision range's pushes, encoded, each with its resume revision; and where the range ends.
Encoded = tuple[list[tuple[bytes, int]], int]


WATCH_ARGS = (
    Arg("prefix", Kind.PREFIX, doc='default "": every key'),
    Arg("from_rev", Kind.UINT, doc="0 or absent: from now"),
)


def watch_args(args: Mapping[str, Any]) -> tuple[str, int | None]:
    """The prefix (segment-aware; "" for every key) and the revision to start from (None: now)."""
    prefix = validate_prefix(args.get("prefix", ""), MAX_KEY_LEN)
    from_rev = args.get("from_rev")  # a whole number or nil: checked as declared
    return prefix, from_rev or None


def start_revision(db: OpenDatabase, from_rev: int | None) -> int:
    """Where a new watcher starts; ``compacted`` if the history no longer reaches back to it.

    "From now" is from the last durable revision on: a change applied but not yet durable
    could still be lost, and its revision number then given to another change."""
    if from_rev is None:
        return db.durable_rev + 1
    first = db.engine.history.first
    if from_rev < first:
        raise ProntoError(
            ErrorCode.COMPACTED,
            f"Revision {from_rev} is no longer kept; the oldest still available is {first}. "
            "Re-read the current state (scan) and watch from there.",
            {"oldest_rev": first},
        )
    return from_rev


def in_place(start: int, head: int) -> dict[str, Any]:
    """The first Push of a watch: it is in place, starts at ``start``, and the database's last
    durable revision is ``head`` (so a watcher told to start past it knows it waits)."""
    return {"events": [], "next_rev": start, "head_rev": head}


async def stream(
    db: OpenDatabase,
    prefix: str,
    next_rev: int,
    send: Send,
    pack: Pack,
    *,
    position: WatchPosition,
    announced: bool = False,
    flavour: str = "msgpack",
) -> None:
    """Send ``db``'s changes under ``prefix`` from ``next_rev`` on, as they become durable, until
    cancelled (returns nothing then) or cut off (raises ``overflow`` or ``unavailable``).

    The first push, with no events, says the watch is in place and where it starts (unless the
    caller ``announced`` it already: a watch waiting for its database to exist). Watchers at
    the same revision with the same prefix share one reading and encoding of their pushes
    (:func:`encoded`): a fan-out to many watchers does that work once. ``position`` follows
    what has been sent (the metrics' watcher lag). ``flavour`` names what ``pack`` makes (the
    protocol's msgpack, the dashboard's server-sent events): only watchers of one flavour share
    encodings."""
    if not announced:
        await send(pack(in_place(next_rev, db.durable_rev)), next_rev)
    told = next_rev  # the resume point the watcher last heard of
    while True:
        if db.replaced_at is not None:
            raise replaced(db.replaced_at)
        if db.retired and db.replacing is not None and not db.replacing.is_set():
            await db.replacing.wait()  # a restore: say it replaced the data, if it did
            continue
        if db.failure is not None or db.retired:
            raise _lost(db, next_rev)
        durable = db.durable_rev
        if next_rev > durable:
            if next_rev - told >= PROGRESS_EVERY:
                await send(pack({"events": [], "next_rev": next_rev}), next_rev)
                told = next_rev
            await db.wait_past(next_rev - 1)
            continue
        history = db.engine.history
        if next_rev < history.first:
            raise ProntoError(
                ErrorCode.OVERFLOW,
                f"The watcher fell behind the history the broker keeps (it is at revision "
                f"{next_rev}, the oldest kept is {history.first}) and was cut off. Re-read the "
                "state (scan), watch from there, and read faster or watch a narrower prefix.",
                {"next_rev": next_rev, "oldest_rev": history.first},
            )
        messages, next_rev = encoded(db, prefix, next_rev, durable, pack, flavour)
        for packed, resume in messages:
            await send(packed, resume)
            told = position.next_rev = resume
        position.next_rev = next_rev  # the rest of the range held nothing under the prefix
        await trio.lowlevel.checkpoint()  # a long replay must not hold up the other tasks


def replaced(revision: int) -> ProntoError:
    """The end of a watch whose database was replaced (restored from a backup, or deleted) and
    is now at ``revision``: its history is not the one the watch was reading."""
    return ProntoError(
        ErrorCode.COMPACTED,
        f"The database was replaced (restored from a backup, or deleted) and is now at revision "
        f"{revision}; re-read it (scan) and watch from revision {revision + 1}.",
        {"oldest_rev": revision + 1, "restored": True},
    )


async def once_it_exists(
    databases: Databases, name: str, user: str, start: int, send: Send, pack: Pack
) -> OpenDatabase:
    """For a watch of a database that does not exist yet: its in-place event at once, then the
    database once it is created (``replaced`` if it came by a restore, whose history is not the
    one the watch starts in)."""
    await send(pack(in_place(start, 0)), start)
    db = await databases.wait_for(name, user)
    if db.engine.history.first > start:
        raise replaced(db.engine.revision)
    return db


def encoded(
    db: OpenDatabase, prefix: str, start: int, durable: int, pack: Pack, flavour: str = "msgpack"
) -> Encoded:
    """The pushes for the changes under ``prefix`` from ``start`` up to ``durable``, read and
    encoded once per durable revision for all the watchers that ask the same of ``flavour``."""
    cache = db.fanout
    if cache.durable != durable:
        cache.durable = durable
        cache.entries.clear()
    key = (flavour, prefix, start)
    found = cache.entries.get(key)
    if found is None:
        batches, next_rev = db.engine.history.read(
            start, durable, prefix, max_bytes=PUSH_BYTES, max_batches=READ_BATCHES
        )
        messages = [(pack(m), m["next_rev"]) for m in pushes(batches, next_rev)]
        found = cache.entries[key] = (messages, next_rev)
    return found


def pushes(batches: list[Batch], next_rev: int) -> Iterator[dict[str, Any]]:
    """The events of ``batches`` as pushes of bounded size. Each names the revision to resume
    from if the stream ends after it: ``next_rev`` once a revision is whole, else the revision
    itself with ``"more": true`` (the client then skips the events of it it already has)."""
    events: list[dict[str, Any]] = []
    size = 0
    for index, batch in enumerate(batches):
        last = len(batch.changes) - 1
        for position, change in enumerate(batch.changes):
            events.append(event_map(change, batch.time))
            size += change_cost(change)
            if size < PUSH_BYTES and len(events) < PUSH_EVENTS:
                continue
            if position < last:
                yield {"events": events, "next_rev": batch.revision, "more": True}
            elif index < len(batches) - 1:
                yield {"events": events, "next_rev": batch.revision + 1}
            else:
                yield {"events": events, "next_rev": next_rev}
            events, size = [], 0
    if events:
        yield {"events": events, "next_rev": next_rev}


def event_map(change: Change, time: float) -> dict[str, Any]:
    """One change as a watcher receives it (docs/PROTOCOL.md, ``watch``)."""
    event: dict[str, Any] = {
        "rev": change.revision,
        "type": str(change.kind),
        "key": change.key,
        "by": change.by,
        "time": time,
    }
    entry = change.entry
    if entry is not None:
        event["value"] = entry.value
        event["create_rev"] = entry.create_rev
        event["mod_rev"] = entry.mod_rev
        event["version"] = entry.version
        if entry.expires is not None:
            event["expires"] = entry.expires
        if entry.session is not None:
            event["session"] = entry.session  # goes when that session ends
    return event


def _lost(db: OpenDatabase, next_rev: int) -> ProntoError:
    return ProntoError(
        ErrorCode.UNAVAILABLE,
        f"The database {db.name!r} was closed (a write failed, or it is being replaced); watch "
        f"again from revision {next_rev}.",
        {"next_rev": next_rev},
    )
