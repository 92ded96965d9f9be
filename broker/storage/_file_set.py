"""Opening a database directory: check the manifest, the file set and every file header.

Everything here runs before the first record is read: a new directory is laid out, the orphans of
an interrupted compaction are listed (replay deletes them once every record has been verified), and
the active segment is opened for appending.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ._errors import CorruptionError
from ._file_header import HEADER_SIZE, FileHeader, FileKind, check_header, encode_header, new_salt
from ._layout import (
    MANIFEST_NAME,
    Listing,
    fsync_directory,
    fsync_directory_quietly,
    list_directory,
    segment_name,
    unlink_quietly,
    write_all,
)
from ._manifest import Manifest, read_manifest, write_manifest

logger = logging.getLogger("prontodb.storage")


@dataclass(slots=True)
class FileSet:
    """The live files of an opened database, with the active segment open for appending."""

    manifest: Manifest
    sealed: dict[int, int]
    """Number -> size of every live sealed segment, oldest first."""
    active: int
    fd: int
    """The active segment, opened read-write in append mode."""
    active_size: int
    active_salt: int
    """The salt in the active segment's header: appends seed their checksums with it."""
    orphans: list[str]
    """Names left over by an interrupted compaction (or creation), not part of the live set.
    Delete them (:func:`remove_orphans`) only once the whole live set has been verified."""


def open_file_set(directory: Path) -> FileSet:
    """Check the database in ``directory`` and open its active segment for appending.

    Lays out a new database in a directory without one, lists the orphans (deleting nothing: the
    records of the live set are still unverified, and an orphan may be the only complete copy),
    and reinitialises a last segment whose header a crash cut short. Raises CorruptionError for
    anything else out of place. Records are not read here: replay does that.
    """
    listing = list_directory(directory)
    if listing.empty or _creation_cut_short(directory, listing):
        _create(directory, listing)
    manifest = read_manifest(directory)
    if manifest is None:
        raise CorruptionError(
            directory / MANIFEST_NAME,
            None,
            "the manifest is missing, but segment or snapshot files are present",
        )
    if manifest.snapshot is not None and manifest.first_segment - 1 not in listing.snapshots:
        raise CorruptionError(
            directory / manifest.snapshot,
            None,
            "the manifest names this snapshot, but it is missing",
        )
    numbers, vouched = _live_segments(directory, manifest, listing)
    if manifest.snapshot is not None:
        _check_snapshot(directory / manifest.snapshot, manifest)
    sealed: dict[int, int] = {}
    previous_sizes: dict[int, int] = {}
    for number in numbers[:-1]:
        seg_path = directory / segment_name(number)
        header = check_header(_read_head(seg_path), seg_path, FileKind.SEGMENT, number)
        previous_sizes[number] = header.previous_size
        sealed[number] = seg_path.stat().st_size
    active = numbers[-1]
    fd, active_size, header = _open_active(directory, active, sealed, recorded=active <= vouched)
    previous_sizes[active] = header.previous_size
    try:
        _check_sealed_sizes(directory, sealed, previous_sizes)
    except BaseException:
        os.close(fd)
        raise
    return FileSet(
        manifest, sealed, active, fd, active_size, header.salt, _orphans(listing, manifest)
    )


def _check_snapshot(path: Path, manifest: Manifest) -> None:
    """The snapshot the manifest names has the right header and the size the manifest records."""
    check_header(_read_head(path), path, FileKind.SNAPSHOT, manifest.first_segment - 1)
    size = path.stat().st_size
    if size != manifest.snapshot_bytes:
        raise CorruptionError(
            path,
            min(size, manifest.snapshot_bytes),
            f"the snapshot is {size} bytes, but the manifest recorded {manifest.snapshot_bytes}",
        )


def _live_segments(directory: Path, manifest: Manifest, listing: Listing) -> tuple[list[int], int]:
    """The numbers of the live segments, oldest first, and the last one the manifest vouches for.

    Every segment the manifest vouches for exists: segment 1 is made before the manifest, and a
    roll makes the next segment before recording it. So a missing one held data, or may have:
    refuse rather than serve what is left.
    """
    first = manifest.first_segment
    numbers = sorted(n for n in listing.segments if n >= first)
    vouched = first - 1 if manifest.legacy else manifest.last_segment
    if not numbers and manifest.legacy and manifest.snapshot is None:
        # A format 1 build made segment 1 after the manifest: its creation was cut short.
        os.close(create_segment(directory, first, 0)[0])
        numbers = [first]
        listing.segments[first] = segment_name(first)
    for expected in range(first, max(vouched, *numbers, first) + 1):
        if expected not in listing.segments:
            after = f"; the log jumps from segment {expected - 1}" if expected > first else ""
            raise CorruptionError(
                directory / segment_name(expected),
                None,
                f"segment missing: the manifest counts segments {first} to at least "
                f"{manifest.last_segment}{after}",
            )
    return numbers, vouched


def _check_sealed_sizes(
    directory: Path, sealed: dict[int, int], previous_sizes: dict[int, int]
) -> None:
    """Each segment's header records the size its predecessor was sealed at, which catches a
    sealed segment that lost (or gained) whole records."""
    for number, size in sealed.items():
        recorded = previous_sizes[number + 1]
        if size != recorded:
            raise CorruptionError(
                directory / segment_name(number),
                min(size, recorded),
                f"the segment is {size} bytes, but it was sealed at {recorded} bytes "
                f"(as recorded in {segment_name(number + 1)})",
            )


def _create(directory: Path, listing: Listing) -> None:
    """Lay out a new database: segment 1 first, then the manifest that vouches for it, so that
    once a manifest exists a missing segment is always damage, never an unfinished creation."""
    for name in listing.temporaries:
        unlink_quietly(directory / name)
    if 1 in listing.segments:  # a creation cut short after segment 1: it holds no records
        unlink_quietly(directory / segment_name(1))
    os.close(create_segment(directory, 1, 0)[0])
    write_manifest(directory, Manifest())
    listing.has_manifest = True
    listing.temporaries.clear()
    listing.segments[1] = segment_name(1)


def _creation_cut_short(directory: Path, listing: Listing) -> bool:
    """Whether the directory is what a crash during :func:`_create` leaves: no manifest, no
    snapshot, and segment 1 alone, holding no record (at most its header)."""
    if listing.has_manifest or listing.snapshots or set(listing.segments) != {1}:
        return False
    return (directory / segment_name(1)).stat().st_size <= HEADER_SIZE


def create_segment(directory: Path, number: int, previous_size: int) -> tuple[int, int]:
    """Create segment ``number`` with its header, durable; return its fd (append mode) and the
    salt its records' checksums are seeded with."""
    path = directory / segment_name(number)
    salt = new_salt()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    try:
        write_all(fd, encode_header(FileKind.SEGMENT, number, salt, previous_size))
        os.fdatasync(fd)
        fsync_directory(directory)
    except BaseException:
        os.close(fd)
        raise
    return fd, salt


def _open_active(
    directory: Path, number: int, sealed: dict[int, int], *, recorded: bool
) -> tuple[int, int, FileHeader]:
    """Open the last segment for appending; return (fd, size, what its header says).
    ``recorded``: the manifest vouches for it, so its header was whole and durable."""
    path = directory / segment_name(number)
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        head = os.pread(fd, HEADER_SIZE, 0)
        size = os.fstat(fd).st_size
        previous_size = sealed.get(number - 1, 0)
        cut_short = size < HEADER_SIZE or (size == HEADER_SIZE and not any(head))
        if cut_short and recorded:
            raise CorruptionError(
                path,
                0,
                f"the segment's header is cut short or zeroed ({size} bytes), yet the manifest "
                "records the segment, so it was whole and may have held records",
            )
        # A crash while rolling, before the manifest recorded the new segment, can leave its
        # header short (or, on some filesystems, the right length but still zeros). Nothing
        # can follow such a header.
        if cut_short:
            logger.warning("%s: reinitialised a segment header cut short by a crash", path)
            header = FileHeader(previous_size, new_salt())
            os.ftruncate(fd, 0)
            write_all(fd, encode_header(FileKind.SEGMENT, number, header.salt, previous_size))
            os.fsync(fd)
            return fd, HEADER_SIZE, header
        return fd, size, check_header(head, path, FileKind.SEGMENT, number)
    except BaseException:
        os.close(fd)
        raise


def _read_head(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, HEADER_SIZE, 0)
    finally:
        os.close(fd)


def _orphans(listing: Listing, manifest: Manifest) -> list[str]:
    """What an interrupted compaction (or creation) left outside the live set, sorted."""
    orphans = [name for number, name in listing.segments.items() if number < manifest.first_segment]
    orphans += [name for name in listing.snapshots.values() if name != manifest.snapshot]
    orphans += listing.temporaries
    return sorted(orphans)


def remove_orphans(directory: Path, orphans: list[str]) -> None:
    """Delete ``orphans``; call it only once the whole live set has been verified.

    Failures are logged, not raised: an orphan that stays is harmless (it is not in the live
    set) and the next open lists it again.
    """
    for name in orphans:
        logger.warning("%s: deleting %s, left over by an interrupted compaction", directory, name)
        unlink_quietly(directory / name)
    if orphans:
        fsync_directory_quietly(directory)
