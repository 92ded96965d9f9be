"""Helpers shared by the storage tests: open and replay a directory, decode a file by the spec."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from prontodb.broker.storage import SegmentStorage, StorageOptions

Record = tuple[int, bytes]


def opened(
    path: Path, options: StorageOptions | None = None
) -> tuple[SegmentStorage, list[Record]]:
    """Open ``path`` and exhaust replay, as the database does."""
    storage = SegmentStorage.open(path, options)
    return storage, list(storage.replay())


def reopen(path: Path) -> list[Record]:
    """Every record a fresh open of ``path`` replays."""
    storage, records = opened(path)
    storage.close()
    return records


def file_records(path: Path) -> list[Record]:
    """Decode one segment or snapshot file straight from the documented format (docs/FORMAT.md)."""
    data = path.read_bytes()
    assert data[:8] == b"PRONTODB"
    (salt,) = struct.unpack_from("<I", data, 24)  # every record's crc is seeded with it
    records, pos = [], 32
    while pos < len(data):
        crc, length, kind = struct.unpack_from("<IIB", data, pos)
        end = pos + 9 + length
        assert zlib.crc32(data[pos + 4 : end], salt) == crc
        records.append((kind, data[pos + 9 : end]))
        pos = end
    return records
