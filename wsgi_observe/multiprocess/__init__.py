"""Exact numbers when the app runs in several processes, whatever pre-fork server runs it.

A process that never forks keeps its numbers in memory. As soon as a middleware sees that
it serves in one of several processes (its first request carries ``wsgi.multiprocess``, or
it runs in a process forked after it was built), that process gets its own table in the
server's state directory (:mod:`.table`), and every ``/metrics`` merges all of them
(:mod:`.merge`). Nothing server-specific is needed: gunicorn with or without our config
module, uWSGI lazy or not, mod_wsgi daemons. The gunicorn hooks (:mod:`.gunicorn`) add
master-side compaction and a directory prepared before any worker starts.

Where the state lives (:mod:`.statedir`): ``WSGI_OBSERVE_STATE_DIR`` when set (it must be a
private directory of ours), else a private directory per server, named after the master
process (the parent of the workers), so workers that never met can find each other.

This module keeps one record per process: its table, the directory and, when sharing was
wanted but failed, why. It is reset in a forked child (the parent's table and locks are
not the child's).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Optional

import orjson

from .._guard import guarded
from ..metrics import MemoryTable, MetricsStore, Snapshot, process_store
from .merge import collect_snapshot, sweep
from .names import SharedNames
from .statedir import (
    ENV_STATE_DIR,
    StateDirError,
    check_private,
    claim,
    identity_of,
    read_regular,
    write_atomic,
)
from .statedir import rendezvous_dir as _rendezvous_dir
from .table import TableError, WorkerTable

if TYPE_CHECKING:
    from ..config import Config
    from ..endpoints import EndpointNames

__all__ = [
    "READINESS",
    "ENV_STATE_DIR",
    "StateDirError",
    "WorkerTable",
    "collect_snapshot",
    "is_shared",
    "join",
    "latest_readiness",
    "publish_readiness",
    "share",
    "should_share",
    "snapshot",
    "state",
    "sweep",
]

_log = logging.getLogger("wsgi_observe.multiprocess")


class _Process:
    """This process's part in the shared state."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.table: Optional[WorkerTable] = None
        self.state_dir: Optional[str] = None
        self.master: Optional[int] = None
        self.names: Optional[SharedNames] = None
        self.problem: Optional[str] = None


_process = _Process()
_lock = threading.Lock()


def _current() -> _Process:
    """This process's record; a fresh one in a child forked without Python's fork hooks
    (uWSGI forks in C): the parent's table belongs to the parent."""
    global _process
    if _process.pid != os.getpid():
        _forget_parent()
    return _process


def _forget_parent() -> None:
    global _process, _lock
    parent = _process
    _process = _Process()
    _lock = threading.Lock()
    if parent.table is not None:
        parent.table.forget()  # our copies of its descriptors; its lock stays the parent's
    from .merge import _views

    _views.reset()
    _last_merged.clear()
    store = process_store()
    if isinstance(store.table, WorkerTable) and store.table is parent.table:
        store.use_table(MemoryTable())  # timed functions must not write to the parent's file


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent)


def _state_dir(config: Config, master: int) -> str:
    identity = identity_of(master)
    if identity is None:
        raise StateDirError(f"the server's master process (pid {master}) is gone")
    if config.state_dir:
        check_private(config.state_dir, variable=ENV_STATE_DIR)
        path = config.state_dir
    else:
        path = _rendezvous_dir(identity)
    claim(path, identity, variable=ENV_STATE_DIR if config.state_dir else None)
    return path


def join(config: Config, *, role: str = "worker") -> Optional[WorkerTable]:
    """This process's table in the server's state directory, made on the first call.

    None when it cannot be had (the reason is logged once and shown by ``/metrics``): the
    process then keeps counting in memory, and its numbers are its own.
    """
    with _lock:
        process = _current()
        if process.table is not None or process.problem is not None:
            return process.table
        master = os.getppid()
        try:
            path = _state_dir(config, master)
            table = WorkerTable(
                path, role=role, master_pid=master, max_endpoints=config.max_endpoints
            )
        except (StateDirError, TableError, OSError) as error:
            process.problem = str(error)
            _log.error(
                "wsgi_observe: numbers are per process, not shared across workers: %s", error
            )
            return None
        process.table = table
        process.state_dir = path
        process.master = master
        process.names = SharedNames(path, config.max_endpoints)
        _adopt(process_store(), table)
        return table


def _adopt(store: MetricsStore, table: WorkerTable) -> None:
    """Move ``store`` onto ``table``; counts this very process made in memory come along
    (a parent's, inherited through a fork, do not: they are the parent's)."""
    old = store.table
    if old is table:
        return
    carried: list[tuple[tuple[Any, ...], int]] = []
    if isinstance(old, MemoryTable) and old.pid == os.getpid():
        with store.lock:
            carried = [
                (k, v)
                for k, v in zip(old.keys, old.values)
                if (v or k[:2] == ("k", "d")) and k[0] != "g"  # KPI definitions too
            ]
    store.use_table(table)
    for key, value in carried:
        slot = table.alloc(key)
        store.values = table.values
        store.values[slot] += value


def should_share(environ: Any, built_pid: int) -> bool:
    """Whether a middleware built in process ``built_pid`` now serves in one of several."""
    return (
        environ.get("wsgi.multiprocess") is True
        or os.getpid() != built_pid
        or _current().table is not None
    )


def share(store: MetricsStore, names: EndpointNames, config: Config) -> bool:
    """Record ``store`` into this process's shared table; False if there can be none."""
    table = join(config)
    if table is None:
        return False
    _adopt(store, table)
    names.share(_process.names)
    return True


def is_shared(store: MetricsStore) -> bool:
    table = store.table
    return isinstance(table, WorkerTable) and table.pid == os.getpid()


def snapshot(store: MetricsStore, *, max_endpoints: Optional[int] = None) -> Snapshot:
    """What ``/metrics`` shows: this process's numbers, or every process's when shared."""
    table = store.table
    if isinstance(table, WorkerTable) and table.pid == os.getpid():
        try:
            merged = collect_snapshot(
                table.state_dir,
                own=store,
                own_id=table.id,
                max_endpoints=max_endpoints,
                master_pid=_process.master,
            )
        except Exception as error:  # a scrape must answer: the last merged numbers, stale
            guarded("merging the state of all processes", error)
            last = _last_merged.get(store)
            if last is not None:
                return last
            raise
        _last_merged[store] = merged
        return merged
    return store.snapshot()


# The last merged snapshot of each store: what a scrape shows if merging ever fails (older
# numbers, never lower ones). Weak: an entry goes with its store.
_last_merged: weakref.WeakKeyDictionary[MetricsStore, Snapshot] = weakref.WeakKeyDictionary()


READINESS = "readiness.json"
_READINESS_MAX_BYTES = 1024 * 1024
_STATUSES = ("healthy", "degraded", "unhealthy")


def publish_readiness(result: dict[str, Any]) -> None:
    """Share a fresh ``/health/ready`` result with the server's other processes, so that
    whichever worker answers a scrape shows the newest one (not its own, maybe stale)."""
    process = _current()
    table = process.table
    if table is None or process.state_dir is None:
        return
    try:
        write_atomic(process.state_dir, READINESS, orjson.dumps(result))
    except (OSError, TypeError) as error:  # a full disk: this worker's own result stays
        _log.debug("wsgi_observe: readiness not shared: %s", error)


def _is_readiness(data: Any) -> bool:
    return (
        type(data) is dict
        and data.get("status") in _STATUSES
        and type(data.get("timestamp")) is str
        and len(data["timestamp"]) == 24
        and type(data.get("checks", {})) is dict
    )


def latest_readiness(own: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The newer of ``own`` (this process's last result) and the one last shared by any
    process of the server; the shared file is read as input (shape checked)."""
    process = _current()
    if process.table is None or process.state_dir is None:
        return own
    try:
        data = orjson.loads(
            read_regular(os.path.join(process.state_dir, READINESS), _READINESS_MAX_BYTES)
        )
    except (OSError, ValueError):
        return own
    if not _is_readiness(data):
        return own
    if own is None or data["timestamp"] > own["timestamp"]:
        return data  # type: ignore[no-any-return]
    return own


def state() -> dict[str, Any]:
    """How this process shares its numbers (the ``multiprocess`` block of ``/metrics``)."""
    process = _current()
    table = process.table
    out: dict[str, Any] = {"shared": table is not None}
    if table is not None:
        out["state_dir"] = table.state_dir
        if table.degraded is not None:
            out["problem"] = f"state file cannot grow ({table.degraded}); counting in memory"
    elif process.problem is not None:
        out["problem"] = process.problem
    return out
