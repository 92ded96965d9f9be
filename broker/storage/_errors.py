"""The two errors storage raises: a failed operation, and damaged bytes on disk."""

from __future__ import annotations

import errno
from pathlib import Path

RESTORE_ADVICE = (
    "Restore the database from a backup, or move the database directory aside to start afresh."
)


class StorageError(Exception):
    """A storage operation failed (I/O error, misuse, or a writer that already failed).

    After a failed write or fsync the storage refuses further appends: what reached the disk is
    unknown, so it must not keep acknowledging writes. Reopen the directory to recover.
    """


class CorruptionError(StorageError):
    """Bytes on disk that fail their checks: a foreign file, bad checksum, or a missing file.

    ``path`` names the file, ``offset`` the byte offset of the damage inside it (``None`` when the
    problem is not at a byte position, such as a missing file). The message names both and says
    what to do.
    """

    def __init__(
        self, path: str | Path, offset: int | None, reason: str, advice: str = RESTORE_ADVICE
    ) -> None:
        self.path = Path(path)
        self.offset = offset
        self.reason = reason
        where = f"{self.path}" if offset is None else f"{self.path} at byte offset {offset}"
        super().__init__(f"{where}: {reason}. {advice}")


def os_reason(exc: OSError) -> str:
    """An OSError as a user reads it: ``no space left on device (ENOSPC)``."""
    name = errno.errorcode.get(exc.errno or 0)
    text = (exc.strerror or str(exc)).lower()
    return f"{text} ({name})" if name else text
