"""A real PostgreSQL primary + streaming replicas on loopback, for tests, demos and benchmarks.

:class:`LocalCluster` builds the cluster from the local server binaries
(``initdb``, ``pg_basebackup``, ``pg_ctl``, ``pg_rewind``) in a temporary
directory and always removes it again. :class:`Node` is one server of it, with
the faults tests need: a clean stop, a crash (:meth:`Node.kill`), a hung host
(:meth:`Node.freeze`), promotion, re-pointing and rewinding.

Standard library only: SQL goes through the ``psql`` binary, so the harness does
not depend on the drivers it is used to test. Linux only (process trees come from
``/proc``). When run as root, every server binary runs as the ``postgres`` system
user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import glob
import math
import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from pgrouter.errors import ClusterError

__all__ = ["LocalCluster", "Node", "find_pg_bin"]

HOST = "127.0.0.1"
SUPERUSER = "postgres"

# Seconds between polls while waiting for replication state; psql costs ~10 ms a call.
_POLL_INTERVAL = 0.02

# Settings of every cluster; the caller's ``settings`` are written after these and win.
# ``port`` is deliberately absent: pg_rewind copies postgresql.conf from the source
# server, so a port in the file would make the rewound node bind the source's port.
_BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": HOST,
    "fsync": "off",
    # With "off", replicas see rows ~200 ms late (wal_writer_delay): tests would flake.
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "hot_standby": "on",
    "wal_log_hints": "on",  # pg_rewind needs it (no data checksums in the template)
    "wal_keep_size": "64MB",
    "wal_retrieve_retry_interval": "100ms",
    "max_connections": "200",
    "shared_buffers": "32MB",
    # Dynamic shared memory as files in the data directory: a killed server's
    # segments then go with the directory instead of piling up in /dev/shm.
    "dynamic_shared_memory_type": "mmap",
    "logging_collector": "off",  # stderr goes to the node's log file via pg_ctl -l
    "log_line_prefix": "%m [%p] %q%a ",
}

_PG_HBA = """\
# Written by pgrouter.testing: a throwaway loopback cluster, so trust everything local.
local   all          all                 trust
local   replication  all                 trust
host    all          all  127.0.0.1/32   trust
host    all          all  ::1/128        trust
host    replication  all  127.0.0.1/32   trust
host    replication  all  ::1/128        trust
"""

# libpq reads these from the environment; an inherited PGPASSWORD or PGSSLMODE must
# not change how the harness connects.
_LIBPQ_ENV_PREFIX = "PG"
_OWN_ENV_PREFIX = "PGROUTER_"

_CLIENT_TOOLS = frozenset({"psql"})


def find_pg_bin() -> str:
    """Return the directory holding the PostgreSQL server binaries.

    Order: ``$PGROUTER_PG_BIN``, then the highest ``/usr/lib/postgresql/*/bin``
    (Debian/Ubuntu layout) containing ``initdb``, then ``initdb`` on ``PATH``.
    """
    configured = os.environ.get("PGROUTER_PG_BIN")
    if configured:
        if not os.path.isfile(os.path.join(configured, "initdb")):
            raise ClusterError(f"PGROUTER_PG_BIN={configured!r} does not contain initdb")
        return configured

    def version_key(bin_dir: str) -> tuple[int, ...]:
        version = os.path.basename(os.path.dirname(bin_dir))
        try:
            return tuple(int(part) for part in version.split("."))
        except ValueError:
            return (-1,)

    candidates = [
        d
        for d in glob.glob("/usr/lib/postgresql/*/bin")
        if os.path.isfile(os.path.join(d, "initdb"))
    ]
    if candidates:
        return max(candidates, key=version_key)
    on_path = shutil.which("initdb")
    if on_path:
        return os.path.dirname(os.path.realpath(on_path))
    raise ClusterError(
        "no PostgreSQL server binaries found: install the server package "
        "(e.g. apt-get install postgresql) or set PGROUTER_PG_BIN to the directory with initdb"
    )


def _quote_setting(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _free_ports(count: int) -> list[int]:
    """Ask the kernel for ``count`` distinct free loopback ports.

    All sockets stay open until every port is picked, so the kernel cannot hand
    out the same port twice; another process may still take one before the
    server binds it, which :meth:`LocalCluster.start` retries.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _log_tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            tail = log.readlines()[-lines:]
    except OSError:
        return "(no log file)"
    return "".join(tail).rstrip() or "(log file is empty)"


# --- processes, from /proc ------------------------------------------------------------


@dataclass(frozen=True)
class _ProcStat:
    comm: str
    state: str
    ppid: int


def _proc_stat(pid: int) -> _ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat_file:
            raw = stat_file.read()
    except OSError:
        return None
    # comm may itself contain spaces and parentheses: it ends at the last ")".
    open_paren, close_paren = raw.find("("), raw.rfind(")")
    fields = raw[close_paren + 2 :].split()
    return _ProcStat(comm=raw[open_paren + 1 : close_paren], state=fields[0], ppid=int(fields[1]))


def _is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie holds no resources)."""
    stat = _proc_stat(pid)
    return stat is not None and stat.state not in ("Z", "X")


def _is_postgres(pid: int) -> bool:
    """True if ``pid`` is a live PostgreSQL process; the name guards against pid reuse."""
    stat = _proc_stat(pid)
    return stat is not None and stat.state not in ("Z", "X") and stat.comm == "postgres"


def _lock_file_pid(path: str) -> int | None:
    """The pid on the first line of a PostgreSQL lock file, if it is there."""
    try:
        with open(path, encoding="utf-8") as lock_file:
            return int(lock_file.readline().strip())
    except (OSError, ValueError):
        return None


def _descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (not ``root`` itself), parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is not None and stat.state not in ("Z", "X"):
            children.setdefault(stat.ppid, []).append(int(entry))
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _signal_all(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


# --- running the binaries ------------------------------------------------------------


@dataclass(frozen=True)
class _Binaries:
    """Runs the tools of one PostgreSQL installation, as the server user when needed."""

    bin_dir: str
    # The system user the servers run as when we are root; None: run as ourselves.
    server_user: pwd.struct_passwd | None

    @classmethod
    def locate(cls, bin_dir: str | None) -> _Binaries:
        bin_dir = bin_dir or find_pg_bin()
        for tool in ("initdb", "pg_ctl", "pg_basebackup", "pg_rewind", "psql"):
            if not os.path.isfile(os.path.join(bin_dir, tool)):
                raise ClusterError(f"{tool} not found in {bin_dir}")
        server_user = None
        if os.geteuid() == 0:
            try:
                server_user = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise ClusterError(
                    "running as root, but there is no 'postgres' system user to run "
                    "the servers as (PostgreSQL refuses root)"
                ) from None
        return cls(bin_dir, server_user)

    def give_to_server_user(self, path: str) -> None:
        if self.server_user is not None:
            os.chown(path, self.server_user.pw_uid, self.server_user.pw_gid)

    def run(self, tool: str, *args: str, timeout: float) -> str:
        """Run ``tool`` from the bin dir; return its stdout or raise ClusterError."""
        command = [os.path.join(self.bin_dir, tool), *args]
        if self.server_user is not None and tool not in _CLIENT_TOOLS:
            command = ["runuser", "-u", self.server_user.pw_name, "--", *command]
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(_LIBPQ_ENV_PREFIX) or key.startswith(_OWN_ENV_PREFIX)
        }
        # libpq's connect_timeout is whole seconds, at least 2; the subprocess
        # timeout below is the precise one.
        env["PGCONNECT_TIMEOUT"] = str(max(2, math.ceil(timeout)))
        try:
            # cwd "/": the server user may not be allowed into the caller's directory.
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd="/",
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{tool} {' '.join(args)!r} timed out after {timeout} s") from None
        if done.returncode != 0:
            detail = (done.stderr.strip() or done.stdout.strip() or "no output")[-2000:]
            raise ClusterError(f"{tool} failed (exit {done.returncode}): {detail}")
        return done.stdout

    def major_version(self) -> str:
        # "initdb (PostgreSQL) 15.18 (Debian ...)" -> "15"
        words = self.run("initdb", "--version", timeout=10).split()
        return words[2].split(".")[0] if len(words) > 2 else "unknown"


# A data directory is ~1000 files; creating them on a tmpfs is ~7x faster than on
# ext4 here (0.13 s vs 0.86 s per 1000), which is most of a replica's build time.
_SHM_DIR = "/dev/shm"
# Docker's default /dev/shm is 64 MB, too small for a cluster and the servers' own
# shared memory: only use it when it has room.
_SHM_MIN_FREE = 1 << 30


def _scratch_root() -> str:
    """Where clusters and the template live: $PGROUTER_TMPDIR, a roomy /dev/shm, or TMPDIR."""
    configured = os.environ.get("PGROUTER_TMPDIR")
    if configured:
        return configured
    try:
        shm = os.statvfs(_SHM_DIR)
    except OSError:
        return tempfile.gettempdir()
    if shm.f_bavail * shm.f_frsize >= _SHM_MIN_FREE and os.access(_SHM_DIR, os.W_OK):
        return _SHM_DIR
    return tempfile.gettempdir()


_template_lock = threading.Lock()


def _template_data_dir(binaries: _Binaries, timeout: float) -> str:
    """Return a pristine initdb'ed data directory, building it once per machine.

    initdb costs ~0.5 s and a copy ~0.06 s, so every cluster copies this one. It is
    built in a private directory and renamed into place, so concurrent processes
    never see a half-written template: the loser of the rename race discards its own.
    """
    name = f"pgrouter-pg-template-{binaries.major_version()}-{os.geteuid()}"
    template = os.path.join(_scratch_root(), name)
    with _template_lock:
        if os.path.isfile(os.path.join(template, "global", "pg_control")):
            return template
        scratch = tempfile.mkdtemp(prefix=f"{name}.tmp-", dir=_scratch_root())
        try:
            binaries.give_to_server_user(scratch)
            data_dir = os.path.join(scratch, "data")
            binaries.run(
                "initdb",
                "--no-sync",
                "--no-instructions",
                "--auth=trust",
                f"--username={SUPERUSER}",
                "--encoding=UTF8",
                "--locale=C",
                "--wal-segsize=1",
                "-D",
                data_dir,
                timeout=timeout,
            )
            try:
                os.rename(data_dir, template)
            except OSError:
                # Another process renamed its template first; it is as good as ours.
                if not os.path.isfile(os.path.join(template, "global", "pg_control")):
                    raise ClusterError(
                        f"{template} exists but is not a data directory; remove it"
                    ) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return template


# --- one server ---------------------------------------------------------------------


class Node:
    """One PostgreSQL server of a :class:`LocalCluster`: primary or replica, as it is now.

    The port is never written to the configuration (pg_rewind would overwrite it):
    it is passed on the command line at every start.
    """

    host: str = HOST

    def __init__(
        self,
        name: str,
        port: int,
        node_dir: str,
        *,
        socket_dir: str,
        binaries: _Binaries,
        timeout: float = 30,
    ) -> None:
        self.name = name
        self.port = port
        self.node_dir = node_dir
        # The log file lives beside the data directory, not in it: pg_rewind deletes
        # files the source server does not have.
        self.data_dir = os.path.join(node_dir, "data")
        self.log_file = os.path.join(node_dir, "postgres.log")
        self.socket_dir = socket_dir
        self._binaries = binaries
        self._timeout = timeout
        self._frozen = False

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.host}:{self.port}>"

    def dsn(
        self, user: str = SUPERUSER, password: str | None = None, dbname: str = "postgres"
    ) -> str:
        """A single-host ``postgresql://`` URL for this node."""
        return _url(user, password, dbname, [self], None)

    # --- process state ---

    @property
    def pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid`` (may be stale after a kill)."""
        return _lock_file_pid(os.path.join(self.data_dir, "postmaster.pid"))

    def _live_pid(self) -> int | None:
        pid = self.pid
        return pid if pid is not None and _is_postgres(pid) else None

    def is_running(self) -> bool:
        """True while the postmaster process exists (frozen counts as running)."""
        return self._live_pid() is not None

    @property
    def is_frozen(self) -> bool:
        return self._frozen

    # --- lifecycle ---

    def start(self) -> None:
        """Start the server and wait until it accepts connections; no-op if running."""
        if self.is_running():
            return
        self._remove_stale_lock_files()
        try:
            self._binaries.run(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                str(math.ceil(self._timeout)),
                "-D",
                self.data_dir,
                "-l",
                self.log_file,
                # cluster_name names the walreceiver (application_name in
                # pg_stat_replication) and the process titles after the node.
                "-o",
                f"-p {self.port} -c cluster_name={self.name}",
                timeout=self._timeout + 5,
            )
        except ClusterError as exc:
            raise self._error(f"could not start: {exc}") from None

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``smart``, ``fast`` or ``immediate``); no error if stopped."""
        if not self.is_running():
            return
        self.thaw()  # a stopped process cannot shut down
        try:
            self._binaries.run(
                "pg_ctl",
                "stop",
                "-w",
                "-m",
                mode,
                "-t",
                str(math.ceil(self._timeout)),
                "-D",
                self.data_dir,
                timeout=self._timeout + 5,
            )
        except ClusterError as exc:
            if self.is_running():
                raise self._error(f"could not stop: {exc}") from None

    def kill(self) -> None:
        """Crash the node: SIGKILL the postmaster and every child, then wait until gone.

        Killing only the postmaster would leave its backends serving queries, which is
        not what a crashed machine does.
        """
        postmaster = self._live_pid()
        if postmaster is None:
            return
        shmem_id = self._sysv_shmem_id()
        # Stopped first so it cannot fork new children while we collect them.
        _signal_all([postmaster], signal.SIGSTOP)
        victims = [postmaster, *_descendants(postmaster)]
        _signal_all(victims, signal.SIGKILL)
        self._frozen = False
        deadline = time.monotonic() + self._timeout
        while any(_is_alive(pid) for pid in victims):
            if time.monotonic() > deadline:
                raise self._error("processes survived SIGKILL")
            time.sleep(0.005)
        if shmem_id is not None:
            # A clean shutdown removes the server's small SysV segment; a kill leaks
            # it, and enough leaks exhaust the system's segment limit (shmmni).
            subprocess.run(["ipcrm", "-m", shmem_id], capture_output=True, check=False)

    def _sysv_shmem_id(self) -> str | None:
        # Line 7 of postmaster.pid is "<key> <shmid>" of the server's SysV segment.
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid"), encoding="utf-8") as pidfile:
                lines = pidfile.read().splitlines()
        except OSError:
            return None
        fields = lines[6].split() if len(lines) > 6 else []
        return fields[1] if len(fields) == 2 and fields[1].isdigit() else None

    def freeze(self) -> None:
        """SIGSTOP the postmaster and all its children: a hung host.

        New TCP connections are still accepted by the kernel but never answered.
        """
        postmaster = self._live_pid()
        if postmaster is None:
            raise self._error("cannot freeze: not running")
        _signal_all([postmaster], signal.SIGSTOP)
        _signal_all(_descendants(postmaster), signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT everything :meth:`freeze` stopped; no-op if not frozen."""
        if not self._frozen:
            return
        postmaster = self._live_pid()
        if postmaster is not None:
            _signal_all(_descendants(postmaster), signal.SIGCONT)
            _signal_all([postmaster], signal.SIGCONT)
        self._frozen = False

    def _remove_stale_lock_files(self) -> None:
        """Delete the pid and socket lock files a killed server left behind.

        The server refuses to start while the pid in one of them is alive, and a
        killed postmaster may linger as a zombie (a container whose init does not
        reap) or its pid may since belong to another process.
        """
        lock_files = [
            os.path.join(self.data_dir, "postmaster.pid"),
            os.path.join(self.socket_dir, f".s.PGSQL.{self.port}.lock"),
        ]
        for path in lock_files:
            owner = _lock_file_pid(path)
            if owner is not None and not _is_postgres(owner):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    # --- SQL ---

    def sql(self, query: str, timeout: float = 10) -> str:
        """Run ``query`` with psql as the superuser; return stdout, stripped.

        One statement per call: psql sends a ``-c`` string as one implicit
        transaction, in which e.g. ``ALTER SYSTEM`` is refused.
        """
        try:
            return self._binaries.run(
                "psql",
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-c",
                query,
                timeout=timeout,
            ).strip()
        except ClusterError as exc:
            raise ClusterError(f"{self.name} ({self.host}:{self.port}): {exc}") from None

    def is_in_recovery(self) -> bool:
        return self.sql("SELECT pg_is_in_recovery()") == "t"

    # --- replication ---

    def promote(self) -> None:
        """Turn this replica into a primary and wait until it accepts writes."""
        try:
            self._binaries.run(
                "pg_ctl",
                "promote",
                "-w",
                "-t",
                str(math.ceil(self._timeout)),
                "-D",
                self.data_dir,
                timeout=self._timeout + 5,
            )
        except ClusterError as exc:
            raise self._error(f"could not promote: {exc}") from None

    def repoint(self, primary: Node) -> None:
        """Make this running replica stream from ``primary``, without a restart."""
        conninfo = _quote_setting(self._conninfo(primary))
        self.sql(f"ALTER SYSTEM SET primary_conninfo = {conninfo}")
        self.sql("SELECT pg_reload_conf()")

    def pause_replay(self) -> None:
        """Stop applying WAL: rows stop appearing while WAL is still received."""
        self.sql("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.sql("SELECT pg_wal_replay_resume()")

    def rewind_as_replica(self, primary: Node) -> None:
        """Bring a former primary back as a replica of ``primary`` with pg_rewind.

        Stops the node if needed. After a :meth:`kill`, pg_rewind itself finishes
        crash recovery in single-user mode first (PostgreSQL 13+).
        """
        self.stop()
        self._remove_stale_lock_files()
        # A freshly promoted server records its new timeline in pg_control only at
        # its next checkpoint; until then pg_rewind sees "same timeline" and skips.
        primary.sql("CHECKPOINT", timeout=self._timeout)
        source = f"host={primary.host} port={primary.port} user={SUPERUSER} dbname=postgres"
        try:
            self._binaries.run(
                "pg_rewind",
                f"--target-pgdata={self.data_dir}",
                "--write-recovery-conf",
                "--no-sync",
                f"--source-server={source}",
                timeout=self._timeout + 30,
            )
        except ClusterError as exc:
            raise self._error(f"pg_rewind from {primary.name} failed: {exc}") from None
        # pg_rewind skips -R when no rewind is needed; set both up ourselves to be sure.
        self.configure_as_replica_of(primary)
        self.start()
        self.wait_streaming(source=primary)

    def configure_as_replica_of(self, primary: Node) -> None:
        """While stopped: make the next start a standby streaming from ``primary``."""
        pathlib.Path(self.data_dir, "standby.signal").touch()
        self._set_auto_conf("primary_conninfo", self._conninfo(primary))

    def wait_streaming(self, timeout: float = 10, *, source: Node | None = None) -> None:
        """Wait until this replica's WAL receiver streams (from ``source``, if given)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                last = self.sql(
                    "SELECT status || ' ' || sender_port FROM pg_stat_wal_receiver",
                    timeout=max(1.0, min(5.0, deadline - time.monotonic())),
                )
            except ClusterError as exc:
                last = str(exc)
            status, _, port = last.partition(" ")
            if status == "streaming" and (source is None or port == str(source.port)):
                return
            if time.monotonic() > deadline:
                expected = f" from {source.name}" if source else ""
                raise self._error(
                    f"not streaming{expected} after {timeout} s "
                    f"(wal receiver: {last or 'not running'})"
                )
            time.sleep(_POLL_INTERVAL)

    def _conninfo(self, primary: Node) -> str:
        return (
            f"host={primary.host} port={primary.port} user={SUPERUSER} application_name={self.name}"
        )

    def _set_auto_conf(self, key: str, value: str) -> None:
        """Set ``key`` in postgresql.auto.conf of a stopped node, replacing earlier lines."""
        path = os.path.join(self.data_dir, "postgresql.auto.conf")
        try:
            with open(path, encoding="utf-8") as conf:
                lines = conf.readlines()
        except FileNotFoundError:
            lines = []
        kept = [line for line in lines if line.split("=", 1)[0].strip() != key]
        kept.append(f"{key} = {_quote_setting(value)}\n")
        # Rewritten in place, so the file keeps its owner when we are root.
        with open(path, "w", encoding="utf-8") as conf:
            conf.writelines(kept)

    def _error(self, message: str) -> ClusterError:
        return ClusterError(
            f"{self.name} ({self.host}:{self.port}): {message}\n"
            f"--- tail of {self.log_file} ---\n{_log_tail(self.log_file)}"
        )


def _url(
    user: str,
    password: str | None,
    dbname: str,
    nodes: Sequence[Node],
    query: Mapping[str, str] | None,
) -> str:
    credentials = urllib.parse.quote(user, safe="")
    if password is not None:
        credentials += ":" + urllib.parse.quote(password, safe="")
    hosts = ",".join(f"{node.host}:{node.port}" for node in nodes)
    url = f"postgresql://{credentials}@{hosts}/{urllib.parse.quote(dbname, safe='')}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    return url


# --- the cluster --------------------------------------------------------------------


class LocalCluster:
    """A primary and ``replicas`` streaming replicas on free loopback ports.

    Use as a context manager, or call :meth:`start` and :meth:`close`. Closing is
    also registered with :mod:`atexit`, so an aborted run leaves no server behind.
    ``base_dir`` (default: a new directory) is deleted by :meth:`close`.
    Methods are synchronous; async code calls them through ``asyncio.to_thread``.
    """

    def __init__(
        self,
        replicas: int = 2,
        *,
        settings: Mapping[str, str] | None = None,
        bin_dir: str | None = None,
        base_dir: str | None = None,
        timeout: float = 30,
    ) -> None:
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        if settings and "port" in settings:
            raise ClusterError(
                "do not set 'port': pg_rewind copies the config between nodes; "
                "ports are passed on the command line"
            )
        self.replica_count = replicas
        self.settings: dict[str, str] = dict(settings or {})
        self.timeout = timeout
        self.nodes: list[Node] = []
        self._bin_dir = bin_dir
        self._requested_base_dir = base_dir
        self.base_dir: str | None = None
        self._started = False
        self._closed = False

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LocalCluster {self.base_dir} nodes={self.nodes}>"

    # --- building ---

    def start(self) -> LocalCluster:
        """Build and start the cluster; return once every replica is streaming."""
        if self._started:
            raise ClusterError("cluster already started")
        self._started = True
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        binaries = _Binaries.locate(self._bin_dir)
        template = _template_data_dir(binaries, self.timeout)
        if self._requested_base_dir is None:
            # Short prefix: the unix socket path must stay under ~107 bytes.
            self.base_dir = tempfile.mkdtemp(prefix="pgr-", dir=_scratch_root())
        else:
            os.makedirs(self._requested_base_dir, exist_ok=True)
            self.base_dir = self._requested_base_dir
        binaries.give_to_server_user(self.base_dir)

        ports = _free_ports(self.replica_count + 1)
        for index, port in enumerate(ports):
            node_dir = os.path.join(self.base_dir, f"node{index}")
            os.mkdir(node_dir, 0o700)
            binaries.give_to_server_user(node_dir)
            self.nodes.append(
                Node(
                    f"node{index}",
                    port,
                    node_dir,
                    socket_dir=self.base_dir,
                    binaries=binaries,
                    timeout=self.timeout,
                )
            )

        primary = self.nodes[0]
        # cp -a keeps owner and the 0700 mode the server insists on.
        copied = subprocess.run(
            ["cp", "-a", template, primary.data_dir], capture_output=True, text=True, check=False
        )
        if copied.returncode != 0:
            raise ClusterError(f"could not copy template {template}: {copied.stderr.strip()}")
        self._write_config(primary)
        _start_fresh(primary)

        replicas = self.nodes[1:]
        if replicas:
            # In parallel: each replica spends most of its time waiting on pg_basebackup.
            with concurrent.futures.ThreadPoolExecutor(len(replicas)) as pool:
                for future in [pool.submit(self._create_replica, r, primary) for r in replicas]:
                    future.result()

    def _write_config(self, primary: Node) -> None:
        # Written once on the primary; replicas inherit it through pg_basebackup.
        assert self.base_dir is not None
        settings = {
            **_BASE_SETTINGS,
            "unix_socket_directories": self.base_dir,
            **self.settings,
        }
        lines = ["", "# pgrouter.testing"]
        lines += [f"{key} = {_quote_setting(value)}" for key, value in settings.items()]
        with open(os.path.join(primary.data_dir, "postgresql.conf"), "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        with open(os.path.join(primary.data_dir, "pg_hba.conf"), "w", encoding="utf-8") as f:
            f.write(_PG_HBA)

    def _create_replica(self, replica: Node, primary: Node) -> None:
        replica._binaries.run(
            "pg_basebackup",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-sync",
            "-h",
            primary.host,
            "-p",
            str(primary.port),
            "-U",
            SUPERUSER,
            "-D",
            replica.data_dir,
            timeout=self.timeout,
        )
        replica.configure_as_replica_of(primary)
        _start_fresh(replica)
        replica.wait_streaming(self.timeout, source=primary)

    # --- topology ---

    @property
    def primary(self) -> Node:
        """The node that is not in recovery now (the first, if several); asks the servers."""
        for node in self._reachable():
            with contextlib.suppress(ClusterError):
                if not node.is_in_recovery():
                    return node
        raise ClusterError(f"no primary among {self.nodes}")

    @property
    def replicas(self) -> list[Node]:
        """Running (not frozen) nodes that are in recovery."""
        found = []
        for node in self._reachable():
            with contextlib.suppress(ClusterError):
                if node.is_in_recovery():
                    found.append(node)
        return found

    def _reachable(self) -> list[Node]:
        # A frozen node would hang every query until its timeout.
        return [node for node in self.nodes if not node.is_frozen and node.is_running()]

    def dsn(
        self,
        user: str = SUPERUSER,
        password: str | None = None,
        dbname: str = "postgres",
        nodes: Sequence[Node] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> str:
        """A multi-host URL listing every node (or ``nodes``), each host with its port."""
        return _url(user, password, dbname, self.nodes if nodes is None else nodes, query)

    def failover(self, new_primary: Node | None = None) -> Node:
        """Promote ``new_primary`` (default: the most advanced replica), re-point the others.

        Returns once the other running replicas stream from the new primary. Whatever
        happens to the old primary (killed, stopped, left running) is the caller's choice.
        """
        replicas = self.replicas
        if new_primary is None:
            new_primary = self.most_advanced_replica()
        new_primary.promote()
        followers = [node for node in replicas if node is not new_primary]
        for node in followers:
            node.repoint(new_primary)
        for node in followers:
            node.wait_streaming(self.timeout, source=new_primary)
        return new_primary

    def most_advanced_replica(self) -> Node:
        """The running replica that received the most WAL, as a failover manager picks.

        With synchronous replication (``synchronous_standby_names='ANY 1 (*)'``)
        it holds every acknowledged commit.
        """
        replicas = self.replicas
        if not replicas:
            raise ClusterError("failover: no running replica to promote")

        def received(node: Node) -> int:
            lsn = node.sql("SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint")
            return int(lsn or 0)

        return max(replicas, key=received)

    def wait_replicas_caught_up(self, timeout: float = 10) -> None:
        """Wait until every running replica has replayed the primary's current WAL."""
        lsn = self.primary.sql("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        for replica in self.replicas:
            while replica.sql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn") != "t":
                if time.monotonic() > deadline:
                    raise replica._error(f"replay did not reach {lsn} within {timeout} s")
                time.sleep(_POLL_INTERVAL)

    # --- teardown ---

    def close(self) -> None:
        """Stop every node (immediate) and remove the base directory; idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            # Plain threads: close() also runs from atexit, where concurrent.futures
            # already refuses new work.
            stoppers = [threading.Thread(target=_stop_for_good, args=(n,)) for n in self.nodes]
            for stopper in stoppers:
                stopper.start()
            for stopper in stoppers:
                stopper.join()
        finally:
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)


def _stop_for_good(node: Node) -> None:
    """Stop ``node`` however it can be stopped; never raises (used on teardown)."""
    with contextlib.suppress(ClusterError):
        node.stop("immediate")
    if node.is_running():
        with contextlib.suppress(ClusterError):
            node.kill()


def _start_fresh(node: Node, attempts: int = 3) -> None:
    """Start a new node, moving it to another free port if someone took its port."""
    for attempt in range(attempts):
        try:
            node.start()
            return
        except ClusterError as exc:
            if "Address already in use" not in str(exc) or attempt == attempts - 1:
                raise
            node.port = _free_ports(1)[0]
