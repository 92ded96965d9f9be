"""Users and grants: ``user_add``, ``user_remove``, ``user_token``, ``user_list``, ``grant``,
``revoke``, ``grants``. A token is shown once, when made; the catalog keeps a salted hash."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prontodb.protocol import ErrorCode, ProntoError

from ..engine import validate_prefix
from ._access import Grant, Level, new_token, parse_level, token_hash
from ._catalog import Catalog, User, change_catalog
from ._names import validate_name, validate_user
from ._ops import MAX_KEY_LEN

if TYPE_CHECKING:
    from ._broker import Broker

FIRST_USER = "admin"
FIRST_TOKEN_FILE = "admin.token"


def make_user(catalog: Catalog, name: str, by: str, now: float) -> str:
    """Add (or re-key) user ``name``; the new token."""
    token = new_token()
    salt = secrets.token_hex(8)
    catalog.users[name] = User(name, salt, token_hash(token, salt), now, by)
    return token


# Each change checks what it depends on inside change_catalog, under the catalog's lock, so
# that two concurrent calls cannot both pass a check and both apply.


async def user_add(broker: Broker, user: str, args: Mapping[str, Any]) -> Any:
    name = validate_user(args.get("name"))
    catalog = broker.databases.catalog
    token = ""

    def add() -> None:
        nonlocal token
        if name in catalog.users:
            raise ProntoError(
                ErrorCode.EXISTS, f"The user {name} exists; `user token {name}` gives a new token."
            )
        token = make_user(catalog, name, user, broker.clock())

    await change_catalog(broker, add)
    return {"name": name, "token": token}


async def user_token(broker: Broker, user: str, args: Mapping[str, Any]) -> Any:
    name = validate_user(args.get("name"))
    token = ""

    def rekey() -> None:
        nonlocal token
        _known(broker, name)
        token = make_user(broker.databases.catalog, name, user, broker.clock())
        broker.end_sessions_of(name, "its token was replaced")

    await change_catalog(broker, rekey)
    return {"name": name, "token": token}


async def user_remove(broker: Broker, user: str, args: Mapping[str, Any]) -> Any:
    name = validate_user(args.get("name"))
    catalog = broker.databases.catalog

    def remove() -> None:
        _known(broker, name)
        del catalog.users[name]
        catalog.grants = [g for g in catalog.grants if g.user != name]
        broker.end_sessions_of(name, "the user was removed")

    await change_catalog(broker, remove)
    return True


async def user_list(broker: Broker, user: str, args: Mapping[str, Any]) -> Any:
    catalog = broker.databases.catalog
    return [
        {
            "name": u.name,
            "created": u.created,
            "by": u.by,
            "grants": sum(1 for g in catalog.grants if g.user == u.name),
        }
        for u in sorted(catalog.users.values(), key=lambda u: u.name)
    ]


async def grant(broker: Broker, user: str, args: Mapping[str, Any]) -> Any:
    given = _grant(args)
    catalog = broker.databases.catalog

    def add() -> None:
        _known(broker, given.user)
        if given not in catalog.grants:
            catalog.grants.append(given)

    await change_catalog(broker, add)
    return given.as_dict()


async def revoke(broker: Broker, user: str, args: Mapping[str, Any]) -> Any:
    taken = _grant(args)
    catalog = broker.databases.catalog
    found = False

    def remove() -> None:
        nonlocal found
        _known(broker, taken.user)
        found = taken in catalog.grants
        catalog.grants = [g for g in catalog.grants if g != taken]

    await change_catalog(broker, remove)
    return found


async def grants(broker: Broker, user: str, args: Mapping[str, Any]) -> Any:
    of = args.get("user")
    return [g.as_dict() for g in broker.databases.catalog.grants if of is None or g.user == of]


async def bootstrap(broker: Broker) -> None:
    """On a data directory whose catalog has never had a user: make ``admin``, with admin on
    everything, and put its token in ``DATA_DIR/admin.token`` (mode 0600) for the operator."""
    catalog = broker.databases.catalog
    if catalog.bootstrapped:
        return
    path = broker.config.data_dir / FIRST_TOKEN_FILE
    token = ""

    def first() -> None:
        nonlocal token
        token = make_user(catalog, FIRST_USER, "prontodb", broker.clock())
        catalog.grants.append(Grant(FIRST_USER, Level.ADMIN))
        catalog.bootstrapped = True

    await change_catalog(broker, first)
    _write_secret(path, token)


def _write_secret(path: Path, token: str) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")


def _known(broker: Broker, value: Any) -> str:
    name = validate_user(value)
    if name not in broker.databases.catalog.users:
        raise ProntoError(ErrorCode.NOT_FOUND, f"There is no user {name}; `user add {name}` first.")
    return name


def _grant(args: Mapping[str, Any]) -> Grant:
    name = validate_user(args.get("user"))
    level = parse_level(args.get("level"))
    cursor = args.get("cursor")
    prefix = validate_prefix(args.get("prefix") or "", MAX_KEY_LEN)
    return Grant(name, level, None if cursor is None else validate_name(cursor), prefix)


USER_OPS = {
    "user_add": user_add,
    "user_remove": user_remove,
    "user_token": user_token,
    "user_list": user_list,
    "grant": grant,
    "revoke": revoke,
    "grants": grants,
}
