"""Users and grants: ``user_add``, ``user_remove``, ``user_token``, ``user_list``, ``grant``,
``revoke``, ``grants``. A token is shown once, when made; the catalog keeps a salted hash."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prontodb.protocol import ErrorCode, ProntoError

from ..engine import validate_prefix
from ._access import (
    Grant,
    Level,
    admin_everywhere,
    new_token,
    own_or_admin,
    parse_level,
    token_hash,
)
from ._args import Arg, Kind
from ._catalog import Catalog, User
from ._context import Context
from ._database_ops import MAX_KEY_LEN
from ._names import validate_name, validate_user
from ._registry import Layer, op

FIRST_USER = "admin"
FIRST_TOKEN_FILE = "admin.token"


def make_user(catalog: Catalog, name: str, by: str, now: float) -> str:
    """Add (or re-key) user ``name``; the new token."""
    token = new_token()
    salt = secrets.token_hex(8)
    catalog.users[name] = User(name, salt, token_hash(token, salt), now, by)
    return token


# Each change checks what it depends on inside Catalog.change, under the catalog's lock, so
# that two concurrent calls cannot both pass a check and both apply.

NAME = Arg("name", Kind.USER, doc="1-64 of [A-Za-z0-9_.@-]")
GRANT_ARGS = (
    Arg("user", Kind.USER),
    Arg("level", Kind.TEXT, doc="read, write or admin"),
    Arg("cursor", Kind.CURSOR, nil=True, doc="nil: every cursor"),
    Arg("prefix", Kind.PREFIX, nil=True, doc='"": every key'),
)


@op(
    "user_add",
    Layer.BROKER,
    access=admin_everywhere,
    args=(NAME,),
    writes=True,
    cli="user add",
    summary="Make a user; its token, shown this once.",
)
async def user_add(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    name = validate_user(args.get("name"))
    catalog = ctx.catalog
    token = ""

    def add() -> None:
        nonlocal token
        if name in catalog.users:
            raise ProntoError(
                ErrorCode.EXISTS, f"The user {name} exists; `user token {name}` gives a new token."
            )
        token = make_user(catalog, name, user, ctx.clock())

    await ctx.catalog.change(add)
    return {"name": name, "token": token}


@op(
    "user_token",
    Layer.BROKER,
    access=admin_everywhere,
    args=(NAME,),
    writes=True,
    cli="user token",
    summary="Give a user a new token; the old one stops working.",
)
async def user_token(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    name = validate_user(args.get("name"))
    token = ""

    def rekey() -> None:
        nonlocal token
        _known(ctx.catalog, name)
        token = make_user(ctx.catalog, name, user, ctx.clock())
        ctx.sessions.end_sessions_of(name, "its token was replaced")

    await ctx.catalog.change(rekey)
    return {"name": name, "token": token}


@op(
    "user_remove",
    Layer.BROKER,
    access=admin_everywhere,
    args=(NAME,),
    writes=True,
    cli="user remove",
    summary="Remove a user and its grants; its connections end.",
)
async def user_remove(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    name = validate_user(args.get("name"))
    catalog = ctx.catalog

    def remove() -> None:
        _known(ctx.catalog, name)
        del catalog.users[name]
        catalog.grants = [g for g in catalog.grants if g.user != name]
        ctx.sessions.end_sessions_of(name, "the user was removed")

    await ctx.catalog.change(remove)
    return True


@op(
    "user_list",
    Layer.BROKER,
    access=admin_everywhere,
    client="users",
    cli="user list",
    summary="The users the broker knows.",
)
async def user_list(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    catalog = ctx.catalog
    return [
        {
            "name": u.name,
            "created": u.created,
            "by": u.by,
            "grants": sum(1 for g in catalog.grants if g.user == u.name),
        }
        for u in sorted(catalog.users.values(), key=lambda u: u.name)
    ]


@op(
    "grant",
    Layer.BROKER,
    access=admin_everywhere,
    args=GRANT_ARGS,
    writes=True,
    summary="Give a user a level on a cursor (or every one) at and below a prefix.",
)
async def grant(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    given = _grant(args)
    catalog = ctx.catalog

    def add() -> None:
        _known(ctx.catalog, given.user)
        if given not in catalog.grants:
            catalog.grants.append(given)

    await ctx.catalog.change(add)
    return given.as_dict()


@op(
    "revoke",
    Layer.BROKER,
    access=admin_everywhere,
    args=GRANT_ARGS,
    writes=True,
    summary="Take back exactly that grant; whether it existed.",
)
async def revoke(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    taken = _grant(args)
    catalog = ctx.catalog
    found = False

    def remove() -> None:
        nonlocal found
        _known(ctx.catalog, taken.user)
        found = taken in catalog.grants
        catalog.grants = [g for g in catalog.grants if g != taken]

    await ctx.catalog.change(remove)
    return found


@op(
    "grants",
    Layer.BROKER,
    access=own_or_admin,
    # Any text: a name no user has lists nothing.
    args=(Arg("user", Kind.TEXT, nil=True, doc="nil: everyone's"),),
    summary="The grants of one user, or everyone's.",
)
async def grants(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    of = args.get("user")
    return [g.as_dict() for g in ctx.catalog.grants if of is None or g.user == of]


async def bootstrap(catalog: Catalog, data_dir: Path, clock: Callable[[], float]) -> None:
    """On a data directory whose catalog has never had a user: make ``admin``, with admin on
    everything, and put its token in ``DATA_DIR/admin.token`` (mode 0600) for the operator."""
    if catalog.bootstrapped:
        return
    path = data_dir / FIRST_TOKEN_FILE
    token = ""

    def first() -> None:
        nonlocal token
        token = make_user(catalog, FIRST_USER, "prontodb", clock())
        catalog.grants.append(Grant(FIRST_USER, Level.ADMIN))
        catalog.bootstrapped = True

    await catalog.change(first)
    _write_secret(path, token)


def _write_secret(path: Path, token: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")


def _known(catalog: Catalog, value: Any) -> str:
    name = validate_user(value)
    if name not in catalog.users:
        raise ProntoError(ErrorCode.NOT_FOUND, f"There is no user {name}; `user add {name}` first.")
    return name


def _grant(args: Mapping[str, Any]) -> Grant:
    name = validate_user(args.get("user"))
    level = parse_level(args.get("level"))
    cursor = args.get("cursor")
    prefix = validate_prefix(args.get("prefix") or "", MAX_KEY_LEN)
    return Grant(name, level, None if cursor is None else validate_name(cursor), prefix)
