"""The operations on the broker's catalog and files rather than on one database's keys: cursors
and backups. Each is a coroutine of the broker, the connection's user and the request's args."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import _backups as backups
from . import _cursors as cursors
from ._users import USER_OPS

if TYPE_CHECKING:
    from ._broker import Broker


async def cursor_set(broker: Broker, user: str, args: Mapping[str, Any]) -> Any:
    """A directory binds the cursor to it; an existing file is a backup to restore from."""
    if backups.is_backup_file(args):
        return await backups.cursor_from_backup(broker, user, args)
    return await cursors.cursor_set(broker, user, args)


ADMIN_OPS: dict[str, cursors.CursorOp] = {
    "cursor_set": cursor_set,
    "cursor_delete": cursors.cursor_delete,
    "cursor_list": cursors.cursor_list,
    "cursor_show": cursors.cursor_show,
    "backup": backups.backup_op,
    "backup_restore": backups.restore_op,
    "backup_list": backups.list_op,
    **USER_OPS,
}
