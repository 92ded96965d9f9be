"""The engine's log records (docs/FORMAT.md, "Record payloads"): one typed class per kind, the one
place that knows its payload's layout, both ways.

Every payload is a msgpack array, and each class is a named tuple whose fields are that array's
elements in order: ``encode`` packs the tuple as it is, and :func:`decode_record` builds the tuple
from the decoded array in one call, so replay reads fields by name at the cost of one tuple.

Every record is self-contained (it carries the revision and the full metadata of what it writes), so
replay never needs the state before it, and a snapshot is just more records.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple, TypeVar

import msgpack

from ._claims import Claim as HeldClaim
from ._entry import Entry
from ._history import Batch, decode_batch, encode_batch

Record = tuple[int, bytes]
"""A record as storage takes it: (kind, payload)."""


class RecordKind(enum.IntEnum):
    """Record kinds; storage treats them as opaque bytes. Numbers are never reused."""

    PUT = 1  # Put
    DELETE = 2  # Delete
    TXN = 3  # Txn
    PUT_TTL = 4  # PutTtl
    EXPIRE = 5  # Expire
    CACHE = 6  # Cache (no revision)
    CLAIM = 7  # Claim
    ACK = 8  # Ack
    RELEASE = 9  # Release
    RETURNED = 10  # Returned
    EXTEND = 11  # Extend (no revision)
    SESSION_GRANT = 12  # SessionGrant (no revision)
    SESSION_END = 13  # SessionEnd (a revision only if the session had keys)
    PUT_SESSION = 14  # PutSession
    SNAPSHOT_META = 16  # SnapshotMeta
    SNAPSHOT_ENTRIES = 17  # SnapshotEntries
    SNAPSHOT_EXPIRING = 18  # SnapshotExpiring
    SNAPSHOT_CACHES = 19  # SnapshotCaches
    SNAPSHOT_CLAIMS = 20  # SnapshotClaims
    SNAPSHOT_HISTORY = 21  # SnapshotHistory
    SNAPSHOT_SESSIONS = 22  # SnapshotSessions
    SNAPSHOT_ATTACHED = 23  # SnapshotAttached
    SNAPSHOT_ITEMS = 24  # SnapshotItems
    SNAPSHOT_QUEUES = 25  # SnapshotQueues
    SNAPSHOT_QUOTAS = 26  # SnapshotQuotas
    SNAPSHOT_COLUMNS = 27  # SnapshotColumns (format 3's entries; 17 before)
    PUT_ITEM = 32  # PutItem
    QUEUE_CONFIG = 33  # QueueConfig (no revision)
    QUOTA = 34  # QuotaRecord (no revision)


class ReplayError(Exception):
    """A record could not be applied on open (unknown kind, bad payload, or out of order)."""


# The tag that leads each operation of a TXN record.
TXN_PUT = 1
TXN_DELETE = 2
TXN_PUT_TTL = 3
TXN_PUT_SESSION = 4
# 2: a history entry may be ``true``, the key's live entry (format 1 wrote every one out).
# 3: the entries as zlib-compressed columns (SNAPSHOT_COLUMNS, not SNAPSHOT_ENTRIES).
SNAPSHOT_FORMAT = 3
SNAPSHOT_FORMATS = (1, 2, 3)  # what this version reads
# A snapshot chunk closes at this many entries or bytes, whichever comes first: big enough that
# replay is one unpackb call per thousand keys, small enough to stay far below the record limit.
SNAPSHOT_CHUNK_ENTRIES = 1000
SNAPSHOT_CHUNK_BYTES = 1 << 20

_packer = msgpack.Packer(use_bin_type=True)


def pack(obj: Any) -> bytes:
    """Encode one object the way every payload is encoded (a named tuple as an array)."""
    packed: bytes = _packer.pack(obj)
    return packed


_pack = pack


def decode(payload: bytes) -> Any:
    """Unpack a payload (strict: string map keys, no ext types)."""
    return msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)


def _array_header(length: int) -> bytes:
    header: bytes = _packer.pack_array_header(length)
    return header


def _ending_with_value(fields: tuple[Any, ...], packed_value: bytes | None) -> bytes:
    """A msgpack array of ``fields`` (at most 15), whose last one is a value.

    With ``packed_value``, the value's encoding made when it was checked, that encoding is spliced
    in and the value is never packed twice: a fixarray's header is one byte, 0x90 | length, so the
    header of the other fields, packed alone, is swapped for one that counts the value too.
    """
    if packed_value is None:
        return _pack(fields)
    return bytes((0x90 | len(fields),)) + _pack(fields[:-1])[1:] + packed_value


# -- changes: each carries its revision ----------------------------------------------------------


class Put(NamedTuple):
    """PUT: ``key`` written at ``rev``, with no deadline. The value comes last, so that its
    encoding can be spliced in."""

    rev: int
    writer: str
    time: float
    key: str
    create_rev: int
    version: int
    value: Any

    @property
    def expires(self) -> None:
        """A PUT's key has no deadline (a PUT_TTL's has)."""
        return None

    @property
    def session(self) -> None:
        """A PUT's key is attached to no session (a PUT_SESSION's is)."""
        return None

    def encode(self, packed_value: bytes | None = None) -> Record:
        """(kind, payload); ``packed_value`` is the value's encoding, if already made."""
        return RecordKind.PUT, _ending_with_value(self, packed_value)


class PutTtl(NamedTuple):
    """PUT_TTL: a PUT of a key with a deadline (``expires``, seconds since the epoch)."""

    rev: int
    writer: str
    time: float
    key: str
    create_rev: int
    version: int
    expires: float
    value: Any

    @property
    def session(self) -> None:
        """A key with a deadline is attached to no session."""
        return None

    def encode(self, packed_value: bytes | None = None) -> Record:
        """(kind, payload); ``packed_value`` is the value's encoding, if already made."""
        return RecordKind.PUT_TTL, _ending_with_value(self, packed_value)


class PutSession(NamedTuple):
    """PUT_SESSION: a PUT of a key attached to ``session`` (such a key has no deadline of its
    own: it goes when the session ends)."""

    rev: int
    writer: str
    time: float
    key: str
    create_rev: int
    version: int
    session: int
    value: Any

    @property
    def expires(self) -> None:
        """A key attached to a session has no deadline of its own."""
        return None

    def encode(self, packed_value: bytes | None = None) -> Record:
        """(kind, payload); ``packed_value`` is the value's encoding, if already made."""
        return RecordKind.PUT_SESSION, _ending_with_value(self, packed_value)


class PutItem(NamedTuple):
    """PUT_ITEM: a PUT of a queue item with its queue options: its ``priority`` (0 most
    urgent), the time it is claimable from (``not_before``, epoch seconds) and the keys it
    waits for (``after``, as given: those that exist at this revision hold it back)."""

    rev: int
    writer: str
    time: float
    key: str
    create_rev: int
    version: int
    expires: float | None
    priority: int
    not_before: float | None
    after: list[str]
    value: Any

    @property
    def session(self) -> None:
        """A queue item is attached to no session."""
        return None

    def encode(self, packed_value: bytes | None = None) -> Record:
        """(kind, payload); ``packed_value`` is the value's encoding, if already made."""
        return RecordKind.PUT_ITEM, _ending_with_value(self, packed_value)


def encode_put(
    rev: int, writer: str, time: float, key: str, packed_value: bytes, entry: Entry
) -> Record:
    """The PUT (or, for a key with a deadline, PUT_TTL; for one attached to a session,
    PUT_SESSION) record of ``entry``, written at ``rev``, around ``packed_value``, the encoding of
    ``entry.value``."""
    if entry.session is not None:
        attached = PutSession(
            rev, writer, time, key, entry.create_rev, entry.version, entry.session, entry.value
        )
        return attached.encode(packed_value)
    if entry.expires is None:
        put = Put(rev, writer, time, key, entry.create_rev, entry.version, entry.value)
        return put.encode(packed_value)
    put_ttl = PutTtl(
        rev, writer, time, key, entry.create_rev, entry.version, entry.expires, entry.value
    )
    return put_ttl.encode(packed_value)


class Delete(NamedTuple):
    """DELETE: ``key`` deleted at ``rev``."""

    rev: int
    writer: str
    time: float
    key: str

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.DELETE, _pack(self)


class TxnPut(NamedTuple):
    """A TXN's put: on the wire ``[TXN_PUT, key, create_rev, version, value]``."""

    key: str
    create_rev: int
    version: int
    value: Any

    @property
    def expires(self) -> None:
        """This put's key has no deadline (a TxnPutTtl's has)."""
        return None

    @property
    def session(self) -> None:
        """This put's key is attached to no session (a TxnPutSession's is)."""
        return None

    def encode(self, packed_value: bytes | None = None) -> bytes:
        """The operation's array; ``packed_value`` is the value's encoding, if already made."""
        return _ending_with_value((TXN_PUT, *self), packed_value)


class TxnPutTtl(NamedTuple):
    """A TXN's put of a key with a deadline: ``[TXN_PUT_TTL, key, create_rev, version, expires,
    value]``."""

    key: str
    create_rev: int
    version: int
    expires: float
    value: Any

    @property
    def session(self) -> None:
        """A key with a deadline is attached to no session."""
        return None

    def encode(self, packed_value: bytes | None = None) -> bytes:
        """The operation's array; ``packed_value`` is the value's encoding, if already made."""
        return _ending_with_value((TXN_PUT_TTL, *self), packed_value)


class TxnPutSession(NamedTuple):
    """A TXN's put of a key attached to a session: ``[TXN_PUT_SESSION, key, create_rev,
    version, session, value]``."""

    key: str
    create_rev: int
    version: int
    session: int
    value: Any

    @property
    def expires(self) -> None:
        """A key attached to a session has no deadline of its own."""
        return None

    def encode(self, packed_value: bytes | None = None) -> bytes:
        """The operation's array; ``packed_value`` is the value's encoding, if already made."""
        return _ending_with_value((TXN_PUT_SESSION, *self), packed_value)


class TxnDelete(NamedTuple):
    """A TXN's delete: ``[TXN_DELETE, key]``."""

    key: str

    def encode(self, packed_value: bytes | None = None) -> bytes:
        """The operation's array (a delete has no value: ``packed_value`` is None)."""
        return _pack((TXN_DELETE, self.key))


TxnWrite = TxnPut | TxnPutTtl | TxnPutSession | TxnDelete


def _decode_txn_write(op: list[Any]) -> TxnWrite:
    tag = op[0]
    if tag == TXN_PUT:
        return TxnPut._make(op[1:])
    if tag == TXN_PUT_TTL:
        return TxnPutTtl._make(op[1:])
    if tag == TXN_PUT_SESSION:
        return TxnPutSession._make(op[1:])
    if tag == TXN_DELETE:
        return TxnDelete(op[1])
    raise ReplayError(f"unknown transaction operation {tag!r}")


class Txn(NamedTuple):
    """TXN: the final state of every key a transaction touched, all at ``rev``, applied all or
    nothing."""

    rev: int
    writer: str
    time: float
    writes: list[TxnWrite]

    def encode(self, packed_values: Sequence[bytes | None] | None = None) -> Record:
        """(kind, payload); ``packed_values``, one per write, are the encodings of the values
        where already made (None for a delete)."""
        writes = self.writes
        packed = packed_values if packed_values is not None else [None] * len(writes)
        ops = [write.encode(value) for write, value in zip(writes, packed, strict=True)]
        head = (_array_header(len(self)), _pack(self.rev), _pack(self.writer), _pack(self.time))
        return RecordKind.TXN, b"".join((*head, _array_header(len(ops)), *ops))

    @classmethod
    def from_fields(cls, fields: list[Any]) -> Txn:
        """The record a decoded payload describes."""
        rev, writer, time, ops = fields[:4]
        return cls(rev, writer, time, [_decode_txn_write(op) for op in ops])


def encode_txn(
    rev: int,
    writer: str,
    time: float,
    writes: Iterable[tuple[str, bytes, Entry] | tuple[str, None, None]],
) -> Record:
    """The TXN record of ``writes``: (key, encoded value, new entry), or (key, None, None) for a
    key the transaction deleted."""
    ops: list[TxnWrite] = []
    packed: list[bytes | None] = []
    for key, packed_value, entry in writes:
        if entry is None or packed_value is None:
            ops.append(TxnDelete(key))
        elif entry.session is not None:
            ops.append(
                TxnPutSession(key, entry.create_rev, entry.version, entry.session, entry.value)
            )
        elif entry.expires is None:
            ops.append(TxnPut(key, entry.create_rev, entry.version, entry.value))
        else:
            ops.append(TxnPutTtl(key, entry.create_rev, entry.version, entry.expires, entry.value))
        packed.append(packed_value)
    return Txn(rev, writer, time, ops).encode(packed)


class Expire(NamedTuple):
    """EXPIRE: ``keys`` reached their deadlines and are gone at ``rev``."""

    rev: int
    time: float
    keys: list[str]

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.EXPIRE, _pack(self)


class Claim(NamedTuple):
    """CLAIM: ``key`` handed to ``holder`` until ``lease`` under the fencing ``token``;
    ``deliveries`` counts the hand-outs so far, ``bound`` is the session of a connection-bound
    claim (else None)."""

    rev: int
    holder: str
    time: float
    key: str
    token: int
    lease: float
    deliveries: int
    bound: int | None

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.CLAIM, _pack(self)


class Ack(NamedTuple):
    """ACK: a claimed item finished (deleted)."""

    rev: int
    writer: str
    time: float
    key: str

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.ACK, _pack(self)


class Release(NamedTuple):
    """RELEASE: a claim given back, claimable at once or (``not_before``) later, with a new
    ``priority`` if it is not None (older records have none)."""

    rev: int
    writer: str
    time: float
    key: str
    not_before: float | None
    priority: int | None = None

    def encode(self) -> Record:
        """(kind, payload); without a priority, the five fields it always had."""
        return RecordKind.RELEASE, _pack(self if self.priority is not None else self[:5])


class Returned(NamedTuple):
    """RETURNED: claims that ended by themselves (a lease ran out, a bound connection went);
    ``not_before``, if given, has each key's backoff (None: claimable at once), in order."""

    rev: int
    time: float
    keys: list[str]
    not_before: list[float | None] | None = None

    def encode(self) -> Record:
        """(kind, payload); without backoffs, the three fields it always had."""
        return RecordKind.RETURNED, _pack(self if self.not_before is not None else self[:3])


class SessionEnd(NamedTuple):
    """SESSION_END: ``session`` is over (revoked by ``writer``, or ``expired``: then ``writer`` is
    "") and its ``keys`` are gone at ``rev``; ``rev`` is None when it had none."""

    rev: int | None
    writer: str
    time: float
    session: int
    expired: bool
    keys: list[str]

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.SESSION_END, _pack(self)


# -- settings without a revision -----------------------------------------------------------------


class SessionGrant(NamedTuple):
    """SESSION_GRANT: the session ``session`` begins, for ``owner``, kept for ``ttl`` seconds
    after each keep-alive (which is not logged)."""

    session: int
    owner: str
    ttl: float
    time: float

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.SESSION_GRANT, _pack(self)


class Cache(NamedTuple):
    """CACHE: the default TTL of keys set under ``prefix`` (None: no longer a cache)."""

    prefix: str
    seconds: float | None

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.CACHE, _pack(self)


class QueueConfig(NamedTuple):
    """QUEUE_CONFIG: the settings of the queue ``prefix`` (a map; None: back to the defaults)."""

    prefix: str
    config: dict[str, Any] | None

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.QUEUE_CONFIG, _pack(self)


class QuotaRecord(NamedTuple):
    """QUOTA: ``user``'s limits in this database (a map; None: no quota any more)."""

    user: str
    quota: dict[str, int] | None

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.QUOTA, _pack(self)


class Extend(NamedTuple):
    """EXTEND: the claim on ``key`` under ``token`` renewed until ``lease``."""

    key: str
    token: int
    lease: float

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.EXTEND, _pack(self)


# -- snapshots -----------------------------------------------------------------------------------


class SnapshotMeta(NamedTuple):
    """SNAPSHOT_META: the first record of a snapshot."""

    format: int
    revision: int
    key_count: int

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.SNAPSHOT_META, _pack(self)


class SnapshotEntries(NamedTuple):
    """SNAPSHOT_ENTRIES: a chunk of live keys, each on the wire ``[key, value, create_rev,
    mod_rev, version, writer, time]`` (deadlines come in SNAPSHOT_EXPIRING)."""

    entries: list[tuple[str, Entry]]

    @staticmethod
    def pack_item(key: str, entry: Entry) -> bytes:
        """One key's element of the chunk."""
        e = entry
        return _pack((key, e.value, e.create_rev, e.mod_rev, e.version, e.writer, e.time))

    @staticmethod
    def join(items: list[bytes]) -> Record:
        """The record of a chunk of elements made by :meth:`pack_item`."""
        return RecordKind.SNAPSHOT_ENTRIES, _array_header(len(items)) + b"".join(items)

    def encode(self) -> Record:
        """(kind, payload)."""
        return self.join([self.pack_item(key, entry) for key, entry in self.entries])

    @classmethod
    def from_fields(cls, fields: list[Any]) -> SnapshotEntries:
        """The record a decoded payload describes. The hot loop of opening a big database: the
        entries are built here, once, with the size of each value's encoding."""
        names: dict[str, str] = {}  # one string per user, not one per key
        return cls(
            [
                (
                    key,
                    Entry(
                        value,
                        create_rev,
                        # A key written once: one int object for both revisions.
                        create_rev if mod_rev == create_rev else mod_rev,
                        version,
                        names.setdefault(writer, writer),
                        time,
                        len(_pack(value)),
                    ),
                )
                for key, value, create_rev, mod_rev, version, writer, time in fields
            ]
        )


# A decompressed SNAPSHOT_COLUMNS payload may take at most this much: a damaged or hostile file
# cannot make the open inflate without bound (a chunk is at most about 1 MiB of entries).
_MAX_COLUMNS_BYTES = 64 << 20
_new_entry = partial(tuple.__new__, Entry)  # Entry(*fields) without the Python-level __new__


class SnapshotColumns(NamedTuple):
    """SNAPSHOT_COLUMNS: a chunk of live keys as columns, ``[keys, values, create_revs,
    mod_revs, versions, writers, times]``, msgpack then zlib (deadlines and sessions come in
    their own sections, as with SNAPSHOT_ENTRIES). Columns load in bulk: the entries are built
    by C loops (map, zip) rather than one Python call per key, and sorted keys, repeated
    writers, revisions and times compress well."""

    keys: list[str]
    entries: list[Entry]

    @staticmethod
    def join(keys: list[str], entries: list[Entry]) -> Record:
        """The record of a chunk of keys and their entries."""
        columns = [keys, *([e[i] for e in entries] for i in range(6))]
        return RecordKind.SNAPSHOT_COLUMNS, zlib.compress(_pack(columns), 1)

    def encode(self) -> Record:
        """(kind, payload)."""
        return self.join(self.keys, self.entries)

    @classmethod
    def from_payload(cls, payload: bytes) -> SnapshotColumns:
        """The record a payload describes (decompressed here, so not through :func:`decode`)."""
        inflate = zlib.decompressobj()
        try:
            packed = inflate.decompress(payload, _MAX_COLUMNS_BYTES)
        except zlib.error as exc:
            raise ValueError(f"the columns do not decompress ({exc})") from None
        if inflate.unconsumed_tail or not inflate.eof:
            raise ValueError("the columns are cut short or inflate past the bound")
        keys, values, creates, mods, versions, writers, times = decode(packed)
        count = len(keys)
        if any(
            len(column) != count for column in (values, creates, mods, versions, writers, times)
        ):
            raise ValueError("the columns differ in length")
        shared: dict[Any, Any] = {}  # one object per repeated revision, user and time
        share = shared.setdefault
        entries = list(
            map(
                _new_entry,
                zip(
                    values,
                    map(share, creates, creates),
                    map(share, mods, mods),
                    versions,
                    map(share, writers, writers),
                    map(share, times, times),
                    map(len, map(_packer.pack, values)),
                    repeat(None),
                    repeat(None),
                ),
            )
        )
        return cls(keys, entries)


class SnapshotExpiring(NamedTuple):
    """SNAPSHOT_EXPIRING: the deadlines of keys listed in the entries before it."""

    deadlines: list[tuple[str, float]]

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.SNAPSHOT_EXPIRING, _pack(self.deadlines)

    @classmethod
    def from_fields(cls, fields: list[Any]) -> SnapshotExpiring:
        """The record a decoded payload describes."""
        return cls([(key, expires) for key, expires in fields])


class SnapshotCaches(NamedTuple):
    """SNAPSHOT_CACHES: every cache prefix with its TTL, a map."""

    caches: dict[str, float]

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.SNAPSHOT_CACHES, _pack(self.caches)

    @classmethod
    def from_fields(cls, fields: dict[str, float]) -> SnapshotCaches:
        """The record a decoded payload describes."""
        return cls(fields)


class SnapshotClaims(NamedTuple):
    """SNAPSHOT_CLAIMS: the fencing counter, then the held claims (each on the wire ``[key,
    holder, token, lease, bound]``), the delivery counts and the delayed releases."""

    fence: int
    claims: list[tuple[str, HeldClaim]]
    deliveries: list[tuple[str, int]]
    delayed: list[tuple[str, float]]

    def encode(self) -> Record:
        """(kind, payload)."""
        claims = [(key, *claim) for key, claim in self.claims]
        return RecordKind.SNAPSHOT_CLAIMS, _pack((self.fence, claims, *self[2:]))

    @classmethod
    def from_fields(cls, fields: list[Any]) -> SnapshotClaims:
        """The record a decoded payload describes."""
        fence, claims, deliveries, delayed = fields
        return cls(
            fence,
            [
                (key, HeldClaim(holder, token, lease, bound))
                for key, holder, token, lease, bound in claims
            ],
            [(key, count) for key, count in deliveries],
            [(key, not_before) for key, not_before in delayed],
        )


class SnapshotHistory(NamedTuple):
    """SNAPSHOT_HISTORY: a chunk of the watch history, oldest first; ``first`` is the oldest
    revision the history holds whole. A batch's layout is :func:`encode_batch`'s. Decoded, the
    batches stay as their arrays: an entry may refer to the live entries, which only the engine
    has (:meth:`decoded`)."""

    first: int
    batches: list[Any]

    @staticmethod
    def pack_item(batch: Batch, live: Mapping[str, Entry] | None = None) -> bytes:
        """One batch's element of the chunk (entries that are the key's in ``live`` by
        reference)."""
        return _pack(encode_batch(batch, live))

    @staticmethod
    def join(first: int, items: list[bytes]) -> Record:
        """The record of a chunk of elements made by :meth:`pack_item`."""
        head = (_array_header(2), _pack(first), _array_header(len(items)))
        return RecordKind.SNAPSHOT_HISTORY, b"".join((*head, *items))

    def encode(self) -> Record:
        """(kind, payload), of batches given as :class:`Batch`."""
        return self.join(self.first, [self.pack_item(batch) for batch in self.batches])

    def decoded(self, live: Mapping[str, Entry], names: dict[str, str]) -> list[Batch]:
        """The batches, an entry given by reference being the key's in ``live``."""
        return [decode_batch(batch, live, names) for batch in self.batches]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> SnapshotHistory:
        """The record a decoded payload describes."""
        first, batches = fields
        if not isinstance(batches, list):
            raise TypeError("a history chunk's batches are a list")
        return cls(first, batches)


class SnapshotSessions(NamedTuple):
    """SNAPSHOT_SESSIONS: the next session id, then the live sessions, each on the wire ``[id,
    owner, ttl]`` (their keys come in SNAPSHOT_ATTACHED)."""

    next_id: int
    sessions: list[tuple[int, str, float]]

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.SNAPSHOT_SESSIONS, _pack(self)

    @classmethod
    def from_fields(cls, fields: list[Any]) -> SnapshotSessions:
        """The record a decoded payload describes."""
        next_id, sessions = fields
        return cls(next_id, [(session, owner, ttl) for session, owner, ttl in sessions])


class SnapshotAttached(NamedTuple):
    """SNAPSHOT_ATTACHED: keys listed in the entries before it, each with the session it is
    attached to."""

    keys: list[tuple[str, int]]

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.SNAPSHOT_ATTACHED, _pack(self.keys)

    @classmethod
    def from_fields(cls, fields: list[Any]) -> SnapshotAttached:
        """The record a decoded payload describes."""
        return cls([(key, session) for key, session in fields])


class SnapshotItems(NamedTuple):
    """SNAPSHOT_ITEMS: the queue items with a priority other than the default or keys they
    still wait for: ``[key, priority, after]`` each (their delays are in SNAPSHOT_CLAIMS)."""

    items: list[tuple[str, int, list[str]]]

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.SNAPSHOT_ITEMS, _pack(self.items)

    @classmethod
    def from_fields(cls, fields: list[Any]) -> SnapshotItems:
        """The record a decoded payload describes."""
        return cls([(key, priority, list(after)) for key, priority, after in fields])


class SnapshotQueues(NamedTuple):
    """SNAPSHOT_QUEUES: every configured queue prefix with its settings, a map."""

    queues: dict[str, dict[str, Any]]

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.SNAPSHOT_QUEUES, _pack(self.queues)

    @classmethod
    def from_fields(cls, fields: dict[str, dict[str, Any]]) -> SnapshotQueues:
        """The record a decoded payload describes."""
        return cls(dict(fields))


class SnapshotQuotas(NamedTuple):
    """SNAPSHOT_QUOTAS: every user with a quota, with its limits, a map."""

    quotas: dict[str, dict[str, int]]

    def encode(self) -> Record:
        """(kind, payload)."""
        return RecordKind.SNAPSHOT_QUOTAS, _pack(self.quotas)

    @classmethod
    def from_fields(cls, fields: dict[str, dict[str, int]]) -> SnapshotQuotas:
        """The record a decoded payload describes."""
        return cls(dict(fields))


def encode_snapshot(
    revision: int,
    entries: Iterable[tuple[str, Entry]],
    count: int,
    caches: dict[str, float] | None = None,
    claims: SnapshotClaims | None = None,
    history: tuple[int, list[Batch]] | None = None,
    sessions: SnapshotSessions | None = None,
    items: list[tuple[str, int, list[str]]] | None = None,
    queues: dict[str, dict[str, Any]] | None = None,
    quotas: dict[str, dict[str, int]] | None = None,
    live: Mapping[str, Entry] | None = None,
) -> Iterator[Record]:
    """The records of a snapshot: a META record, the entries in chunks, then the deadlines of
    the keys that have one and the caches (sections of their own, so that the entries, which
    every open reads, keep their compact shape), the claims, the sessions with their keys, and
    the history (its entries that are the key's in ``live`` by reference)."""
    yield SnapshotMeta(SNAPSHOT_FORMAT, revision, count).encode()
    expiring: list[tuple[str, float]] = []
    attached: list[tuple[str, int]] = []
    for keys, part in _column_chunks(entries, expiring, attached):
        yield SnapshotColumns.join(keys, part)
    for start in range(0, len(expiring), SNAPSHOT_CHUNK_ENTRIES):
        yield SnapshotExpiring(expiring[start : start + SNAPSHOT_CHUNK_ENTRIES]).encode()
    if caches:
        yield SnapshotCaches(caches).encode()
    if claims is not None:
        yield claims.encode()
    yield from _queue_sections(items or [], queues, quotas)
    if sessions is not None:
        for start in range(0, max(len(sessions.sessions), 1), SNAPSHOT_CHUNK_ENTRIES):
            some = sessions.sessions[start : start + SNAPSHOT_CHUNK_ENTRIES]
            yield SnapshotSessions(sessions.next_id, some).encode()
        for start in range(0, len(attached), SNAPSHOT_CHUNK_ENTRIES):
            yield SnapshotAttached(attached[start : start + SNAPSHOT_CHUNK_ENTRIES]).encode()
    if history is not None and history[1]:
        first, batches = history
        for chunk in _chunked(SnapshotHistory.pack_item(batch, live) for batch in batches):
            yield SnapshotHistory.join(first, chunk)


def _queue_sections(
    items: list[tuple[str, int, list[str]]],
    queues: dict[str, dict[str, Any]] | None,
    quotas: dict[str, dict[str, int]] | None,
) -> Iterator[Record]:
    """The queue items' options, the queues' settings and the users' quotas, as far as any."""
    for start in range(0, len(items), SNAPSHOT_CHUNK_ENTRIES):
        yield SnapshotItems(items[start : start + SNAPSHOT_CHUNK_ENTRIES]).encode()
    if queues:
        yield SnapshotQueues(queues).encode()
    if quotas:
        yield SnapshotQuotas(quotas).encode()


def _column_chunks(
    entries: Iterable[tuple[str, Entry]],
    expiring: list[tuple[str, float]],
    attached: list[tuple[str, int]],
) -> Iterator[tuple[list[str], list[Entry]]]:
    """The entries in chunks of at most SNAPSHOT_CHUNK_ENTRIES, closed once about
    SNAPSHOT_CHUNK_BYTES of keys and values is reached, noting in ``expiring`` the deadlines and
    in ``attached`` the sessions met on the way (one pass: the entries may be an iterator)."""
    keys: list[str] = []
    chunk: list[Entry] = []
    size = 0
    for key, entry in entries:
        keys.append(key)
        chunk.append(entry)
        size += len(key) + entry.size
        if entry.expires is not None:
            expiring.append((key, entry.expires))
        if entry.session is not None:
            attached.append((key, entry.session))
        if len(chunk) >= SNAPSHOT_CHUNK_ENTRIES or size >= SNAPSHOT_CHUNK_BYTES:
            yield keys, chunk
            keys, chunk, size = [], [], 0
    if chunk:
        yield keys, chunk


def _chunked(items: Iterable[bytes]) -> Iterator[list[bytes]]:
    """``items`` in chunks of at most SNAPSHOT_CHUNK_ENTRIES, closed once SNAPSHOT_CHUNK_BYTES
    is reached."""
    chunk: list[bytes] = []
    size = 0
    for item in items:
        chunk.append(item)
        size += len(item)
        if len(chunk) >= SNAPSHOT_CHUNK_ENTRIES or size >= SNAPSHOT_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


LogRecord = (
    Put
    | PutItem
    | QueueConfig
    | QuotaRecord
    | SnapshotQuotas
    | SnapshotItems
    | SnapshotQueues
    | PutTtl
    | Delete
    | Txn
    | Expire
    | Cache
    | Claim
    | Ack
    | Release
    | Returned
    | Extend
    | SessionGrant
    | SessionEnd
    | PutSession
    | SnapshotMeta
    | SnapshotEntries
    | SnapshotColumns
    | SnapshotExpiring
    | SnapshotCaches
    | SnapshotClaims
    | SnapshotHistory
    | SnapshotSessions
    | SnapshotAttached
)
"""Any typed record."""


_Lenient = TypeVar("_Lenient", Delete, Expire, Ack, Release, Returned)


def _leading(cls: type[_Lenient]) -> Callable[[list[Any]], _Lenient]:
    """The decoder of a record read from the first elements of its array, any after them
    ignored (as replay has always read these kinds); fields added later have defaults, so older
    records, which lack them, read too."""
    length = len(cls._fields)
    return lambda fields: cls(*fields[:length])


# How each kind's decoded payload becomes its typed record: most are the array as it is.
_DECODERS: dict[int, Callable[[Any], LogRecord]] = {
    RecordKind.PUT: Put._make,
    RecordKind.DELETE: _leading(Delete),
    RecordKind.TXN: Txn.from_fields,
    RecordKind.PUT_TTL: PutTtl._make,
    RecordKind.EXPIRE: _leading(Expire),
    RecordKind.CACHE: Cache._make,
    RecordKind.CLAIM: Claim._make,
    RecordKind.ACK: _leading(Ack),
    RecordKind.RELEASE: _leading(Release),
    RecordKind.RETURNED: _leading(Returned),
    RecordKind.EXTEND: Extend._make,
    RecordKind.SESSION_GRANT: SessionGrant._make,
    RecordKind.SESSION_END: SessionEnd._make,
    RecordKind.PUT_SESSION: PutSession._make,
    RecordKind.SNAPSHOT_META: SnapshotMeta._make,
    RecordKind.SNAPSHOT_ENTRIES: SnapshotEntries.from_fields,
    RecordKind.SNAPSHOT_EXPIRING: SnapshotExpiring.from_fields,
    RecordKind.SNAPSHOT_CACHES: SnapshotCaches.from_fields,
    RecordKind.SNAPSHOT_CLAIMS: SnapshotClaims.from_fields,
    RecordKind.SNAPSHOT_HISTORY: SnapshotHistory.from_fields,
    RecordKind.SNAPSHOT_SESSIONS: SnapshotSessions.from_fields,
    RecordKind.SNAPSHOT_ATTACHED: SnapshotAttached.from_fields,
    RecordKind.SNAPSHOT_ITEMS: SnapshotItems.from_fields,
    RecordKind.SNAPSHOT_QUEUES: SnapshotQueues.from_fields,
    RecordKind.PUT_ITEM: PutItem._make,
    RecordKind.QUEUE_CONFIG: QueueConfig._make,
    RecordKind.QUOTA: QuotaRecord._make,
    RecordKind.SNAPSHOT_QUOTAS: SnapshotQuotas.from_fields,
}


def decode_record(kind: int, payload: bytes) -> LogRecord:
    """The typed record of a logged (kind, payload). Raises ReplayError for a kind this version
    does not know, and ValueError, TypeError, KeyError or IndexError for a payload of the wrong
    shape."""
    if kind == RecordKind.SNAPSHOT_COLUMNS:
        return SnapshotColumns.from_payload(payload)
    fields = decode(payload)
    build = _DECODERS.get(kind)
    if build is None:
        raise ReplayError(
            f"record kind {kind} is unknown; was this database written by a newer ProntoDB?"
        )
    return build(fields)
