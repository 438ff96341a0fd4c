"""What the cluster is: checks, snapshots, the primary hunt and heartbeat, fencing.

The monitor knows no caller's pool. It checks every host on a dedicated
connection, publishes immutable snapshots on a board, hunts for a primary when
there is none (or it is suspect), and decides which host is superseded or
fenced (:mod:`pgrouter.topology`). Faces (the async manager; later the sync
ones and Django) follow its snapshots; one that serves connections admits a
host before it is published healthy (its pool keeper opens the pool then).
"""

from .host_monitor import Admit, HostMonitor, describe_error
from .topology_monitor import TopologyMonitor

__all__ = ["Admit", "HostMonitor", "TopologyMonitor", "describe_error"]
