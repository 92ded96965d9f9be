"""The CLI's commands, written once.

Two front ends parse argv: the click group (``_cli_click``: every option, the help, the usage errors)
and the fast path (``_cli_fast``: the forms scripts run in loops, parsed without importing click).
Both call these functions, which connect, do one thing, write the output and return the exit status,
so the two cannot differ in what they print or how they exit.

Output is written as bytes to ``sys.stdout.buffer`` (looked up at call time, so click's CliRunner
captures it): a bytes value prints raw, everything else as UTF-8. Errors go to stderr as one line,
``prontodb: error: <sentence saying what to do>``, and the exit status comes from the error code
(``ProntoError.exit_status``). Heavy imports (the client, json, datetime) happen inside the
functions that need them.
"""

from __future__ import annotations

import math
import os
import sys

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from prontodb.protocol import ProntoError

    from ._sync.client import Client
    from ._types import KeyInfo, QueueStats

CLIENT_NAME = "prontodb-cli"
STOP_TIMEOUT = 30.0  # seconds `stop` waits for the socket to go (the broker's grace is 10 s)
STOP_POLL = 0.01
# Ctrl-C: the status shells give a command stopped by SIGINT (128 + 2), and click's words.
EXIT_INTERRUPTED = 130
INTERRUPTED = "Aborted!"

# The bounds of a stored integer (msgpack's int64), as prontodb.protocol's INT64_MIN and INT64_MAX
# (a test checks): importing the protocol would cost the fast path about 10 ms.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# The exit statuses of a miss and of nothing to claim, as the error table has them for not_found and
# timed_out (a test checks): a script's loop meets them often, and the table's import (the
# protocol) would cost each such call about 10 ms.
EXIT_NOT_FOUND = 3
EXIT_TIMED_OUT = 4

# The global options that take a value, by the name of what they set (both front ends read them).
GLOBAL_VALUE_OPTIONS = {"--user": "user", "--cursor": "cursor", "--url": "url"}


class Globals:
    """The global options, resolved against the environment in one place for both front ends.

    ``url`` is None when neither ``--url`` nor ``$PRONTODB_URL`` names one: the default socket,
    which is the only address the CLI starts a broker for.
    """

    __slots__ = ("cursor", "json", "url", "user", "wire")

    def __init__(
        self,
        *,
        user: str | None = None,
        cursor: str | None = None,
        url: str | None = None,
        json: bool = False,
    ) -> None:
        # An empty option or variable counts as unset (as click's envvar= has it).
        self.user = user or os.environ.get("PRONTODB_USER") or None  # None: the client's default
        self.cursor = cursor or os.environ.get("PRONTODB_CURSOR") or "default"
        self.url = url or os.environ.get("PRONTODB_URL") or None
        self.json = json
        self.wire = False  # the fast path sets it: its commands may use _cli_wire's client

    def with_json(self, json: bool) -> Globals:
        """These options, with ``--json`` also given after the command."""
        if not json or self.json:
            return self
        return Globals(user=self.user, cursor=self.cursor, url=self.url, json=True)


# -- argument conversions shared by both front ends ---------------------------------------------


def is_number(token: str) -> bool:
    """Whether an argument is a negative number (``-12``, ``-1.5``), which is a value, not an option.

    No option starts with a digit, so ``set k -12`` and ``incr k -5`` need no ``--``.
    """
    return len(token) > 1 and token[0] == "-" and token[1] in "0123456789"


def parse_int(text: str) -> int | None:
    """``BY`` and ``--if-rev`` as Python reads an integer; None if it is not one."""
    try:
        return int(text)
    except ValueError:
        return None


def parse_seconds(text: str, allow_zero: bool = False) -> float | None:
    """A duration in seconds (fractions allowed): finite, above 0 (or 0 with ``allow_zero``);
    None if it is not one."""
    try:
        seconds = float(text)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        return None
    return seconds


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, allow_zero: bool = True) -> float | None:
    """A duration: seconds (``30``, ``1.5``) or with a unit (``30s``, ``5m``, ``2h``, ``1d``);
    None if it is not one."""
    unit = _UNITS.get(text[-1:], 0.0)
    seconds = parse_seconds(text[:-1] if unit else text, allow_zero)
    return None if seconds is None else seconds * (unit or 1.0)


def parse_time(text: str) -> float | None:
    """A point in time for ``--at``: ISO 8601 with a zone (``2026-12-24T08:00Z``,
    ``2026-12-24T09:00+01:00``) or seconds since the epoch; None if it is not one."""
    seconds = parse_seconds(text, allow_zero=True)
    if seconds is not None:
        return seconds
    from datetime import datetime  # only for --at: the fast path stays light

    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return None if moment.tzinfo is None else moment.timestamp()


def parse_backoff(text: str) -> tuple[float, float] | None:
    """``--backoff FIRST:CAP`` (``1s:5m``) as seconds; None if it is not of that form."""
    first, sep, cap = text.partition(":")
    low, high = parse_duration(first, False), parse_duration(cap, False)
    return (low, high) if sep and low is not None and high is not None and low <= high else None


def parse_keys(text: str) -> list[str] | None:
    """``--after K1,K2`` as a list of keys; None if one is empty."""
    keys = text.split(",")
    return keys if all(keys) else None


def parse_fence(text: str) -> tuple[str, int] | None:
    """``--fence NAME:TOKEN`` as (name, token), or None if it is not of that form."""
    name, sep, token = text.rpartition(":")
    number = parse_int(token)
    return (name, number) if sep and name and number is not None and number >= 0 else None


def canonical_int(text: str) -> int | None:
    """The integer ``text`` spells canonically (``0``, ``-12``, ``100``; not ``007``, ``+1``, ``-0``,
    ``1_000``), if it is within int64; else None. Such a value prints back exactly as given."""
    digits = text[1:] if text[:1] == "-" else text
    if not (0 < len(digits) <= 19 and digits.isascii() and digits.isdigit()):
        return None
    if digits[0] == "0" and text != "0":
        return None
    number = int(text)
    return number if INT64_MIN <= number <= INT64_MAX else None


def text_of(data: bytes) -> str:
    """Bytes read from stdin or a file as ``set`` takes an argument: text, with any bytes that are
    not UTF-8 kept as an argument keeps them (so :func:`stored_value` stores those as bytes)."""
    return data.decode("utf-8", "surrogateescape")


def stored_value(text: str, *, as_string: bool = False) -> str | int | bytes:
    """What ``set KEY VALUE`` stores: an int for a canonical integer (unless ``--string``), bytes
    for an argument that is not valid UTF-8 (so it round-trips), else the text."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:  # undecodable argv bytes arrive as surrogate escapes
            return os.fsencode(text)
    if not as_string:
        number = canonical_int(text)
        if number is not None:
            return number
    return text


# -- output --------------------------------------------------------------------------------------


def render(value: Any) -> bytes:
    """A value as ``get`` prints it: str as is, bytes raw, numbers as text, lists and maps as JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool) or value is None:
        return to_json(value)
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    return to_json(value)


def to_json(document: Any) -> bytes:
    """One line of JSON; bytes anywhere inside become ``{"$bytes": "<base64>"}``."""
    import json

    return json.dumps(document, ensure_ascii=False, default=_json_default).encode()


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        import base64

        return {"$bytes": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot print a {type(value).__name__} as JSON")


def iso_time(seconds: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds: ``2026-11-25T08:00:00.123Z``."""
    from datetime import UTC, datetime

    stamp = datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def write(data: bytes) -> None:
    """Write to stdout as bytes (after anything already written as text)."""
    stream = sys.stdout
    stream.flush()
    out = stream.buffer
    # Under `python -u` / PYTHONUNBUFFERED the binary layer is a raw file whose write() may
    # write only part (a pipe whose reader left): loop, so output is whole or an error is raised.
    view = memoryview(data)
    while view:
        view = view[out.write(view) or 0 :]
    out.flush()


def write_json(document: Any) -> None:
    write(to_json(document) + b"\n")


def say(message: str) -> None:
    """One line on stderr, prefixed with the program's name."""
    sys.stderr.write(f"prontodb: {message}\n")
    sys.stderr.flush()


def fail(error: ProntoError) -> int:
    say(f"error: {error.message}")
    return error.exit_status


# -- connecting ---------------------------------------------------------------------------------


def target_url(options: Globals) -> str:
    """The URL the command talks to."""
    if options.url is not None:
        return options.url
    from ._locations import default_url

    return default_url()


def connect(options: Globals, *, start: bool = True) -> Client:
    """A client for ``options``; on the default socket, start a broker first if none answers
    (unless ``start`` is false). Raises ProntoError (BrokerUnavailable when nothing answers)."""
    from ._sync.client import Client

    return Client.connect(
        options.url, user=options.user, cursor=options.cursor, name=CLIENT_NAME, autostart=start
    )


def run(
    options: Globals,
    body: Callable[[Client], int],
    *,
    start: bool = True,
    unavailable: Callable[[str], int] | None = None,
    wire: bool = False,
) -> int:
    """Connect, run ``body`` and close; a ProntoError becomes its message and exit status.

    ``unavailable(url)``, if given, handles "no broker answers" instead (status and stop).
    ``wire``: ``body`` calls only methods that ``_cli_wire.WireClient`` has too, so on the fast
    path (``options.wire``) it runs over that client when it can (it starts several times
    faster than the sync client), else over the sync client.
    """
    if wire and options.wire:
        status = _run_wire(options, body)
        if status is not None:
            return status
    from prontodb.protocol import ProntoError

    from ._types import BrokerUnavailable

    try:
        client = connect(options, start=start)
    except BrokerUnavailable as exc:
        return unavailable(target_url(options)) if unavailable else fail(exc)
    except ProntoError as exc:
        return fail(exc)
    try:
        with client:
            return body(client)
    except ProntoError as exc:
        return fail(exc)


def _run_wire(options: Globals, body: Callable[[Client], int]) -> int | None:
    """``body`` over the fast path's client; None when the sync client should run it (nothing
    was done at the broker)."""
    from ._cli_wire import Declined, WireClient

    try:
        connecting = WireClient.connect(options.url, options.user, options.cursor, CLIENT_NAME)
        with connecting as client:
            duck: Any = client  # the bodies run=wire gets call only WireClient's methods
            return body(duck)
    except Declined:
        return None
    except Exception as exc:
        from prontodb.protocol import ProntoError  # an error's path only: it costs a few ms

        if isinstance(exc, ProntoError):
            return fail(exc)
        raise


def _not_found(options: Globals, key: str) -> int:
    say(f"not found: {key} (cursor {options.cursor})")
    return EXIT_NOT_FOUND


# -- the commands -------------------------------------------------------------------------------


def _meta_fields(info: KeyInfo) -> dict[str, Any]:
    """What ``get --meta`` shows of a key, before times are made readable."""
    fields: dict[str, Any] = {
        "value": info.value,
        "create_rev": info.create_rev,
        "mod_rev": info.mod_rev,
        "version": info.version,
        "writer": info.writer,
        "time": info.time,
        "size": info.size,
    }
    if info.expires is not None:  # only keys with a TTL have this line
        fields["expires"] = info.expires
    if info.session is not None:  # only keys attached to a session have this line
        fields["session"] = info.session
    if info.deliveries:  # only items handed out by claim have these
        fields["deliveries"] = info.deliveries
    if info.claim is not None:
        fields["claim_holder"] = info.claim.holder
        fields["claim_token"] = info.claim.token
        fields["claim_lease"] = info.claim.lease
    if info.priority != 100:  # only queue items with a priority of their own
        fields["priority"] = info.priority
    if info.ready_at is not None:  # only items not claimable yet
        fields["ready_at"] = info.ready_at
    if info.after:  # only items still waiting for other keys (dead.KEY: one that failed)
        fields["after"] = ",".join(info.after)
    return fields


def get(options: Globals, key: str, *, meta: bool = False) -> int:
    """``get KEY [--meta]``: the value and a newline; missing: nothing on stdout, exit 3."""

    def body(client: Client) -> int:
        if not meta:
            value = client.get(key)
            if value is None:
                return _not_found(options, key)
            if options.json:
                write_json({"key": key, "value": value})
            else:
                write(render(value) + b"\n")
            return 0
        info = client.get_info(key)
        if info is None:
            return _not_found(options, key)
        fields = _meta_fields(info)
        if options.json:
            write_json({"key": key, **fields})
            return 0
        fields["time"] = iso_time(info.time)
        if info.expires is not None:
            fields["expires"] = iso_time(info.expires)
        if info.claim is not None:
            fields["claim_lease"] = iso_time(info.claim.lease)
        if info.ready_at is not None:
            fields["ready_at"] = iso_time(info.ready_at)
        write(b"".join(f"{name}=".encode() + render(v) + b"\n" for name, v in fields.items()))
        return 0

    return run(options, body, wire=not meta)


def set_(
    options: Globals,
    key: str,
    value: str,
    *,
    as_string: bool = False,
    if_absent: bool = False,
    if_rev: int | None = None,
    ttl: float | None = None,
    session: int | None = None,
    fence: tuple[str, int] | None = None,
    priority: int | None = None,
    delay: float | None = None,
    at: float | None = None,
    after: list[str] | None = None,
) -> int:
    """``set KEY VALUE``: silent on success; a condition (or ``--fence``) that does not hold
    exits 5. The queue options make KEY an item for ``claim``."""
    stored = stored_value(value, as_string=as_string)

    def body(client: Client) -> int:
        revision = client.set(
            key,
            stored,
            if_absent=if_absent,
            if_rev=if_rev,
            ttl=ttl,
            session=session,
            fence=fence,
            priority=priority,
            delay=delay,
            at=at,
            after=after,
        )
        if options.json:
            write_json({"key": key, "revision": revision})
        return 0

    return run(options, body, wire=True)


def delete(options: Globals, key: str, *more: str, fence: tuple[str, int] | None = None) -> int:
    """``del KEY [KEY...]``: silent, and exit 0 whether or not the keys existed (as Redis DEL);
    several keys go at one revision (a transaction)."""

    def body(client: Client) -> int:
        if not more:
            deleted = client.delete(key, fence=fence)
            if options.json:
                write_json({"key": key, "deleted": deleted})
            return 0
        keys = [key, *more]
        outcome = client.txn([], [{"op": "del", "key": k} for k in keys], fence=fence)
        if options.json:
            write_json({"keys": keys, "deleted": sum(1 for r in outcome.results if r)})
        return 0

    return run(options, body, wire=not more)


def exists(options: Globals, key: str) -> int:
    """``exists KEY``: silent; exit 0 if KEY exists, 3 if not (as ``get``)."""

    def body(client: Client) -> int:
        found = client.exists(key)
        if options.json:
            write_json({"key": key, "exists": found})
        return 0 if found else _not_found(options, key)

    return run(options, body, wire=True)


def mget(options: Globals, keys: Sequence[str]) -> int:
    """``mget KEY...``: each value on a line of its own, in order, as ``get`` prints it; a missing
    key's line is empty (``--json``: one object, null for a missing key). Exit 0."""

    def body(client: Client) -> int:
        values = client.mget(keys)
        if options.json:
            write_json(dict(zip(keys, values, strict=True)))
        else:
            write(b"".join((b"" if v is None else render(v)) + b"\n" for v in values))
        return 0

    return run(options, body, wire=True)


def mset(options: Globals, pairs: Sequence[str], *, as_string: bool = False) -> int:
    """``mset KEY VALUE [KEY VALUE...]``: every key at one revision, or none; silent."""
    items = {
        pairs[i]: stored_value(pairs[i + 1], as_string=as_string) for i in range(0, len(pairs), 2)
    }

    def body(client: Client) -> int:
        revision = client.mset(items)
        if options.json:
            write_json({"keys": list(items), "revision": revision})
        return 0

    return run(options, body, wire=True)


def incr(
    options: Globals,
    key: str,
    by: int = 1,
    *,
    decrement: bool = False,
    fence: tuple[str, int] | None = None,
) -> int:
    """``incr KEY [BY]`` / ``decr KEY [BY]``: print the new value (a missing key counts as 0)."""

    def body(client: Client) -> int:
        count = client.decr if decrement else client.incr
        value = count(key, by, fence=fence)
        if options.json:
            write_json({"key": key, "value": value})
        else:
            write(b"%d\n" % value)
        return 0

    return run(options, body, wire=True)


def keys(options: Globals, prefix: str = "") -> int:
    """``keys [PREFIX]``: one key per line, sorted (``--json``: one array)."""

    def body(client: Client) -> int:
        found = client.keys(prefix)
        if options.json:
            write_json(found)
        elif found:
            write("".join(f"{key}\n" for key in found).encode())
        return 0

    return run(options, body, wire=True)


def scan(options: Globals, prefix: str = "") -> int:
    """``scan [PREFIX]``: ``key=value`` lines, sorted (``--json``: one object)."""

    def body(client: Client) -> int:
        items = client.scan(prefix)
        if options.json:
            write_json(dict(items))
        elif items:
            write(b"".join(key.encode() + b"=" + render(value) + b"\n" for key, value in items))
        return 0

    return run(options, body, wire=True)


def seconds_text(seconds: float) -> str:
    """Seconds as the CLI prints them: at most three decimals, none when whole (3600, 2.5)."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def expire(options: Globals, key: str, seconds: float) -> int:
    """``expire KEY SECONDS``: silent; a missing key exits 3."""

    def body(client: Client) -> int:
        if not client.expire(key, seconds):
            return _not_found(options, key)
        if options.json:
            write_json({"key": key, "ttl": max(seconds, 0.0)})
        return 0

    return run(options, body, wire=True)


def persist(options: Globals, key: str) -> int:
    """``persist KEY``: silent, exit 0 whether or not KEY had a TTL (``--json`` says which)."""

    def body(client: Client) -> int:
        had = client.persist(key)
        if options.json:
            write_json({"key": key, "persisted": had})
        return 0

    return run(options, body, wire=True)


def ttl(options: Globals, key: str) -> int:
    """``ttl KEY``: the seconds left, or -1 for a key with no TTL; a missing key exits 3."""

    def body(client: Client) -> int:
        try:
            remaining = client.ttl(key)
        except Exception as exc:
            from prontodb.protocol import ErrorCode, ProntoError  # here: the fast path's cost

            if isinstance(exc, ProntoError) and exc.code is ErrorCode.NOT_FOUND:
                return _not_found(options, key)
            raise
        if options.json:
            write_json({"key": key, "ttl": remaining})
        else:
            write(b"-1\n" if remaining is None else seconds_text(remaining).encode() + b"\n")
        return 0

    return run(options, body, wire=True)


def create_cache(options: Globals, prefix: str, seconds: float) -> int:
    """``create-cache PREFIX SECONDS``: silent."""

    def body(client: Client) -> int:
        client.create_cache(prefix, seconds)
        if options.json:
            write_json({"prefix": prefix, "seconds": seconds})
        return 0

    return run(options, body)


def drop_cache(options: Globals, prefix: str) -> int:
    """``drop-cache PREFIX``: silent, exit 0 whether or not it was a cache."""

    def body(client: Client) -> int:
        was = client.drop_cache(prefix)
        if options.json:
            write_json({"prefix": prefix, "dropped": was})
        return 0

    return run(options, body)


def caches(options: Globals) -> int:
    """``caches``: ``prefix=seconds`` lines, sorted (``--json``: one object)."""

    def body(client: Client) -> int:
        found = client.caches()
        if options.json:
            write_json(found)
        else:
            write("".join(f"{p}={seconds_text(t)}\n" for p, t in found.items()).encode())
        return 0

    return run(options, body, wire=True)


def cas(options: Globals, key: str, old: str, new: str, *, as_string: bool = False) -> int:
    """``cas KEY OLD NEW``: set KEY to NEW only if it holds OLD (values read as ``set`` reads
    them); otherwise change nothing and exit 5."""
    expected = stored_value(old, as_string=as_string)
    stored = stored_value(new, as_string=as_string)

    def body(client: Client) -> int:
        revision = client.set(key, stored, if_value=expected)
        if options.json:
            write_json({"key": key, "revision": revision})
        return 0

    return run(options, body, wire=True)


def txn(options: Globals, document: str, fence: tuple[str, int] | None = None) -> int:
    """``txn``: apply the JSON document's operations if all its compares hold; print the
    outcome; a compare that fails exits 5 and changes nothing."""
    import json

    from prontodb.protocol import ERROR_TABLE, ErrorCode

    try:
        spec = json.loads(document)
        if not isinstance(spec, dict):
            raise ValueError("not an object")
        compares, ops = spec.get("compares", []), spec.get("ops", [])
        if not isinstance(compares, list) or not isinstance(ops, list):
            raise ValueError("'compares' and 'ops' must be lists")
    except ValueError as exc:
        say(
            f"error: the transaction is not valid JSON of the form "
            f'{{"compares": [...], "ops": [...]}} ({exc}); see `prontodb txn --help`.'
        )
        return 1

    def body(client: Client) -> int:
        outcome = client.txn(compares, ops, fence=fence)
        if options.json:
            write_json(outcome._asdict())
        elif outcome.succeeded:
            lines = [f"succeeded revision={outcome.revision}"]
            lines += [f"{i}={to_json(r).decode()}" for i, r in enumerate(outcome.results)]
            write("".join(line + "\n" for line in lines).encode())
        else:
            failed = ",".join(str(i) for i in outcome.failed)
            write(f"failed compares={failed}\n".encode())
        if outcome.succeeded:
            return 0
        return ERROR_TABLE[ErrorCode.COMPARE_FAILED].exit_status

    return run(options, body)


def claim(
    options: Globals,
    prefix: str,
    *,
    wait: float | None = None,
    lease: float | None = None,
    max_deliveries: int | None = None,
) -> int:
    """``claim PREFIX``: ``key=value`` of the item taken; nothing to take (in time): exit 4."""

    def body(client: Client) -> int:
        task = client.claim(prefix, wait=wait, lease=lease, max_deliveries=max_deliveries)
        if task is None:
            say(f"nothing to claim under {prefix or '(top level)'} (cursor {options.cursor})")
            return EXIT_TIMED_OUT
        if options.json:
            write_json(task._asdict())
        else:
            write(task.key.encode() + b"=" + render(task.value) + b"\n")
        return 0

    return run(options, body, wire=not wait)  # a wait's cancel is the sync client's


def watch(
    options: Globals,
    prefix: str = "",
    *,
    from_rev: int | None = None,
    count: int | None = None,
    timeout: float | None = None,
) -> int:
    """``watch [PREFIX]``: one line per change, flushed as it comes (``REV TYPE KEY=VALUE``, or
    ``REV TYPE KEY`` when the key went; with --json one object per line). Ends after ``count``
    events, or when ``timeout`` seconds have passed (exit 4 if no event came by then)."""
    import time

    from prontodb.protocol import ERROR_TABLE, ErrorCode

    def body(client: Client) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        with client.watch(prefix, from_rev=from_rev) as events:
            _note_if_ahead(from_rev, events.head_rev)
            while count is None or seen < count:
                remaining = None if deadline is None else deadline - time.monotonic()
                event = events.next_event(remaining) if remaining is None or remaining > 0 else None
                if event is None:
                    break
                seen += 1
                if options.json:
                    document = {k: v for k, v in event._asdict().items() if v is not None}
                    write_json(document)
                elif event.type in ("put", "claim", "release"):
                    head = f"{event.rev} {event.type} {event.key}=".encode()
                    write(head + render(event.value) + b"\n")
                else:
                    write(f"{event.rev} {event.type} {event.key}\n".encode())
        if seen == 0 and timeout is not None:
            return ERROR_TABLE[ErrorCode.TIMED_OUT].exit_status
        return 0

    return run(options, body)


def _note_if_ahead(from_rev: int | None, head: int | None) -> None:
    """A watch told to start past the current revision waits: say so, lest it seem stuck."""
    if from_rev is not None and head is not None and from_rev > head + 1:
        say(
            f"note: revision {from_rev} is not there yet (the database is at {head}); waiting for it"
        )


def cursor_set(options: Globals, name: str, path: str, *, mine: bool = False) -> int:
    """``cursor set NAME PATH``: silent, but for a note when nothing is at PATH yet (a backup file
    that is not there would otherwise pass for a new database); a relative PATH is made absolute
    against the working directory here, since the broker resolves nothing against its own."""
    absolute = os.path.abspath(path)

    def body(client: Client) -> int:
        bound = client.cursor_set(name, absolute, mine=mine)
        if not bound["exists"]:
            say(
                f"note: cursor {name} is a new, empty database at {absolute} (nothing is there yet)"
            )
        if options.json:
            write_json(bound)
        return 0

    return run(options, body)


def cursor_delete(options: Globals, name: str, *, mine: bool = False, purge: bool = False) -> int:
    """``cursor delete NAME [--purge]``: silent; a name with no definition is a note, not an
    error (its data, in the default place, stays unless --purge)."""

    def body(client: Client) -> int:
        done = client.cursor_delete(name, mine=mine, purge=purge)
        if options.json:
            write_json(done)
        elif not done["forgotten"]:
            say(f"cursor {name} has no definition; its database is {done['path']}")
        return 0

    return run(options, body)


def cursor_list(options: Globals) -> int:
    """``cursor list``: ``NAME PATH OWNER`` lines (OWNER ``global``, ``user:U`` or ``default``
    for a database in the data directory that no definition names), ``shadows-global`` last
    where a user's cursor hides a global one."""

    def body(client: Client) -> int:
        cursors = client.cursors()
        if options.json:
            write_json(cursors)
            return 0
        lines = []
        for c in cursors:
            owner = "default" if not c["defined"] else c["owner"] and f"user:{c['owner']}"
            line = f"{c['name']} {c['path']} {owner or 'global'}"
            lines.append(line + (" shadows-global" if c["shadows"] else ""))
        write("".join(line + "\n" for line in lines).encode())
        return 0

    return run(options, body)


def cursor_show(options: Globals, name: str) -> int:
    """``cursor show NAME``: ``key=value`` lines (name, path, owner, shadows, defined, exists)."""

    def body(client: Client) -> int:
        shown = client.cursor_show(name)
        if options.json:
            write_json(shown)
            return 0
        fields = ("name", "path", "owner", "shadows", "defined", "exists", "by")
        lines = [f"{k}={_plain(shown.get(k))}" for k in fields]
        write("".join(line + "\n" for line in lines).encode())
        return 0

    return run(options, body)


def backup(options: Globals, output: str, cursor: str | None = None) -> int:
    """``backup --output PATH``: the path of the file written."""
    absolute = os.path.abspath(output)

    def body(client: Client) -> int:
        with progress("backing up"):
            done = client.backup(absolute, cursor=cursor)
        if options.json:
            write_json(done)
        else:
            write(done["path"].encode() + b"\n")
        failed = done.get("failed") or []
        for item in failed:  # the others are in the file; these are not
            say(f"{item['name']} was not backed up: {item['message']}")
        return 1 if failed else 0

    return run(options, body)


def restore(options: Globals, path: str, cursor: str | None = None) -> int:
    """``backup --restore FILE``: ``NAME revision=R path=DIR`` per database put back."""
    absolute = os.path.abspath(path)

    def body(client: Client) -> int:
        with progress("restoring"):
            done = client.restore(absolute, cursor=cursor)
        if options.json:
            write_json(done)
        else:
            lines = [
                f"{d['name']} revision={d['revision']} path={d['path']}" for d in done["databases"]
            ]
            write("".join(line + "\n" for line in lines).encode())
        return 0

    return run(options, body)


def backup_list(options: Globals, path: str) -> int:
    """``backup --list PATH``: ``FILE created=TIME NAME@REV(KEYS keys) ...`` per backup file;
    a damaged one says why, and makes the exit status 1."""
    absolute = os.path.abspath(path)

    def body(client: Client) -> int:
        found = client.backup_list(absolute)
        if options.json:
            write_json(found)
        else:
            lines = []
            for item in found:
                if "error" in item:
                    lines.append(f"{item['path']} damaged: {item['error']}")
                    continue
                held = " ".join(
                    f"{d['name']}@{d['revision']}({d['keys']} keys)" for d in item["databases"]
                )
                lines.append(f"{item['path']} created={iso_time(item['created'])} {held}")
            write("".join(line + "\n" for line in lines).encode())
        return 1 if any("error" in item for item in found) else 0

    return run(options, body)


def user_command(options: Globals, action: str, name: str | None = None) -> int:
    """``user add|token NAME`` print the new token (shown once); ``user remove NAME`` is silent;
    ``user list`` prints ``NAME created=TIME by=U grants=N`` lines."""

    def body(client: Client) -> int:
        if action == "list":
            found = client.users()
            if options.json:
                write_json(found)
            else:
                lines = [
                    f"{u['name']} created={iso_time(u['created'])} by={u['by']} grants={u['grants']}"
                    for u in found
                ]
                write("".join(line + "\n" for line in lines).encode())
            return 0
        assert name is not None
        if action == "remove":
            client.user_remove(name)
            return 0
        token = client.user_add(name) if action == "add" else client.user_token(name)
        if options.json:
            write_json({"name": name, "token": token})
        else:
            write(token.encode() + b"\n")
            say(f"the token of {name} is shown this once; give it as PRONTODB_TOKEN")
        return 0

    return run(options, body)


def grant_command(
    options: Globals,
    action: str,
    user: str | None,
    level: str | None = None,
    *,
    cursor: str | None = None,
    prefix: str = "",
) -> int:
    """``grant``/``revoke USER LEVEL [--cursor C] [--prefix P]`` are silent (revoke notes a
    grant that was not there); ``grants [USER]`` prints ``USER LEVEL cursor=C prefix=P`` lines
    (``*``: every cursor, every key)."""

    def body(client: Client) -> int:
        if action == "list":
            found = client.grants(user)
            if options.json:
                write_json(found)
            else:
                lines = [
                    f"{g['user']} {g['level']} cursor={g['cursor'] or '*'} prefix={g['prefix'] or '*'}"
                    for g in found
                ]
                write("".join(line + "\n" for line in lines).encode())
            return 0
        assert user is not None
        assert level is not None
        if action == "grant":
            given = client.grant(user, level, cursor=cursor, prefix=prefix)
            if options.json:
                write_json(given)
        elif not client.revoke(user, level, cursor=cursor, prefix=prefix):
            say(f"{user} had no such grant; nothing changed")
        return 0

    return run(options, body)


class progress:
    """On a terminal, a line on stderr that shows a long operation is alive (``label``, a
    spinner, the seconds so far), from half a second on; nothing when stderr is not a TTY."""

    DELAY = 0.5
    TICK = 0.2

    def __init__(self, label: str) -> None:
        self.label = label
        import threading

        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> None:
        if sys.stderr.isatty():
            self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        import time

        start = time.monotonic()
        if self._done.wait(self.DELAY):
            return
        frames = "|/-\\"
        tick = 0
        while not self._done.wait(self.TICK):
            tick += 1
            elapsed = time.monotonic() - start
            sys.stderr.write(f"\r{self.label} {frames[tick % 4]} {elapsed:.1f} s")
            sys.stderr.flush()
        sys.stderr.write("\r\x1b[K")  # clear the line
        sys.stderr.flush()


def _plain(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def ack(options: Globals, key: str, token: int) -> int:
    """``ack KEY --token T``: silent; a claim no longer held exits 5."""

    def body(client: Client) -> int:
        client.ack(key, token)
        if options.json:
            write_json({"key": key, "acked": True})
        return 0

    return run(options, body, wire=True)


def release(
    options: Globals,
    key: str,
    token: int,
    delay: float | None = None,
    priority: int | None = None,
) -> int:
    """``release KEY --token T [--delay S] [--priority N]``: silent; a claim no longer held
    exits 5."""

    def body(client: Client) -> int:
        client.release(key, token, delay=delay, priority=priority)
        if options.json:
            write_json({"key": key, "released": True})
        return 0

    return run(options, body, wire=True)


def extend(options: Globals, key: str, token: int, lease: float) -> int:
    """``extend KEY --token T --lease S``: silent; a claim no longer held exits 5."""

    def body(client: Client) -> int:
        deadline = client.extend(key, token, lease)
        if options.json:
            write_json({"key": key, "lease": deadline})
        return 0

    return run(options, body, wire=True)


def claims(options: Globals, prefix: str = "") -> int:
    """``claims [PREFIX]``: one line per held claim: key, holder, token, lease deadline."""

    def body(client: Client) -> int:
        held = client.claims(prefix)
        if options.json:
            write_json([c._asdict() for c in held])
        else:
            lines = (
                f"{c.key} holder={c.holder} token={c.token} lease={iso_time(c.lease)}\n"
                for c in held
            )
            write("".join(lines).encode())
        return 0

    return run(options, body)


def session_grant(options: Globals, ttl: float) -> int:
    """``session grant --ttl S``: the new session's id (the CLI does not keep it alive: its
    keys go at its deadline unless ``session keepalive`` runs within each TTL)."""

    def body(client: Client) -> int:
        session = client.session_grant(ttl)
        if options.json:
            write_json({"id": session, "ttl": ttl})
        else:
            write(f"{session}\n".encode())
        return 0

    return run(options, body)


def session_keepalive(options: Globals, session: int) -> int:
    """``session keepalive ID``: silent; a session that ended exits 3."""

    def body(client: Client) -> int:
        deadline = client.session_keepalive(session)
        if options.json:
            write_json({"id": session, "deadline": deadline})
        return 0

    return run(options, body)


def session_revoke(options: Globals, session: int) -> int:
    """``session revoke ID``: the keys deleted with it, one a line; a session that ended exits 3."""

    def body(client: Client) -> int:
        keys = client.session_revoke(session)
        if options.json:
            write_json({"id": session, "keys": keys})
        else:
            write("".join(f"{k}\n" for k in keys).encode())
        return 0

    return run(options, body)


def session_list(options: Globals) -> int:
    """``session list``: one line per live session: id, owner, TTL, deadline, keys."""

    def body(client: Client) -> int:
        live = client.sessions()
        if options.json:
            write_json([s._asdict() for s in live])
        else:
            lines = (
                f"{s.id} owner={s.owner} ttl={s.ttl:g} "
                f"deadline={'-' if s.deadline is None else iso_time(s.deadline)} keys={s.keys}\n"
                for s in live
            )
            write("".join(lines).encode())
        return 0

    return run(options, body)


def ping(options: Globals) -> int:
    """``ping``: ``pong`` once the broker answers (starting it if need be)."""

    def body(client: Client) -> int:
        client.ping()
        if options.json:
            write_json({"pong": True})
        else:
            write(b"pong\n")
        return 0

    return run(options, body)


def status(options: Globals) -> int:
    """``status``: what the broker is doing; never starts one (exit 1 if none runs)."""

    def none_running(url: str) -> int:
        say(
            f"error: no broker is running at {url}; start one with `prontodb serve`, "
            "or run any command other than status and stop, which starts one."
        )
        return 1

    def body(client: Client) -> int:
        info = client.status()
        if options.json:
            write_json(info)
        else:
            write(format_status(info).encode())
        return 0

    return run(options, body, start=False, unavailable=none_running)


def stop(options: Globals) -> int:
    """``stop``: ask the broker to stop and wait until its socket is gone; never starts one."""
    from prontodb.protocol import ProntoError

    url = target_url(options)
    asked: list[Any] = []  # the pid of the broker asked to stop

    def none_running(url: str) -> int:
        say(f"no broker is running at {url}; nothing to stop.")
        if options.json:
            write_json({"stopped": False})
        return 0

    def body(client: Client) -> int:
        asked.append(client.status().get("pid"))
        client.stop()
        return 0

    code = run(options, body, start=False, unavailable=none_running)
    if code or not asked:
        return code
    try:
        _wait_until_gone(url, asked[0])  # after run() closed our connection: we hold nothing open
    except ProntoError as exc:
        return fail(exc)
    if options.json:
        write_json({"stopped": True, "pid": asked[0]})
    return 0


def _roster() -> list[dict[str, Any]]:
    from ._locations import roster_dirs
    from ._roster import live_brokers

    return live_brokers(roster_dirs())


def ps(options: Globals) -> int:
    """``ps``: this user's running brokers, from the roster, each asked for its connections."""
    import time

    brokers = _roster()
    connections = _ask_connections(options, brokers)
    now = time.time()
    rows: list[dict[str, Any]] = []
    for broker, count in zip(brokers, connections, strict=True):
        started = broker.get("started")
        rows.append(
            {
                "pid": broker["pid"],
                "data_dir": broker.get("data_dir"),
                "socket": broker.get("socket"),
                "tcp": broker.get("tcp"),
                "started": started,
                "uptime": now - started if isinstance(started, int | float) else None,
                "connections": count,
                "idle_exit": broker.get("idle_exit"),
                "auto_started": bool(broker.get("auto_started")),
                "version": broker.get("version"),
            }
        )
    if options.json:
        write_json(rows)
    else:
        write(format_ps(rows).encode())
    return 0


PS_TIMEOUT = 2.0  # seconds ps waits for the brokers' answers, all asked at once


def _ask_connections(options: Globals, brokers: list[dict[str, Any]]) -> list[int | None]:
    """Each broker's open connections, not counting the one that asks; None if it does not
    answer in time (stopping, stuck, or wanting a token that $PRONTODB_TOKEN is not)."""
    import threading
    import time

    answers: list[int | None] = [None] * len(brokers)

    def ask(index: int, socket: str) -> None:
        from prontodb.protocol import ProntoError

        from ._sync.client import Client

        try:
            with Client.connect(
                "unix://" + socket, user=options.user, timeout=PS_TIMEOUT, name=CLIENT_NAME
            ) as client:
                count = client.status().get("connections")
        except (ProntoError, OSError):
            return
        if isinstance(count, int):
            answers[index] = max(0, count - 1)

    # Daemon threads: one that hangs (a broker that greets and never answers) is left behind.
    deadline = time.monotonic() + PS_TIMEOUT
    threads = [
        threading.Thread(target=ask, args=(index, broker["socket"]), daemon=True)
        for index, broker in enumerate(brokers)
        if isinstance(broker.get("socket"), str)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return list(answers)


def format_ps(rows: list[dict[str, Any]]) -> str:
    """``ps`` for people: a header and one line per broker, in columns."""
    table = [["PID", "UPTIME", "CONNECTIONS", "IDLE EXIT", "DATA DIR", "ADDRESS"]]
    for row in rows:
        address = row["socket"] or "-"
        if row["tcp"]:
            address += f" tcp://{row['tcp']}"
        table.append(
            [
                str(row["pid"]),
                _duration(row["uptime"]) or "-",
                "-" if row["connections"] is None else str(row["connections"]),
                _idle_exit(row),
                str(row["data_dir"] or "-"),
                address,
            ]
        )
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]) - 1)]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        + "\n"
        for line in table
    )


def stop_all(options: Globals) -> int:
    """``stop --all``: SIGTERM to each broker of the roster, then wait until each has exited."""
    from ._roster import signal_if_live

    waiting: list[tuple[dict[str, Any], int]] = []
    try:
        for broker in _roster():
            pidfd = signal_if_live(broker)
            if pidfd is not None:
                waiting.append((broker, pidfd))
        if not waiting:
            say("no broker is running; nothing to stop.")
            if options.json:
                write_json([])
            return 0
        gone = _wait_for_pidfds([pidfd for _, pidfd in waiting], STOP_TIMEOUT)
    finally:
        for _, pidfd in waiting:
            os.close(pidfd)
    report = [
        {"pid": broker["pid"], "data_dir": broker.get("data_dir"), "stopped": stopped}
        for (broker, _), stopped in zip(waiting, gone, strict=True)
    ]
    if options.json:
        write_json(report)
    else:
        write(
            "".join(
                f"stopped {r['pid']} {r['data_dir']}\n" for r in report if r["stopped"]
            ).encode()
        )
    left = [str(r["pid"]) for r in report if not r["stopped"]]
    if not left:
        return 0
    from prontodb.protocol import ErrorCode, ProntoError

    return fail(
        ProntoError(
            ErrorCode.TIMED_OUT,
            f"Asked to stop, the brokers {', '.join(left)} are still there after "
            f"{STOP_TIMEOUT:.0f} s; check their logs, or `prontodb ps`.",
        )
    )


def _wait_for_pidfds(pidfds: list[int], timeout: float) -> list[bool]:
    """Whether each process has exited, waiting until all have or ``timeout`` has passed."""
    import select
    import time

    deadline = time.monotonic() + timeout
    exited = [False] * len(pidfds)
    while not all(exited):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        pending = [fd for fd, done in zip(pidfds, exited, strict=True) if not done]
        ready, _, _ = select.select(pending, [], [], remaining)
        for fd in ready:
            exited[pidfds.index(fd)] = True
    return exited


def _wait_until_gone(url: str, pid: object) -> None:
    """Wait for a stopped broker to end: its process, when it runs on this host (it removes its
    socket as soon as it stops listening, before it has flushed and exited); a TCP one, until it
    refuses connections."""
    import socket
    import time

    from prontodb.protocol import ErrorCode, ProntoError

    from ._urls import parse_url

    address = parse_url(url)
    deadline = time.monotonic() + STOP_TIMEOUT
    if address.scheme == "unix" and isinstance(pid, int) and _wait_for_exit(pid, STOP_TIMEOUT):
        return
    while address.scheme != "unix":
        try:
            socket.create_connection((address.host, address.port), timeout=1.0).close()
        except OSError:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(STOP_POLL)
    raise ProntoError(
        ErrorCode.TIMED_OUT,
        f"The broker at {url} was asked to stop but is still there after "
        f"{STOP_TIMEOUT:.0f} s; check its log, or `prontodb status`.",
    )


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` ended within ``timeout`` (waiting on a pidfd: no polling)."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # already gone
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(pidfd)


def format_status(info: dict[str, Any]) -> str:
    """``status`` for people: one ``name  value`` line per fact, then one line per database."""
    started = info.get("started")
    rows = [
        ("pid", info.get("pid")),
        ("version", info.get("version")),
        ("started", iso_time(started) if isinstance(started, int | float) else None),
        ("uptime", _duration(info.get("uptime"))),
        ("data_dir", info.get("data_dir")),
        ("socket", info.get("socket") or "off"),
        ("tcp", info.get("tcp") or "off"),
        ("http", info.get("http") or "off"),
        ("fsync", info.get("fsync")),
        ("connections", info.get("connections")),
        ("idle_exit", _idle_exit(info)),
    ]
    databases = info.get("databases") or []
    rows.append(("databases", len(databases)))
    lines = [f"{name:<12} {'-' if value is None else value}" for name, value in rows]
    width = max((len(str(db.get("name", ""))) for db in databases), default=0)
    for db in databases:
        lines.append(
            f"  {db.get('name', '?')!s:<{width}}  revision {db.get('revision', '?')}, "
            f"{db.get('keys', '?')} keys, {_size(db.get('files_bytes'))}, "
            f"{db.get('sessions', 0)} sessions, "
            f"{db.get('watchers', 0)} watchers (history from revision {db.get('history_first', 1)})"
        )
        queues = db.get("queues") or {}
        lines.extend(
            f"    queue {prefix or '(top level)'}: {c.get('ready', 0)} ready, "
            f"{c.get('claimed', 0)} claimed, {c.get('delayed', 0)} delayed, {c.get('dead', 0)} dead"
            for prefix, c in queues.items()
        )
        recipes = db.get("recipes") or {}
        lines.extend(
            f"    {r.get('recipe', '?')} {name}: {r.get('holding', 0)} holding, "
            f"{r.get('waiting', 0)} waiting"
            for name, r in recipes.items()
        )
    return "".join(line + "\n" for line in lines)


def _idle_exit(info: dict[str, Any]) -> str:
    """When the broker stops by itself (``never``), and whether a CLI started it."""
    idle = info.get("idle_exit")
    if not isinstance(idle, int | float):
        text = "never"
    elif idle < 60:
        text = f"{seconds_text(idle)}s"  # to the millisecond: tests give fractions
    else:
        text = _duration(idle) or "-"
    return text + (" (auto-started)" if info.get("auto_started") else "")


def _duration(seconds: object) -> str | None:
    if not isinstance(seconds, int | float):
        return None
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    text = " ".join(f"{n}{unit}" for n, unit in parts if n)
    return f"{text} {secs}s".strip()


def _size(count: object) -> str:
    if not isinstance(count, int):
        return "? bytes"
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def queue_config(
    options: Globals,
    prefix: str,
    *,
    lease: float | None = None,
    max_deliveries: int | None = None,
    backoff: tuple[float, float] | None = None,
) -> int:
    """``queue config PREFIX [--lease S] [--max-deliveries N] [--backoff FIRST:CAP]``: the
    settings now, as ``queue show`` prints them (none given: back to the defaults)."""

    def body(client: Client) -> int:
        config = client.queue_config(
            prefix, lease=lease, max_deliveries=max_deliveries, backoff=backoff
        )
        if options.json:
            write_json({"prefix": prefix, "config": config})
        else:
            write(_config_lines(config).encode())
        return 0

    return run(options, body)


def _config_lines(config: dict[str, Any]) -> str:
    if not config:
        return "defaults (lease 60 s, no delivery limit, no backoff)\n"
    lines = [f"lease={config['lease']:g}"] if "lease" in config else []
    if "max_deliveries" in config:
        lines.append(f"max_deliveries={config['max_deliveries']}")
    if "backoff" in config:
        first, cap = config["backoff"]
        lines.append(f"backoff={first:g}:{cap:g}")
    return "".join(line + "\n" for line in lines)


def _stats_line(q: QueueStats) -> str:
    age = "-" if q.oldest_ready_age is None else f"{q.oldest_ready_age:.1f}s"
    return (
        f"{q.prefix or '(top level)'} ready={q.ready} delayed={q.delayed} waiting={q.waiting} "
        f"claimed={q.claimed} dead={q.dead} oldest_ready={age} redeliveries={q.redeliveries}\n"
    )


def queue_show(options: Globals, prefix: str) -> int:
    """``queue show PREFIX``: the queue's settings, then its statistics line."""

    def body(client: Client) -> int:
        stats = client.queue_show(prefix)
        if options.json:
            write_json(stats._asdict())
        else:
            write((_config_lines(stats.config) + _stats_line(stats)).encode())
        return 0

    return run(options, body)


def queues(options: Globals, prefix: str = "") -> int:
    """``queues [PREFIX]``: one statistics line per queue."""

    def body(client: Client) -> int:
        found = client.queues(prefix)
        if options.json:
            write_json([q._asdict() for q in found])
        else:
            write("".join(_stats_line(q) for q in found).encode())
        return 0

    return run(options, body)


QUOTA_LIMITS = ("max_keys", "max_bytes", "max_claims")


def quota_set(
    options: Globals,
    user: str,
    limits: dict[str, int | None],
    broker_limits: dict[str, float | None],
    *,
    clear: bool = False,
) -> int:
    """``quota set USER [--max-keys N] [--max-bytes B] [--max-claims K] [--max-connections C]
    [--rate R] [--clear]``: the user's quotas now, as ``quota show`` prints them."""

    def body(client: Client) -> int:
        if clear or any(v is not None for v in limits.values()):
            keys, size, claims = (None if clear else limits[k] for k in QUOTA_LIMITS)
            client.quota_set(user, max_keys=keys, max_bytes=size, max_claims=claims)
        connections, rate = broker_limits["max_connections"], broker_limits["rate"]
        if clear or connections is not None or rate is not None:
            limit = None if connections is None else int(connections)
            client.user_limits(user, max_connections=limit, rate=rate, clear=clear)
        return _show_quota(options, client, user)

    return run(options, body)


def quota_show(options: Globals, user: str | None = None) -> int:
    """``quota show [USER]``: per user, each limit against what it uses now."""

    def body(client: Client) -> int:
        return _show_quota(options, client, user)

    return run(options, body)


def _show_quota(options: Globals, client: Client, user: str | None) -> int:
    shown = client.quota_show(user)
    users = [user] if user is not None else sorted(shown)
    documents = []
    for name in users:
        here = shown.get(name, {"limits": {}, "use": {"keys": 0, "bytes": 0, "claims": 0}})
        wide = client.user_limits(name)
        documents.append({"user": name, "cursor": options.cursor, **here, "broker": wide})
    if options.json:
        write_json(documents if user is None else documents[0])
        return 0
    lines = []
    for doc in documents:
        limits, use, broker = doc["limits"], doc["use"], doc["broker"]
        parts = [
            f"{name}={use[name]}/{limits.get('max_' + name, '-')}"
            for name in ("keys", "bytes", "claims")
        ]
        parts.append(
            f"connections={broker['connections']}/{broker['limits'].get('max_connections', '-')}"
        )
        parts.append(f"rate={broker['limits'].get('rate', '-')}/s")
        lines.append(f"{doc['user']} (cursor {doc['cursor']}) " + " ".join(parts) + "\n")
    write("".join(lines).encode())
    return 0
