"""Engine operations one by one: results, metadata, revisions, records and refusals."""

from __future__ import annotations

import zlib
from typing import Any, TypedDict

import pytest

from prontodb.broker.engine import (
    ChangeKind,
    Compare,
    Engine,
    EngineLimits,
    OpKind,
    RecordKind,
    ReplayError,
    Target,
    TxnOp,
)
from prontodb.protocol import ErrorCode, ProntoError


class Who(TypedDict):
    writer: str
    now: float


W = Who(writer="alice", now=1000.0)


def code_of(excinfo: pytest.ExceptionInfo[ProntoError]) -> ErrorCode:
    return excinfo.value.code


def test_set_then_get_carries_etcd_style_metadata() -> None:
    e = Engine()
    first = e.set("queue.task_1", "pending", writer="orchestrator", now=10.0)
    assert first.result.value == "pending"
    assert (first.result.create_rev, first.result.mod_rev, first.result.version) == (1, 1, 1)
    e.set("other", 1, **W)
    second = e.set("queue.task_1", "claimed", writer="worker1", now=11.5)
    entry = e.get("queue.task_1")
    assert entry is not None
    assert entry is second.result
    assert (entry.value, entry.create_rev, entry.mod_rev, entry.version) == ("claimed", 1, 3, 2)
    assert (entry.writer, entry.time) == ("worker1", 11.5)
    assert e.revision == 3
    assert entry.meta()["writer"] == "worker1"


def test_each_write_returns_one_record_and_one_change() -> None:
    e = Engine()
    applied = e.set("a", "x", **W)
    assert [kind for kind, _ in applied.records] == [RecordKind.PUT]
    assert [(c.revision, c.kind, c.key) for c in applied.changes] == [(1, ChangeKind.PUT, "a")]
    deleted = e.delete("a", **W)
    assert deleted.result is True
    assert [kind for kind, _ in deleted.records] == [RecordKind.DELETE]
    assert deleted.changes[0].kind is ChangeKind.DELETE
    assert deleted.changes[0].entry is None


def test_deleting_a_missing_key_changes_nothing() -> None:
    e = Engine()
    applied = e.delete("nothing.here", **W)
    assert (applied.result, applied.records, applied.changes, e.revision) == (False, [], [], 0)


def test_recreated_key_gets_a_new_create_revision_and_version() -> None:
    e = Engine()
    e.set("k", 1, **W)
    e.set("k", 2, **W)
    e.delete("k", **W)
    entry = e.set("k", 3, **W).result
    assert (entry.create_rev, entry.mod_rev, entry.version) == (4, 4, 1)


@pytest.mark.parametrize(
    "value",
    ["text", b"\x00bytes", 0, -(2**63), 2**64 - 1, 1.5, True, [1, "a", None], {"a": {"b": [1.0]}}],
)
def test_storable_values_round_trip(value: Any) -> None:
    e = Engine()
    e.set("v", value, **W)
    entry = e.get("v")
    assert entry is not None
    assert entry.value == value
    assert type(entry.value) is type(value)


@pytest.mark.parametrize("value", [None, {1: "a"}, object(), 2**64, iter(()), {"a": {1, 2}}])
def test_unstorable_values_are_bad_requests(value: Any) -> None:
    e = Engine()
    with pytest.raises(ProntoError) as excinfo:
        e.set("v", value, **W)
    assert code_of(excinfo) is ErrorCode.BAD_REQUEST
    assert e.revision == 0


def test_value_size_and_depth_are_bounded() -> None:
    e = Engine(EngineLimits(max_value_size=100, max_value_depth=3))
    e.set("ok", "x" * 90, **W)
    with pytest.raises(ProntoError) as excinfo:
        e.set("big", "x" * 101, **W)
    assert code_of(excinfo) is ErrorCode.TOO_LARGE
    e.set("nest", [[["deep enough"]]], **W)
    with pytest.raises(ProntoError) as excinfo:
        e.set("nest", [[[["too deep"]]]], **W)
    assert code_of(excinfo) is ErrorCode.TOO_LARGE  # a bound, like the size
    assert e.get("nest") is not None
    assert e.revision == 2


def test_default_limit_takes_a_one_mebibyte_value() -> None:
    e = Engine()
    e.set("blob", b"\xff" * ((1 << 20) - 5), **W)
    with pytest.raises(ProntoError) as excinfo:
        e.set("blob", b"\xff" * (1 << 20), **W)
    assert code_of(excinfo) is ErrorCode.TOO_LARGE


@pytest.mark.parametrize("key", ["", ".a", "a.", "a..b", "a b", "a/b", "ключ", "a*", 5, None])
def test_bad_keys_are_refused_everywhere(key: Any) -> None:
    e = Engine()
    for call in (
        lambda: e.set(key, 1, **W),
        lambda: e.get(key),
        lambda: e.delete(key, **W),
        lambda: e.incr(key, 1, **W),
    ):
        with pytest.raises(ProntoError) as excinfo:
            call()
        assert code_of(excinfo) is ErrorCode.BAD_KEY


def test_key_length_is_bounded() -> None:
    e = Engine(EngineLimits(max_key_len=8))
    e.set("a2345678", 1, **W)
    with pytest.raises(ProntoError) as excinfo:
        e.set("a23456789", 1, **W)
    assert code_of(excinfo) is ErrorCode.BAD_KEY


def test_if_absent_sets_once() -> None:
    e = Engine()
    e.set("lock", "worker1", if_absent=True, **W)
    with pytest.raises(ProntoError) as excinfo:
        e.set("lock", "worker2", if_absent=True, **W)
    assert code_of(excinfo) is ErrorCode.COMPARE_FAILED
    assert excinfo.value.details == {"key": "lock", "mod_rev": 1}
    entry = e.get("lock")
    assert entry is not None
    assert entry.value == "worker1"
    assert e.revision == 1


def test_if_rev_compares_the_modify_revision_and_zero_means_absent() -> None:
    e = Engine()
    e.set("cfg", "v1", if_rev=0, **W)
    with pytest.raises(ProntoError):
        e.set("cfg", "v2", if_rev=0, **W)
    e.set("cfg", "v2", if_rev=1, **W)
    with pytest.raises(ProntoError):
        e.set("cfg", "v3", if_rev=1, **W)
    with pytest.raises(ProntoError):
        e.delete("cfg", if_rev=1, **W)
    assert e.delete("cfg", if_rev=2, **W).result is True


def test_compare_and_set_is_type_strict() -> None:
    e = Engine()
    e.set("n", 1, **W)
    for wrong in (1.0, True, "1"):
        with pytest.raises(ProntoError) as excinfo:
            e.set("n", 2, if_value=wrong, **W)
        assert code_of(excinfo) is ErrorCode.COMPARE_FAILED
    e.set("n", 2, if_value=1, **W)
    e.set("doc", {"a": [1, 2]}, **W)
    e.set("doc", {"a": [1, 3]}, if_value={"a": [1, 2]}, **W)
    with pytest.raises(ProntoError):
        e.set("missing", 1, if_value=None, **W)


def test_incr_counts_from_zero_and_keeps_integers() -> None:
    e = Engine()
    assert e.incr("workflow.completed", 1, **W).result == 1
    assert e.incr("workflow.completed", 5, **W).result == 6
    assert e.incr("workflow.completed", -10, **W).result == -4
    assert e.decr("workflow.completed", 2, **W).result == -6
    entry = e.get("workflow.completed")
    assert entry is not None
    assert (entry.value, entry.version) == (-6, 4)
    with pytest.raises(ProntoError) as excinfo:
        e.decr("workflow.completed", 1.5, **W)  # type: ignore[arg-type]
    assert code_of(excinfo) is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("value", ["12", 1.0, True, [1], b"1"])
def test_incr_of_a_non_integer_is_wrong_type_and_changes_nothing(value: Any) -> None:
    e = Engine()
    e.set("k", value, **W)
    with pytest.raises(ProntoError) as excinfo:
        e.incr("k", 1, **W)
    assert code_of(excinfo) is ErrorCode.WRONG_TYPE
    entry = e.get("k")
    assert entry is not None
    assert entry.value == value
    assert e.revision == 1


def test_incr_refuses_to_overflow_and_bad_steps() -> None:
    e = Engine()
    e.set("k", 2**63 - 2, **W)
    assert e.incr("k", 1, **W).result == 2**63 - 1
    with pytest.raises(ProntoError) as excinfo:
        e.incr("k", 1, **W)
    assert code_of(excinfo) is ErrorCode.OUT_OF_RANGE
    for step in (1.5, True, "1"):
        with pytest.raises(ProntoError) as excinfo:
            e.incr("k", step, **W)  # type: ignore[arg-type]
        assert code_of(excinfo) is ErrorCode.BAD_REQUEST


# -- transactions ----------------------------------------------------------------------------


def allocation_txn(e: Engine, want: int) -> Any:
    """The seed's resource allocation (section 3) as one transaction."""
    pool = e.get("pools.cpu_cores")
    assert pool is not None
    return e.txn(
        [
            Compare("pools.cpu_cores", Target.MOD_REV, "==", pool.mod_rev),
            Compare("pools.cpu_cores", Target.VALUE, ">=", want),
        ],
        [
            TxnOp(OpKind.INCR, "pools.cpu_cores", by=-want),
            TxnOp(OpKind.SET, "allocated.worker1.cpu_cores", want),
        ],
        **W,
    )


def test_txn_applies_all_writes_at_one_revision() -> None:
    e = Engine()
    e.set("pools.cpu_cores", 8, **W)
    applied = allocation_txn(e, 2)
    assert applied.result.succeeded
    assert applied.result.results == [6, 2]
    assert applied.result.revision == 2 == e.revision
    assert [k for k, _ in applied.records] == [RecordKind.TXN]
    assert {(c.key, c.revision) for c in applied.changes} == {
        ("pools.cpu_cores", 2),
        ("allocated.worker1.cpu_cores", 2),
    }


def test_failed_txn_applies_nothing_and_names_the_failed_compares() -> None:
    e = Engine()
    e.set("pools.cpu_cores", 1, **W)
    applied = allocation_txn(e, 2)
    assert not applied.result.succeeded
    assert applied.result.failed == [1]
    assert (applied.records, applied.changes, e.revision) == ([], [], 1)
    assert e.get("allocated.worker1.cpu_cores") is None


def test_txn_operations_see_earlier_ones() -> None:
    e = Engine()
    applied = e.txn(
        [Compare("counter", Target.EXISTS, "==", False)],
        [
            TxnOp(OpKind.INCR, "counter", by=2),
            TxnOp(OpKind.INCR, "counter", by=3),
            TxnOp(OpKind.GET, "counter"),
            TxnOp(OpKind.SET, "tmp", "x"),
            TxnOp(OpKind.DELETE, "tmp"),
            TxnOp(OpKind.DELETE, "never"),
        ],
        **W,
    )
    got = applied.result.results
    assert got[:2] == [2, 5]
    assert got[2].value == 5
    assert got[3:] == [1, True, False]
    entry = e.get("counter")
    assert entry is not None
    assert (entry.value, entry.version) == (5, 2)
    assert e.get("tmp") is None
    assert [c.key for c in applied.changes] == ["counter"]  # tmp came and went inside the txn


def test_invalid_operation_rolls_back_the_whole_txn() -> None:
    e = Engine()
    e.set("text", "not a number", **W)
    for ops in (
        [TxnOp(OpKind.SET, "a", 1), TxnOp(OpKind.INCR, "text")],
        [TxnOp(OpKind.SET, "a", 1), TxnOp(OpKind.SET, "bad key", 1)],
        [TxnOp(OpKind.SET, "a", 1), TxnOp(OpKind.SET, "b", None)],
    ):
        with pytest.raises(ProntoError):
            e.txn([], ops, **W)
        assert e.get("a") is None
        assert e.revision == 1


def test_read_only_txn_takes_no_revision() -> None:
    e = Engine()
    e.set("a", 1, **W)
    applied = e.txn([Compare("a", Target.VALUE, "==", 1)], [TxnOp(OpKind.GET, "a")], **W)
    assert applied.result.succeeded
    assert (applied.records, e.revision, applied.result.revision) == ([], 1, 1)


def test_txn_size_is_bounded() -> None:
    e = Engine(EngineLimits(max_txn_ops=2))
    with pytest.raises(ProntoError) as excinfo:
        e.txn([], [TxnOp(OpKind.GET, "a")] * 3, **W)
    assert code_of(excinfo) is ErrorCode.TOO_LARGE


@pytest.mark.parametrize(
    ("target", "op", "value", "entry_value", "expected"),
    [
        ("value", "==", "x", "x", True),
        ("value", "!=", "x", None, True),
        ("value", "==", "x", None, False),
        ("value", ">", 1, 2.5, True),
        ("value", "<", "b", "a", True),
        ("value", "<", 5, "a", False),
        ("version", ">=", 1, "x", True),
        ("mod_rev", "==", 0, None, True),
        ("create_rev", "<", 1, None, True),
        ("exists", "==", True, "x", True),
        ("exists", "!=", True, None, True),
    ],
)
def test_compare_semantics(
    target: str, op: str, value: Any, entry_value: Any, expected: bool
) -> None:
    e = Engine()
    if entry_value is not None:
        e.set("k", entry_value, **W)
    compare = Compare.from_wire({"key": "k", "target": target, "op": op, "value": value})
    assert compare.holds(e.get("k")) is expected


@pytest.mark.parametrize(
    "raw",
    [
        "not a map",
        {"target": "value", "value": 1},
        {"key": "k"},
        {"key": "k", "target": "colour", "value": 1},
        {"key": "k", "op": "~=", "value": 1},
        {"key": "k", "target": "exists", "op": "<", "value": True},
        {"key": "k", "target": "exists", "value": 1},
        {"key": "k", "target": "mod_rev", "value": "3"},
    ],
)
def test_malformed_compares_are_bad_requests(raw: Any) -> None:
    with pytest.raises(ProntoError) as excinfo:
        Compare.from_wire(raw)
    assert code_of(excinfo) is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"op": "put", "key": "k"},
        {"op": "set", "key": "k"},
        {"op": "incr", "key": "k", "by": 1.5},
    ],
)
def test_malformed_operations_are_bad_requests(raw: Any) -> None:
    with pytest.raises(ProntoError) as excinfo:
        TxnOp.from_wire(raw)
    assert code_of(excinfo) is ErrorCode.BAD_REQUEST


def test_operations_parse_from_wire_maps() -> None:
    assert TxnOp.from_wire({"op": "incr", "key": "c", "by": -2}) == TxnOp(
        OpKind.INCR, "c", None, -2
    )
    assert TxnOp.from_wire({"op": "set", "key": "c", "value": "v"}) == TxnOp(OpKind.SET, "c", "v")
    assert Compare.from_wire({"key": "c", "value": 3}) == Compare("c", Target.VALUE, "==", 3)


def test_a_change_too_big_for_one_log_record_is_refused_before_it_applies() -> None:
    e = Engine(EngineLimits(max_value_size=1000, max_record_size=2500))
    e.set("a", 1, **W)
    ops = [TxnOp(OpKind.SET, f"blob.{i}", b"x" * 900) for i in range(3)]
    with pytest.raises(ProntoError) as excinfo:
        e.txn([], [TxnOp(OpKind.SET, "a", 2), *ops], **W)
    assert code_of(excinfo) is ErrorCode.TOO_LARGE
    entry = e.get("a")
    assert entry is not None
    assert (entry.value, e.revision, e.keys("blob")) == (1, 1, [])
    with pytest.raises(ProntoError) as excinfo:
        Engine(EngineLimits(max_record_size=100)).set("k", "v" * 100, **W)
    assert code_of(excinfo) is ErrorCode.TOO_LARGE


def test_stored_containers_do_not_alias_the_callers_objects() -> None:
    e = Engine()
    doc: dict[str, Any] = {"status": "pending", "tags": ["a"]}
    e.set("job", doc, **W)
    e.txn([], [TxnOp(OpKind.SET, "job2", doc)], **W)
    doc["status"] = "done"
    doc["tags"].append("b")
    for key in ("job", "job2"):
        entry = e.get(key)
        assert entry is not None
        assert entry.value == {"status": "pending", "tags": ["a"]}


@pytest.mark.parametrize(("after", "limit"), [(5, None), (None, "3"), (None, -1), (None, True)])
def test_listing_arguments_are_checked(after: Any, limit: Any) -> None:
    with pytest.raises(ProntoError) as excinfo:
        Engine().keys("a", after=after, limit=limit)
    assert code_of(excinfo) is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "record",
    [
        (RecordKind.PUT, b"\x90"),
        (RecordKind.PUT, b"\xc1"),
        (RecordKind.TXN, b"\x94\x01\xa1w\x00\x91\x91\x07"),
        (99, b"\x94\x01\xa1w\x00\x90"),
        (RecordKind.SNAPSHOT_COLUMNS, b"not zlib"),
        # one key, the other six columns empty
        (RecordKind.SNAPSHOT_COLUMNS, zlib.compress(b"\x97\x91\xa1k" + b"\x90" * 6)),
        (RecordKind.SNAPSHOT_COLUMNS, zlib.compress(b"\x97\x91\xa1k")[:-3]),  # cut short
        (RecordKind.SNAPSHOT_META, b"\x93\x04\x00\x00"),  # a format from the future
    ],
)
def test_records_that_cannot_apply_raise_replay_error(record: tuple[int, bytes]) -> None:
    with pytest.raises(ReplayError):
        Engine.restore([record])


def test_replayed_revisions_must_increase() -> None:
    e = Engine()
    records = e.set("a", 1, **W).records + e.set("b", 1, **W).records
    with pytest.raises(ReplayError, match="does not follow"):
        Engine.restore(records + records[:1])
