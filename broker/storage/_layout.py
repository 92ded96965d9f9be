"""The directory of one database: file names, what a listing holds, and durable file operations."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("prontodb.storage")

MANIFEST_NAME = "MANIFEST"
LOCK_NAME = "LOCK"  # flocked by whoever has the directory open (_lock.py)
TMP_SUFFIX = ".tmp"
_SEGMENT_RE = re.compile(r"seg-(\d{8,})\.log")
_SNAPSHOT_RE = re.compile(r"snap-(\d{8,})\.snap")


def segment_name(number: int) -> str:
    """``seg-00000042.log``."""
    return f"seg-{number:08d}.log"


def snapshot_name(through_segment: int) -> str:
    """``snap-00000041.snap``: the state covering every segment up to ``through_segment``."""
    return f"snap-{through_segment:08d}.snap"


def _number(pattern: re.Pattern[str], name: str, canonical: str) -> int | None:
    match = pattern.fullmatch(name)
    if match is None:
        return None
    number = int(match.group(1))
    # Only the canonical spelling is ours: "seg-000000001.log" would alias segment 1.
    return number if number > 0 and canonical.format(number) == name else None


def parse_segment_name(name: str) -> int | None:
    """The number of a segment file name, or None if ``name`` is not one."""
    return _number(_SEGMENT_RE, name, "seg-{:08d}.log")


def parse_snapshot_name(name: str) -> int | None:
    """The segment a snapshot file name covers through, or None if ``name`` is not one."""
    return _number(_SNAPSHOT_RE, name, "snap-{:08d}.snap")


def _is_ours(name: str) -> bool:
    return (
        name == MANIFEST_NAME
        or parse_segment_name(name) is not None
        or parse_snapshot_name(name) is not None
    )


def is_database_file(name: str) -> bool:
    """Whether ``name`` is one storage makes in a database directory: the manifest, the lock, a
    segment or snapshot, or a temporary copy of one of those. So a directory holding only such
    names holds a database and nothing else (what may be deleted with it)."""
    base = name.removesuffix(TMP_SUFFIX)
    return base == LOCK_NAME or _is_ours(base)


@dataclass(slots=True)
class Listing:
    """The files of a database directory, sorted by kind; other names are ignored."""

    segments: dict[int, str] = field(default_factory=dict)
    snapshots: dict[int, str] = field(default_factory=dict)
    temporaries: list[str] = field(default_factory=list)
    has_manifest: bool = False

    @property
    def empty(self) -> bool:
        """No manifest, segment or snapshot: a new database (temporaries aside)."""
        return not (self.has_manifest or self.segments or self.snapshots)


def list_directory(directory: Path) -> Listing:
    """Sort the names in ``directory`` into segments, snapshots, temporaries and the manifest."""
    listing = Listing()
    for name in os.listdir(directory):
        if name == MANIFEST_NAME:
            listing.has_manifest = True
        elif (number := parse_segment_name(name)) is not None:
            listing.segments[number] = name
        elif (number := parse_snapshot_name(name)) is not None:
            listing.snapshots[number] = name
        elif name.endswith(TMP_SUFFIX) and _is_ours(name[: -len(TMP_SUFFIX)]):
            listing.temporaries.append(name)
    return listing


def fsync_directory(directory: Path) -> None:
    """Make creations, renames and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_file_synced(path: Path, data: bytes) -> None:
    """Create or overwrite ``path`` with ``data`` and fsync it (the name is not yet durable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(directory: Path, name: str, data: bytes) -> None:
    """Atomically give ``directory/name`` the content ``data``: tmp, fsync, rename, fsync dir."""
    tmp = directory / (name + TMP_SUFFIX)
    write_file_synced(tmp, data)
    os.replace(tmp, directory / name)
    fsync_directory(directory)


def unlink_quietly(path: Path) -> None:
    """Delete ``path`` if it exists; a failure is logged, since the next open retries."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not delete %s (it is deleted at the next open): %s", path, exc)


def fsync_directory_quietly(directory: Path) -> None:
    """:func:`fsync_directory` for cleanups whose durability is optional: log a failure."""
    try:
        fsync_directory(directory)
    except OSError as exc:
        logger.warning("could not fsync %s: %s", directory, exc)
