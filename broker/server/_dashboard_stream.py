"""``/api/stream``: a watch as server-sent events, for the dashboard's live change stream.

It is a real watch (``_watches.stream``, the code a ``watch`` request runs) on the database the
cursor names for the viewer, so it reads the same history window, counts as one of the database's
watchers, and shares its fan-out encoding with the other dashboard streams. Each event's ``id`` is
a revision: the last one whose changes were all sent. A browser's EventSource that reconnects sends
it back as ``Last-Event-ID`` and the stream resumes after it, missing nothing and repeating nothing
(except a revision of more than one event's worth of changes cut in its middle).

What can go wrong with the request is answered before any event, in plain text: ``400`` for a bad
cursor, prefix or revision, ``403`` when the viewer may not read the prefix, ``503`` past
:data:`MAX_STREAMS`. What ends a running stream (its revision no longer kept, an overflow, the
database replaced or failing, the viewer's right or token gone) is its last event, ``end``, with
the protocol's error code and message; the page then stops the EventSource's reconnects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from prontodb.protocol import ErrorCode, ProntoError

from ..engine import validate_prefix
from ._access import Level, Need, check
from ._dashboard import Viewer
from ._database_ops import MAX_KEY_LEN
from ._databases import Databases, OpenDatabase, WatchPosition
from ._http import HttpRequest, HttpResponse, Write, text
from ._names import DEFAULT_NAME, validate_name
from ._stats import Stats
from ._watches import in_place, once_it_exists, start_revision, stream

MAX_STREAMS = 16  # open at once (each holds an HTTP connection); past it: 503
VALUE_PREVIEW = 200  # characters of a value an event shows (the page is a glance, not an export)
RETRY_MS = 2000  # how long an EventSource waits before it reconnects
FLAVOUR = "sse"  # the fan-out cache's name for these encodings (see _watches.encoded)

# The catalog's users (to tell whether a viewer's token is still its own).
Users = Callable[[], Mapping[str, Any]]


class DashboardStreams:
    """The dashboard's streams: at most ``max_streams`` open at once."""

    def __init__(self, databases: Databases, stats: Stats, max_streams: int = MAX_STREAMS) -> None:
        self.databases = databases
        self.stats = stats
        self.max_streams = max_streams
        self.open = 0

    def figures(self) -> dict[str, int]:
        return {"open": self.open, "max": self.max_streams}

    async def respond(
        self, request: HttpRequest, viewer: Viewer | None, users: Users | None
    ) -> HttpResponse:
        """Answer ``GET /api/stream?cursor=&prefix=&from=`` for ``viewer`` (None: on loopback,
        where grants do not apply), a watch done as that user: it must be allowed to read the
        prefix, when the stream starts and before each event (a revoke ends it)."""
        try:
            cursor, prefix, from_rev = _arguments(request)
            self._allowed(viewer, users, cursor, prefix)
        except ProntoError as err:
            status = 403 if err.code is ErrorCode.DENIED else 400
            return text(status, err.message)
        if self.open >= self.max_streams:
            return self._full()

        async def produce(write: Write) -> None:
            if self.open >= self.max_streams:  # others started while this one's head went
                await write(_end_event("unavailable", _FULL.format(self.max_streams), {}))
                return
            self.open += 1
            try:
                await self._watch(write, cursor, prefix, from_rev, viewer, users)
            finally:
                self.open -= 1

        return HttpResponse(200, content_type="text/event-stream", stream=produce)

    def _allowed(
        self, viewer: Viewer | None, users: Users | None, cursor: str, prefix: str
    ) -> None:
        """Raise ``denied`` unless ``viewer`` may read ``prefix`` in ``cursor`` with its token."""
        if viewer is None:
            return
        if users is None or not viewer.still_valid(users()):
            raise ProntoError(
                ErrorCode.DENIED,
                f"The token of {viewer.user!r} is no longer valid (replaced, or the user "
                "removed); open the page again with a current token.",
            )
        check(self.databases.catalog.grants, viewer.user, [Need(Level.READ, cursor, prefix)])

    def _full(self) -> HttpResponse:
        return text(503, _FULL.format(self.max_streams), retry_after=RETRY_MS // 1000)

    async def _watch(
        self,
        write: Write,
        cursor: str,
        prefix: str,
        from_rev: int | None,
        viewer: Viewer | None,
        users: Users | None,
    ) -> None:
        user = "" if viewer is None else viewer.user

        async def send(packed: bytes, resume: int) -> None:
            # A right revoked meanwhile ends the stream before this event goes.
            self._allowed(viewer, users, cursor, prefix)
            await write(packed)

        watching: OpenDatabase | None = None
        try:
            db = await self.databases.get(cursor, create=False, user=user)
            start = (from_rev or 1) if db is None else start_revision(db, from_rev)
            if db is None:
                db = await once_it_exists(self.databases, cursor, user, start, send, pack)
            else:
                await send(pack(in_place(start, db.durable_rev)), start)
            watching = db
            position = WatchPosition(user, prefix, start)  # the metrics' watcher lag reads it
            db.watching.add(position)
            await stream(
                db,
                prefix,
                start,
                send,
                pack,
                position=position,
                announced=True,
                flavour=FLAVOUR,
            )
        except ProntoError as err:
            if err.code is ErrorCode.OVERFLOW and watching is not None:
                self.stats.overflowed(watching.name)
            await write(_end_event(str(err.code), err.message, err.details or {}))
        finally:
            if watching is not None:
                watching.watching.discard(position)


_FULL = (
    "Too many dashboard streams are open ({}, the broker's cap); close a page that watches, "
    "or try again shortly."
)


def _arguments(request: HttpRequest) -> tuple[str, str, int | None]:
    """The cursor, the prefix and the revision to start from (None: from now) of a request:
    ``Last-Event-ID`` (an EventSource's reconnect) wins over ``from``."""
    query = parse_qs(request.query, keep_blank_values=True)
    cursor = validate_name(_one(query, "cursor") or DEFAULT_NAME)
    prefix = validate_prefix(_one(query, "prefix") or "", MAX_KEY_LEN)
    last = request.headers.get("last-event-id", "").strip()
    if last:
        return cursor, prefix, _revision(last, "Last-Event-ID") + 1
    start = _revision(_one(query, "from") or "0", "from")
    return cursor, prefix, start or None


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _revision(value: str, what: str) -> int:
    if not value.isdigit() or len(value) > 19:
        raise ProntoError(
            ErrorCode.BAD_REQUEST, f"{what} must be a revision (a whole number), not {value!r}."
        )
    return int(value)


def pack(push: dict[str, Any]) -> bytes:
    """One watch push as one server-sent event: ``ready`` (the first: where it starts, and the
    database's head), ``changes``, or ``progress`` (read this far, nothing under the prefix).
    Its id is the last revision whose changes were all sent."""
    next_rev: int = push["next_rev"]
    events = push["events"]
    if "head_rev" in push:
        name, data = "ready", {"next_rev": next_rev, "head_rev": push["head_rev"]}
        head = f"retry: {RETRY_MS}\n"
    elif events:
        name, data = "changes", {"next_rev": next_rev, "events": [_event(e) for e in events]}
        head = ""
    else:
        name, data, head = "progress", {"next_rev": next_rev}, ""
    body = json.dumps(data, separators=(",", ":"))  # one line: no newline can split the data
    return f"{head}id: {next_rev - 1}\nevent: {name}\ndata: {body}\n\n".encode()


def _event(event: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {
        k: event[k] for k in ("rev", "type", "key", "by", "time") if k in event
    }
    if "value" in event:
        shown["value"], shown["truncated"] = preview(event["value"])
    if "version" in event:
        shown["version"] = event["version"]
    return shown


def preview(value: Any) -> tuple[str, bool]:
    """A value as at most VALUE_PREVIEW characters of text (JSON for what is not a string, a
    byte count for bytes), and whether it was cut."""
    if isinstance(value, str):
        shown = value
    elif isinstance(value, bytes | bytearray):
        shown = f"<{len(value)} bytes>"
    else:
        try:
            shown = json.dumps(value, default=_unjsonable, ensure_ascii=False)
        except (TypeError, ValueError):  # a map with keys JSON has no form for (bytes, tuples)
            shown = repr(value)
    return shown[:VALUE_PREVIEW], len(shown) > VALUE_PREVIEW


def _unjsonable(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    return repr(value)


def _end_event(code: str, message: str, details: dict[str, Any]) -> bytes:
    body = json.dumps({"code": code, "message": message, **details}, default=str)
    return f"event: end\ndata: {body}\n\n".encode()
