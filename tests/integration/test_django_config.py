"""pgrouter.django's settings helpers and checks, without a cluster: populate_replicas(),
database_set(), the sets found in DATABASES, the PGROUTER_* settings, and the carried form
(cookie and task headers) read back strictly.

No server is contacted: building the sets does not start their monitors.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("django")

from pgrouter.django import ConfigError, database_set, populate_replicas
from pgrouter.django.config import router_settings
from pgrouter.django.sets import SetRegistry
from pgrouter.django.state import carried_in, encode
from pgrouter.routing.tokens import WriteToken

PG = "django.db.backends.postgresql"


def master(host: str = "db1", **extra: Any) -> dict[str, Any]:
    return {"ENGINE": PG, "NAME": "app", "USER": "u", "PASSWORD": "s3cret", "HOST": host, **extra}


def settings(**values: Any) -> Any:
    return SimpleNamespace(**values)


def test_populate_replicas_names_aliases_as_pindb() -> None:
    databases = populate_replicas(
        {"main": master(PORT="5432", TEST={"NAME": "t"}), "other": master("db9")},
        {"main": [{"HOST": "db2"}, {"HOST": "db3", "PORT": "6432"}]},
    )
    assert list(databases) == ["main", "other", "main-1", "main-2", "default"]
    assert databases["main-1"]["HOST"] == "db2" and databases["main-1"]["PORT"] == "5432"
    assert databases["main-2"]["PORT"] == "6432"
    assert databases["main-1"]["TEST"] == {"MIRROR": "main"}
    assert databases["main"]["TEST"] == {"NAME": "t"}
    assert "PGROUTER_SET" not in databases["other"]  # unmanaged: passed through
    # `default` is one more name of the first set's master host.
    assert databases["default"]["HOST"] == "db1"
    sets = SetRegistry(databases, router_settings(settings()))
    assert sets.sets["main"].aliases == ("main", "main-1", "main-2")
    assert sets.member("default") == (sets.sets["main"], 0)
    assert sets.member("other") is None
    assert [host.port for host in sets.sets["main"].watch.hosts] == [5432, 5432, 6432]
    assert not sets.sets["main"].watch.started
    with pytest.raises(ConfigError, match="'missing'"):
        sets.member("missing")


def test_populate_replicas_refuses_bad_sets_by_name() -> None:
    with pytest.raises(ConfigError, match="'ghost' has no master"):
        populate_replicas({"main": master()}, {"ghost": []})
    with pytest.raises(ConfigError, match="'main': its replicas must be a list"):
        populate_replicas({"main": master()}, {"main": {"HOST": "db2"}})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="replica 1 must be a dict"):
        populate_replicas({"main": master()}, {"main": ["db2"]})  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="'main-1' is also a master"):
        populate_replicas({"main": master(), "main-1": master()}, {"main": [{"HOST": "db2"}]})
    with pytest.raises(ConfigError, match="PostgreSQL ENGINE"):
        populate_replicas({"main": {"ENGINE": "django.db.backends.sqlite3"}}, {"main": []})
    with pytest.raises(ConfigError, match="no database set and no 'default'"):
        populate_replicas({"main": master()}, {})
    with pytest.raises(ConfigError, match="needs a master named 'default'"):
        populate_replicas({"main": master()}, {"main": []}, unmanaged_default=True)
    with pytest.raises(ConfigError, match="non-empty dict"):
        populate_replicas({}, {})
    plain = populate_replicas({"default": master(), "main": master()}, {"main": []}, True)
    assert "PGROUTER_SET" not in plain["default"]


def test_database_set_from_a_multi_host_dsn() -> None:
    databases = database_set(
        "default",
        "postgresql://u:s3cret@h1:5432,h2:5433/app?sslmode=prefer",
        CONN_MAX_AGE=60,
        OPTIONS={"application_name": "shop"},
    )
    assert list(databases) == ["default", "default-1"]
    second = databases["default-1"]
    assert (second["HOST"], second["PORT"], second["NAME"], second["USER"]) == (
        "h2",
        "5433",
        "app",
        "u",
    )
    assert second["OPTIONS"] == {"sslmode": "prefer", "application_name": "shop"}
    assert second["CONN_MAX_AGE"] == 60 and second["TEST"]["MIRROR"] == "default"
    sets = SetRegistry(databases, router_settings(settings()))
    watch = sets.sets["default"].watch
    assert [host.address for host in watch.hosts] == ["h1:5432", "h2:5433"]
    assert dict(watch.hosts[0].options) == {"sslmode": "prefer"}
    assert "s3cret" not in repr(watch) + repr(watch.hosts)


def test_database_set_errors_name_the_part_never_the_password() -> None:
    with pytest.raises(ConfigError) as error:
        database_set("default", "postgresql://u:s3cret@h1:99999/app")
    assert "'default'" in str(error.value) and "s3cret" not in str(error.value)
    with pytest.raises(ConfigError, match="upper-case"):
        database_set("default", "postgresql://h1/app", conn_max_age=60)
    with pytest.raises(ConfigError, match="non-empty str"):
        database_set("", "postgresql://h1/app")


def test_sets_in_databases_are_checked() -> None:
    databases = database_set("default", "postgresql://h1,h2/app")
    del databases["default"]
    with pytest.raises(ConfigError, match="'default' has no master"):
        SetRegistry(databases, router_settings(settings()))
    broken = database_set("default", "postgresql://h1,h2/app")
    broken["default-1"]["PGROUTER_HOST"] = 5
    with pytest.raises(ConfigError, match=r"not 0\.\.n-1"):
        SetRegistry(broken, router_settings(settings()))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PGROUTER_ENABLED", "yes", "PGROUTER_ENABLED"),
        ("PGROUTER_REFRESH_DELAY", 0, "PGROUTER_REFRESH_DELAY"),
        ("PGROUTER_REFRESH_TIMEOUT", float("nan"), "PGROUTER_REFRESH_TIMEOUT"),
        ("PGROUTER_MAX_LAG_BYTES", -1, "PGROUTER_MAX_LAG_BYTES"),
        ("PGROUTER_MAX_LAG_SECONDS", -1, "PGROUTER_MAX_LAG_SECONDS"),
        ("PGROUTER_PINNING_SECONDS", 0, "PGROUTER_PINNING_SECONDS"),
        ("PGROUTER_PINNING_COOKIE", "", "PGROUTER_PINNING_COOKIE"),
        ("PGROUTER_DELEGATE_ROUTERS", "shop.Router", "PGROUTER_DELEGATE_ROUTERS"),
        ("PGROUTER_DELEGATE_ROUTERS", ["no.such.Router"], "PGROUTER_DELEGATE_ROUTERS"),
        ("PGROUTER_BALANCER_POLICY", object(), "PGROUTER_BALANCER_POLICY"),
    ],
)
def test_bad_pgrouter_settings_are_named(name: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        router_settings(settings(**{name: value}))


def test_settings_resolve_lag_bounds_and_heartbeat() -> None:
    resolved = router_settings(
        settings(PGROUTER_MAX_LAG_SECONDS=2, PGROUTER_PRIMARY_HEARTBEAT=0, PGROUTER_ENABLED=False)
    )
    assert resolved.monitor.read_rule is not None
    assert resolved.monitor.read_rule.max_lag_seconds == 2.0
    assert resolved.monitor.primary_heartbeat is None
    assert not resolved.enabled and resolved.pinning_seconds == 15.0


def test_carried_form_reads_back_strictly() -> None:
    token = WriteToken(7, 1, 123456)
    later = time.time() + 10
    carried = {"default": (later, str(token)), "other": (later, None)}
    assert carried_in(encode(carried), frozenset({"default", "other"})) == carried
    # A set this project does not have is dropped, not an error.
    assert carried_in(encode(carried), frozenset({"default"})) == {"default": carried["default"]}
    bad: list[Any] = [
        None,
        "text",
        {"v": 2, "s": {}},
        {"v": 1, "s": {}, "extra": 1},
        {"v": 1, "s": []},
        {"v": 1, "s": {"default": [later]}},
        {"v": 1, "s": {"default": ["soon", None]}},
        {"v": 1, "s": {"default": [float("inf"), None]}},
        {"v": 1, "s": {"default": [True, None]}},
        {"v": 1, "s": {"default": [later, str(token)[:-1] + "0"]}},
        {"v": 1, "s": {"default": [later, 5]}},
        {"v": 1, "s": {f"s{i}": [later, None] for i in range(100)}},
    ]
    for data in bad:
        with pytest.raises(ValueError) as error:
            carried_in(data, frozenset({"default"}))
        assert str(token)[:-1] not in str(error.value)  # never the input's text


def test_routing_off_keeps_every_query_on_the_first_host() -> None:
    """PGROUTER_ENABLED = False: the first host, under the name asked for when it names
    that host (``default`` under Django's TestCase), else the set's name; no monitor."""
    import pgrouter.django.sets as sets_module
    from pgrouter.django import GreedyRouter

    databases = populate_replicas({"main": master()}, {"main": [{"HOST": "db2"}]})
    disabled = SetRegistry(databases, router_settings(settings(PGROUTER_ENABLED=False)))
    saved, sets_module._registry = sets_module._registry, disabled
    try:
        router = GreedyRouter()
        on_replica = SimpleNamespace(_state=SimpleNamespace(db="main-1"))
        assert router.db_for_write(None) == "default"
        assert router.db_for_read(None) == "default"
        assert router.db_for_read(None, instance=on_replica) == "main"
        assert router.db_for_write(None, instance=on_replica) == "main"
        assert router.allow_migrate("main", "shop") is True
        assert router.allow_migrate("main-1", "shop") is False
        assert not disabled.sets["main"].watch.started
    finally:
        sets_module._registry = saved
