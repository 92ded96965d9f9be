"""The operations on one database's sessions (docs/PROTOCOL.md, "Sessions"): leases with an id
and a TTL, kept alive by their client or bound to its connection, whose attached keys are
deleted when they end. Keys are attached by ``set`` and ``txn`` with ``session``."""

from __future__ import annotations

from prontodb.protocol import ErrorCode, ProntoError

from ..engine import Engine
from ._access import Level, somewhere_in_cursor
from ._args import Arg, Kind
from ._database_ops import Call, Outcome
from ._registry import Layer, op

SESSION_ID = Arg("id", Kind.UINT, required=True, missing="The request needs the session's 'id'.")
WRITE_SOMEWHERE = somewhere_in_cursor(Level.WRITE)


def _owned(engine: Engine, call: Call) -> int:
    """The session ``id`` names, if the caller was granted it: a session's keys are its
    owner's to keep or end (a session not live is the engine's to refuse)."""
    session: int = call.args["id"]
    owner = engine.session_owner(session)
    if owner is not None and owner != call.user:
        raise ProntoError(
            ErrorCode.DENIED,
            f"Session {session} belongs to {owner}; only its owner may keep it alive or revoke it.",
        )
    return session


@op(
    "session_grant",
    Layer.DATABASE,
    access=WRITE_SOMEWHERE,
    args=(
        Arg("ttl", Kind.SECONDS, required=True, doc="seconds > 0, a day at most"),
        Arg("bound", Kind.FLAG, doc="also end it when this connection closes"),
    ),
    writes=True,
    creates=True,
    cli="session grant",
    summary="A new session, alive for its TTL from now and from each keep-alive.",
)
def op_session_grant(engine: Engine, call: Call) -> Outcome:
    bound = call.connection if call.args.get("bound", False) else None
    applied = engine.session_grant(call.args["ttl"], owner=call.user, now=call.now, bound=bound)
    ttl = call.args["ttl"]
    return {"id": applied.result, "ttl": float(ttl), "deadline": call.now + ttl}, applied


@op(
    "session_keepalive",
    Layer.DATABASE,
    access=WRITE_SOMEWHERE,
    args=(SESSION_ID,),
    cli="session keepalive",
    summary="Keep a session alive for its TTL from now; its new deadline.",
)
def op_session_keepalive(engine: Engine, call: Call) -> Outcome:
    applied = engine.session_keepalive(_owned(engine, call), now=call.now)
    return {"deadline": applied.result}, applied


@op(
    "session_revoke",
    Layer.DATABASE,
    access=WRITE_SOMEWHERE,
    args=(SESSION_ID,),
    writes=True,
    cli="session revoke",
    summary="End a session now: its keys are deleted.",
)
def op_session_revoke(engine: Engine, call: Call) -> Outcome:
    applied = engine.session_revoke(_owned(engine, call), writer=call.user, now=call.now)
    return {"keys": applied.result}, applied


@op(
    "sessions",
    Layer.DATABASE,
    access=somewhere_in_cursor(Level.READ),
    cli="session list",
    summary="The live sessions: id, owner, TTL, deadline and number of keys.",
)
def op_sessions(engine: Engine, call: Call) -> Outcome:
    return [s._asdict() for s in engine.sessions()], None
