"""The operations on one database's recipes (docs/RECIPES.md, docs/PROTOCOL.md "Recipes"):
leaving a line by token, an election leader's proclaim, and the listings. Joining (``acquire``,
which may wait) is the session's: see ``_session_recipes.py``."""

from __future__ import annotations

from typing import Any

from ..engine import Engine, recipes, validate_prefix
from ._access import Level, on_key, on_prefix
from ._args import Arg, Kind
from ._database_ops import MAX_KEY_LEN, PREFIX, VALUE, Call, Outcome
from ._registry import Layer, op

NAME = Arg("name", Kind.KEY, required=True, doc="the recipe's name (its members are below it)")
MEMBER_TOKEN = Arg(
    "token", Kind.UINT, required=True, missing="The request needs the holder's 'token'."
)


def member_map(member: recipes.Member | None) -> dict[str, Any] | None:
    """A member as ``acquire`` and ``proclaim`` answer it."""
    return None if member is None else member._asdict()


@op(
    "unlock",
    Layer.DATABASE,
    access=on_key(Level.WRITE, "name"),
    args=(NAME, MEMBER_TOKEN),
    writes=True,
    summary="Leave a lock, semaphore, election or barrier by token; whether that token was there.",
)
def op_unlock(engine: Engine, call: Call) -> Outcome:
    applied = recipes.leave(
        engine, call.args["name"], call.args["token"], writer=call.user, now=call.now
    )
    return applied.result, applied


@op(
    "proclaim",
    Layer.DATABASE,
    access=on_key(Level.WRITE, "name"),
    args=(NAME, MEMBER_TOKEN, VALUE),
    writes=True,
    summary="The leader (holder with token) changes its value; its term stays.",
)
def op_proclaim(engine: Engine, call: Call) -> Outcome:
    args = call.args
    applied = recipes.proclaim(
        engine, args["name"], args["token"], args["value"], writer=call.user, now=call.now
    )
    return member_map(applied.result), applied


@op(
    "holders",
    Layer.DATABASE,
    access=on_key(Level.READ, "name"),
    args=(NAME,),
    summary="A recipe's kind, limit and members in line (holders first), or nil.",
)
def op_holders(engine: Engine, call: Call) -> Outcome:
    state = recipes.state(engine, call.args["name"])
    return (None if state is None else state.as_map()), None


@op(
    "locks",
    Layer.DATABASE,
    access=on_prefix(Level.READ),
    args=(PREFIX,),
    summary="Every recipe with members at or below a prefix, by name.",
)
def op_locks(engine: Engine, call: Call) -> Outcome:
    prefix = validate_prefix(call.args.get("prefix", ""), MAX_KEY_LEN)
    return [state.as_map() for state in recipes.listing(engine, prefix)], None
