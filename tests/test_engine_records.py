"""The bytes of every record kind, pinned: docs/FORMAT.md's "Record payloads" as the engine writes
them, so that no change to how records are built can change a database file unnoticed."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import pytest

from prontodb.broker.engine import Applied, Engine, OpKind, Record, RecordKind, ReplayError, TxnOp
from prontodb.broker.engine._history import encode_batch
from prontodb.broker.engine._records import SnapshotEntries, SnapshotHistory, pack

W: dict[str, Any] = {"writer": "w", "now": 100.0}

# Each step of one engine's life, with the records it writes: (kind, payload in hex).
STEPS: list[tuple[str, Callable[[Engine], Applied[Any]], list[tuple[int, str]]]] = [
    (
        "set",
        lambda e: e.set("a", "x", **W),
        [(RecordKind.PUT, "9701a177cb4059000000000000a1610101a178")],
    ),
    (
        "set with a ttl",
        lambda e: e.set("b", [1, b"\x00"], writer="w", now=100.0, ttl=5),
        [(RecordKind.PUT_TTL, "9802a177cb4059000000000000a1620201cb405a4000000000009201c40100")],
    ),
    (
        "delete",
        lambda e: e.delete("b", **W),
        [(RecordKind.DELETE, "9403a177cb4059000000000000a162")],
    ),
    (
        "txn",
        lambda e: e.txn([], [TxnOp(OpKind.SET, "c", value=1), TxnOp(OpKind.DELETE, "a")], **W),
        [(RecordKind.TXN, "9404a177cb4059000000000000929501a1630401019202a161")],
    ),
    ("cache", lambda e: e.create_cache("s", 2.5), [(RecordKind.CACHE, "92a173cb4004000000000000")]),
    (
        "txn with a deadline",
        lambda e: e.txn([], [TxnOp(OpKind.SET, "s.k", value={"m": None})], **W),
        [
            (
                RecordKind.TXN,
                "9405a177cb4059000000000000919603a3732e6b0501cb4059a0000000000081a16dc0",
            )
        ],
    ),
    (
        "expire",
        lambda e: e.expire_due(103.0),
        [(RecordKind.EXPIRE, "9306cb4059c0000000000091a3732e6b")],
    ),
    ("drop cache", lambda e: e.drop_cache("s"), [(RecordKind.CACHE, "92a173c0")]),
    (
        "claim",
        lambda e: e.claim("", holder="h", now=104.0, lease=10, bound=7),
        [(RecordKind.CLAIM, "9807a168cb405a000000000000a16301cb405c8000000000000107")],
    ),
    (
        "extend",
        lambda e: e.extend("c", 1, 20, now=105.0),
        [(RecordKind.EXTEND, "93a16301cb405f400000000000")],
    ),
    (
        "release",
        lambda e: e.release("c", 1, writer="h", now=106.0, delay=1),
        [(RecordKind.RELEASE, "9508a168cb405a800000000000a163cb405ac00000000000")],
    ),
    ("a delay ends", lambda e: e.claims_due(108.0), []),
    (
        "claim again",
        lambda e: e.claim("", holder="h", now=108.0, lease=1),
        [(RecordKind.CLAIM, "9809a168cb405b000000000000a16302cb405b40000000000002c0")],
    ),
    (
        "a lease ends",
        lambda e: e.claims_due(110.0),
        [(RecordKind.RETURNED, "930acb405b80000000000091a163")],
    ),
    (
        "claim to ack",
        lambda e: e.claim("", holder="h", now=110.0, lease=1),
        [(RecordKind.CLAIM, "980ba168cb405b800000000000a16303cb405bc0000000000003c0")],
    ),
    (
        "ack",
        lambda e: e.ack("c", 3, writer="h", now=110.5),
        [(RecordKind.ACK, "940ca168cb405ba00000000000a163")],
    ),
]

SNAPSHOT_HEAD = [
    (RecordKind.SNAPSHOT_META, "93030f02"),
    (
        RecordKind.SNAPSHOT_COLUMNS,
        "9792a3712e6aa17a920101920e0d920e0d92010192a177a17792cb405bc00000000000cb405bc00000000000",
    ),
    (
        RecordKind.SNAPSHOT_EXPIRING,
        "9292a3712e6acb405c00000000000092a17acb406a600000000000",
    ),
    (RecordKind.SNAPSHOT_CACHES, "81a171cb3ff0000000000000"),
    (
        RecordKind.SNAPSHOT_CLAIMS,
        "94049195a3712e6aa16804cb405d000000000000c09192a3712e6a0190",
    ),
]


def hexed(records: list[Record]) -> list[tuple[int, str]]:
    """Each record's payload in hex; SNAPSHOT_COLUMNS' once inflated (what zlib's bytes are may
    vary with its version; the msgpack inside may not)."""
    return [
        (kind, (zlib.decompress(payload) if kind == RecordKind.SNAPSHOT_COLUMNS else payload).hex())
        for kind, payload in records
    ]


def lived() -> tuple[Engine, list[Record]]:
    engine = Engine()
    records: list[Record] = []
    for name, step, expected in STEPS:
        written = step(engine).records
        assert hexed(written) == expected, name
        records += written
    engine.set("z", 1, writer="w", now=111.0, ttl=100)
    engine.create_cache("q", 1.0)
    engine.set("q.j", 1, writer="w", now=111.0)
    engine.claim("q", holder="h", now=111.0, lease=5)
    return engine, records


def state(engine: Engine) -> tuple[Any, ...]:
    return (
        engine.statistics(),
        engine.scan(),
        engine.claims(),
        engine.caches(),
        engine.history.first,
        engine.history.batches(),
    )


def test_every_change_record_has_the_bytes_format_md_gives() -> None:
    lived()


def test_a_snapshot_has_the_bytes_format_md_gives_and_replays_to_the_same_state() -> None:
    engine, _ = lived()
    snapshot = list(engine.snapshot())
    assert hexed(snapshot[: len(SNAPSHOT_HEAD)]) == SNAPSHOT_HEAD
    assert [kind for kind, _ in snapshot[len(SNAPSHOT_HEAD) :]] == [RecordKind.SNAPSHOT_HISTORY]
    assert state(Engine.restore(snapshot)) == state(engine)


def test_the_history_refers_to_live_entries_and_shares_them_when_restored() -> None:
    engine, _ = lived()
    engine.set("q.j", 7, **W)
    engine.set("q.j", 8, **W)  # the history's first entry of q.j is written out, the second not
    history = [p for kind, p in engine.snapshot() if kind == RecordKind.SNAPSHOT_HISTORY]
    assert "94a3707574a3712e6aa177c3" in history[0].hex()  # [put, q.j, w, true]
    restored = Engine.restore(engine.snapshot())
    assert state(restored) == state(engine)
    last = restored.history.batches()[-1].changes[0]
    assert last.entry is restored.get("q.j")


def test_format_1_and_2_snapshots_still_open() -> None:
    # Format 1: entries as SNAPSHOT_ENTRIES, every history entry written out; format 2: the
    # same entries, history entries that are live ones by reference; 3: entries as columns.
    engine, _ = lived()
    engine.set("q.j", 7, **W)
    new = list(engine.snapshot())
    assert new[0] == (RecordKind.SNAPSHOT_META, bytes.fromhex("93031002"))
    assert [k for k, _ in new].count(RecordKind.SNAPSHOT_ENTRIES) == 0
    entries = SnapshotEntries(engine.scan()).encode()
    sections = [(k, p) for k, p in new[1:] if k not in (21, RecordKind.SNAPSHOT_COLUMNS)]
    batches = engine.history.batches()
    first = engine.history.first
    spelt_out = SnapshotHistory.join(first, [pack(encode_batch(b)) for b in batches])
    by_reference = SnapshotHistory.join(
        first, [pack(encode_batch(b, dict(engine.scan()))) for b in batches]
    )
    assert by_reference != spelt_out
    for format_, history in ((1, spelt_out), (2, by_reference)):
        meta = (RecordKind.SNAPSHOT_META, pack([format_, engine.revision, engine.count()]))
        old = [meta, entries, *sections, history]
        assert state(Engine.restore(old)) == state(engine), format_


def test_a_reference_to_a_live_entry_the_snapshot_lacks_is_refused() -> None:
    chunk = SnapshotHistory.join(1, [pack([1, 100.0, [["put", "gone", "w", True]]])])
    with pytest.raises(ReplayError, match="gone"):
        Engine.restore([(RecordKind.SNAPSHOT_META, bytes.fromhex("93020100")), chunk])


def test_the_log_replays_to_the_same_state() -> None:
    engine = Engine()
    records: list[Record] = []
    for _, step, _ in STEPS:
        records += step(engine).records
    assert state(Engine.restore(records)) == state(engine)


@pytest.mark.parametrize(
    "payload",
    [
        "9601a177cb4059000000000000a1610101",  # a PUT without its value
        "9801a177cb4059000000000000a1610101a178c0",  # a PUT with a field too many
    ],
)
def test_a_put_of_the_wrong_length_is_malformed(payload: str) -> None:
    with pytest.raises(ReplayError, match="malformed"):
        Engine.restore([(RecordKind.PUT, bytes.fromhex(payload))])


def test_an_unknown_kind_names_a_newer_prontodb() -> None:
    with pytest.raises(ReplayError, match="newer ProntoDB"):
        Engine.restore([(15, bytes.fromhex("9401a177cb405900000000000090"))])


# Sessions (kinds 12 to 14, the TXN tag 4, snapshot sections 22 and 23), in an engine of their own
# so that the steps above keep their bytes: records written before sessions existed replay as ever.
SESSION_STEPS: list[tuple[str, Callable[[Engine], Applied[Any]], list[tuple[int, str]]]] = [
    (
        "grant",
        lambda e: e.session_grant(10, owner="o", now=100.0),
        [(RecordKind.SESSION_GRANT, "9401a16fcb4024000000000000cb4059000000000000")],
    ),
    (
        "grant another",
        lambda e: e.session_grant(2.5, owner="o", now=100.0),
        [(RecordKind.SESSION_GRANT, "9402a16fcb4004000000000000cb4059000000000000")],
    ),
    (
        "set with a session",
        lambda e: e.set("a", "x", session=1, **W),
        [(RecordKind.PUT_SESSION, "9801a177cb4059000000000000a161010101a178")],
    ),
    (
        "txn put with a session",
        lambda e: e.txn([], [TxnOp(OpKind.SET, "b", 1, session=1)], **W),
        [(RecordKind.TXN, "9402a177cb4059000000000000919604a16202010101")],
    ),
    ("keep-alive", lambda e: e.session_keepalive(1, now=101.0), []),
    (
        "revoke",
        lambda e: e.session_revoke(1, writer="w", now=102.0),
        [(RecordKind.SESSION_END, "9603a177cb405980000000000001c292a161a162")],
    ),
    (
        "a session without keys expires",
        lambda e: e.expire_due(103.0),
        [(RecordKind.SESSION_END, "96c0a0cb4059c0000000000002c390")],
    ),
    (
        "grant a third",
        lambda e: e.session_grant(5, owner="o", now=103.0),
        [(RecordKind.SESSION_GRANT, "9403a16fcb4014000000000000cb4059c00000000000")],
    ),
    (
        "set with the third",
        lambda e: e.set("c", 1, session=3, **W),
        [(RecordKind.PUT_SESSION, "9804a177cb4059000000000000a16304010301")],
    ),
]

SESSION_SNAPSHOT = [
    (RecordKind.SNAPSHOT_META, "93030502"),
    (
        RecordKind.SNAPSHOT_COLUMNS,
        "9792a163a16492010292040592040592010192a177a17792cb4059000000000000cb405a000000000000",
    ),
    (RecordKind.SNAPSHOT_SESSIONS, "9205929303a16fcb40140000000000009304a170cb401c000000000000"),
    (RecordKind.SNAPSHOT_ATTACHED, "9292a1630392a16404"),
]


def lived_sessions() -> tuple[Engine, list[Record]]:
    engine = Engine()
    records: list[Record] = []
    for name, step, expected in SESSION_STEPS:
        written = step(engine).records
        assert hexed(written) == expected, name
        records += written
    records += engine.session_grant(7, owner="p", now=104.0).records
    records += engine.set("d", 2, session=4, writer="w", now=104.0).records
    return engine, records


def session_state(engine: Engine) -> tuple[Any, ...]:
    return (
        *state(engine),
        [(i.id, i.owner, i.ttl, i.keys) for i in engine.sessions()],
        engine.next_session,
    )


def test_every_session_record_has_the_bytes_format_md_gives_and_replays() -> None:
    engine, records = lived_sessions()
    assert session_state(Engine.restore(records)) == session_state(engine)


def test_a_snapshot_with_sessions_has_the_bytes_format_md_gives_and_replays() -> None:
    engine, _ = lived_sessions()
    snapshot = list(engine.snapshot())
    assert hexed(snapshot[: len(SESSION_SNAPSHOT)]) == SESSION_SNAPSHOT
    assert [kind for kind, _ in snapshot[len(SESSION_SNAPSHOT) :]] == [RecordKind.SNAPSHOT_HISTORY]
    assert session_state(Engine.restore(snapshot)) == session_state(engine)


def test_the_history_keeps_eight_fields_for_a_key_without_a_session() -> None:
    engine, _ = lived_sessions()
    engine.set("plain", 1, **W)
    # Written again, so that the history's entries are not the live ones (those go by reference).
    engine.set("d", 3, session=4, **W)
    engine.set("plain", 2, **W)
    history = [
        payload for kind, payload in engine.snapshot() if kind == RecordKind.SNAPSHOT_HISTORY
    ]
    attached = "9902050501a177cb405a00000000000001c004"  # d: nine fields, the session last
    plain = "9801060601a177cb405900000000000001c0"  # eight, as before sessions
    assert attached in history[0].hex()
    assert plain in history[0].hex()


@pytest.mark.parametrize(
    ("kind", "payload", "error"),
    [
        # a key attached to session 1, never granted
        (RecordKind.PUT_SESSION, "9801a177cb4059000000000000a161010101a178", "not live"),
        # session 1 ends, never granted
        (RecordKind.SESSION_END, "96c0a0cb4059c0000000000001c390", "not live"),
        # a grant of session 0 (ids start at 1)
        (RecordKind.SESSION_GRANT, "9400a16fcb4024000000000000cb4059000000000000", "malformed"),
        # session 3's end has keys but no revision (after grants 1 to 3)
        (RecordKind.SESSION_END, "96c0a0cb4059c0000000000003c391a161", "no revision"),
    ],
)
def test_session_records_that_do_not_fit_are_refused(kind: int, payload: str, error: str) -> None:
    grants = [Engine().session_grant(1, owner="o", now=1.0).records[0]]
    records = [(kind, bytes.fromhex(payload))]
    if "no revision" in error:
        grant = Engine()
        grants = [grant.session_grant(1, owner="o", now=1.0).records[0] for _ in range(3)]
        records = grants + records
    with pytest.raises(ReplayError, match=error):
        Engine.restore(records)


def test_a_grant_that_reuses_an_id_is_refused() -> None:
    grant = Engine().session_grant(1, owner="o", now=1.0).records[0]
    with pytest.raises(ReplayError, match="malformed"):
        Engine.restore([grant, grant])
