"""Tests sharing one broker, kept apart by database: each test gets a cursor name no other test
has, and its databases are deleted (purged) when it ends.

A cursor is a database of its own (keys, revisions, claims, watches), so a test that writes
through its cursor cannot see another's keys, and revisions start at 1 in every test. Purging
also closes the database in the broker, which otherwise keeps it open (two file descriptors) for
the rest of the session.
"""

from __future__ import annotations

import itertools
import re

from prontodb.clients import BadRequest, Client

BASE_LENGTH = 48  # of a cursor's 64 characters: room for "-" and 15 more in derived names
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_]+")


class CursorNames:
    """Fresh cursor names: ``t<n>_<the test's name>``, at most 48 characters."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)

    def fresh(self, test_name: str) -> str:
        # The number makes it unique (and ends at "_", so no name is another's prefix plus "-");
        # the test's name is only there to find its database by eye.
        slug = _NOT_IN_NAME.sub("_", test_name)
        return f"t{next(self._numbers)}_{slug}"[:BASE_LENGTH].rstrip("_")


def belongs_to(name: str, base: str) -> bool:
    """Whether cursor ``name`` is ``base`` or derived from it (``base-suffix``)."""
    return name == base or name.startswith(base + "-")


def purge(url: str, base: str, user: str) -> list[str]:
    """Delete every database named ``base`` or ``base-...`` and forget such cursor bindings;
    the names purged. A binding to a directory that also holds other files is only forgotten
    (the broker refuses to delete those files)."""
    purged = []
    with Client.connect(url, user=user) as admin:
        for cursor in admin.cursors():
            name = cursor["name"]
            if not belongs_to(name, base):
                continue
            mine = cursor["owner"] is not None
            try:
                admin.cursor_delete(name, mine=mine, purge=True)
            except BadRequest:  # the broker deletes nothing but a database's files
                admin.cursor_delete(name, mine=mine)
            purged.append(name)
    return purged
