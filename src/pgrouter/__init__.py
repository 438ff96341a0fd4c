"""pgrouter: topology-aware connection pools for a PostgreSQL primary and its replicas.

Import a driver's manager from its own module, e.g. ``pgrouter.asyncpg.PoolManager``
or ``pgrouter.psycopg3.PoolManager``; this package itself imports no driver.
"""

from .balancer_policy import (
    AbstractBalancerPolicy,
    GreedyBalancerPolicy,
    LeastLagBalancerPolicy,
    RandomWeightedBalancerPolicy,
    RoundRobinBalancerPolicy,
)
from .dsn import HostDsn, redact, split_dsn
from .errors import (
    DsnError,
    NoHostAvailableError,
    NotCommittedError,
    PgRouterError,
    PoolManagerClosedError,
    TransactionClosedError,
    WrongEventLoopError,
)
from .interactions.listen import ListenGap, Notification
from .manager import BasePoolManager
from .routing.consistency import current_token, read_your_writes
from .routing.tokens import WriteToken
from .topology import HostRole, HostState, TopologySnapshot

__version__ = "0.1.0"

__all__ = [
    "AbstractBalancerPolicy",
    "BasePoolManager",
    "DsnError",
    "GreedyBalancerPolicy",
    "HostDsn",
    "HostRole",
    "HostState",
    "LeastLagBalancerPolicy",
    "ListenGap",
    "NoHostAvailableError",
    "NotCommittedError",
    "Notification",
    "PgRouterError",
    "PoolManagerClosedError",
    "RandomWeightedBalancerPolicy",
    "RoundRobinBalancerPolicy",
    "TopologySnapshot",
    "TransactionClosedError",
    "WriteToken",
    "WrongEventLoopError",
    "__version__",
    "current_token",
    "read_your_writes",
    "redact",
    "split_dsn",
]
