"""pgrouter's blocking psycopg2 pool: the options a caller sets on every connection.

psycopg2 has no waiting pool of its own, so each host of
``pgrouter.sync.psycopg2.PoolManager`` gets a ``BlockingPsycopg2Pool``;
``pool_factory_kwargs`` reach it. ``autocommit`` and ``configure`` are set on
every connection it opens (as psycopg_pool's ``kwargs=``/``configure=`` do),
since autocommit is no libpq option a DSN could carry.
"""

from __future__ import annotations

from typing import Any

import pytest

from pgrouter.sync.psycopg2 import PoolManager
from pgrouter.testing import LocalCluster


def test_autocommit_and_configure_apply_to_every_connection(
    shared_cluster: LocalCluster,
) -> None:
    configured: list[int] = []

    def configure(connection: Any) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SET application_name = 'configured'")
        configured.append(id(connection))

    kwargs = {"minconn": 1, "maxconn": 3, "autocommit": True, "configure": configure}
    with PoolManager(shared_cluster.dsn(), pool_factory_kwargs=kwargs) as pm:
        pm.ready()
        held = [pm.acquire_master() for _ in range(3)]  # the two beyond minconn connect later
        try:
            for connection in held:
                assert connection.autocommit is True
                with connection.cursor() as cursor:
                    cursor.execute("SELECT current_setting('application_name')")
                    assert cursor.fetchone()[0] == "configured"
                    # No transaction is left open by a query in autocommit mode.
                    assert connection.get_transaction_status() == 0
        finally:
            for connection in held:
                pm.release(connection)
        assert len(set(configured)) >= 3


def test_bad_pool_options_are_refused_by_name(shared_cluster: LocalCluster) -> None:
    for kwargs, named in (
        ({"autocommit": "yes"}, "autocommit"),
        ({"configure": 42}, "configure"),
        ({"no_such_option": 1}, "no_such_option"),
    ):
        # Refused at the start: `with` waits for the first checks, which meet it.
        with (
            pytest.raises(TypeError, match=named),
            PoolManager(shared_cluster.dsn(), pool_factory_kwargs=kwargs),
        ):
            pytest.fail("a refused pool option must not get this far")


def test_a_failing_configure_is_the_acquires_error_and_leaves_no_connection(
    shared_cluster: LocalCluster,
) -> None:
    def configure(connection: Any) -> None:
        raise RuntimeError("configure refused this connection")

    kwargs = {"minconn": 0, "maxconn": 2, "configure": configure}
    with PoolManager(shared_cluster.dsn(), pool_factory_kwargs=kwargs, acquire_timeout=2) as pm:
        pm.wait_first_checks(timeout=10)
        with pytest.raises(RuntimeError, match="configure refused"):
            pm.acquire_master()
        pool = pm.get_pool(read_only=False)
        assert pool is not None
        assert pool.in_use == 0
