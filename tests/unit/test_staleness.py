"""hasql 0.10's staleness names: its imports and constructors, mapped onto pgrouter's lag bounds."""

from __future__ import annotations

import inspect
from datetime import timedelta

import pytest

from pgrouter import staleness
from pgrouter.staleness import (
    BaseStalenessChecker,
    BytesStalenessChecker,
    StalenessPolicy,
    TimeStalenessChecker,
    bounds_of,
)


def test_hasql_readme_usage_runs_unchanged_but_for_the_package() -> None:
    # hasql's README, with "hasql.staleness" spelled "pgrouter.staleness".
    from pgrouter.staleness import (
        BytesStalenessChecker,
        StalenessPolicy,
        TimeStalenessChecker,
    )

    by_bytes = StalenessPolicy(
        BytesStalenessChecker(
            max_lag_bytes=16 * 1024 * 1024,
            max_master_lsn_age=timedelta(seconds=2),
        ),
        grace_period=timedelta(seconds=5),
    )
    by_time = StalenessPolicy(
        TimeStalenessChecker(max_lag=timedelta(seconds=10)),
    )
    assert bounds_of(by_bytes) == (16 * 1024 * 1024, None)
    assert bounds_of(by_time) == (None, 10.0)


def test_positional_arguments_as_hasql_takes_them() -> None:
    assert bounds_of(StalenessPolicy(BytesStalenessChecker(1024))) == (1024, None)
    policy = StalenessPolicy(TimeStalenessChecker(timedelta(milliseconds=250)), None)
    assert bounds_of(policy) == (None, 0.25)


def test_no_policy_means_no_bounds() -> None:
    assert bounds_of(None) == (None, None)


def test_zero_bounds_mean_caught_up() -> None:
    assert bounds_of(StalenessPolicy(BytesStalenessChecker(0))) == (0, None)
    assert bounds_of(StalenessPolicy(TimeStalenessChecker(timedelta(0)))) == (None, 0.0)


def test_names_exported() -> None:
    assert set(staleness.__all__) >= {
        "BaseStalenessChecker",
        "BytesStalenessChecker",
        "StalenessPolicy",
        "TimeStalenessChecker",
    }
    assert issubclass(BytesStalenessChecker, BaseStalenessChecker)
    assert issubclass(TimeStalenessChecker, BaseStalenessChecker)


@pytest.mark.parametrize(
    "name", ["BytesStalenessChecker", "TimeStalenessChecker", "StalenessPolicy"]
)
def test_constructors_match_hasql(name: str) -> None:
    hasql_staleness = pytest.importorskip("hasql.staleness")

    def shape(cls: type) -> list[tuple[str, object, object]]:
        parameters = inspect.signature(cls.__init__).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters]

    assert shape(getattr(staleness, name)) == shape(getattr(hasql_staleness, name))


class OwnChecker(BaseStalenessChecker):
    async def check(self, ctx: object) -> object:
        return None


class TweakedBytes(BytesStalenessChecker):
    async def check(self, ctx: object) -> object:
        return None


@pytest.mark.parametrize("checker", [OwnChecker(), TweakedBytes(10), BaseStalenessChecker()])
def test_a_checker_pgrouter_cannot_map_is_named(checker: BaseStalenessChecker) -> None:
    with pytest.raises(TypeError, match=f"cannot map staleness checker .*{type(checker).__name__}"):
        bounds_of(StalenessPolicy(checker))


def test_a_bare_checker_is_told_to_wrap_it() -> None:
    with pytest.raises(TypeError, match=r"wrap it: StalenessPolicy\(BytesStalenessChecker"):
        bounds_of(BytesStalenessChecker(10))  # type: ignore[arg-type]


def test_hasql_own_policy_is_refused_with_the_right_import() -> None:
    hasql_staleness = pytest.importorskip("hasql.staleness")
    policy = hasql_staleness.StalenessPolicy(hasql_staleness.BytesStalenessChecker(10))
    with pytest.raises(TypeError, match=r"hasql\.staleness\.StalenessPolicy.*pgrouter\.staleness"):
        bounds_of(policy)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: BytesStalenessChecker(-1), ValueError),
        (lambda: BytesStalenessChecker(1.5), TypeError),
        (lambda: BytesStalenessChecker(True), TypeError),
        (lambda: BytesStalenessChecker("1MB"), TypeError),
        (lambda: TimeStalenessChecker(10), TypeError),
        (lambda: TimeStalenessChecker(timedelta(seconds=-1)), ValueError),
        (lambda: BytesStalenessChecker(1, max_master_lsn_age=2), TypeError),
        (lambda: StalenessPolicy(BytesStalenessChecker(1), grace_period=5), TypeError),
        (lambda: StalenessPolicy(BytesStalenessChecker(1), timedelta(seconds=-5)), ValueError),
    ],
)
def test_bad_bounds_fail_at_construction(make: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()  # type: ignore[operator]


def test_settings_pgrouter_does_its_own_way_are_kept() -> None:
    checker = BytesStalenessChecker(1, max_master_lsn_age=timedelta(seconds=7))
    policy = StalenessPolicy(checker, grace_period=timedelta(seconds=3))
    assert policy.checker is checker
    assert policy.grace_period == timedelta(seconds=3)
    assert checker.max_master_lsn_age == timedelta(seconds=7)
    assert bounds_of(policy) == (1, None)
    assert "max_lag_bytes=1" in repr(policy)
