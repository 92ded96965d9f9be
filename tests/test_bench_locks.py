"""bench/locks.py's reading of the contenders' time stamps: what it calls a hand-over, a wait and
a lock taken straight back must be what the section says, or its figures say nothing. Made-up
timelines, no timing."""

from __future__ import annotations

import pytest

from bench.locks import PRONTODB, REDIS_POLL, System, Turn, TurnOutcome, analyse, merge

WINDOW = Turn(System(PRONTODB, "lock"), start=0.0, measure_from=10.0, measure_to=100.0)


def test_a_line_hands_every_release_to_the_next_waiter() -> None:
    # Three contenders, all waiting from 10; each holds for 1 and the next runs 0.5 later.
    outcomes = [
        TurnOutcome(holds=[(10.0, 11.0, 12.0, 12.2)]),
        TurnOutcome(holds=[(10.0, 12.5, 13.5, 13.7)]),
        TurnOutcome(holds=[(10.0, 14.0, 15.0, 15.2)]),
    ]
    result = analyse(WINDOW, outcomes, server_cpu=0.0)
    assert result.cycles == 3
    assert result.handovers == pytest.approx([0.5, 0.5])  # the last release had nobody waiting
    assert result.gaps == pytest.approx([0.5, 0.5])
    assert result.retaken == 0
    assert result.overlaps == 0
    assert result.waits == pytest.approx([1.0, 2.5, 4.0])
    assert result.holds_by_contender == [1, 1, 1]
    assert result.starvation == pytest.approx(4.0 / 2.5)


def test_a_lock_taken_straight_back_is_no_hand_over() -> None:
    # Contender 0 releases at 12 and 14 and takes the lock back each time; contender 1, waiting
    # since 10, gets in at 16: both releases waited until then for their hand-over.
    outcomes = [
        TurnOutcome(holds=[(10.0, 10.0, 12.0, 12.1), (12.1, 12.2, 14.0, 14.1)]),
        TurnOutcome(holds=[(10.0, 16.0, 17.0, 17.1)]),
    ]
    result = analyse(WINDOW, outcomes, server_cpu=0.0)
    assert result.handovers == pytest.approx([2.0, 4.0])
    assert result.gaps == pytest.approx([0.2, 2.0])
    assert result.retaken == 1
    assert result.holds_by_contender == [2, 1]


def test_a_wait_given_up_at_the_end_counts_and_bounds_its_hand_overs() -> None:
    turn = Turn(System(REDIS_POLL, "polling", 0.1), 0.0, 10.0, 20.0)
    outcomes = [
        TurnOutcome(holds=[(10.0, 10.0, 11.0, 11.1)]),
        TurnOutcome(gave_up=(10.5, 20.05), failed_tries=7),
    ]
    result = analyse(turn, outcomes, server_cpu=0.0)
    assert result.waits == pytest.approx([0.0, 9.55])
    assert result.unfinished_waits == 1
    assert result.handovers == pytest.approx([9.05])  # a lower bound: it never got the lock
    assert result.handover_lower_bounds == 1
    assert result.failed_tries == 7


def test_holds_that_overlap_are_found() -> None:
    outcomes = [
        TurnOutcome(holds=[(10.0, 11.0, 13.0, 13.1)]),
        TurnOutcome(holds=[(10.0, 12.0, 14.0, 14.1)]),  # held before the other released
    ]
    assert analyse(WINDOW, outcomes, server_cpu=0.0).overlaps == 1


def test_rounds_merge_into_one_result() -> None:
    first = analyse(WINDOW, [TurnOutcome(holds=[(10.0, 11.0, 12.0, 12.1)])], 1.0)
    second = analyse(WINDOW, [TurnOutcome(holds=[(10.0, 13.0, 14.0, 14.1)])], 2.0)
    total = merge([first, second])
    assert total.cycles == 2
    assert total.seconds == pytest.approx(180.0)
    assert total.waits == pytest.approx([1.0, 3.0])
    assert total.server_cpu == pytest.approx(3.0)
    assert total.round_rates == pytest.approx([1 / 90, 1 / 90])
