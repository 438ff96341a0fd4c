"""wal_history.py: lag in seconds from the primary's positions over time."""

from __future__ import annotations

import pytest

from pgrouter.wal_history import WalHistory


def test_lag_is_how_long_ago_the_primary_went_past_the_replica() -> None:
    history = WalHistory()
    for at, position in [(0.0, 100), (1.0, 200), (2.0, 300), (3.0, 300), (4.0, 400)]:
        history.record(at, position)
    assert history.lag_seconds(400, at=4.5) == 0.0  # caught up
    assert history.lag_seconds(300, at=4.5) == pytest.approx(0.5)  # passed 300 at 4.0
    assert history.lag_seconds(150, at=4.5) == pytest.approx(3.5)  # passed 150 at 1.0
    assert history.lag_seconds(50, at=4.5) == pytest.approx(4.5)  # older than all kept
    assert history.last_seen == 4.0


def test_an_idle_primary_is_no_lag() -> None:
    history = WalHistory()
    for second in range(30):
        history.record(float(second), 500)
    assert len(history) == 1
    assert history.lag_seconds(500, at=30.0) == 0.0


def test_a_position_going_back_starts_anew_and_size_is_bounded() -> None:
    history = WalHistory(size=3)
    for at, position in [(0.0, 100), (1.0, 200), (2.0, 300), (3.0, 400)]:
        history.record(at, position)
    assert len(history) == 3
    history.record(4.0, 50)
    assert len(history) == 1 and history.latest == (4.0, 50)
    assert WalHistory().lag_seconds(1, at=1.0) is None


def test_position_at_a_time_is_the_last_seen_by_then() -> None:
    history = WalHistory()
    for at, position in [(1.0, 100), (2.0, 200), (3.0, 300)]:
        history.record(at, position)
    assert history.position_at(2.5) == 200
    assert history.position_at(3.0) == 300
    assert history.position_at(0.5) == 100  # before the oldest kept: the oldest
    assert WalHistory().position_at(1.0) is None
