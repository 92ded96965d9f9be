"""Record framing: encoding batches, reading them back fast, and looking past damage.

A record on disk is ``crc32 u32 | length u32 | kind u8 | payload``, little-endian; the crc covers
length, kind and payload (docs/FORMAT.md, "Records").
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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
    """Check kinds and payload sizes; return the bytes the records take on disk."""
    total = 0
    for kind, payload in records:
        size = len(payload)
        if not 0 < kind < 256 or size > max_record_size:
            raise _refuse(kind, payload, max_record_size)
        total += RECORD_HEADER_SIZE + size
    return total


def encode_records(records: Iterable[tuple[int, bytes]], max_record_size: int) -> bytearray:
    """Frame ``records`` into one buffer; ValueError for a bad kind or an oversized payload."""
    out = bytearray()
    crc32 = zlib.crc32
    pack_crc = _CRC.pack
    pack_length_kind = _LENGTH_KIND.pack
    for kind, payload in records:
        size = len(payload)
        if not 0 < kind < 256 or size > max_record_size:
            raise _refuse(kind, payload, max_record_size)
        if size <= _SMALL_PAYLOAD:
            # One short concatenation beats chaining two crc32 calls for small records.
            covered = pack_length_kind(size, kind) + payload
            out += pack_crc(crc32(covered))
            out += covered
        else:
            head = pack_length_kind(size, kind)
            out += pack_crc(crc32(payload, crc32(head)))
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

    Reads in large chunks (one ``pread`` per READ_CHUNK, not per record). Iteration stops at the
    first record that fails its checks; then :attr:`damage` says where and why. :attr:`good_end`
    is the offset just past the last good record once iteration has finished.
    """

    def __init__(self, fd: int, start: int, end: int, max_record_size: int) -> None:
        self._fd = fd
        self._start = start
        self._end = end
        self._max = max_record_size
        self.good_end = start
        self.damage: Damage | None = None

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        fd, end, max_size = self._fd, self._end, self._max
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
                if pos < len(buf):
                    self.damage = Damage(base + pos, self._truncation(buf[pos:]))
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
                if kind == 0 or length > max_size:
                    self.good_end = base + pos
                    reason = "record kind 0" if kind == 0 else f"record length {length} too large"
                    self.damage = Damage(base + pos, reason)
                    return
                stop = pos + RECORD_HEADER_SIZE + length
                if stop > size:
                    need = stop - size
                    break
                if crc32(view[pos + 4 : stop]) != crc:
                    self.good_end = base + pos
                    self.damage = Damage(base + pos, "record checksum mismatch")
                    return
                yield kind, buf[pos + RECORD_HEADER_SIZE : stop]
                pos = stop

    def _truncation(self, rest: bytes) -> str:
        if len(rest) < RECORD_HEADER_SIZE:
            return f"the file ends {len(rest)} bytes into a record header"
        (length,) = struct.unpack_from("<I", rest, 4)
        return f"the file ends {len(rest) - RECORD_HEADER_SIZE} bytes into a {length}-byte payload"


def _candidate_pattern(max_record_size: int) -> re.Pattern[bytes]:
    # A plausible header: any crc, a length whose top byte does not already exceed the limit,
    # and a non-zero kind. The regex engine skips the hopeless offsets at C speed.
    top = re.escape(bytes([max_record_size >> 24]))
    return re.compile(rb"(?=.{7}[\x00-" + top + rb"][^\x00])", re.DOTALL)


class SearchAbandoned(Exception):
    """:func:`find_record` gave up: checking every candidate would cost too much."""


def find_record(fd: int, start: int, end: int, max_record_size: int) -> int | None:
    """The offset of the first valid record (sane header, matching crc) in ``[start, end)``.

    Used only after damage, to tell a torn tail (nothing valid follows) from damage in the middle.
    Each candidate offset costs a header test (at C speed through a regex) and, only if the
    record would fit before ``end``, one crc over at most ``max_record_size`` bytes. Random
    garbage is full of candidates with huge lengths, so the crc work is capped at a few times
    the region's size; past that it raises SearchAbandoned rather than guess.
    """
    pattern = _candidate_pattern(max_record_size)
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
            if length > max_record_size or pos + stop > end:
                continue
            budget -= length
            if budget < 0:
                raise SearchAbandoned
            if stop <= len(buf):
                covered: bytes | memoryview = view[at + 4 : stop]
            else:
                covered = os.pread(fd, stop - at - 4, pos + at + 4)
            if zlib.crc32(covered) == crc:
                return pos + at
        pos += window
    return None
