"""gunicorn hooks: the state directory ready before any worker, and master-side compaction.

Workers share their numbers without these hooks too (see :mod:`wsgi_observe.multiprocess`);
with them, the master also:

- checks the configuration before forking: a bad value stops gunicorn with one line and
  exit code 2, instead of every worker failing with a traceback;
- prepares the state directory (``WSGI_OBSERVE_STATE_DIR``, or a fresh private ``mkdtemp``
  one, removed at exit), claims it for this server, and hands it to the worker user when
  gunicorn runs with ``--user``;
- folds each exited worker's counts into the archive at once (``child_exit``), so state
  files stay bounded by the live workers even when nobody scrapes.

No hook ever raises into the master: a problem is logged and the server keeps running.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any, Optional

__all__ = ["child_exit", "on_exit", "on_starting", "post_fork", "post_worker_init"]

# The master's own record: the directory it prepared, and whether it made it.
_prepared: dict[str, Any] = {"path": None, "created": False}


def _fail(message: str) -> None:
    print(f"wsgi_observe: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _worker_ids(server: Any) -> tuple[int, int]:
    cfg = getattr(server, "cfg", None)
    uid = getattr(cfg, "uid", None)
    gid = getattr(cfg, "gid", None)
    return (
        uid if isinstance(uid, int) else os.geteuid(),
        gid if isinstance(gid, int) else os.getegid(),
    )


def on_starting(server: Any) -> None:
    """Master, before forking: check the configuration and prepare the state directory."""
    from ..config import Config, ConfigError, check_log_dir
    from . import statedir

    uid, gid = _worker_ids(server)
    try:
        config = Config.from_env()
        check_log_dir(config, owner=(uid, gid) if uid != os.geteuid() else None)
    except ConfigError as error:
        _fail(str(error))
        return
    if uid != os.geteuid():
        # With --preload the app, and our log files, were set up here already, as root.
        from ..logs.setup import hand_over

        hand_over(uid, gid)
    owners = {os.geteuid(), uid}
    master = statedir.identity_of(os.getpid())
    if master is None:  # pragma: no cover - we are running
        _fail("cannot read this process's start time")
        return
    path: Optional[str] = config.state_dir
    created = False
    try:
        if path:
            statedir.check_private(path, owners=owners, variable=statedir.ENV_STATE_DIR)
        else:
            path = tempfile.mkdtemp(prefix="wsgi_observe-")
            created = True
            if uid != os.geteuid():
                os.chown(path, uid, gid)
        statedir.claim(path, master, variable=statedir.ENV_STATE_DIR if not created else None)
    except (statedir.StateDirError, OSError) as error:
        if created and path:
            shutil.rmtree(path, ignore_errors=True)
        _fail(str(error))
        return
    _prepared["path"] = path
    _prepared["created"] = created
    # The workers' configuration reads it from there (Config is the one reader).
    os.environ[statedir.ENV_STATE_DIR] = path
    server.log.info("wsgi_observe: workers share their numbers in %s", path)


def post_fork(server: Any, worker: Any) -> None:
    """Kept for gunicorn config files written for 0.1, which import it: the table is now
    made in :func:`post_worker_init`, once the worker has dropped its privileges."""


def post_worker_init(worker: Any) -> None:
    """Worker, app loaded (and privileges dropped): make this worker's table now."""
    try:
        from ..config import Config
        from . import join

        join(Config.from_env())
    except Exception as error:  # never stop a worker for its numbers
        worker.log.warning("wsgi_observe: worker state not shared: %s", error)


def child_exit(server: Any, worker: Any) -> None:
    """Master, a worker has exited (or was killed): absorb its counts into the archive."""
    path = _prepared["path"]
    if not path:
        return
    try:
        from .merge import sweep

        sweep(path)
    except Exception as error:  # a hostile or broken file must never stop the master
        try:
            server.log.warning("wsgi_observe: could not absorb worker state: %s", error)
        except Exception:
            pass


def on_exit(server: Any) -> None:
    """Master, shutting down: remove the directory it made (a chosen one is kept)."""
    path = _prepared["path"]
    if path and _prepared["created"]:
        shutil.rmtree(path, ignore_errors=True)
