"""The engine's log records: kinds and msgpack payloads (docs/FORMAT.md, "Record payloads").

Every record is self-contained (it carries the revision and the full metadata of what it writes), so
replay never needs the state before it, and a snapshot is just more records.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from typing import Any

import msgpack

from ._entry import Entry
from ._history import Batch, encode_batch

Record = tuple[int, bytes]
"""A record as storage takes it: (kind, payload)."""


class RecordKind(enum.IntEnum):
    """Record kinds; storage treats them as opaque bytes. Numbers are never reused."""

    PUT = 1  # [rev, writer, time, key, create_rev, version, value]
    DELETE = 2  # [rev, writer, time, key]
    TXN = 3  # [rev, writer, time, [[1, key, create_rev, version, value] | [2, key], ...]]
    PUT_TTL = 4  # [rev, writer, time, key, create_rev, version, expires, value]
    EXPIRE = 5  # [rev, time, [key, ...]]: keys whose deadline passed, gone at rev
    CACHE = 6  # [prefix, seconds or nil]: a cache's default TTL set (nil: dropped); no revision
    CLAIM = 7  # [rev, holder, time, key, token, lease, deliveries, bound]
    ACK = 8  # [rev, writer, time, key]: a claimed item finished (deleted)
    RELEASE = 9  # [rev, writer, time, key, not_before or nil]: a claim given back
    RETURNED = 10  # [rev, time, [key, ...]]: claims that ended by themselves (lease, connection)
    EXTEND = 11  # [key, token, lease]: a lease renewed; no revision
    SNAPSHOT_META = 16  # [format, revision, key_count]
    SNAPSHOT_ENTRIES = 17  # [[key, value, create_rev, mod_rev, version, writer, time], ...]
    SNAPSHOT_EXPIRING = 18  # [[key, expires], ...]: deadlines of keys in the entries before it
    SNAPSHOT_CACHES = 19  # {prefix: seconds}
    SNAPSHOT_CLAIMS = 20  # [fence, [[key, holder, token, lease, bound]], [[key, n]], [[key, t]]]
    SNAPSHOT_HISTORY = 21  # [first, [[rev, time, [[kind, key, by, entry fields or nil]]], ...]]


TXN_PUT = 1
TXN_DELETE = 2
TXN_PUT_TTL = 3  # [3, key, create_rev, version, expires, value]
SNAPSHOT_FORMAT = 1
# A snapshot chunk closes at this many entries or bytes, whichever comes first: big enough that
# replay is one unpackb call per thousand keys, small enough to stay far below the record limit.
SNAPSHOT_CHUNK_ENTRIES = 1000
SNAPSHOT_CHUNK_BYTES = 1 << 20

_packer = msgpack.Packer(use_bin_type=True)


def pack(obj: Any) -> bytes:
    """Encode one object the way every payload is encoded."""
    packed: bytes = _packer.pack(obj)
    return packed


_pack = pack


def _array_header(length: int) -> bytes:
    header: bytes = _packer.pack_array_header(length)
    return header


def _array_ending_with(fields: list[Any], packed_last: bytes) -> bytes:
    """A msgpack array of ``fields`` and one already-encoded last element (at most 14 fields).

    A fixarray's header is one byte, 0x90 | length, so the header of the packed fields is swapped
    for one that counts the extra element: one pack call, and the value is never packed twice.
    """
    return bytes((0x90 | (len(fields) + 1),)) + _pack(fields)[1:] + packed_last


def encode_put(
    rev: int, writer: str, time: float, key: str, packed_value: bytes, entry: Entry
) -> tuple[RecordKind, bytes]:
    """A PUT (or, for a key with a deadline, PUT_TTL) record built around the encoded value."""
    fields: list[Any] = [rev, writer, time, key, entry.create_rev, entry.version]
    if entry.expires is None:
        return RecordKind.PUT, _array_ending_with(fields, packed_value)
    fields.append(entry.expires)
    return RecordKind.PUT_TTL, _array_ending_with(fields, packed_value)


def encode_expire(rev: int, time: float, keys: list[str]) -> bytes:
    """An EXPIRE payload: ``keys`` reached their deadlines and are gone at ``rev``."""
    return _pack([rev, time, keys])


def encode_claim(
    rev: int,
    holder: str,
    time: float,
    key: str,
    token: int,
    lease: float,
    deliveries: int,
    bound: int | None,
) -> bytes:
    """A CLAIM payload: ``key`` handed to ``holder`` until ``lease`` under ``token``."""
    return _pack([rev, holder, time, key, token, lease, deliveries, bound])


def encode_ack(rev: int, writer: str, time: float, key: str) -> bytes:
    return _pack([rev, writer, time, key])


def encode_release(rev: int, writer: str, time: float, key: str, not_before: float | None) -> bytes:
    return _pack([rev, writer, time, key, not_before])


def encode_returned(rev: int, time: float, keys: list[str]) -> bytes:
    return _pack([rev, time, keys])


def encode_extend(key: str, token: int, lease: float) -> bytes:
    return _pack([key, token, lease])


def encode_cache(prefix: str, seconds: float | None) -> bytes:
    """A CACHE payload: the default TTL of keys under ``prefix`` (None: no longer a cache)."""
    return _pack([prefix, seconds])


def encode_delete(rev: int, writer: str, time: float, key: str) -> bytes:
    """A DELETE payload."""
    return _pack([rev, writer, time, key])


def encode_txn(
    rev: int,
    writer: str,
    time: float,
    writes: Iterable[tuple[str, bytes, Entry] | tuple[str, None, None]],
) -> bytes:
    """A TXN payload: the final state of every key the transaction touched, applied all or nothing."""
    ops: list[bytes] = []
    for key, packed_value, entry in writes:
        if entry is None or packed_value is None:
            ops.append(_pack([TXN_DELETE, key]))
        elif entry.expires is None:
            ops.append(
                _array_ending_with([TXN_PUT, key, entry.create_rev, entry.version], packed_value)
            )
        else:
            fields = [TXN_PUT_TTL, key, entry.create_rev, entry.version, entry.expires]
            ops.append(_array_ending_with(fields, packed_value))
    return b"".join(
        (_array_header(4), _pack(rev), _pack(writer), _pack(time), _array_header(len(ops)), *ops)
    )


def encode_snapshot(
    revision: int,
    entries: Iterable[tuple[str, Entry]],
    count: int,
    caches: dict[str, float] | None = None,
    claims: list[Any] | None = None,
    history: tuple[int, list[Batch]] | None = None,
) -> Iterator[Record]:
    """The records of a snapshot: a META record, the entries in chunks, then the deadlines of
    the keys that have one and the caches (sections of their own, so that the entries, which
    every open reads, keep their compact shape)."""
    yield RecordKind.SNAPSHOT_META, _pack([SNAPSHOT_FORMAT, revision, count])
    chunk: list[bytes] = []
    size = 0
    expiring: list[list[Any]] = []
    for key, e in entries:
        item = _pack([key, e.value, e.create_rev, e.mod_rev, e.version, e.writer, e.time])
        chunk.append(item)
        size += len(item)
        if e.expires is not None:
            expiring.append([key, e.expires])
        if len(chunk) >= SNAPSHOT_CHUNK_ENTRIES or size >= SNAPSHOT_CHUNK_BYTES:
            yield RecordKind.SNAPSHOT_ENTRIES, _array_header(len(chunk)) + b"".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield RecordKind.SNAPSHOT_ENTRIES, _array_header(len(chunk)) + b"".join(chunk)
    for start in range(0, len(expiring), SNAPSHOT_CHUNK_ENTRIES):
        yield RecordKind.SNAPSHOT_EXPIRING, _pack(expiring[start : start + SNAPSHOT_CHUNK_ENTRIES])
    if caches:
        yield RecordKind.SNAPSHOT_CACHES, _pack(caches)
    if claims:
        yield RecordKind.SNAPSHOT_CLAIMS, _pack(claims)
    if history is not None and history[1]:
        first, batches = history
        chunk, size = [], 0
        for batch in batches:
            item = _pack(encode_batch(batch))
            chunk.append(item)
            size += len(item)
            if len(chunk) >= SNAPSHOT_CHUNK_ENTRIES or size >= SNAPSHOT_CHUNK_BYTES:
                yield RecordKind.SNAPSHOT_HISTORY, _history_chunk(first, chunk)
                chunk, size = [], 0
        if chunk:
            yield RecordKind.SNAPSHOT_HISTORY, _history_chunk(first, chunk)


def _history_chunk(first: int, batches: list[bytes]) -> bytes:
    return b"".join((_array_header(2), _pack(first), _array_header(len(batches)), *batches))


def decode(payload: bytes) -> Any:
    """Unpack a payload (strict: string map keys, no ext types)."""
    return msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
