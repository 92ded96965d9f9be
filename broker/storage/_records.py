"""Record framing: encoding batches, reading them back fast, and looking past damage.

A record on disk is ``crc32 u32 | length u32 | kind u8 | payload``, little-endian; the crc covers
length, kind and payload and is seeded with the salt in the file's header (docs/FORMAT.md,
"Records").
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._errors import CorruptionError

RECORD_HEADER_SIZE = 9
READ_CHUNK = 4 * 1024 * 1024

_HEADER = struct.Struct("<IIB")  # crc, length, kind
_LENGTH_KIND = struct.Struct("<IB")
_CRC = struct.Struct("<I")
_SMALL_PAYLOAD = 4096
# Bytes find_record may checksum (plus 8 per byte searched): about a quarter second of crc32.
_SEARCH_CRC_BUDGET = 1 << 30


def _refuse(kind: object, payload: bytes, max_record_size: int) -> ValueError:
    if not (isinstance(kind, int) and 0 < kind < 256):
        return ValueError(f"record kind must be an int in 1..255, not {kind!r}")
    return ValueError(
        f"record payload of {len(payload)} bytes is over max_record_size ({max_record_size})"
    )


def encoded_size(records: Iterable[tuple[int, bytes]], max_record_size: int) -> int:
    """Check kinds and payload sizes; return the bytes the records take on disk.

    ValueError for a kind outside 1..255 or a payload over ``max_record_size``: the one place
    that write-side rule is enforced (:func:`encode_records` relies on it).
    """
    total = 0
    for kind, payload in records:
        size = len(payload)
        if not 0 < kind < 256 or size > max_record_size:
            raise _refuse(kind, payload, max_record_size)
        total += RECORD_HEADER_SIZE + size
    return total


def encode_records(
    records: Sequence[tuple[int, bytes]], max_record_size: int, salt: int
) -> bytearray:
    """Frame ``records`` into one buffer for a file whose header carries ``salt``.

    Every crc is seeded with ``salt``. ValueError (before anything is encoded) for a bad kind or
    an oversized payload, as :func:`encoded_size` checks.
    """
    encoded_size(records, max_record_size)
    out = bytearray()
    crc32 = zlib.crc32
    pack_crc = _CRC.pack
    pack_length_kind = _LENGTH_KIND.pack
    for kind, payload in records:
        size = len(payload)
        if size <= _SMALL_PAYLOAD:
            # One short concatenation beats chaining two crc32 calls for small records.
            covered = pack_length_kind(size, kind) + payload
            out += pack_crc(crc32(covered, salt))
            out += covered
        else:
            head = pack_length_kind(size, kind)
            out += pack_crc(crc32(payload, crc32(head, salt)))
            out += head
            out += payload
    return out


@dataclass(frozen=True, slots=True)
class Damage:
    """Where and why reading stopped before the end of a file."""

    offset: int
    reason: str


class RecordReader:
    """Iterate over the records of ``fd`` between ``start`` and ``end``, verifying each one.

    ``salt`` is the one in the file's header: every crc is seeded with it. Any length the format
    allows is read (``max_record_size`` limits writing only), as long as the record fits before
    ``end``; the checksum decides. Reads in large chunks (one ``pread`` per READ_CHUNK, not per
    record). Iteration stops at the first record that fails its checks; then :attr:`damage` says
    where and why. :attr:`good_end` is the offset just past the last good record once iteration
    has finished.

    A consumer that cannot use a record (its checksum holds, yet it makes no sense where it is,
    e.g. a record repeated) throws its exception into the iterator (``records.throw(exc)``); it
    comes back as a CorruptionError naming ``path`` and the record's offset.
    """

    def __init__(self, fd: int, start: int, end: int, salt: int, path: Path) -> None:
        self._path = path
        self._fd = fd
        self._start = start
        self._end = end
        self._salt = salt
        self.good_end = start
        self.damage: Damage | None = None

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        fd, end, salt = self._fd, self._end, self._salt
        unpack = _HEADER.unpack_from
        crc32 = zlib.crc32
        buf = b""
        base = self._start  # file offset of buf[0]
        pos = 0  # offset in buf of the next record
        need = RECORD_HEADER_SIZE
        while True:
            file_pos = base + len(buf)
            chunk = os.pread(fd, min(max(READ_CHUNK, need), end - file_pos), file_pos)
            if not chunk:
                self.good_end = base + pos
                left = len(buf) - pos
                if left:  # a header cut short (a longer remainder only if the file shrank)
                    length = unpack(buf, pos)[1] if left >= RECORD_HEADER_SIZE else None
                    self.damage = Damage(base + pos, _truncation(left, length))
                return
            buf = buf[pos:] + chunk
            base += pos
            pos = 0
            size = len(buf)
            view = memoryview(buf)
            while True:
                if size - pos < RECORD_HEADER_SIZE:
                    need = RECORD_HEADER_SIZE
                    break
                crc, length, kind = unpack(buf, pos)
                stop = pos + RECORD_HEADER_SIZE + length
                if kind == 0 or base + stop > end:
                    # A length past the end is not read into memory: the record cannot be whole.
                    self.good_end = base + pos
                    reason = "record kind 0" if kind == 0 else _truncation(end - base - pos, length)
                    self.damage = Damage(base + pos, reason)
                    return
                if stop > size:
                    need = stop - size
                    break
                if crc32(view[pos + 4 : stop], salt) != crc:
                    self.good_end = base + pos
                    self.damage = Damage(base + pos, "record checksum mismatch")
                    return
                try:
                    yield kind, buf[pos + RECORD_HEADER_SIZE : stop]
                except Exception as exc:  # thrown in by the consumer: say where the record is
                    raise CorruptionError(
                        self._path, base + pos, f"the record there cannot be replayed ({exc})"
                    ) from exc
                pos = stop


def _truncation(left: int, length: int | None = None) -> str:
    """Why a record cannot be whole: the file ends ``left`` bytes after its start."""
    if length is None:
        return f"the file ends {left} bytes into a record header"
    return f"the file ends {left - RECORD_HEADER_SIZE} bytes into a {length}-byte payload"


def _candidate_pattern(region: int) -> re.Pattern[bytes]:
    # A plausible header: any crc, a length whose top byte does not already exceed the region
    # searched, and a non-zero kind. The regex engine skips the hopeless offsets at C speed.
    top = re.escape(bytes([min(region >> 24, 255)]))
    return re.compile(rb"(?=.{7}[\x00-" + top + rb"][^\x00])", re.DOTALL)


class SearchAbandoned(Exception):
    """:func:`find_record` gave up: checking every candidate would cost too much."""


def find_record(fd: int, start: int, end: int, salt: int) -> int | None:
    """The offset of the first valid record (sane header, crc seeded with ``salt``) in
    ``[start, end)``.

    Used only after damage, to tell a torn tail (nothing valid follows) from damage in the middle.
    A record copied from another file or embedded in a payload does not count: its crc was not
    seeded with this file's salt. Each candidate offset costs a header test (at C speed through a
    regex) and, only if the record would fit before ``end``, one crc over its length. Random
    garbage is full of candidates with huge lengths, so the crc work is capped at a few times
    the region's size; past that it raises SearchAbandoned rather than guess.
    """
    pattern = _candidate_pattern(end - start)
    budget = _SEARCH_CRC_BUDGET + 8 * (end - start)
    window = READ_CHUNK
    pos = start
    while end - pos >= RECORD_HEADER_SIZE:
        buf = os.pread(fd, min(window + RECORD_HEADER_SIZE - 1, end - pos), pos)
        view = memoryview(buf)
        for match in pattern.finditer(buf):
            at = match.start()
            crc, length, _kind = _HEADER.unpack_from(buf, at)
            stop = at + RECORD_HEADER_SIZE + length
            if pos + stop > end:
                continue
            budget -= length
            if budget < 0:
                raise SearchAbandoned
            if stop <= len(buf):
                covered: bytes | memoryview = view[at + 4 : stop]
            else:
                covered = os.pread(fd, stop - at - 4, pos + at + 4)
            if zlib.crc32(covered, salt) == crc:
                return pos + at
        pos += window
    return None
