"""The client's administration: cursors, backups, users and grants, and the broker itself."""

from __future__ import annotations

from ._base import ClientBase

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any


class AdminOperations(ClientBase):
    """Administration (a part of the client: see ``AsyncClient``)."""

    async def cursor_set(self, name: str, path: str, *, mine: bool = False) -> dict[str, Any]:
        """Bind cursor ``name`` to the database directory ``path`` (absolute, on the broker's
        machine; made by the first write). ``mine``: for this client's user only, shadowing a
        global cursor of that name. The answer describes the binding (as :meth:`cursor_show`)."""
        args = {"name": name, "path": path, "mine": mine}
        result: dict[str, Any] = await self._call("cursor_set", args)
        return result

    async def cursor_delete(
        self, name: str, *, mine: bool = False, purge: bool = False
    ) -> dict[str, Any]:
        """Forget cursor ``name``'s binding (the data stays); ``purge`` deletes the database's
        files too. The answer says what was ``forgotten`` and ``purged``, and the ``path``."""
        args = {"name": name, "mine": mine, "purge": purge}
        result: dict[str, Any] = await self._call("cursor_delete", args)
        return result

    async def cursors(self) -> list[dict[str, Any]]:
        """Every cursor this user sees: name, path, owner (None: global), shadows, defined."""
        result: list[dict[str, Any]] = await self._call("cursor_list", {})
        return result

    async def cursor_show(self, name: str) -> dict[str, Any]:
        """What cursor ``name`` means for this user: its definition or the default directory."""
        result: dict[str, Any] = await self._call("cursor_show", {"name": name})
        return result

    async def backup(self, output: str, *, cursor: str | None = None) -> dict[str, Any]:
        """Write a backup of every database (or only ``cursor``'s) to a new file: ``output``
        itself if it ends in ``.db``, ``output.db``, or a timestamped file inside ``output`` if it
        is a directory (an absolute path on the broker's machine). The answer has the ``path``
        written, its ``bytes`` and the ``databases`` it holds (name, owner, revision, keys)."""
        args: dict[str, Any] = {"output": output}
        if cursor is not None:
            args["cursor"] = cursor
        result: dict[str, Any] = await self._call("backup", args)
        return result

    async def restore(self, path: str, *, cursor: str | None = None) -> dict[str, Any]:
        """Put back every database the backup file ``path`` holds (or only ``cursor``'s, into
        that cursor), each atomically; a damaged or foreign file changes nothing."""
        args: dict[str, Any] = {"path": path}
        if cursor is not None:
            args["cursor"] = cursor
        result: dict[str, Any] = await self._call("backup_restore", args)
        return result

    async def backup_list(self, path: str) -> list[dict[str, Any]]:
        """What the backup file ``path`` holds, or each backup file directly inside a
        directory: path, created, bytes and databases, or the error that makes it unusable."""
        result: list[dict[str, Any]] = await self._call("backup_list", {"path": path})
        return result

    async def user_add(self, name: str) -> str:
        """Make user ``name``; its token, which the broker shows this once (it keeps a hash)."""
        made: dict[str, Any] = await self._call("user_add", {"name": name})
        return str(made["token"])

    async def user_token(self, name: str) -> str:
        """Give user ``name`` a new token (the old one stops working); the new token."""
        made: dict[str, Any] = await self._call("user_token", {"name": name})
        return str(made["token"])

    async def user_remove(self, name: str) -> None:
        """Remove user ``name`` and its grants."""
        await self._call("user_remove", {"name": name})

    async def users(self) -> list[dict[str, Any]]:
        """Every user: name, created, by (who made it), grants (how many)."""
        result: list[dict[str, Any]] = await self._call("user_list", {})
        return result

    async def grant(
        self, user: str, level: str, *, cursor: str | None = None, prefix: str = ""
    ) -> dict[str, Any]:
        """Give ``user`` ``level`` (read, write or admin) on ``cursor`` (None: every cursor) at
        and below ``prefix`` ("": every key)."""
        args = {"user": user, "level": level, "cursor": cursor, "prefix": prefix}
        result: dict[str, Any] = await self._call("grant", args)
        return result

    async def revoke(
        self, user: str, level: str, *, cursor: str | None = None, prefix: str = ""
    ) -> bool:
        """Take back the grant made with the same arguments; whether there was one."""
        args = {"user": user, "level": level, "cursor": cursor, "prefix": prefix}
        return bool(await self._call("revoke", args))

    async def grants(self, user: str | None = None) -> list[dict[str, Any]]:
        """The grants of ``user`` (None: of everyone): user, level, cursor, prefix."""
        result: list[dict[str, Any]] = await self._call("grants", {"user": user})
        return result

    async def quota_set(
        self,
        user: str,
        *,
        max_keys: int | None = None,
        max_bytes: int | None = None,
        max_claims: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, int]:
        """Give ``user`` a quota in the database: the keys it may own (last written by it),
        the bytes of their values, the claims it may hold (None: no limit; all None: no quota).
        Writes past it are refused with ``quota_exceeded``. Returns the quota."""
        args = self._args(cursor, user=user)
        for name, value in (
            ("max_keys", max_keys),
            ("max_bytes", max_bytes),
            ("max_claims", max_claims),
        ):
            if value is not None:
                args[name] = value
        quota: dict[str, int] = await self._call("quota_set", args)
        return quota

    async def quota_show(
        self, user: str | None = None, *, cursor: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """``{user: {"limits": {...}, "use": {"keys", "bytes", "claims"}}}`` in the database,
        for ``user`` or for every user with a quota."""
        args = self._args(cursor)
        if user is not None:
            args["user"] = user
        shown: dict[str, dict[str, Any]] = await self._call("quota_show", args)
        return shown

    async def user_limits(
        self,
        user: str,
        *,
        max_connections: int | None = None,
        rate: float | None = None,
        clear: bool = False,
    ) -> dict[str, Any]:
        """Set ``user``'s limits across the broker (connections open at once, requests per
        second), or with neither, read them; ``clear`` removes them. Returns ``{user, limits,
        connections}`` (its connections open now)."""
        args: dict[str, Any] = {"user": user}
        if max_connections is not None:
            args["max_connections"] = max_connections
        if rate is not None:
            args["rate"] = rate
        if clear:
            args["clear"] = True
        limits: dict[str, Any] = await self._call("user_limits", args)
        return limits

    async def ping(self) -> None:
        """Ask the broker to answer; raises if it cannot."""
        await self._call("ping", self._args(None))

    async def status(self) -> dict[str, Any]:
        """What the broker says about itself: pid, version, uptime, data_dir, databases, ..."""
        status: dict[str, Any] = await self._call("status", self._args(None))
        return status

    async def stats(self) -> dict[str, Any]:
        """The broker's metrics as plain data: request counts and latency histograms by
        operation, fsyncs, connections by transport and user, and for each open database its
        revisions, disk bytes, claims and queue depths (docs/METRICS.md)."""
        stats: dict[str, Any] = await self._call("stats", self._args(None))
        return stats

    async def stop(self) -> None:
        """Ask the broker to shut down cleanly (it answers first); this connection then ends."""
        await self._call("stop", self._args(None))
