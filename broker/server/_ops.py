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

from ..engine import (
    MISSING,
    Applied,
    Claimed,
    Compare,
    Engine,
    EngineLimits,
    Entry,
    TxnOp,
    validate_prefix,
)

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


def claimed_map(claimed: Claimed | None) -> dict[str, Any] | None:
    """What ``claim`` answers: the item, its fencing token, lease deadline and delivery count."""
    if claimed is None:
        return None
    return {
        "key": claimed.key,
        "value": claimed.value,
        "token": claimed.token,
        "lease": claimed.lease,
        "deliveries": claimed.deliveries,
    }


DEFAULT_LEASE = 60.0  # seconds a claim holds its item unless the claimer says otherwise
MAX_KEY_LEN = EngineLimits().max_key_len
MAX_CLAIM_WAIT = 86_400.0  # a blocked claim answers nil after a day at the most


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


def uint_arg(args: Mapping[str, Any], name: str, default: int | None = None) -> int | None:
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
    limit = uint_arg(args, "limit")  # absent or nil: the largest page
    return PAGE_LIMIT if limit is None else min(limit, PAGE_LIMIT)


# -- handlers ----------------------------------------------------------------------------------


def op_get(engine: Engine, call: Call) -> Outcome:
    key = _required(call.args, "key")
    entry = engine.get(key)
    if not _flag(call.args, "meta"):
        return (None if entry is None else entry.value), None
    meta = entry_map(entry)
    if meta is not None:
        claim, deliveries = engine.claim_of(key)
        meta["deliveries"] = deliveries
        meta["claim"] = None
        if claim is not None:
            meta["claim"] = {
                "holder": claim.holder,
                "token": claim.token,
                "lease": claim.lease,
                "bound": claim.bound,
            }
    return meta, None


def op_set(engine: Engine, call: Call) -> Outcome:
    args = call.args
    applied = engine.set(
        _required(args, "key"),
        _required(args, "value"),
        writer=call.user,
        now=call.now,
        if_absent=_flag(args, "if_absent"),
        if_rev=uint_arg(args, "if_rev"),
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
        if_rev=uint_arg(args, "if_rev"),
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


def _token(args: Mapping[str, Any]) -> int:
    token = uint_arg(args, "token")
    if token is None:
        raise _bad("The request needs the claim's 'token'.")
    return token


def claim_wait(args: Mapping[str, Any]) -> float:
    """A claim's ``wait``: seconds to block for an item (0: answer at once)."""
    wait = args.get("wait", 0)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not wait >= 0:
        raise _bad("'wait' must be a number of seconds, 0 or more.")
    return float(min(wait, MAX_CLAIM_WAIT))


def claim_args(args: Mapping[str, Any]) -> tuple[str, float, bool, int | None]:
    """A claim's prefix, lease (seconds), bind flag and max deliveries, checked."""
    # Checked here, not only by the engine: a waiter's claim is made later, for it, while
    # another request is being served, where its bad argument must not land.
    prefix = validate_prefix(args.get("prefix", ""), MAX_KEY_LEN)
    lease = args.get("lease", DEFAULT_LEASE)
    if isinstance(lease, bool) or not isinstance(lease, int | float) or not 0 < lease < 1e9:
        raise _bad("'lease' must be a number of seconds above 0.")
    max_deliveries = uint_arg(args, "max_deliveries")
    if max_deliveries == 0:
        raise _bad("'max_deliveries' must be 1 or more.")
    return prefix, float(lease), _flag(args, "bind"), max_deliveries


def op_ack(engine: Engine, call: Call) -> Outcome:
    key = _required(call.args, "key")
    return None, engine.ack(key, _token(call.args), writer=call.user, now=call.now)


def op_release(engine: Engine, call: Call) -> Outcome:
    key, delay = _required(call.args, "key"), call.args.get("delay")
    applied = engine.release(key, _token(call.args), writer=call.user, now=call.now, delay=delay)
    return None, applied


def op_extend(engine: Engine, call: Call) -> Outcome:
    key, lease = _required(call.args, "key"), _required(call.args, "lease")
    applied = engine.extend(key, _token(call.args), lease, now=call.now)
    return applied.result, applied


def op_claims(engine: Engine, call: Call) -> Outcome:
    held = engine.claims(call.args.get("prefix", ""))
    return [
        {"key": k, "holder": c.holder, "token": c.token, "lease": c.lease, "bound": c.bound}
        for k, c in held
    ], None


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
    "ack": KvOp(op_ack, writes=True, creates=False),
    "release": KvOp(op_release, writes=True, creates=False),
    "extend": KvOp(op_extend, writes=True, creates=False),
    "claims": KvOp(op_claims, writes=False, creates=False),
}
