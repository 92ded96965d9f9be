"""Storage: the bytes of one database on disk, and nothing else.

A database is a directory of append-only segment files plus at most one snapshot, tied together
by a checksummed MANIFEST (docs/FORMAT.md). Records are opaque ``(kind, payload)`` pairs: kind
1..255 and payload bytes belong to the engine. :class:`SegmentStorage` implements the
:class:`Storage` protocol; :class:`GroupCommitWriter` batches appends from many callers so that
they share fsyncs. No async code here: plain files, ``os`` and one writer thread.
"""

from ._errors import CorruptionError, StorageError
from ._faults import FAULTS, FaultPoints
from ._group_commit import GroupCommitStatistics, GroupCommitWriter, RollTicket
from ._interface import Storage
from ._options import FsyncPolicy, StorageOptions, StorageStats
from ._segment_storage import SegmentStorage

__all__ = [
    "CorruptionError",
    "FAULTS",
    "FaultPoints",
    "FsyncPolicy",
    "GroupCommitStatistics",
    "GroupCommitWriter",
    "RollTicket",
    "SegmentStorage",
    "Storage",
    "StorageError",
    "StorageOptions",
    "StorageStats",
]
