"""Which SQLSTATEs say "the host changed or broke", not "the query was wrong".

For the drivers whose errors carry a SQLSTATE code rather than one exception
class per condition (psycopg2 under aiopg, SQLAlchemy's wrapped errors).
"""

from __future__ import annotations

#: Class 08 (connection exception), operator intervention that ends sessions
#: (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now), and
#: 25006 read-only transaction: a write reached a host that is no longer primary.
HOST_SQLSTATE_PREFIXES = ("08", "57P01", "57P02", "57P03", "25006")


def is_host_sqlstate(sqlstate: str | None) -> bool:
    return sqlstate is not None and sqlstate.startswith(HOST_SQLSTATE_PREFIXES)


__all__ = ["HOST_SQLSTATE_PREFIXES", "is_host_sqlstate"]
