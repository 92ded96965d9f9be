"""``backup``, ``backup_restore``, ``backup_list``, and ``cursor_set`` on a backup file.

A backup is a consistent point-in-time copy: every database it takes is frozen in one pass of the
event loop (no change can come between two of them), then written in a thread while writers go
on. Restoring checks the whole file first, then swaps each database's state atomically (see
:func:`prontodb.broker.backup.restore_into`); the database's watchers are told to re-read.
Paths are the broker's own, absolute (the CLI resolves relative ones).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from prontodb.protocol import ErrorCode, ProntoError

from .. import backup
from ..storage import CorruptionError
from ._access import admin_everywhere, backup_path
from ._args import Arg, Kind, absolute_path, owner_arg
from ._catalog import CursorDef, describe
from ._context import Context
from ._databases import Databases, OpenDatabase
from ._names import validate_name, validate_user
from ._registry import Layer, op

CURSOR = Arg("cursor", Kind.CURSOR, nil=True, doc="only this cursor's database")

RESTORED_DIR = "restored"  # where `cursor set NAME FILE` puts the database it restores


@op(
    "backup",
    Layer.BROKER,
    access=backup_path("output"),
    args=(Arg("output", Kind.PATH, doc="a file or directory"), CURSOR),
    summary="Write every database (or one cursor's) to a new backup file.",
)
async def backup_op(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    """Write every database (or ``cursor``'s) to a new backup file under ``output``."""
    output = absolute_path(args, "output")
    databases = ctx.databases
    targets = _targets(ctx, user, args.get("cursor"))
    opened: list[tuple[str, str | None, OpenDatabase]] = []
    failed: list[dict[str, Any]] = []
    for name, owner, directory in targets:
        try:
            db = await databases.at(name, directory, create=False)
        except ProntoError as err:
            if args.get("cursor") is not None:
                raise
            # One database that cannot be opened (damaged, its disk gone) must not cost the
            # others their backup: they are written, and it is named in the answer.
            failed.append({"name": name, "owner": owner, "path": str(directory), **err.to_wire()})
            continue
        if db is not None:
            opened.append((name, owner, db))
    if args.get("cursor") is not None and not opened:
        raise ProntoError(
            ErrorCode.NOT_FOUND, f"The cursor {args['cursor']!r} has no database yet."
        )
    # One instant for all of them: nothing awaits between these snapshots.
    now = ctx.clock()
    frozen: list[tuple[backup.Section, Any]] = []
    tickets: list[tuple[OpenDatabase, int]] = []
    for name, owner, db in opened:
        db.expire_due(now)
        engine = db.engine
        section = backup.Section(name, owner, engine.revision, engine.statistics()["keys"])
        frozen.append((section, engine.snapshot()))
        tickets.append((db, db.database.last_ticket))
    for db, ticket in tickets:  # a backup holds nothing a crash could take back
        await db.wait_durable(ticket)
    path = backup.target_path(output, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)))
    try:
        size = await trio.to_thread.run_sync(backup.write, path, now, frozen)
    except FileExistsError:
        raise ProntoError(
            ErrorCode.EXISTS, f"{path} exists already; a backup never replaces a file."
        ) from None
    except OSError as exc:
        raise ProntoError(
            ErrorCode.UNAVAILABLE, f"The backup could not be written to {path} ({exc})."
        ) from exc
    databases_done = [s.as_dict() for s, _ in frozen]
    return {"path": str(path), "bytes": size, "databases": databases_done, "failed": failed}


@op(
    "backup_restore",
    Layer.BROKER,
    access=backup_path("path"),
    args=(Arg("path", Kind.PATH), CURSOR),
    writes=True,
    client="restore",
    cli="backup --restore",
    summary="Put back every database of a backup file (or one cursor's).",
)
async def restore_op(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    """Put back every database of the backup file ``path`` (or only ``cursor``'s)."""
    path = absolute_path(args, "path")
    contents = await _read(path)
    cursor = args.get("cursor")
    databases = ctx.databases
    if cursor is not None:
        name = validate_name(cursor)
        plan = [(_pick(contents, name), name, databases.locate(name, user))]
    else:
        plan = [(i, s.name, _home(ctx, s)) for i, s in enumerate(contents.sections)]
    restored = []
    for index, name, directory in plan:
        section = contents.sections[index]
        build = _builder(ctx.databases, path, index, directory)
        revision = await databases.replace(name, directory, build)
        # Open it again now, as it was (or would be by the next request), so that status lists
        # it. One that will not open is for its next request to report: the rest go on.
        with contextlib.suppress(ProntoError):
            await databases.at(name, directory, create=False)
        restored.append(
            {
                **section.as_dict(),
                "path": str(directory),
                "revision": revision,
                "name": name,
                "from": section.name,
            }
        )
    return {"path": str(path), "databases": restored}


@op(
    "backup_list",
    Layer.BROKER,
    access=admin_everywhere,
    args=(Arg("path", Kind.PATH),),
    cli="backup --list",
    summary="What a backup file holds, or each backup file in a directory.",
)
async def list_op(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    """What the backup file ``path`` holds, or every backup file directly inside a directory."""
    path = absolute_path(args, "path")
    return await trio.to_thread.run_sync(_list, path)


async def cursor_from_backup(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    """``cursor_set`` with a backup file as the path: restore it into a new database under
    ``DATA_DIR/restored/`` and bind the cursor to that."""
    name = validate_name(args.get("name"))
    path = absolute_path(args, "path")
    owner = owner_arg(args, user)
    contents = await _read(path)
    index = 0 if len(contents.sections) == 1 else _pick(contents, name)
    section = contents.sections[index]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ctx.clock()))
    directory = ctx.databases.data_dir / RESTORED_DIR / f"{name}-{stamp}.db"
    if directory.exists():
        raise ProntoError(ErrorCode.EXISTS, f"{directory} exists already; try again in a second.")
    await ctx.databases.replace(name, directory, _builder(ctx.databases, path, index, directory))
    cursor = CursorDef(name, str(directory), owner, user, ctx.clock())
    await ctx.catalog.change(lambda: ctx.catalog.define(cursor))
    shadows = owner is not None and ctx.catalog.get(None, name) is not None
    return {**describe(cursor, shadows), "restored_from": str(path), "section": section.name}


def is_backup_file(args: Mapping[str, Any]) -> bool:
    """Whether a ``cursor_set`` names an existing file (a backup) rather than a directory."""
    return absolute_path(args, "path").is_file()


def _targets(ctx: Context, user: str, cursor: Any) -> list[tuple[str, str | None, Path]]:
    """(name, owner, directory) of each database to back up, each directory once."""
    databases = ctx.databases
    if cursor is not None:
        name = validate_name(cursor)
        bound = databases.catalog.lookup(user, name)
        return [(name, bound.owner if bound else None, databases.locate(name, user))]
    found: dict[Path, tuple[str, str | None, Path]] = {}
    everything = databases.catalog.everything()
    for defined in everything:
        found.setdefault(Path(defined.path), (defined.name, defined.owner, Path(defined.path)))
    # A database of the data directory whose name a global cursor binds elsewhere is reached
    # by no cursor; it is left out rather than saved under a name that means another database.
    elsewhere = {c.name for c in everything if c.owner is None}
    for directory in sorted(databases.data_dir.glob("*.db")):
        if directory.is_dir() and directory.name[:-3] not in elsewhere:
            found.setdefault(directory, (directory.name[:-3], None, directory))
    return list(found.values())


def _home(ctx: Context, section: backup.Section) -> Path:
    """Where a section goes back to: its cursor's directory if still defined, else the default."""
    databases = ctx.databases
    bound = databases.catalog.get(section.owner, section.name)
    return Path(bound.path) if bound is not None else databases.directory(section.name)


def _pick(contents: backup.Contents, name: str) -> int:
    """The index of the file's database called ``name`` (a global one first)."""
    ranked = sorted(enumerate(contents.sections), key=lambda item: item[1].owner is not None)
    for index, section in ranked:
        if section.name == name:
            return index
    held = ", ".join(s.name for s in contents.sections) or "none"
    raise ProntoError(
        ErrorCode.NOT_FOUND,
        f"{contents.path} holds no database {name!r} (it holds: {held}); nothing was restored.",
    )


def _builder(databases: Databases, path: Path, index: int, directory: Path) -> Callable[[int], int]:
    def build(above: int) -> int:
        records: Any = backup.records_of(path, index)
        return backup.restore_into(
            directory, records, options=databases.options, limits=databases.limits, above=above
        )

    return build


async def _read(path: Path) -> backup.Contents:
    try:
        contents = await trio.to_thread.run_sync(backup.read, path)
    except CorruptionError as exc:
        raise ProntoError(ErrorCode.BAD_REQUEST, f"Not a usable backup: {exc}") from None
    for section in contents.sections:  # names become paths: refuse what no cursor could be
        try:
            validate_name(section.name)
            if section.owner is not None:
                validate_user(section.owner)
        except ProntoError:
            raise ProntoError(
                ErrorCode.BAD_REQUEST,
                f"Not a usable backup: {path} names a database {section.name!r} (owner "
                f"{section.owner!r}) that no cursor could have; nothing was restored.",
            ) from None
    return contents


def _list(path: Path) -> list[dict[str, Any]]:
    files = (
        sorted(p for p in path.glob(f"*{backup.SUFFIX}") if p.is_file())
        if path.is_dir()
        else [path]
    )
    found: list[dict[str, Any]] = []
    for file in files:
        try:
            contents = backup.read(file)
        except CorruptionError as exc:
            found.append({"path": str(file), "error": str(exc)})
            continue
        found.append(
            {
                "path": str(file),
                "created": contents.created,
                "bytes": contents.size,
                "databases": [s.as_dict() for s in contents.sections],
            }
        )
    return found
