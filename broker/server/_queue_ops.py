"""The operations on one database's queues (docs/PROTOCOL.md, "Queues"): a queue's settings
(``queue config``, ``queue show``) and the statistics of every queue (``queues``). Items are
written with their options by ``set`` (``priority``, ``delay``, ``at``, ``after``)."""

from __future__ import annotations

from typing import Any

from ..engine import Engine, QueueConfig, validate_prefix
from ._access import Level, on_prefix
from ._args import Arg, Kind
from ._database_ops import MAX_KEY_LEN, PREFIX, Call, Outcome
from ._registry import Layer, op

QUEUE = Arg(
    "prefix", Kind.PREFIX, required=True, doc="the queue: its items are its direct children"
)


def _config_map(config: QueueConfig | None) -> dict[str, Any] | None:
    return None if config is None else config.as_map()


@op(
    "queue_config",
    Layer.DATABASE,
    access=on_prefix(Level.WRITE),
    args=(
        QUEUE,
        Arg("lease", Kind.SECONDS, doc="seconds a claim holds an item when it names no lease"),
        Arg("max_deliveries", Kind.UINT, doc="hand-outs before the item goes to dead.<key>"),
        Arg("backoff", Kind.LIST, doc="[first delay, cap] in seconds: retries spaced out"),
    ),
    writes=True,
    creates=True,
    cli="queue config",
    summary="Set a queue's settings (none given: back to the defaults); the settings.",
)
def op_queue_config(engine: Engine, call: Call) -> Outcome:
    args = call.args
    given = {k: args[k] for k in ("lease", "max_deliveries", "backoff") if args.get(k) is not None}
    applied = engine.queue_config(args["prefix"], QueueConfig.from_map(given))
    return _config_map(applied.result) or {}, applied


@op(
    "queue_show",
    Layer.DATABASE,
    access=on_prefix(Level.READ),
    args=(QUEUE,),
    cli="queue show",
    summary="A queue's settings ({} when it has none) and its statistics.",
)
def op_queue_show(engine: Engine, call: Call) -> Outcome:
    prefix = validate_prefix(call.args["prefix"], MAX_KEY_LEN)
    config = engine.queue_configs().get(prefix)
    return {"config": _config_map(config) or {}, **engine.queue_counts(prefix, call.now)}, None


@op(
    "queues",
    Layer.DATABASE,
    access=on_prefix(Level.READ),
    args=(PREFIX,),
    summary="Every queue at or below a prefix with its counts, oldest ready age, redeliveries.",
)
def op_queues(engine: Engine, call: Call) -> Outcome:
    prefix = validate_prefix(call.args.get("prefix", ""), MAX_KEY_LEN)
    return engine.queues(prefix or None, call.now), None
