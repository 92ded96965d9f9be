"""The broker's catalog: cursor definitions, users and grants, kept in ``DATA_DIR/catalog.json``.

A cursor NAME names a database. Without a definition it is ``DATA_DIR/NAME.db``; ``cursor set NAME
PATH`` binds it to a directory anywhere, for everyone (a global cursor) or for one user (a user's
cursor, which shadows the global one of that name for that user only). The catalog is small and
changes rarely, so it is one JSON document, replaced atomically (write, fsync, rename, fsync the
directory) on every change: an operator can read it, and a crash leaves the old or the new one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from prontodb.protocol import ErrorCode, ProntoError

from ._access import Grant, Level
from ._names import validate_name, validate_user

if TYPE_CHECKING:
    from collections.abc import Callable

CATALOG_FILE = "catalog.json"
FORMAT = 1


@dataclass(frozen=True, slots=True)
class CursorDef:
    """A cursor definition: ``owner`` is None for a global cursor, else the user it belongs to."""

    name: str
    path: str
    owner: str | None
    by: str
    time: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "owner": self.owner,
            "by": self.by,
            "time": self.time,
        }


def describe(cursor: CursorDef, shadows: bool) -> dict[str, Any]:
    """A definition as the cursor operations answer it."""
    return {
        **cursor.as_dict(),
        "shadows": shadows,
        "defined": True,
        "exists": Path(cursor.path).exists(),
    }


@dataclass(frozen=True, slots=True)
class User:
    """A user the broker knows: what it keeps of the token (a salted hash), and who made it."""

    name: str
    salt: str
    hash: str
    created: float
    by: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "salt": self.salt,
            "hash": self.hash,
            "created": self.created,
            "by": self.by,
        }


class CatalogError(Exception):
    """The catalog file cannot be read; the broker refuses to start rather than guess."""


class Catalog:
    """The cursor definitions in memory; :meth:`document` is what :func:`save` writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._global: dict[str, CursorDef] = {}
        self._users: dict[str, dict[str, CursorDef]] = {}
        self.users: dict[str, User] = {}
        self.grants: list[Grant] = []
        # user -> {"max_connections": n, "rate": ops per second}: limits across databases
        self.limits: dict[str, dict[str, float]] = {}
        self.bootstrapped = False  # the first user was made (once per data directory)
        self._lock = trio.Lock()  # one change (and save) at a time
        # Called after every change, before it is saved: the connections end the waits it no
        # longer allows (the broker sets it).
        self.on_change: Callable[[], None] = lambda: None

    @classmethod
    def load(cls, data_dir: Path) -> Catalog:
        """The catalog of ``data_dir`` (empty if it has none yet)."""
        catalog = cls(data_dir / CATALOG_FILE)
        try:
            document = json.loads(catalog.path.read_text())
        except FileNotFoundError:
            return catalog
        except (OSError, ValueError) as exc:
            raise CatalogError(f"cannot read {catalog.path} ({exc}); {_ADVICE}") from exc
        try:
            if document.get("format") != FORMAT:
                raise ValueError(f"format {document.get('format')!r} is not {FORMAT}")
            document = {"users": [], "grants": [], "limits": {}, **document}
            _check(document)
            catalog.restore(document)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise CatalogError(
                f"{catalog.path} is not a ProntoDB catalog ({exc}); {_ADVICE}"
            ) from exc
        return catalog

    def lookup(self, user: str, name: str) -> CursorDef | None:
        """The definition ``name`` means for ``user``: theirs, else the global one, else None."""
        mine = self._users.get(user, {}).get(name)
        return mine if mine is not None else self._global.get(name)

    def get(self, owner: str | None, name: str) -> CursorDef | None:
        """The definition of exactly this owner (None: the global one)."""
        if owner is None:
            return self._global.get(name)
        return self._users.get(owner, {}).get(name)

    def define(self, cursor: CursorDef) -> None:
        self._put(cursor)

    def forget(self, owner: str | None, name: str) -> CursorDef | None:
        """Drop the definition; the one it was, or None."""
        if owner is None:
            return self._global.pop(name, None)
        mine = self._users.get(owner, {})
        gone = mine.pop(name, None)
        if not mine:
            self._users.pop(owner, None)
        return gone

    def visible(self, user: str) -> list[tuple[CursorDef, bool]]:
        """The definitions ``user`` sees, by name, each with whether it shadows a global one
        (the user's own come first where both exist)."""
        mine = self._users.get(user, {})
        found = [(c, c.name in self._global) for c in mine.values()]
        found += [(c, False) for c in self._global.values()]
        return sorted(found, key=lambda item: (item[0].name, item[0].owner is None))

    def everything(self) -> list[CursorDef]:
        every = list(self._global.values())
        for mine in self._users.values():
            every += mine.values()
        return every

    def document(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "cursors": [c.as_dict() for c in self.everything()],
            "users": [u.as_dict() for u in self.users.values()],
            "grants": [g.as_dict() for g in self.grants],
            "limits": {user: dict(limits) for user, limits in self.limits.items()},
            "bootstrapped": self.bootstrapped,
        }

    def restore(self, document: dict[str, Any]) -> None:
        """Go back to ``document`` (what :meth:`document` gave before a change that failed)."""
        again = Catalog(self.path)
        for fields in document["cursors"]:
            again._put(CursorDef(**fields))
        for fields in document["users"]:
            again.users[fields["name"]] = User(**fields)
        for fields in document["grants"]:
            again.grants.append(
                Grant(
                    level=Level[fields["level"].upper()],
                    user=fields["user"],
                    cursor=fields["cursor"],
                    prefix=fields["prefix"],
                )
            )
        self._global, self._users = again._global, again._users
        self.users, self.grants = again.users, again.grants
        self.limits = {user: dict(limits) for user, limits in document.get("limits", {}).items()}
        self.bootstrapped = bool(document.get("bootstrapped", False))

    async def change(self, change: Callable[[], object]) -> None:
        """Apply ``change`` and save; if saving fails, undo it.

        The change is in force at once, for waits already running too: a blocked claim or a
        watch that the changed grants no longer allow ends now, not after the save (a write
        meanwhile must not hand the old right an item). ``change`` checks what it depends on
        itself, under the lock, so that two concurrent changes cannot both pass a check."""
        async with self._lock:
            before = self.document()
            change()
            self.on_change()
            try:
                await trio.to_thread.run_sync(save, self.path, self.document())
            except BaseException:
                self.restore(before)
                raise

    def _put(self, cursor: CursorDef) -> None:
        if cursor.owner is None:
            self._global[cursor.name] = cursor
        else:
            self._users.setdefault(cursor.owner, {})[cursor.name] = cursor


_ADVICE = (
    "restore it from a backup or move it away (the cursors, users and grants it defines are "
    "then forgotten; the databases stay where they are)"
)
_NUMBER = (int, float)


def _check(document: dict[str, Any]) -> None:
    """ValueError unless every entry has the fields, and the kinds of value, that serving takes
    for granted: a cursor's path becomes a directory, its name and owner become lookups."""
    for fields in document["cursors"]:
        _entry(fields, "cursor", {"name", "path", "owner", "by", "time"})
        _name(validate_name, fields["name"], fields)
        if fields["owner"] is not None:
            _name(validate_user, fields["owner"], fields)
        path = fields["path"]
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ValueError(f"the cursor {fields!r} has no absolute path")
        if not isinstance(fields["by"], str) or not isinstance(fields["time"], _NUMBER):
            raise ValueError(f"the cursor {fields!r} has values of the wrong kind")
    for fields in document["users"]:
        _entry(fields, "user", {"name", "salt", "hash", "created", "by"})
        _name(validate_user, fields["name"], fields)
        texts = (fields["salt"], fields["hash"], fields["by"])
        if not all(isinstance(t, str) for t in texts) or not isinstance(fields["created"], _NUMBER):
            raise ValueError(f"the user {fields['name']!r} has values of the wrong kind")
    _check_limits(document.get("limits", {}))
    for fields in document["grants"]:
        _entry(fields, "grant", {"user", "level", "cursor", "prefix"})
        _name(validate_user, fields["user"], fields)
        if fields["cursor"] is not None:
            _name(validate_name, fields["cursor"], fields)
        if fields["level"] not in ("read", "write", "admin") or not isinstance(
            fields["prefix"], str
        ):
            raise ValueError(f"the grant {fields!r} has values of the wrong kind")


def _check_limits(limits: Any) -> None:
    if not isinstance(limits, dict):
        raise ValueError("'limits' is not a map")
    for user, fields in limits.items():
        _name(validate_user, user, fields)
        if not isinstance(fields, dict) or set(fields) - {"max_connections", "rate"}:
            raise ValueError(f"the limits of {user!r} are not max_connections and rate")
        if not all(isinstance(v, _NUMBER) and v >= 0 for v in fields.values()):
            raise ValueError(f"the limits of {user!r} have values of the wrong kind")


def _entry(fields: Any, what: str, keys: set[str]) -> None:
    if not isinstance(fields, dict) or set(fields) != keys:
        raise ValueError(f"a {what} entry is not a map of {', '.join(sorted(keys))}: {fields!r}")


def _name(validate: Callable[[Any], str], name: Any, fields: dict[str, Any]) -> None:
    try:
        validate(name)
    except ProntoError as err:
        raise ValueError(f"{err.message} (in {fields!r})") from None


def save(path: Path, document: dict[str, Any]) -> None:
    """Replace ``path`` with ``document`` atomically (blocking: run it in a thread)."""
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise ProntoError(
            ErrorCode.UNAVAILABLE,
            f"The broker could not write its catalog {path} ({exc.strerror}); nothing changed.",
        ) from exc
