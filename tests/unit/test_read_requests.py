"""How an acquire's arguments and the caller's context become one read request.

Both faces route with :func:`pgrouter.routing.requests.resolve_read`; these
tests pin down its decisions once, for both.
"""

from __future__ import annotations

import pytest

from pgrouter.pinning import pin, unpin_all, unpinned_replica, use_primary
from pgrouter.routing.consistency import read_your_writes
from pgrouter.routing.reads import ReadRule
from pgrouter.routing.requests import (
    TO_PRIMARY,
    ReadDefaults,
    check_write_arguments,
    resolve_pool_pick,
    resolve_read,
)
from pgrouter.routing.tokens import WriteToken

DEFAULTS = ReadDefaults(fallback_master=True, master_as_replica_weight=0.25, rule=None)
TOKEN = WriteToken(system_identifier=7, timeline=1, lsn=0x1000)


def read(**arguments: object) -> object:
    values: dict[str, object] = {
        "fallback_master": None,
        "master_as_replica_weight": None,
        "max_lag_bytes": None,
        "max_lag_seconds": None,
        "after": None,
    }
    values.update(arguments)
    return resolve_read("main", DEFAULTS, **values)  # type: ignore[arg-type]


def test_a_plain_read_gets_the_managers_own_request_object() -> None:
    assert read() is DEFAULTS.request
    assert DEFAULTS.request.fallback_master is True
    assert DEFAULTS.request.master_as_replica_weight == 0.25
    assert not DEFAULTS.request.to_primary


def test_arguments_override_the_defaults_and_are_checked_by_name() -> None:
    request = read(fallback_master=False, master_as_replica_weight=1.0, max_lag_seconds=2)
    assert (request.fallback_master, request.master_as_replica_weight) == (False, 1.0)  # type: ignore[attr-defined]
    assert request.rule == ReadRule(max_lag_seconds=2.0)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="master_as_replica_weight"):
        read(master_as_replica_weight=1.5)
    with pytest.raises(TypeError, match="fallback_master"):
        read(fallback_master="yes")
    with pytest.raises(ValueError, match="max_lag_bytes"):
        read(max_lag_bytes=-1)
    with pytest.raises(TypeError, match=r"after must be a pgrouter\.WriteToken"):
        read(after="w1.7.1.0/1000")


def test_a_pin_or_use_primary_sends_the_read_to_the_primary() -> None:
    try:
        pin("main", seconds=5)
        assert read() is TO_PRIMARY
        assert read(after=TOKEN) is TO_PRIMARY
        with unpinned_replica("main"):
            assert read() is DEFAULTS.request
        assert resolve_read("other", DEFAULTS, None, None, None, None, None) is DEFAULTS.request
    finally:
        unpin_all()
    with use_primary("main"):
        assert read() is TO_PRIMARY


def test_a_scope_gives_its_last_token_unless_the_read_names_one() -> None:
    other = WriteToken(system_identifier=7, timeline=1, lsn=0x2000)
    with read_your_writes() as scope:
        assert read() is DEFAULTS.request  # nothing written yet
        scope.remember(TOKEN)
        assert read().after == TOKEN  # type: ignore[attr-defined]
        assert read(after=other).after == other  # type: ignore[attr-defined]
        scope.unknown_write = True
        assert read() is TO_PRIMARY


def test_a_write_refuses_read_arguments_by_name() -> None:
    check_write_arguments(None, None, None, None)
    with pytest.raises(ValueError, match="master_as_replica_weight"):
        check_write_arguments(0.5, None, None, None)
    with pytest.raises(ValueError, match="for reads only"):
        check_write_arguments(None, None, None, TOKEN)


def test_get_pool_weighs_the_primary_at_zero_and_follows_pins() -> None:
    request = resolve_pool_pick("main", DEFAULTS, True, None, None, None, None)
    assert (request.to_primary, request.master_as_replica_weight) == (False, 0.0)
    assert resolve_pool_pick("main", DEFAULTS, False, None, None, None, None).to_primary
    with use_primary("main"):
        assert resolve_pool_pick("main", DEFAULTS, True, None, None, None, None).to_primary
