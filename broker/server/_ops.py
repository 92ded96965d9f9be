"""The key-value operations of docs/PROTOCOL.md: wire arguments in, engine call, wire result out.

Each handler is a plain function of the engine and the request; it returns the result and the
engine's :class:`Applied` when it changed something (the session makes that durable before it
answers). Handlers neither block nor await: one request is applied whole before the next starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prontodb.protocol import ErrorCode, ProntoError

from ..engine import MISSING, Applied, Compare, Engine, Entry, TxnOp

PAGE_LIMIT = 10_000  # entries per keys/scan page, default and maximum
PAGE_BYTES = 1 << 20  # a page stops before its keys (keys) or values (scan) pass this many bytes


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a handler sees it."""

    args: Mapping[str, Any]
    user: str
    now: float


Outcome = tuple[Any, Applied[Any] | None]
Handler = Callable[[Engine, Call], Outcome]


@dataclass(frozen=True, slots=True)
class KvOp:
    """A handler, whether it may write, and whether it creates a database that does not exist
    yet (``del`` writes but has nothing to delete in a database nobody created)."""

    run: Handler
    writes: bool
    creates: bool


def entry_map(entry: Entry | None) -> dict[str, Any] | None:
    """An entry as ``get`` with ``meta`` answers it."""
    if entry is None:
        return None
    return {"value": entry.value, **entry.meta()}


# -- argument checks ---------------------------------------------------------------------------


def _bad(message: str) -> ProntoError:
    return ProntoError(ErrorCode.BAD_REQUEST, message)


def _required(args: Mapping[str, Any], name: str) -> Any:
    if name not in args:
        raise _bad(f"The request needs the argument {name!r}.")
    return args[name]


def _flag(args: Mapping[str, Any], name: str) -> bool:
    value = args.get(name, False)
    if not isinstance(value, bool):
        raise _bad(f"{name!r} must be true or false.")
    return value


def _uint(args: Mapping[str, Any], name: str, default: int | None = None) -> int | None:
    value = args.get(name, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(f"{name!r} must be a whole number, 0 or more.")
    return value


def _int(args: Mapping[str, Any], name: str, default: int) -> int:
    value = args.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"{name!r} must be an integer.")
    return value


def _list(args: Mapping[str, Any], name: str) -> list[Any]:
    value = args.get(name, [])
    if not isinstance(value, list):
        raise _bad(f"{name!r} must be a list.")
    return value


def _page_limit(args: Mapping[str, Any]) -> int:
    limit = _uint(args, "limit", PAGE_LIMIT)
    assert limit is not None
    return min(limit, PAGE_LIMIT)


# -- handlers ----------------------------------------------------------------------------------


def op_get(engine: Engine, call: Call) -> Outcome:
    entry = engine.get(_required(call.args, "key"))
    if _flag(call.args, "meta"):
        return entry_map(entry), None
    return (None if entry is None else entry.value), None


def op_set(engine: Engine, call: Call) -> Outcome:
    args = call.args
    applied = engine.set(
        _required(args, "key"),
        _required(args, "value"),
        writer=call.user,
        now=call.now,
        if_absent=_flag(args, "if_absent"),
        if_rev=_uint(args, "if_rev"),
        if_value=args.get("if_value", MISSING),
        ttl=args.get("ttl"),
    )
    return applied.result.mod_rev, applied


def op_expire(engine: Engine, call: Call) -> Outcome:
    key, seconds = _required(call.args, "key"), _required(call.args, "seconds")
    applied = engine.expire(key, seconds, writer=call.user, now=call.now)
    return applied.result, applied


def op_persist(engine: Engine, call: Call) -> Outcome:
    applied = engine.persist(_required(call.args, "key"), writer=call.user, now=call.now)
    return applied.result, applied


def op_ttl(engine: Engine, call: Call) -> Outcome:
    exists, deadline = engine.deadline(_required(call.args, "key"))
    if not exists:
        return {"exists": False, "ttl": None}, None
    ttl = None if deadline is None else max(0.0, deadline - call.now)
    return {"exists": True, "ttl": ttl}, None


def op_create_cache(engine: Engine, call: Call) -> Outcome:
    prefix, seconds = _required(call.args, "prefix"), _required(call.args, "seconds")
    return None, engine.create_cache(prefix, seconds)


def op_drop_cache(engine: Engine, call: Call) -> Outcome:
    applied = engine.drop_cache(_required(call.args, "prefix"))
    return applied.result, applied


def op_caches(engine: Engine, call: Call) -> Outcome:
    return engine.caches(), None


def op_del(engine: Engine, call: Call) -> Outcome:
    args = call.args
    applied = engine.delete(
        _required(args, "key"),
        writer=call.user,
        now=call.now,
        if_rev=_uint(args, "if_rev"),
        if_value=args.get("if_value", MISSING),
    )
    return applied.result, applied


def op_incr(engine: Engine, call: Call) -> Outcome:
    key, by = _required(call.args, "key"), _int(call.args, "by", 1)
    applied = engine.incr(key, by, writer=call.user, now=call.now)
    return applied.result, applied


def op_decr(engine: Engine, call: Call) -> Outcome:
    key, by = _required(call.args, "key"), _int(call.args, "by", 1)
    applied = engine.decr(key, by, writer=call.user, now=call.now)
    return applied.result, applied


def _after(args: Mapping[str, Any]) -> str | None:
    after = args.get("after")
    if after is not None and not isinstance(after, str):
        raise _bad("'after' must be a key (a string).")
    return after


def op_keys(engine: Engine, call: Call) -> Outcome:
    limit = _page_limit(call.args)
    found = engine.keys(call.args.get("prefix", ""), after=_after(call.args), limit=limit + 1)
    keys: list[str] = []
    size = 0
    for key in found[:limit]:  # long keys: stop well inside the frame limit
        if keys and size + len(key) > PAGE_BYTES:
            break
        keys.append(key)
        size += len(key)
    return {"keys": keys, "more": len(keys) < len(found)}, None


def op_scan(engine: Engine, call: Call) -> Outcome:
    limit = _page_limit(call.args)
    found = engine.scan(call.args.get("prefix", ""), after=_after(call.args), limit=limit + 1)
    items: list[list[Any]] = []
    size = 0
    for key, entry in found[:limit]:
        if items and size + entry.size > PAGE_BYTES:
            break
        items.append([key, entry.value])
        size += entry.size
    return {"items": items, "more": len(items) < len(found)}, None


def op_count(engine: Engine, call: Call) -> Outcome:
    return engine.count(call.args.get("prefix", "")), None


def op_txn(engine: Engine, call: Call) -> Outcome:
    compares = [Compare.from_wire(c) for c in _list(call.args, "compares")]
    ops = [TxnOp.from_wire(o) for o in _list(call.args, "ops")]
    applied = engine.txn(compares, ops, writer=call.user, now=call.now)
    outcome = applied.result
    results = [entry_map(r) if isinstance(r, Entry) else r for r in outcome.results]
    result = {
        "succeeded": outcome.succeeded,
        "revision": outcome.revision,
        "results": results,
        "failed": outcome.failed,
    }
    return result, applied


KV_OPS: dict[str, KvOp] = {
    "get": KvOp(op_get, writes=False, creates=False),
    "set": KvOp(op_set, writes=True, creates=True),
    "del": KvOp(op_del, writes=True, creates=False),
    "incr": KvOp(op_incr, writes=True, creates=True),
    "decr": KvOp(op_decr, writes=True, creates=True),
    "keys": KvOp(op_keys, writes=False, creates=False),
    "scan": KvOp(op_scan, writes=False, creates=False),
    "count": KvOp(op_count, writes=False, creates=False),
    "txn": KvOp(op_txn, writes=True, creates=True),
    "expire": KvOp(op_expire, writes=True, creates=False),
    "persist": KvOp(op_persist, writes=True, creates=False),
    "ttl": KvOp(op_ttl, writes=False, creates=False),
    "create_cache": KvOp(op_create_cache, writes=True, creates=True),
    "drop_cache": KvOp(op_drop_cache, writes=True, creates=False),
    "caches": KvOp(op_caches, writes=False, creates=False),
}
