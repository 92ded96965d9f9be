"""Tuning knobs (StorageOptions, FsyncPolicy) and the numbers storage reports (StorageStats)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

MiB = 1024 * 1024


class FsyncPolicy(enum.StrEnum):
    """When appended records are forced to disk (docs/FORMAT.md, "Fsync policies")."""

    ALWAYS = "always"
    """Every batch is fsynced before ``append`` returns: nothing acknowledged is lost."""
    INTERVAL = "interval"
    """Fsync at most every ``fsync_interval`` seconds: a crash loses at most that much."""
    NEVER = "never"
    """Leave it to the operating system: a process crash loses nothing, a power cut may."""


@dataclass(frozen=True, slots=True)
class StorageOptions:
    """How a :class:`SegmentStorage` writes and when it suggests compaction."""

    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    fsync_interval: float = 1.0
    """Seconds between fsyncs under ``FsyncPolicy.INTERVAL``."""
    segment_size: int = 64 * MiB
    """A segment that reaches this size after a batch is sealed and a new one started."""
    max_record_size: int = 16 * MiB
    """The largest payload that appends, submits and compaction accept. A write-side limit only:
    reading takes any record the format allows, so lowering it never hides stored records."""
    compact_min_bytes: int = 8 * MiB
    """Never suggest compaction below this many bytes on disk."""
    compact_garbage_ratio: float = 0.5
    """Suggest compaction when more than this share of the bytes on disk is garbage."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fsync", FsyncPolicy(self.fsync))
        if self.fsync_interval < 0:
            raise ValueError("fsync_interval must be >= 0")
        if self.segment_size < 1:
            raise ValueError("segment_size must be >= 1")
        if not 0 <= self.max_record_size < 2**32:
            raise ValueError("max_record_size must fit the 32-bit length field")
        if self.compact_min_bytes < 0:
            raise ValueError("compact_min_bytes must be >= 0")
        if not 0 <= self.compact_garbage_ratio < 1:
            raise ValueError("compact_garbage_ratio must be in [0, 1)")


@dataclass(frozen=True, slots=True)
class StorageStats:
    """A point-in-time view of the files of one database."""

    total_bytes: int
    """Bytes in live files: the snapshot plus every live segment."""
    snapshot_bytes: int
    """Size of the snapshot file, 0 without one."""
    bytes_since_compaction: int
    """Bytes in live segments: everything written since the snapshot (file headers included)."""
    segments: int
    """Number of live segments, the active one included."""
    first_segment: int
    """Number of the oldest live segment."""
    active_segment: int
    """Number of the segment appends go to."""
    snapshot: str | None
    """File name of the snapshot, if any."""
    unsynced_bytes: int
    """Bytes appended but not yet fsynced (always 0 under ``FsyncPolicy.ALWAYS``)."""
    appends: int
    """Batches appended since open."""
    fsyncs: int
    """Data fsyncs of segments since open (directory fsyncs not counted)."""
