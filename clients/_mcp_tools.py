"""The MCP server's tools: one per CLI command an agent may run, made from the op registry.

Each tool is named as its CLI command (``queue show`` -> ``queue_show``), takes the registry's
arguments of its operation under their wire names (which the CLI's options spell with dashes), and
returns, as structured content, the document that command prints with ``--json`` (an array wrapped
in an object under a name of its own, as MCP wants an object). Every tool acts as the user the
server was started with: none takes a user. Which operations have no tool yet, and why, is
:data:`LEFT_OUT`; tests/test_mcp_tools.py holds both to the registry.

This module is plain Python (no import of the MCP SDK), so the tools can be checked without it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, NamedTuple, TypeVar

import anyio

from prontodb.protocol import ErrorCode, ProntoError

from ._async.client import AsyncClient
from ._cli_commands import to_json
from ._mcp_ops import OPS
from ._mcp_sessions import Sessions
from ._types import WatchEvent

# The longest a claim waits through MCP, whatever `wait` asks: a tool call should come back
# within what a host waits for one; call claim again to wait longer.
WAIT_CAP = 30.0
# The most changes one watch call returns, and how often a call that waits says so (progress).
COUNT_CAP = 1000
HEARTBEAT = 5.0

T = TypeVar("T")
Run = Callable[[AsyncClient, dict[str, Any], str], Awaitable[dict[str, Any]]]

# A call's progress reporter (progress, total, message): MCP's notifications/progress when the
# request carried a progress token; set by :func:`call` for the tools that wait.
Progress = Callable[[float, float | None, str | None], Awaitable[None]]
_PROGRESS: ContextVar[Progress | None] = ContextVar("prontodb_mcp_progress", default=None)
# The server's sessions, which its agent's locks go with; set by :func:`call`.
_SESSIONS: ContextVar[Sessions | None] = ContextVar("prontodb_mcp_sessions", default=None)


class _Waiting:
    """The progress of one call that waits: the seconds it has waited, out of ``total`` (MCP wants
    each notification's progress above the last one's), with a message of what it is at."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.started = time.monotonic()
        self.last = -1.0

    async def say(self, message: str) -> None:
        report = _PROGRESS.get()
        if report is None:
            return
        self.last = max(round(time.monotonic() - self.started, 3), self.last + 0.001)
        await report(self.last, self.total, message)

    async def heartbeat(self, message: str) -> None:
        """Say ``message`` every HEARTBEAT seconds (until cancelled)."""
        while True:
            await anyio.sleep(HEARTBEAT)
            await self.say(message)


async def _saying(wait: float, message: str, work: Callable[[], Awaitable[T]]) -> T:
    """``work()``, with progress said every HEARTBEAT seconds while it may wait (``wait``);
    its error raised as itself, not inside a task group's."""
    if not wait:
        return await work()
    failed: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(_Waiting(wait).heartbeat, message)
        try:
            done = await work()
        except Exception as exc:
            failed = exc
        group.cancel_scope.cancel()
    if failed is not None:
        raise failed
    return done


class ToolFailed(Exception):
    """A refusal the CLI words itself (a missing key, nothing to claim): the tool's error text."""


class Tool(NamedTuple):
    """One tool: its name, the operation it sends, the registry's arguments it takes (``cursor``
    first), arguments of its own (name -> JSON schema; ``cas``'s ``old`` and ``new``), the ones a
    call must give beyond the registry's required ones, what to tell the agent, the properties of
    its result, whether repeating it changes nothing more, and the function that runs it."""

    name: str
    op: str
    args: tuple[str, ...]
    own: dict[str, dict[str, Any]]
    required: tuple[str, ...]
    description: str
    result: dict[str, Any]
    idempotent: bool
    run: Run

    @property
    def read_only(self) -> bool:
        return not OPS[self.op].writes

    @property
    def destructive(self) -> bool:
        """Whether it may delete or overwrite what is there (MCP's destructiveHint)."""
        return not self.read_only and self.name not in ADDITIVE

    def input_schema(self) -> dict[str, Any]:
        declared = {a.name: a for a in OPS[self.op].args}
        properties: dict[str, Any] = {}
        for name in self.args:
            arg = declared[name]
            schema = dict(KIND_SCHEMAS[arg.kind])
            doc = ARG_DOCS.get(name) or arg.doc
            if doc:
                schema["description"] = doc
            properties[name] = schema
        properties.update(self.own)
        required = [a for a in self.args if declared[a].required] + list(self.required)
        return {"type": "object", "properties": properties, "required": required}

    def output_schema(self) -> dict[str, Any]:
        return {"type": "object", **self.result}


# JSON schemas of the registry's argument kinds (docs/PROTOCOL.md's types).
KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "key": {"type": "string"},
    "prefix": {"type": "string"},
    "cursor": {"type": "string"},
    "str": {"type": "string"},
    "user": {"type": "string"},
    "path": {"type": "string"},
    "any": {},
    "bool": {"type": "boolean"},
    "uint": {"type": "integer", "minimum": 0},
    "int": {"type": "integer"},
    "seconds": {"type": "number", "minimum": 0},
    "list": {"type": "array"},
    "map": {"type": "object"},
}

# What an argument means where the registry says too little for an agent.
ARG_DOCS = {
    "cursor": "the database (default: the one the server was started with)",
    "key": "the key: dot-separated segments, like tasks.t1",
    "value": "any JSON value",
    "prefix": 'the key prefix (segment-aware; "" for every key)',
    "token": "the fencing token claim handed out (or a lock's token)",
    "wait": f"seconds to wait for an item (at most {WAIT_CAP:g} here; default 0: try once)",
    "from_rev": "the revision to start at: a previous watch's next_rev (absent or 0: from now)",
    "lease": "seconds the claim holds the item (default 60)",
    "meta": "also return the revisions, version, writer, time and size",
    "keys": "the keys, in the order of the answer",
    "compares": '[{"key", "target"?: value|mod_rev|create_rev|version|exists, "op"?: ==|!=|<|<=|>|>=, "value"}]',
    "ops": '[{"op": get|set|del|incr, "key", "value"?, "by"?}]',
    "name": "the lock's (semaphore's, election's, barrier's) name",
    "fence": '{"name": a lock\'s name, "token": the token lock gave}: write only while that '
    "token still holds the lock (else compare_failed, and nothing is written)",
    "items": "an object of key to value",
}

# Writes that only add: a new key, a count, a longer lease. (del, set over a value, ack: not so.)
ADDITIVE = frozenset({"incr", "decr", "extend", "claim", "lock", "semaphore", "elect", "barrier"})

KEY = {"key": {"type": "string"}}
ANY: dict[str, Any] = {}


def _props(required: tuple[str, ...], **properties: Any) -> dict[str, Any]:
    return {"properties": properties, "required": list(required)}


def _printed(document: Any) -> tuple[Any, str]:
    """A document as the CLI's --json prints it (bytes as {"$bytes": base64}), and that text."""
    text = to_json(document)
    return json.loads(text), text.decode()


def _fence(a: dict[str, Any]) -> tuple[str, int] | None:
    """The ``fence`` argument ({"name", "token"}) as the client takes it."""
    fence = a.get("fence")
    if fence is None:
        return None
    if not isinstance(fence, dict) or set(fence) != {"name", "token"}:
        raise ToolFailed('bad_request: fence is {"name": the lock\'s name, "token": its token}')
    return (fence["name"], fence["token"])


def _not_found(key: str, cursor: str) -> ToolFailed:
    return ToolFailed(f"not found: {key} (cursor {cursor})")


# -- the tools' bodies ---------------------------------------------------------------------------


async def _get(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    key = a["key"]
    if not a.get("meta"):
        value = await client.get(key, cursor=cursor)
        if value is None:
            raise _not_found(key, cursor)
        return {"key": key, "value": value}
    info = await client.get_info(key, cursor=cursor)
    if info is None:
        raise _not_found(key, cursor)
    from ._cli_commands import _meta_fields

    return {"key": key, **_meta_fields(info)}


async def _set(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    names = ("if_absent", "if_rev", "ttl", "priority", "delay", "after")
    options: dict[str, Any] = {k: a[k] for k in names if k in a}
    revision = await client.set(a["key"], a["value"], fence=_fence(a), cursor=cursor, **options)
    return {"key": a["key"], "revision": revision}


async def _cas(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    revision = await client.set(a["key"], a["new"], if_value=a["old"], cursor=cursor)
    return {"key": a["key"], "revision": revision}


async def _del(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    deleted = await client.delete(a["key"], if_rev=a.get("if_rev"), fence=_fence(a), cursor=cursor)
    return {"key": a["key"], "deleted": deleted}


async def _exists(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    return {"key": a["key"], "exists": await client.exists(a["key"], cursor=cursor)}


async def _mget(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    keys = list(a["keys"])
    values = await client.mget(keys, cursor=cursor)
    return dict(zip(keys, values, strict=True))


async def _incr(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    total = await client.incr(a["key"], a.get("by", 1), fence=_fence(a), cursor=cursor)
    return {"key": a["key"], "value": total}


async def _decr(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    total = await client.decr(a["key"], a.get("by", 1), fence=_fence(a), cursor=cursor)
    return {"key": a["key"], "value": total}


async def _keys(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    return {"keys": await client.keys(a.get("prefix", ""), cursor=cursor)}


async def _scan(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    return dict(await client.scan(a.get("prefix", ""), cursor=cursor))


async def _ttl(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    try:
        remaining = await client.ttl(a["key"], cursor=cursor)
    except ProntoError as exc:
        if exc.code is ErrorCode.NOT_FOUND:
            raise _not_found(a["key"], cursor) from None
        raise
    return {"key": a["key"], "ttl": remaining}


async def _expire(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    if not await client.expire(a["key"], a["seconds"], cursor=cursor):
        raise _not_found(a["key"], cursor)
    return {"key": a["key"], "ttl": max(a["seconds"], 0.0)}


async def _persist(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    return {"key": a["key"], "persisted": await client.persist(a["key"], cursor=cursor)}


async def _txn(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    outcome = await client.txn(
        a.get("compares", []), a.get("ops", []), fence=_fence(a), cursor=cursor
    )
    if not outcome.succeeded:
        failed = ",".join(str(i) for i in outcome.failed)
        raise ToolFailed(
            f"compare_failed: the compares at {failed} did not hold; nothing was applied "
            f"(the database is at revision {outcome.revision})"
        )
    return outcome._asdict()


async def _claim(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    prefix = a["prefix"]
    wait = min(float(a.get("wait") or 0.0), WAIT_CAP)
    task = await _saying(
        wait,
        f"waiting for an item under {prefix or '(top level)'}",
        lambda: client.claim(
            prefix,
            wait=wait,
            lease=a.get("lease"),
            max_deliveries=a.get("max_deliveries"),
            cursor=cursor,
        ),
    )
    if task is None:
        waited = f" within {wait:g} s" if wait else ""
        raise ToolFailed(
            f"timed_out: nothing to claim under {prefix or '(top level)'}{waited} (cursor {cursor})"
        )
    return task._asdict()


async def _watch(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    prefix = a.get("prefix", "")
    count = max(1, min(int(a.get("count") or 1), COUNT_CAP))
    timeout = a.get("timeout")
    timeout = WAIT_CAP if timeout is None else max(0.0, min(float(timeout), WAIT_CAP))
    started = time.monotonic()
    deadline = started + timeout
    taken: list[WatchEvent] = []
    waiting = _Waiting(timeout)
    async with client.watch(prefix, from_rev=a.get("from_rev") or None, cursor=cursor) as watch:
        where = prefix or "(every key)"
        await waiting.say(f"watching {where} from revision {watch.start_rev}")
        while len(taken) < count:
            remaining = deadline - time.monotonic()
            # The history (from_rev up to the revision the database was at) is there already:
            # it is read whatever the timeout, which is the wait for changes yet to come.
            head = watch.head_rev
            catching_up = head is not None and (watch.next_rev or 0) <= head
            if catching_up:
                remaining = max(remaining, started + WAIT_CAP - time.monotonic())
            event = await watch.next_event(max(0.0, min(remaining, HEARTBEAT)))
            if event is None:
                if remaining <= 0:
                    break
                await waiting.say(f"watching {where}: {len(taken)} of {count} changes so far")
                continue
            taken.append(event)
            await waiting.say(f"{len(taken)} of {count}: {event.rev} {event.type} {event.key}")
        # The changes of one revision (a transaction) are not split across calls.
        buffered = watch._events  # the events received, not yet taken
        while taken and buffered and buffered[0].rev == taken[-1].rev:
            taken.append(buffered.popleft())
        next_rev = taken[-1].rev + 1 if buffered else watch.next_rev
    events = [{k: v for k, v in e._asdict().items() if v is not None} for e in taken]
    return {"events": events, "next_rev": next_rev}


async def _ack(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    await client.ack(a["key"], a["token"], cursor=cursor)
    return {"key": a["key"], "acked": True}


async def _release(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    await client.release(
        a["key"], a["token"], delay=a.get("delay"), priority=a.get("priority"), cursor=cursor
    )
    return {"key": a["key"], "released": True}


async def _extend(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    deadline = await client.extend(a["key"], a["token"], a["lease"], cursor=cursor)
    return {"key": a["key"], "lease": deadline}


async def _claims(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    held = await client.claims(a.get("prefix", ""), cursor=cursor)
    return {"claims": [c._asdict() for c in held]}


async def _status(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    info: dict[str, Any] = await client.status()
    return info


async def _queues(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    found = await client.queues(a.get("prefix", ""), cursor=cursor)
    return {"queues": [q._asdict() for q in found]}


async def _queue_show(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    return (await client.queue_show(a["prefix"], cursor=cursor))._asdict()


async def _holders(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    state = await client.holders(a["name"], cursor=cursor)
    if state is None:
        raise ToolFailed(f"not_found: nobody holds or waits for {a['name']} (cursor {cursor})")
    return {**state._asdict(), "members": [m._asdict() for m in state.members]}


async def _locks(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    found = await client.locks(a.get("prefix", ""), cursor=cursor)
    return {"locks": [{**r._asdict(), "members": [m._asdict() for m in r.members]} for r in found]}


async def _unlock(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    name, token = a["name"], a["token"]
    if not await client.unlock(name, token, cursor=cursor):
        raise ToolFailed(
            f"not_found: {name} has no member with token {token} (released, or its session ended)"
        )
    return {"name": name, "token": token, "released": True}


def _joining(recipe: str) -> Run:
    """The body of lock, semaphore, elect and barrier: join ``recipe`` NAME with the server's
    session for the database (``_mcp_sessions``), waiting up to ``wait`` for the turn."""

    async def join(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
        sessions = _SESSIONS.get()
        if sessions is None:
            raise ToolFailed("unavailable: this server keeps no sessions for locks to go with")
        name = a["name"]
        session = await sessions.session(client, cursor)
        wait = min(float(a.get("wait") or 0.0), WAIT_CAP)
        member = await _saying(
            wait,
            f"waiting in line for {name}",
            lambda: client.acquire(
                name,
                recipe,
                session,
                limit=int(a.get("limit") or a.get("count") or 1),
                value=a.get("value"),
                wait=wait or None,
                cursor=cursor,
            ),
        )
        if member is None:
            within = f" within {wait:g} s" if wait else ""
            raise ToolFailed(
                f"timed_out: it was not this agent's turn at {name}{within}, and it left the "
                f"line (holders {name} says who is there; call again to wait longer)"
            )
        return {"name": name, **member._asdict()}

    return join


async def _proclaim(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    member = await client.proclaim(a["name"], a["token"], a["value"], cursor=cursor)
    return {"name": a["name"], **member._asdict()}


async def _mset(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    items = a["items"]
    revision = await client.mset(items, fence=_fence(a), cursor=cursor)
    return {"keys": sorted(items), "revision": revision}


async def _grants(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    return {"user": client.user, "grants": await client.grants(client.user)}


async def _quota_show(client: AsyncClient, a: dict[str, Any], cursor: str) -> dict[str, Any]:
    shown = await client.quota_show(client.user, cursor=cursor)
    own = shown.get(client.user) or {"limits": {}, "use": {}}
    return {"user": client.user, **own}


# -- the result schemas --------------------------------------------------------------------------

_REVISION = _props(("key", "revision"), key={"type": "string"}, revision={"type": "integer"})
_KEY_VALUE = _props(("key", "value"), key={"type": "string"}, value=ANY)
_ANY_MAP = {"additionalProperties": True}
_CLAIMED = _props(
    ("key", "value", "token", "lease", "deliveries"),
    key={"type": "string"},
    value=ANY,
    token={"type": "integer"},
    lease={"type": "number", "description": "the lease's deadline, seconds since the epoch"},
    deliveries={"type": "integer"},
)
_MEMBERS = {"type": "array", "items": {"type": "object"}}
_MEMBER = _props(
    ("name", "key", "token", "session", "writer", "value", "holding"),
    name={"type": "string"},
    key={"type": "string"},
    token={"type": "integer", "description": "the fencing token: unlock and fence need it"},
    session={"type": "integer"},
    writer={"type": "string"},
    value=ANY,
    holding={"type": "boolean"},
)
_RECIPE = _props(
    ("name", "recipe", "limit", "members"),
    name={"type": "string"},
    recipe={"type": "string"},
    limit={"type": "integer"},
    members=_MEMBERS,
)


def _flag(name: str) -> dict[str, Any]:
    return _props(("key", name), key={"type": "string"}, **{name: {"type": "boolean"}})


def _list(name: str, items: dict[str, Any]) -> dict[str, Any]:
    return _props((name,), **{name: {"type": "array", "items": items}})


# -- the tools -----------------------------------------------------------------------------------

_MISSING = "A missing key is an error (not found)."
_DENIED = "denied: the server's user lacks the grant (the message names the one needed)."
_CLAIM_GONE = (
    "compare_failed: the claim is no longer held with that token (its lease ran out, or it was "
    "acked or released): another worker may have the item now; stop working on it."
)

TOOLS: tuple[Tool, ...] = (
    Tool(
        "get",
        "get",
        ("cursor", "key", "meta"),
        {},
        (),
        "Read a key's value (with meta: its revisions, version, writer, time, size too). "
        f"Use it to read shared state. {_MISSING}",
        _props(("key", "value"), key={"type": "string"}, value=ANY) | _ANY_MAP,
        True,
        _get,
    ),
    Tool(
        "set",
        "set",
        (
            "cursor",
            "key",
            "value",
            "if_absent",
            "if_rev",
            "ttl",
            "priority",
            "delay",
            "after",
            "fence",
        ),
        {},
        (),
        "Store a value at a key; its new revision. Conditions: if_absent (only a new key), "
        "if_rev (only if its modify revision is that; 0: absent). ttl makes it expire; "
        "priority, delay and after make it a queue item for claim. Errors: compare_failed when "
        f"a condition does not hold (nothing changed); {_DENIED}",
        _REVISION,
        False,
        _set,
    ),
    Tool(
        "del",
        "del",
        ("cursor", "key", "if_rev", "fence"),
        {},
        (),
        "Delete a key; whether it existed (deleting a missing key is not an error). if_rev: only "
        f"if its modify revision is that, else compare_failed. {_DENIED}",
        _flag("deleted"),
        True,
        _del,
    ),
    Tool(
        "exists",
        "exists",
        ("cursor", "key"),
        {},
        (),
        "Whether a key exists (false is an answer, not an error).",
        _flag("exists"),
        True,
        _exists,
    ),
    Tool(
        "mget",
        "mget",
        ("cursor", "keys"),
        {},
        (),
        "Read several keys at once: an object of each key's value, null for a missing one.",
        _ANY_MAP,
        True,
        _mget,
    ),
    Tool(
        "incr",
        "incr",
        ("cursor", "key", "by", "fence"),
        {},
        (),
        "Add `by` (default 1) to an integer key, atomically (a missing key counts as 0); the new "
        "value. Use it for counters and ids. Errors: wrong_type if the key holds no integer.",
        _props(("key", "value"), key={"type": "string"}, value={"type": "integer"}),
        False,
        _incr,
    ),
    Tool(
        "decr",
        "decr",
        ("cursor", "key", "by", "fence"),
        {},
        (),
        "Subtract `by` (default 1) from an integer key, atomically; the new value.",
        _props(("key", "value"), key={"type": "string"}, value={"type": "integer"}),
        False,
        _decr,
    ),
    Tool(
        "keys",
        "keys",
        ("cursor", "prefix"),
        {},
        (),
        "The keys at and below a prefix, sorted (segment-aware: tasks matches tasks.t1, not tasksx).",
        _list("keys", {"type": "string"}),
        True,
        _keys,
    ),
    Tool(
        "scan",
        "scan",
        ("cursor", "prefix"),
        {},
        (),
        "The keys and values at and below a prefix: an object of key to value.",
        _ANY_MAP,
        True,
        _scan,
    ),
    Tool(
        "ttl",
        "ttl",
        ("cursor", "key"),
        {},
        (),
        f"The seconds a key has left (null: it never expires). {_MISSING}",
        _props(("key", "ttl"), key={"type": "string"}, ttl={"type": ["number", "null"]}),
        True,
        _ttl,
    ),
    Tool(
        "expire",
        "expire",
        ("cursor", "key", "seconds"),
        {},
        (),
        f"Give a key a deadline, `seconds` from now (0: now). {_MISSING}",
        _props(("key", "ttl"), key={"type": "string"}, ttl={"type": "number"}),
        True,
        _expire,
    ),
    Tool(
        "persist",
        "persist",
        ("cursor", "key"),
        {},
        (),
        "Take a key's deadline away; whether it had one.",
        _flag("persisted"),
        True,
        _persist,
    ),
    Tool(
        "cas",
        "set",
        ("cursor", "key"),
        {
            "old": {"description": "the value the key must hold now (any JSON value)"},
            "new": {"description": "the value to store (any JSON value)"},
        },
        ("old", "new"),
        "Compare and set: store `new` only if the key holds `old`; its new revision. Use it to "
        "change shared state without losing another agent's change. Errors: compare_failed when "
        "the key holds something else (read it again, then retry).",
        _REVISION,
        False,
        _cas,
    ),
    Tool(
        "txn",
        "txn",
        ("cursor", "compares", "ops", "fence"),
        {},
        (),
        "If every compare holds, apply every operation at one revision; else none. Its "
        "result: succeeded, revision, one result per operation. Errors: compare_failed naming "
        "the compares that did not hold (nothing was applied).",
        _props(
            ("succeeded", "revision", "results", "failed"),
            succeeded={"type": "boolean"},
            revision={"type": "integer"},
            results={"type": "array"},
            failed={"type": "array", "items": {"type": "integer"}},
        ),
        False,
        _txn,
    ),
    Tool(
        "claim",
        "claim",
        ("cursor", "prefix", "wait", "lease", "max_deliveries"),
        {},
        ("prefix",),
        "Take the next ready item under a prefix (a task queue) for a lease: no other agent gets "
        "it until you ack it (done), release it (give it back), or the lease runs out. Keep the "
        f"token: ack, release and extend need it. wait: seconds to wait for one (at most "
        f"{WAIT_CAP:g} here; call again to wait longer). Errors: timed_out when nothing was "
        "ready in time (not a failure: there is no work yet).",
        _CLAIMED,
        False,
        _claim,
    ),
    Tool(
        "ack",
        "ack",
        ("cursor", "key", "token"),
        {},
        (),
        f"Finish a claimed item: it is deleted. Errors: {_CLAIM_GONE}",
        _flag("acked"),
        False,
        _ack,
    ),
    Tool(
        "release",
        "release",
        ("cursor", "key", "token", "delay", "priority"),
        {},
        (),
        "Give a claimed item back (claimable again at once, or after `delay`) when you cannot "
        f"finish it. Errors: {_CLAIM_GONE}",
        _flag("released"),
        False,
        _release,
    ),
    Tool(
        "extend",
        "extend",
        ("cursor", "key", "token", "lease"),
        {},
        (),
        "Keep a claimed item longer: its lease runs `lease` seconds from now; the new deadline. "
        f"Call it before the lease runs out on long work. Errors: {_CLAIM_GONE}",
        _props(("key", "lease"), key={"type": "string"}, lease={"type": "number"}),
        True,
        _extend,
    ),
    Tool(
        "claims",
        "claims",
        ("cursor", "prefix"),
        {},
        (),
        "The claims held at and below a prefix: key, holder, token, lease deadline.",
        _list("claims", {"type": "object"}),
        True,
        _claims,
    ),
    Tool(
        "watch",
        "watch",
        ("cursor", "prefix", "from_rev"),
        {
            "count": {
                "type": "integer",
                "minimum": 1,
                "maximum": COUNT_CAP,
                "description": "how many changes to return (default 1)",
            },
            "timeout": {
                "type": "number",
                "minimum": 0,
                "description": f"seconds to wait for them (default and most: {WAIT_CAP:g})",
            },
        },
        (),
        "The next `count` changes under a prefix, from revision `from_rev` (or from now), or the "
        f"ones that came within `timeout` seconds (at most {WAIT_CAP:g}): each with its "
        "revision, type (put, delete, expire, claim, ack, release), key, value, writer (by) and "
        "time. Use it to wait for another agent's change instead of polling get. To go on "
        "without missing a change, call it again with from_rev set to the result's next_rev. An "
        "empty events list means nothing changed in time (not an error). Errors: compacted "
        "when from_rev is older than the broker's history (start again from now).",
        _props(
            ("events", "next_rev"),
            events={"type": "array", "items": {"type": "object"}},
            next_rev={"type": "integer", "description": "the from_rev of the next call"},
        ),
        True,
        _watch,
    ),
    Tool(
        "status",
        "status",
        (),
        {},
        (),
        "What the broker is doing: version, uptime, connections, databases, queues.",
        _ANY_MAP,
        True,
        _status,
    ),
    Tool(
        "queues",
        "queues",
        ("cursor", "prefix"),
        {},
        (),
        "Every queue at or below a prefix with its counts (ready, claimed, delayed, waiting, "
        "dead), its oldest ready item's age and redeliveries.",
        _list("queues", {"type": "object"}),
        True,
        _queues,
    ),
    Tool(
        "queue_show",
        "queue_show",
        ("cursor", "prefix"),
        {},
        (),
        "One queue's settings and counts.",
        _ANY_MAP,
        True,
        _queue_show,
    ),
    Tool(
        "holders",
        "holders",
        ("cursor", "name"),
        {},
        (),
        "Who holds and who waits for a lock, semaphore, election or barrier, in line. Errors: "
        "not_found when nobody holds or waits for it.",
        _RECIPE,
        True,
        _holders,
    ),
    Tool(
        "locks",
        "locks",
        ("cursor", "prefix"),
        {},
        (),
        "Every lock, semaphore, election and barrier at or below a prefix, with its members.",
        _list("locks", {"type": "object"}),
        True,
        _locks,
    ),
    Tool(
        "unlock",
        "unlock",
        ("cursor", "name", "token"),
        {},
        (),
        "Leave a lock (semaphore, election, barrier) by its token. Errors: not_found when that "
        "token is not there (released already, or its session ended).",
        _props(
            ("name", "token", "released"),
            name={"type": "string"},
            token={"type": "integer"},
            released={"type": "boolean"},
        ),
        True,
        _unlock,
    ),
    Tool(
        "lock",
        "acquire",
        ("cursor", "name", "wait"),
        {},
        (),
        "Take a lock only one agent holds at a time (a file, a branch, a deploy): you hold it "
        "until you unlock it or this server stops. Keep the token: unlock needs it, and passing "
        "it as fence on writes makes them happen only while you still hold the lock. wait: "
        f"seconds to wait in line (default 0: try once; at most {WAIT_CAP:g} here). Errors: "
        "timed_out when another agent held it all along (holders says who; call again).",
        _MEMBER,
        False,
        _joining("lock"),
    ),
    Tool(
        "semaphore",
        "acquire",
        ("cursor", "name", "limit", "wait"),
        {},
        ("limit",),
        "Take one of `limit` slots (at most that many agents at a time: GPUs, API quota); "
        "as lock otherwise: unlock with the token. Errors: timed_out when every slot stayed "
        "taken; compare_failed when the others there use another limit.",
        _MEMBER,
        False,
        _joining("semaphore"),
    ),
    Tool(
        "elect",
        "acquire",
        ("cursor", "name", "value", "wait"),
        {},
        ("value",),
        "Stand for leader of an election with `value` (what you announce: an address, a plan); "
        "the answer comes when you lead (the token is your term). Until then another agent "
        "leads: leader's value is in holders. Resign with unlock; change your value with "
        "proclaim. Errors: timed_out when you did not come to lead in time.",
        _MEMBER,
        False,
        _joining("election"),
    ),
    Tool(
        "barrier",
        "acquire",
        ("cursor", "name", "wait"),
        {
            "count": {
                "type": "integer",
                "minimum": 1,
                "description": "how many agents the barrier waits for",
            }
        },
        ("count",),
        "Wait at a barrier until `count` agents are there, then go on together (holding is "
        "true for all). Leave it with unlock and the token once past it. Errors: timed_out "
        "when fewer came in time (you left the barrier; call again to wait longer).",
        _MEMBER,
        False,
        _joining("barrier"),
    ),
    Tool(
        "proclaim",
        "proclaim",
        ("cursor", "name", "token", "value"),
        {},
        (),
        "As the leader of an election (your token from elect), announce a new value; your "
        "term stays. Errors: compare_failed when that token no longer leads.",
        _MEMBER,
        True,
        _proclaim,
    ),
    Tool(
        "mset",
        "mset",
        ("cursor", "items", "fence"),
        {},
        (),
        f"Store several keys at one revision: all of them or, if one is refused, none. {_DENIED}",
        _props(
            ("keys", "revision"),
            keys={"type": "array", "items": {"type": "string"}},
            revision={"type": "integer"},
        ),
        True,
        _mset,
    ),
    Tool(
        "grants",
        "grants",
        (),
        {},
        (),
        "What this server's user may do: its grants (level, cursor, prefix). Use it to see why "
        "something was denied.",
        _props(("user", "grants"), user={"type": "string"}, grants={"type": "array"}),
        True,
        _grants,
    ),
    Tool(
        "quota_show",
        "quota_show",
        ("cursor",),
        {},
        (),
        "This server's user's quota in a database (limits on keys, bytes, claims, rates; empty: "
        "none) and what it uses now. Errors: quota_exceeded on writes means a limit was reached.",
        _props(("user", "limits", "use"), user={"type": "string"}, limits=ANY, use=ANY),
        True,
        _quota_show,
    ),
)

# The operations with a CLI command that have no tool (yet), and why.
_ADMIN = "administration: an agent's server is not the place to change the broker's catalog"
_OPERATOR = "an operator's setting, made once for every agent (prontodb CLI)"
_KEPT = "the server keeps the sessions its agent's locks go with (an agent cannot send keep-alives)"
LEFT_OUT: dict[str, str] = {
    "backup": _ADMIN + " (files on the broker's machine)",
    "backup_list": _ADMIN + " (files on the broker's machine)",
    "backup_restore": _ADMIN + " (files on the broker's machine)",
    "cursor_set": _ADMIN,
    "cursor_delete": _ADMIN,
    "cursor_list": _ADMIN,
    "cursor_show": _ADMIN,
    "user_add": _ADMIN,
    "user_token": _ADMIN,
    "user_remove": _ADMIN,
    "user_list": _ADMIN,
    "grant": _ADMIN,
    "revoke": _ADMIN,
    "quota_set": _ADMIN,
    "stop": _ADMIN + " (it stops the broker for everyone)",
    "ping": "status answers the same question with more",
    "session_grant": _KEPT,
    "session_keepalive": _KEPT,
    "session_revoke": _KEPT,
    "sessions": _KEPT,
    "create_cache": _OPERATOR,
    "drop_cache": _OPERATOR,
    "caches": _OPERATOR + "; get reads a cached key as any other",
    "queue_config": _OPERATOR + "; queue_show reads a queue's settings",
}

BY_NAME = {tool.name: tool for tool in TOOLS}


def offered(read_only: bool) -> tuple[Tool, ...]:
    """The tools a server offers: with ``read_only``, only those that change nothing."""
    return tuple(t for t in TOOLS if t.read_only or not read_only)


async def call(
    tool: Tool,
    client: AsyncClient,
    arguments: dict[str, Any],
    cursor: str,
    progress: Progress | None = None,
    sessions: Sessions | None = None,
) -> tuple[Any, str]:
    """Run ``tool`` (``cursor``: the server's, unless the call names one), telling ``progress``
    how a wait goes, its locks going with ``sessions``; its result as the CLI's --json prints
    it, and that JSON text. Raises ToolFailed or ProntoError."""
    schema = tool.input_schema()
    unknown = set(arguments) - set(schema["properties"])
    if unknown:
        raise ToolFailed(f"bad_request: {tool.name} takes no argument {', '.join(sorted(unknown))}")
    missing = [a for a in schema["required"] if a not in arguments]
    if missing:
        raise ToolFailed(f"bad_request: {tool.name} needs {', '.join(missing)}")
    reporting = _PROGRESS.set(progress)
    keeping = _SESSIONS.set(sessions)
    try:
        return _printed(await tool.run(client, arguments, arguments.get("cursor") or cursor))
    finally:
        _SESSIONS.reset(keeping)
        _PROGRESS.reset(reporting)
