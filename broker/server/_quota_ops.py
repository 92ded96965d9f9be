"""Quotas (docs/PROTOCOL.md, "Quotas"): what a user may own and hold in one database (keys, bytes,
claims: the engine's, enforced in the step of each write) and how much of the broker it may use
(connections, requests per second: the catalog's, enforced by the sessions)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prontodb.protocol import ErrorCode, ProntoError

from ..engine import Engine, Quota
from ._access import Level, admin_everywhere, on_cursor, own_or_admin
from ._args import Arg, Kind
from ._context import Context
from ._database_ops import Call, Outcome
from ._registry import Layer, op

LIMITS = (
    Arg("max_keys", Kind.UINT, doc="keys it may own here (last written by it)"),
    Arg("max_bytes", Kind.UINT, doc="bytes its values may take here"),
    Arg("max_claims", Kind.UINT, doc="claims it may hold here at once"),
)
BROKER_LIMITS = ("max_connections", "rate")
USER_ARG = Arg("user", Kind.USER, required=True, doc="the user the limits are for")


@op(
    "quota_set",
    Layer.DATABASE,
    access=on_cursor(Level.ADMIN),
    args=(USER_ARG, *LIMITS),
    writes=True,
    creates=True,
    cli="quota set",
    summary="Set a user's quota in a database (no limit given: none); the quota.",
)
def op_quota_set(engine: Engine, call: Call) -> Outcome:
    args = call.args
    quota = Quota.from_map({arg.name: args.get(arg.name) for arg in LIMITS})
    applied = engine.set_quota(args["user"], quota)
    return (applied.result or Quota()).as_map(), applied


@op(
    "quota_show",
    Layer.DATABASE,
    access=own_or_admin,
    args=(Arg("user", Kind.USER, doc="one user (default: every user with a quota)"),),
    cli="quota show",
    summary="Users' quotas in a database with what they use now.",
)
def op_quota_show(engine: Engine, call: Call) -> Outcome:
    named = call.args.get("user")
    users = [named] if named is not None else list(engine.quotas())
    quotas = engine.quotas()
    shown = {
        user: {"limits": quotas.get(user, Quota()).as_map(), "use": engine.usage(user)}
        for user in users
    }
    return shown, None


@op(
    "user_limits",
    Layer.BROKER,
    access=admin_everywhere,
    args=(
        USER_ARG,
        Arg("max_connections", Kind.UINT, doc="connections it may have open at once"),
        Arg("rate", Kind.SECONDS, doc="requests per second, on average (bursts of one second)"),
        Arg("clear", Kind.FLAG, doc="remove its limits"),
    ),
    cli=None,
    summary="Set (or with nothing, read) a user's broker-wide limits; them and its connections.",
)
async def op_user_limits(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    name: str = args["user"]
    given = {k: args[k] for k in BROKER_LIMITS if args.get(k) is not None}
    rate = given.get("rate")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0
    ):
        raise ProntoError(
            ErrorCode.BAD_REQUEST, "'rate' must be a number of requests per second above 0."
        )
    catalog = ctx.catalog
    if given or args.get("clear"):

        def change() -> None:
            if args.get("clear"):
                catalog.limits.pop(name, None)
            else:
                catalog.limits[name] = {**catalog.limits.get(name, {}), **given}

        await catalog.change(change)
    connections = sum(1 for s in ctx.sessions.live() if s.user == name)
    return {"user": name, "limits": dict(catalog.limits.get(name, {})), "connections": connections}
