"""Segment-aware prefixes, sorted listing and paging."""

from __future__ import annotations

from typing import TypedDict

import pytest

from prontodb.broker.engine import Engine
from prontodb.protocol import ErrorCode, ProntoError


class Who(TypedDict):
    writer: str
    now: float


W = Who(writer="t", now=0.0)
KEYS = [
    "queue",
    "queue-x",
    "queue.task_1",
    "queue.task_10",
    "queue.task_2",
    "queue.task_2.sub",
    "queue0",
    "queueing.x",
    "agents.worker1.status",
    "agents.worker2.status",
    "a:b.c-d",
]


@pytest.fixture
def engine() -> Engine:
    e = Engine()
    for i, key in enumerate(KEYS):
        e.set(key, i, **W)
    return e


def test_prefix_is_segment_aware(engine: Engine) -> None:
    assert engine.keys("queue") == [
        "queue",
        "queue.task_1",
        "queue.task_10",
        "queue.task_2",
        "queue.task_2.sub",
    ]
    assert engine.keys("queue.task_2") == ["queue.task_2", "queue.task_2.sub"]
    assert engine.keys("queueing") == ["queueing.x"]
    assert engine.keys("queue.task") == []
    assert engine.keys("agents") == ["agents.worker1.status", "agents.worker2.status"]


def test_no_prefix_lists_every_key_sorted(engine: Engine) -> None:
    assert engine.keys() == sorted(KEYS)
    assert [k for k, _ in engine.scan("")] == sorted(KEYS)


def test_scan_pairs_keys_with_entries(engine: Engine) -> None:
    assert [(k, e.value) for k, e in engine.scan("agents")] == [
        ("agents.worker1.status", KEYS.index("agents.worker1.status")),
        ("agents.worker2.status", KEYS.index("agents.worker2.status")),
    ]


@pytest.mark.parametrize("prefix", ["", "queue", "queue.task_2", "agents", "nothing"])
def test_paging_with_after_and_limit_visits_each_key_once(engine: Engine, prefix: str) -> None:
    expected = engine.keys(prefix)
    for page_size in (1, 2, 3, 100):
        seen: list[str] = []
        after = None
        while True:
            page = engine.keys(prefix, after=after, limit=page_size)
            seen.extend(page)
            if len(page) < page_size:
                break
            after = page[-1]
        assert seen == expected
    assert engine.count(prefix) == len(expected)


def test_listing_follows_deletes(engine: Engine) -> None:
    engine.delete("queue", **W)
    engine.delete("queue.task_10", **W)
    assert engine.keys("queue") == ["queue.task_1", "queue.task_2", "queue.task_2.sub"]
    assert engine.count("queue") == 3
    assert engine.count() == len(KEYS) - 2


@pytest.mark.parametrize("prefix", [".", "queue.", "a b", "*"])
def test_bad_prefixes_are_refused(engine: Engine, prefix: str) -> None:
    with pytest.raises(ProntoError) as excinfo:
        engine.keys(prefix)
    assert excinfo.value.code is ErrorCode.BAD_KEY
