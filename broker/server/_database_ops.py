"""The operations on one database's keys (docs/PROTOCOL.md): wire arguments in, engine call,
wire result out.

Each handler is a plain function of the engine and the request, declared with its arguments and
permission (:func:`op`); it returns the result and the engine's :class:`Applied` when it changed
something (the session makes that durable before it answers). Handlers neither block nor await:
one request is applied whole before the next starts. Their arguments were checked against the
declaration before they run.
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
    ItemOptions,
    OpKind,
    TxnOp,
    recipes,
    validate_prefix,
)
from ._access import Level, on_cursor, on_each_key, on_key, on_prefix, on_txn_keys
from ._args import Arg, Kind, bad
from ._registry import Layer, op

PAGE_LIMIT = 10_000  # entries per keys/scan page, default and maximum
PAGE_BYTES = 1 << 20  # a page stops before its keys (keys) or values (scan) pass this many bytes


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a handler sees it."""

    args: Mapping[str, Any]
    user: str
    now: float
    connection: int = 0  # the broker's number of the request's connection (0: none)


Outcome = tuple[Any, Applied[Any] | None]
Handler = Callable[[Engine, Call], Outcome]


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


MAX_KEY_LEN = EngineLimits().max_key_len
MAX_CLAIM_WAIT = 86_400.0  # a blocked claim answers nil after a day at the most


# -- argument kinds shared by several operations -------------------------------------------------

KEY = Arg("key", Kind.KEY, required=True)
VALUE = Arg("value", Kind.VALUE, required=True)
PREFIX = Arg("prefix", Kind.PREFIX, doc='default "": every key')
SECONDS = Arg("seconds", Kind.SECONDS, required=True)
IF_REV = Arg("if_rev", Kind.UINT, doc="0: the key must be absent")
IF_VALUE = Arg("if_value", Kind.VALUE)
BY = Arg("by", Kind.INT, doc="default 1")
TOKEN = Arg("token", Kind.UINT, required=True, missing="The request needs the claim's 'token'.")
PAGE = (PREFIX, Arg("after", Kind.KEY), Arg("limit", Kind.UINT))
FENCE = Arg("fence", Kind.MAP, nil=True, doc='{"name": N, "token": T}: only while N is held with T')


ITEM_ARGS = (
    Arg("priority", Kind.UINT, doc="a queue item's priority: 0 most urgent, default 100"),
    Arg("delay", Kind.SECONDS, doc="claimable only this many seconds from now"),
    Arg("at", Kind.SECONDS, doc="claimable only from this time (epoch seconds)"),
    Arg("after", Kind.LIST, doc="claimable only once these keys are gone"),
)


ITEM_NAMES = tuple(arg.name for arg in ITEM_ARGS)


def item_options(engine: Engine, args: Mapping[str, Any], now: float) -> ItemOptions | None:
    """The queue options of a ``set``, checked; None if it names none."""
    if args.keys().isdisjoint(ITEM_NAMES):
        return None  # the common set: no dict built for it
    named = {name: args.get(name) for name in ITEM_NAMES}
    if all(value is None for value in named.values()):
        return None
    return ItemOptions.make(now=now, max_key_len=engine.limits.max_key_len, **named)


def check_fence(engine: Engine, args: Mapping[str, Any]) -> None:
    """Refuse (compare_failed) a write whose ``fence`` does not hold: its recipe is not held
    with its token any more. Checked in the same step as the write, so nothing comes between."""
    fence = args.get("fence")
    if fence is None:
        return
    if not isinstance(fence, dict) or fence.keys() != {"name", "token"}:
        raise bad('A fence is {"name": RECIPE, "token": T}, as a holder got it.')
    recipes.check_fence(engine, fence["name"], fence["token"])


READ, WRITE = Level.READ, Level.WRITE


def _page_limit(args: Mapping[str, Any]) -> int:
    limit = args.get("limit")  # absent or nil: the largest page
    return PAGE_LIMIT if limit is None else min(limit, PAGE_LIMIT)


def _is_set(args: Mapping[str, Any], name: str) -> bool:
    return bool(args.get(name, False))  # a declared flag: checked to be a bool already


# -- handlers ----------------------------------------------------------------------------------


@op(
    "get",
    Layer.DATABASE,
    access=on_key(READ),
    args=(KEY, Arg("meta", Kind.FLAG, doc="answer a map of the value and its metadata")),
    summary="The value of a key, or nil; with meta, the value and its metadata.",
)
def op_get(engine: Engine, call: Call) -> Outcome:
    key = call.args["key"]
    entry = engine.get(key)
    if not _is_set(call.args, "meta"):
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
        meta.update(engine.item_of(key))  # its priority, ready time and dependencies
    return meta, None


@op(
    "set",
    Layer.DATABASE,
    access=on_key(WRITE),
    args=(
        KEY,
        VALUE,
        Arg("if_absent", Kind.FLAG),
        IF_REV,
        IF_VALUE,
        Arg("ttl", Kind.SECONDS, doc="seconds > 0"),
        Arg("session", Kind.UINT, doc="attach the key to this session (not with ttl)"),
        FENCE,
        *ITEM_ARGS,
    ),
    writes=True,
    creates=True,
    summary="Set a key, if its conditions hold; its new modify revision.",
)
def op_set(engine: Engine, call: Call) -> Outcome:
    args = call.args
    check_fence(engine, args)
    applied = engine.set(
        args["key"],
        args["value"],
        writer=call.user,
        now=call.now,
        if_absent=_is_set(args, "if_absent"),
        if_rev=args.get("if_rev"),
        if_value=args.get("if_value", MISSING),
        ttl=args.get("ttl"),
        session=args.get("session"),
        item=item_options(engine, args, call.now),
    )
    return applied.result.mod_rev, applied


@op(
    "exists",
    Layer.DATABASE,
    access=on_key(READ),
    args=(KEY,),
    summary="Whether a key exists.",
)
def op_exists(engine: Engine, call: Call) -> Outcome:
    return engine.get(call.args["key"]) is not None, None


@op(
    "mget",
    Layer.DATABASE,
    access=on_each_key(READ, "keys"),
    args=(Arg("keys", Kind.LIST, required=True, doc="the keys, in the order of the answer"),),
    summary="The values of several keys, in order; nil for each missing one.",
)
def op_mget(engine: Engine, call: Call) -> Outcome:
    values = []
    for key in call.args["keys"]:
        entry = engine.get(key)
        values.append(None if entry is None else entry.value)
    return values, None


@op(
    "mset",
    Layer.DATABASE,
    access=on_each_key(WRITE, "items"),
    args=(Arg("items", Kind.MAP, required=True, doc="{key: value, ...}"), FENCE),
    writes=True,
    creates=True,
    summary="Set several keys at one revision (all or none); that revision.",
)
def op_mset(engine: Engine, call: Call) -> Outcome:
    check_fence(engine, call.args)
    items = call.args["items"]
    limit = engine.limits.max_txn_ops
    if len(items) > limit:
        raise ProntoError(
            ErrorCode.TOO_LARGE, f"mset takes at most {limit} keys; split it into several."
        )
    # A transaction of sets: one revision for all, and nothing written if one is refused.
    sets = [TxnOp(OpKind.SET, key, value) for key, value in items.items()]
    applied = engine.txn([], sets, writer=call.user, now=call.now)
    return applied.result.revision, applied


@op(
    "expire",
    Layer.DATABASE,
    access=on_key(WRITE),
    args=(KEY, SECONDS),
    writes=True,
    summary="Give a key a deadline; whether it existed.",
)
def op_expire(engine: Engine, call: Call) -> Outcome:
    applied = engine.expire(call.args["key"], call.args["seconds"], writer=call.user, now=call.now)
    return applied.result, applied


@op(
    "persist",
    Layer.DATABASE,
    access=on_key(WRITE),
    args=(KEY,),
    writes=True,
    summary="Take a key's deadline away; whether it had one.",
)
def op_persist(engine: Engine, call: Call) -> Outcome:
    applied = engine.persist(call.args["key"], writer=call.user, now=call.now)
    return applied.result, applied


@op(
    "ttl",
    Layer.DATABASE,
    access=on_key(READ),
    args=(KEY,),
    summary="Whether a key exists, and the seconds it has left.",
)
def op_ttl(engine: Engine, call: Call) -> Outcome:
    exists, deadline = engine.deadline(call.args["key"])
    if not exists:
        return {"exists": False, "ttl": None}, None
    ttl = None if deadline is None else max(0.0, deadline - call.now)
    return {"exists": True, "ttl": ttl}, None


@op(
    "create_cache",
    Layer.DATABASE,
    access=on_prefix(WRITE),
    args=(Arg("prefix", Kind.PREFIX, required=True), SECONDS),
    writes=True,
    creates=True,
    summary="Keys set under a prefix from now on take this TTL.",
)
def op_create_cache(engine: Engine, call: Call) -> Outcome:
    return None, engine.create_cache(call.args["prefix"], call.args["seconds"])


@op(
    "drop_cache",
    Layer.DATABASE,
    access=on_prefix(WRITE),
    args=(Arg("prefix", Kind.PREFIX, required=True),),
    writes=True,
    summary="Stop a prefix being a cache; whether it was one.",
)
def op_drop_cache(engine: Engine, call: Call) -> Outcome:
    applied = engine.drop_cache(call.args["prefix"])
    return applied.result, applied


@op(
    "caches",
    Layer.DATABASE,
    access=on_cursor(READ),
    summary="The cache prefixes and their TTLs.",
)
def op_caches(engine: Engine, call: Call) -> Outcome:
    return engine.caches(), None


@op(
    "del",
    Layer.DATABASE,
    access=on_key(WRITE),
    args=(KEY, IF_REV, IF_VALUE, FENCE),
    writes=True,
    client="delete",
    summary="Delete a key, if its conditions hold; whether it existed.",
)
def op_del(engine: Engine, call: Call) -> Outcome:
    args = call.args
    check_fence(engine, args)
    applied = engine.delete(
        args["key"],
        writer=call.user,
        now=call.now,
        if_rev=args.get("if_rev"),
        if_value=args.get("if_value", MISSING),
    )
    return applied.result, applied


@op(
    "incr",
    Layer.DATABASE,
    access=on_key(WRITE),
    args=(KEY, BY, FENCE),
    writes=True,
    creates=True,
    summary="Add to an integer key (a missing one counts as 0); the new value.",
)
def op_incr(engine: Engine, call: Call) -> Outcome:
    check_fence(engine, call.args)
    applied = engine.incr(call.args["key"], call.args.get("by", 1), writer=call.user, now=call.now)
    return applied.result, applied


@op(
    "decr",
    Layer.DATABASE,
    access=on_key(WRITE),
    args=(KEY, BY, FENCE),
    writes=True,
    creates=True,
    summary="Subtract from an integer key (a missing one counts as 0); the new value.",
)
def op_decr(engine: Engine, call: Call) -> Outcome:
    check_fence(engine, call.args)
    applied = engine.decr(call.args["key"], call.args.get("by", 1), writer=call.user, now=call.now)
    return applied.result, applied


def _after(args: Mapping[str, Any]) -> str | None:
    after = args.get("after")
    if after is not None and not isinstance(after, str):
        raise bad("'after' must be a key (a string).")
    return after


@op(
    "keys",
    Layer.DATABASE,
    access=on_prefix(READ),
    args=PAGE,
    summary="One page of the keys at and below a prefix.",
)
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


@op(
    "scan",
    Layer.DATABASE,
    access=on_prefix(READ),
    args=PAGE,
    summary="One page of the keys and values at and below a prefix.",
)
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


@op(
    "count",
    Layer.DATABASE,
    access=on_prefix(READ),
    args=(PREFIX,),
    cli=None,
    summary="How many keys are at and below a prefix.",
)
def op_count(engine: Engine, call: Call) -> Outcome:
    return engine.count(call.args.get("prefix", "")), None


@op(
    "txn",
    Layer.DATABASE,
    access=on_txn_keys,
    args=(Arg("compares", Kind.LIST), Arg("ops", Kind.LIST), FENCE),
    writes=True,
    creates=True,
    summary="Compare keys, then apply one list of operations or the other, atomically.",
)
def op_txn(engine: Engine, call: Call) -> Outcome:
    check_fence(engine, call.args)
    compares = [Compare.from_wire(c) for c in call.args.get("compares", [])]
    ops = [TxnOp.from_wire(o) for o in call.args.get("ops", [])]
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


# -- claims (the claim itself may block: the session runs it, see _session.py) -----------------

CLAIM_ARGS = (
    Arg("prefix", Kind.PREFIX),
    Arg("wait", Kind.SECONDS, doc="seconds to wait for an item, default 0"),
    Arg("lease", Kind.SECONDS, doc="seconds, default 60"),
    Arg("bind", Kind.FLAG, doc="return the item when this connection closes"),
    Arg("max_deliveries", Kind.UINT, doc="1 or more"),
)


def claim_wait(args: Mapping[str, Any]) -> float:
    """A claim's ``wait``: seconds to block for an item (0: answer at once)."""
    wait = args.get("wait", 0)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not wait >= 0:
        raise bad("'wait' must be a number of seconds, 0 or more.")
    return float(min(wait, MAX_CLAIM_WAIT))


def claim_args(args: Mapping[str, Any]) -> tuple[str, float | None, bool, int | None]:
    """A claim's prefix, lease (seconds; None: the queue's, else the default), bind flag and
    max deliveries, checked."""
    # Checked here, not only by the engine: a waiter's claim is made later, for it, while
    # another request is being served, where its bad argument must not land.
    prefix = validate_prefix(args.get("prefix", ""), MAX_KEY_LEN)
    lease = args.get("lease")
    if lease is not None and (
        isinstance(lease, bool) or not isinstance(lease, int | float) or not 0 < lease < 1e9
    ):
        raise bad("'lease' must be a number of seconds above 0.")
    max_deliveries = args.get("max_deliveries")  # a whole number or nil: checked as declared
    if max_deliveries == 0:
        raise bad("'max_deliveries' must be 1 or more.")
    return prefix, None if lease is None else float(lease), _is_set(args, "bind"), max_deliveries


@op(
    "ack",
    Layer.DATABASE,
    access=on_key(WRITE),
    args=(KEY, TOKEN),
    writes=True,
    summary="Finish a claimed item: it is deleted.",
)
def op_ack(engine: Engine, call: Call) -> Outcome:
    args = call.args
    return None, engine.ack(args["key"], args["token"], writer=call.user, now=call.now)


@op(
    "release",
    Layer.DATABASE,
    access=on_key(WRITE),
    args=(
        KEY,
        TOKEN,
        Arg("delay", Kind.SECONDS, doc="seconds before it is claimable again"),
        Arg("priority", Kind.UINT, doc="its new priority (0 most urgent)"),
    ),
    writes=True,
    summary="Give a claimed item back, claimable at once (or after its queue's backoff, or a delay).",
)
def op_release(engine: Engine, call: Call) -> Outcome:
    args = call.args
    applied = engine.release(
        args["key"],
        args["token"],
        writer=call.user,
        now=call.now,
        delay=args.get("delay"),
        priority=args.get("priority"),
    )
    return None, applied


@op(
    "extend",
    Layer.DATABASE,
    access=on_key(WRITE),
    args=(KEY, TOKEN, Arg("lease", Kind.SECONDS, required=True)),
    writes=True,
    summary="Renew a claim's lease; its new deadline.",
)
def op_extend(engine: Engine, call: Call) -> Outcome:
    args = call.args
    applied = engine.extend(args["key"], args["token"], args["lease"], now=call.now)
    return applied.result, applied


@op(
    "claims",
    Layer.DATABASE,
    access=on_prefix(READ),
    args=(PREFIX,),
    summary="The claims held at and below a prefix.",
)
def op_claims(engine: Engine, call: Call) -> Outcome:
    held = engine.claims(call.args.get("prefix", ""))
    return [
        {"key": k, "holder": c.holder, "token": c.token, "lease": c.lease, "bound": c.bound}
        for k, c in held
    ], None
