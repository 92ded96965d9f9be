"""The fixed 32-byte header that starts every segment and snapshot file (docs/FORMAT.md)."""

from __future__ import annotations

import enum
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from ._errors import CorruptionError

MAGIC = b"PRONTODB"
FORMAT_VERSION = 1
HEADER_SIZE = 32

# magic | version u16 | kind u8 | reserved u8 | number u32 | previous size u64 | salt u32
_BODY = struct.Struct("<8sHBBIQI")
_CRC = struct.Struct("<I")
assert _BODY.size + _CRC.size == HEADER_SIZE


class FileKind(enum.IntEnum):
    """What a file holds; both hold records framed the same way."""

    SEGMENT = 1
    SNAPSHOT = 2
    BACKUP = 3


@dataclass(frozen=True, slots=True)
class FileHeader:
    """What a checked header tells beyond what the file's name already promised."""

    previous_size: int
    """For segment N, the size segment N-1 was sealed at (0 for segment 1 and snapshots)."""
    salt: int
    """The seed of every record checksum in this file (docs/FORMAT.md, "Records")."""


def new_salt() -> int:
    """A fresh random salt for a new file, so that no record from elsewhere validates in it."""
    return secrets.randbits(32)


def encode_header(kind: FileKind, number: int, salt: int, previous_size: int = 0) -> bytes:
    """The header of segment ``number`` (or of the snapshot through segment ``number``).

    ``salt`` seeds the checksum of every record in the file. ``previous_size`` is the final size
    of segment ``number - 1``, so that a sealed segment that lost its end (cut at a record
    boundary, which no checksum can see) is still caught.
    """
    body = _BODY.pack(MAGIC, FORMAT_VERSION, kind, 0, number, previous_size, salt)
    return body + _CRC.pack(zlib.crc32(body))


def check_header(data: bytes, path: Path, kind: FileKind, number: int) -> FileHeader:
    """Check the first bytes of a file against what its name promises; return the rest.

    Every field is checked, so a header that is foreign, of another version, damaged, or
    belongs to another file raises CorruptionError naming ``path``.
    """
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise CorruptionError(path, 0, "not a ProntoDB file (its first bytes are not the magic)")
    if len(data) < HEADER_SIZE:
        raise CorruptionError(path, len(data), "the file header is incomplete")
    _magic, version, found_kind, reserved, found_number, previous_size, salt = _BODY.unpack_from(
        data
    )
    if version != FORMAT_VERSION:
        raise CorruptionError(
            path,
            8,
            f"format version {version}, but this build reads version {FORMAT_VERSION}",
            "Open it with the ProntoDB version that wrote it, or restore from a backup.",
        )
    (crc,) = _CRC.unpack_from(data, _BODY.size)
    if crc != zlib.crc32(data[: _BODY.size]):
        raise CorruptionError(path, _BODY.size, "the file header checksum does not match")
    if found_kind != kind:
        raise CorruptionError(path, 10, f"the header says file kind {found_kind}, not {kind.name}")
    if reserved:
        raise CorruptionError(path, 11, "the reserved header byte is set")
    if found_number != number:
        raise CorruptionError(
            path, 12, f"the header says number {found_number}, but the file name says {number}"
        )
    return FileHeader(int(previous_size), int(salt))
