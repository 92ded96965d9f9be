"""Storage: the bytes of one database on disk, and nothing else.

A database is a directory of append-only segment files plus at most one snapshot, tied together
by a checksummed MANIFEST (docs/FORMAT.md). Records are opaque ``(kind, payload)`` pairs: kind
1..255 and payload bytes belong to the engine. :class:`SegmentStorage` implements the
:class:`Storage` protocol; :class:`GroupCommitWriter` batches appends from many callers so that
they share fsyncs. No async code here: plain files, ``os`` and one writer thread.

Storage owns its directory: opened with ``lock=True`` (as ``Database.open`` does) it holds the
directory's lock (:class:`DirectoryLock`) until closed, so a second opener gets
:class:`DirectoryLocked`. The file format's building blocks (header, record framing, durable writes) are public too, for
other files written the same way (backups).
"""

from ._errors import CorruptionError, StorageError
from ._faults import FAULTS, FaultPoints
from ._file_header import HEADER_SIZE, FileHeader, FileKind, check_header, encode_header, new_salt
from ._group_commit import GroupCommitStatistics, GroupCommitWriter, RollTicket
from ._interface import Storage, WriteObserver
from ._layout import fsync_directory, is_database_file, write_all
from ._lock import DirectoryLock, DirectoryLocked, LockFile
from ._options import FsyncPolicy, StorageOptions, StorageStats
from ._records import Damage, RecordReader, encode_records
from ._segment_storage import SegmentStorage

__all__ = [
    "CorruptionError",
    "Damage",
    "DirectoryLock",
    "DirectoryLocked",
    "FAULTS",
    "FaultPoints",
    "FileHeader",
    "FileKind",
    "FsyncPolicy",
    "GroupCommitStatistics",
    "GroupCommitWriter",
    "HEADER_SIZE",
    "LockFile",
    "RecordReader",
    "RollTicket",
    "SegmentStorage",
    "Storage",
    "StorageError",
    "StorageOptions",
    "StorageStats",
    "WriteObserver",
    "check_header",
    "encode_header",
    "encode_records",
    "fsync_directory",
    "is_database_file",
    "new_salt",
    "write_all",
]
