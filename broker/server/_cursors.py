"""The cursor operations: bind a name to a database directory, list, show and forget bindings.

Paths are the broker's: absolute, on the broker's machine (the CLI resolves a relative path against
the caller's working directory before it asks).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from prontodb.protocol import ErrorCode, ProntoError

from ..storage import is_database_file
from ._catalog import CursorDef, change_catalog
from ._names import validate_name

if TYPE_CHECKING:
    from ._broker import Broker

CursorOp = Callable[["Broker", str, Mapping[str, Any]], Awaitable[Any]]


def owner_arg(args: Mapping[str, Any], user: str) -> str | None:
    """The owner a cursor operation acts for: this user with ``mine``, else None (global)."""
    mine = args.get("mine", False)
    if not isinstance(mine, bool):
        raise ProntoError(ErrorCode.BAD_REQUEST, "'mine' must be true or false.")
    return user if mine else None


def absolute_path(args: Mapping[str, Any], key: str = "path") -> Path:
    """The argument ``key`` as an absolute, normalised path; bad_request for anything else."""
    path = args.get(key)
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ProntoError(
            ErrorCode.BAD_REQUEST,
            f"{key!r} must be an absolute path, not {path!r} (the CLI makes a relative path absolute "
            "against your working directory).",
        )
    return Path(os.path.normpath(path))


def describe(cursor: CursorDef, shadows: bool) -> dict[str, Any]:
    """A definition as the cursor operations answer it."""
    return {
        **cursor.as_dict(),
        "shadows": shadows,
        "defined": True,
        "exists": Path(cursor.path).exists(),
    }


async def cursor_set(broker: Broker, user: str, args: Mapping[str, Any]) -> Any:
    """Bind ``name`` to the database directory ``path`` (made by the first write there)."""
    name = validate_name(args.get("name"))
    path = absolute_path(args)
    owner = owner_arg(args, user)
    if path.exists() and not path.is_dir():
        raise ProntoError(
            ErrorCode.BAD_REQUEST,
            f"{path} is not a directory; name a database directory (it is made on the first "
            "write), or a backup file to restore from.",
        )
    cursor = CursorDef(name, str(path), owner, user, broker.clock())
    await change_catalog(broker, lambda: broker.databases.catalog.define(cursor))
    return describe(cursor, owner is not None and _global(broker, name) is not None)


async def cursor_delete(broker: Broker, user: str, args: Mapping[str, Any]) -> Any:
    """Forget ``name``'s binding; with ``purge``, delete its database's files too."""
    name = validate_name(args.get("name"))
    owner = owner_arg(args, user)
    purge = args.get("purge", False)
    catalog = broker.databases.catalog
    cursor = catalog.get(owner, name)
    directory = Path(cursor.path) if cursor else broker.databases.directory(name)
    purge = purge is True and directory.exists()
    if purge:  # refuse before anything changes
        await trio.to_thread.run_sync(_check_removable, directory)
    if cursor is not None:
        await change_catalog(broker, lambda: catalog.forget(owner, name))
    if purge:
        await broker.databases.remove(directory, _check_removable)
    return {"name": name, "forgotten": cursor is not None, "purged": purge, "path": str(directory)}


async def cursor_list(broker: Broker, user: str, args: Mapping[str, Any]) -> Any:
    """Every cursor ``user`` sees: the defined ones, then the data directory's databases that
    no definition names (``defined`` false)."""
    databases = broker.databases
    found = [describe(c, shadows) for c, shadows in databases.catalog.visible(user)]
    named = {item["name"] for item in found}
    data_dir = databases.data_dir
    implicit = sorted(p.name[:-3] for p in data_dir.glob("*.db") if p.is_dir())
    found += [_undefined(broker, name, exists=True) for name in implicit if name not in named]
    return found


async def cursor_show(broker: Broker, user: str, args: Mapping[str, Any]) -> Any:
    """What ``name`` means for ``user``: its definition, or the default directory."""
    name = validate_name(args.get("name"))
    cursor = broker.databases.catalog.lookup(user, name)
    if cursor is not None:
        shadows = cursor.owner is not None and _global(broker, name) is not None
        return describe(cursor, shadows)
    return _undefined(broker, name, exists=broker.databases.directory(name).exists())


def _undefined(broker: Broker, name: str, *, exists: bool) -> dict[str, Any]:
    """A cursor no definition names, as the cursor operations answer it: its default place."""
    path = str(broker.databases.directory(name))
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


def _global(broker: Broker, name: str) -> CursorDef | None:
    return broker.databases.catalog.get(None, name)


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
