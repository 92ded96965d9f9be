"""The cursor operations: bind a name to a database directory, list, show and forget bindings.

Paths are the broker's: absolute, on the broker's machine (the CLI resolves a relative path against
the caller's working directory before it asks).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from prontodb.protocol import ErrorCode, ProntoError

from ..storage import is_database_file
from . import _backups as backups
from ._access import admin_everywhere, nothing
from ._args import Arg, Kind, absolute_path, owner_arg
from ._catalog import CursorDef, describe
from ._context import Context
from ._names import validate_name
from ._registry import Layer, op

NAME = Arg("name", Kind.CURSOR)
MINE = Arg("mine", Kind.FLAG, doc="this user's own cursor, not the global one")


@op(
    "cursor_set",
    Layer.BROKER,
    access=admin_everywhere,
    args=(NAME, Arg("path", Kind.PATH, doc="absolute, on the broker's machine"), MINE),
    writes=True,
    cli="cursor set",
    summary="Bind a cursor name to a database directory, or restore a backup file into one.",
)
async def cursor_set(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    """Bind ``name`` to the database directory ``path`` (made by the first write there); an
    existing file is a backup to restore from."""
    if backups.is_backup_file(args):
        return await backups.cursor_from_backup(ctx, user, args)
    name = validate_name(args.get("name"))
    path = absolute_path(args)
    owner = owner_arg(args, user)
    if path.exists() and not path.is_dir():
        raise ProntoError(
            ErrorCode.BAD_REQUEST,
            f"{path} is not a directory; name a database directory (it is made on the first "
            "write), or a backup file to restore from.",
        )
    cursor = CursorDef(name, str(path), owner, user, ctx.clock())
    await ctx.catalog.change(lambda: ctx.catalog.define(cursor))
    return describe(cursor, owner is not None and _global(ctx, name) is not None)


@op(
    "cursor_delete",
    Layer.BROKER,
    access=admin_everywhere,
    args=(NAME, MINE, Arg("purge", Kind.FLAG, doc="delete the database's files too")),
    writes=True,
    cli="cursor delete",
    summary="Forget a cursor's binding (with purge, delete its files too).",
)
async def cursor_delete(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    """Forget ``name``'s binding; with ``purge``, delete its database's files too."""
    name = validate_name(args.get("name"))
    owner = owner_arg(args, user)
    purge = args.get("purge", False)
    catalog = ctx.catalog
    cursor = catalog.get(owner, name)
    directory = Path(cursor.path) if cursor else ctx.databases.directory(name)
    purge = purge is True and directory.exists()
    if purge:  # refuse before anything changes
        await trio.to_thread.run_sync(_check_removable, directory)
    if cursor is not None:
        await catalog.change(lambda: catalog.forget(owner, name))
    if purge:
        await ctx.databases.remove(directory, _check_removable)
    return {"name": name, "forgotten": cursor is not None, "purged": purge, "path": str(directory)}


@op(
    "cursor_list",
    Layer.BROKER,
    access=nothing,
    client="cursors",
    cli="cursor list",
    summary="Every cursor this user sees.",
)
async def cursor_list(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    """Every cursor ``user`` sees: the defined ones, then the data directory's databases that
    no definition names (``defined`` false)."""
    databases = ctx.databases
    found = [describe(c, shadows) for c, shadows in databases.catalog.visible(user)]
    named = {item["name"] for item in found}
    data_dir = databases.data_dir
    implicit = sorted(p.name[:-3] for p in data_dir.glob("*.db") if p.is_dir())
    found += [_undefined(ctx, name, exists=True) for name in implicit if name not in named]
    return found


@op(
    "cursor_show",
    Layer.BROKER,
    access=nothing,
    args=(NAME,),
    cli="cursor show",
    summary="What a cursor name means for this user.",
)
async def cursor_show(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    """What ``name`` means for ``user``: its definition, or the default directory."""
    name = validate_name(args.get("name"))
    cursor = ctx.catalog.lookup(user, name)
    if cursor is not None:
        shadows = cursor.owner is not None and _global(ctx, name) is not None
        return describe(cursor, shadows)
    return _undefined(ctx, name, exists=ctx.databases.directory(name).exists())


def _undefined(ctx: Context, name: str, *, exists: bool) -> dict[str, Any]:
    """A cursor no definition names, as the cursor operations answer it: its default place."""
    path = str(ctx.databases.directory(name))
    return {
        "name": name,
        "path": path,
        "owner": None,
        "by": None,
        "time": None,
        "shadows": False,
        "defined": False,
        "exists": exists,
    }


def _global(ctx: Context, name: str) -> CursorDef | None:
    return ctx.catalog.get(None, name)


def _check_removable(directory: Path) -> None:
    """Refuse to delete a directory that holds anything but a database's files."""
    names = os.listdir(directory)
    strangers = [n for n in names if not is_database_file(n)]
    if strangers:
        raise ProntoError(
            ErrorCode.BAD_REQUEST,
            f"{directory} holds files that are not a database's ({', '.join(strangers[:3])}); "
            "nothing was deleted. Remove it by hand if you mean it.",
        )
