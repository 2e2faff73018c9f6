"""cache.HotCounter: requests per object in fixed windows (``delivery.mode = "auto"`` redirects
an object once it is hot), on a clock the test moves; memory bounded by ``entries``."""

from __future__ import annotations

import pytest
from s3_gate import ManualClock

from imgproxy.cache import HotCounter

WINDOW = 10.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000.0)


@pytest.fixture
def hot(clock: ManualClock) -> HotCounter:
    return HotCounter(entries=100, max_window=60, clock=clock)


def hits_at(hot: HotCounter, clock: ManualClock, times: list[float], key: str = "a.jpg",
            window: float = WINDOW) -> list[int]:
    """What ``hit`` answers for requests at ``times`` (seconds after the clock's start)."""
    start, answers = clock.now, []
    for at in times:
        clock.now = start + at
        answers.append(hot.hit("photos", key, window))
    return answers


def test_requests_within_a_window_are_counted(hot: HotCounter, clock: ManualClock) -> None:
    assert hits_at(hot, clock, [0, 1, 5, 9.99]) == [1, 2, 3, 4]


@pytest.mark.parametrize(("last", "count"), [(WINDOW - 0.001, 3), (WINDOW, 1), (WINDOW + 30, 1)])
def test_the_count_restarts_once_the_window_has_passed(hot: HotCounter, clock: ManualClock,
                                                       last: float, count: int) -> None:
    assert hits_at(hot, clock, [0, 5, last])[-1] == count


def test_a_window_is_fixed_from_its_first_request_not_sliding(hot: HotCounter, clock: ManualClock) -> None:
    # The request at 12 is 6 s after the one at 6, but the window that began at 0 ended at 10.
    assert hits_at(hot, clock, [0, 6, 12, 15, 21.99, 22]) == [1, 2, 1, 2, 3, 1]


def test_each_object_has_its_own_window(hot: HotCounter, clock: ManualClock) -> None:
    assert hits_at(hot, clock, [0], key="a.jpg") == [1]
    assert hits_at(hot, clock, [5], key="b.jpg") == [1]
    clock.now += WINDOW - 5  # a's window is over, b's is not
    assert hot.hit("photos", "a.jpg", WINDOW) == 1
    assert hot.hit("photos", "b.jpg", WINDOW) == 2


def test_the_same_key_in_another_source_is_another_object(hot: HotCounter) -> None:
    assert [hot.hit("photos", "a.jpg", WINDOW) for _ in range(3)] == [1, 2, 3]
    assert hot.hit("archive", "a.jpg", WINDOW) == 1


def test_the_window_is_the_callers(hot: HotCounter, clock: ManualClock) -> None:
    # Sources configure their own hot_window: the same counter serves a short and a long one.
    assert hits_at(hot, clock, [0, 1], window=WINDOW) == [1, 2]
    assert hits_at(hot, clock, [2], window=1.5) == [1]


def test_an_entry_left_alone_for_max_window_is_forgotten(hot: HotCounter, clock: ManualClock) -> None:
    hot.hit("photos", "a.jpg", 60)
    clock.now += 59
    assert len(hot) == 1
    clock.now += 1
    assert len(hot) == 0


def test_entries_are_bounded_and_the_least_recently_counted_goes_first(clock: ManualClock) -> None:
    hot = HotCounter(entries=3, max_window=60, clock=clock)
    for key in ("a", "b", "c"):
        hot.hit("photos", key, 60)
    hot.hit("photos", "a", 60)  # a is now the most recently counted
    hot.hit("photos", "d", 60)  # one too many: b, the least recently counted, is dropped
    assert len(hot) == 3
    assert hot.hit("photos", "a", 60) == 3
    assert hot.hit("photos", "b", 60) == 1  # counted afresh


def test_a_thousand_objects_never_hold_more_than_the_bound(clock: ManualClock) -> None:
    hot = HotCounter(entries=50, max_window=60, clock=clock)
    for i in range(1000):
        clock.now += 0.01
        hot.hit("photos", f"k{i}", 60)
        assert len(hot) <= 50
    assert len(hot) == 50
