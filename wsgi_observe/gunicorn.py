"""gunicorn hooks: exact numbers across workers (``gunicorn -c python:wsgi_observe.gunicorn``).

Use it as the whole config module::

    gunicorn -c python:wsgi_observe.gunicorn -w 4 "myapp:app"

or, with a config file of your own, pull the hooks in (they chain to nothing else)::

    # gunicorn.conf.py
    from wsgi_observe.gunicorn import on_starting, post_fork, child_exit, on_exit  # noqa: F401
    workers = 4

Every worker records into its own memory-mapped state file in the state directory
(``WSGI_OBSERVE_STATE_DIR``; default: a fresh ``wsgi_observe-<master pid>`` folder in the
temp directory, removed at exit). Any worker's ``/metrics`` merges them all. This module
never imports the app or sentry_sdk.

Reads: ``WSGI_OBSERVE_STATE_DIR``.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

# Imported under a private name: gunicorn reads every module-level name that matches one
# of its settings, and ``workers`` is one.
from . import workers as _workers

__all__ = ["child_exit", "on_exit", "on_starting", "post_fork"]


def on_starting(server: Any) -> None:
    """Master, before forking: check the state directory, clear an earlier run's files."""
    wanted = os.environ.get(_workers.ENV_STATE_DIR, "").strip() or None
    try:
        path = _workers.prepare_state_dir(wanted, master_pid=os.getpid())
    except _workers.StateDirError as error:
        # gunicorn prints a RuntimeError raised here as one "Error: ..." line and exits 1.
        raise RuntimeError(str(error)) from None
    _workers.clear_state_dir(path)
    os.environ[_workers.ENV_ACTIVE_DIR] = path
    os.environ["WSGI_OBSERVE_MASTER_PID"] = str(os.getpid())
    server.log.info("wsgi_observe: multi-worker state in %s", path)


def post_fork(server: Any, worker: Any) -> None:
    """Worker, just forked: record into this worker's own state file."""
    path = os.environ.get(_workers.ENV_ACTIVE_DIR)
    if not path:
        return
    master = os.environ.get("WSGI_OBSERVE_MASTER_PID")
    _workers.activate(path, master_pid=int(master) if master else None)


def child_exit(server: Any, worker: Any) -> None:
    """Master, a worker has exited (or was killed): absorb its counts into the archive."""
    path = os.environ.get(_workers.ENV_ACTIVE_DIR)
    if not path:
        return
    try:
        _workers.sweep(path)
    except OSError as error:
        server.log.warning("wsgi_observe: could not absorb worker state: %s", error)


def on_exit(server: Any) -> None:
    """Master, shutting down: remove the default state directory (a chosen one is kept)."""
    path = os.environ.get(_workers.ENV_ACTIVE_DIR)
    if path and not os.environ.get(_workers.ENV_STATE_DIR):
        shutil.rmtree(path, ignore_errors=True)
