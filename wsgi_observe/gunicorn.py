"""gunicorn config module: ``gunicorn -c python:wsgi_observe.gunicorn -w 4 "myapp:app"``.

Or, with a config file of your own, pull the hooks in::

    # gunicorn.conf.py
    from wsgi_observe.gunicorn import (  # noqa: F401
        child_exit, on_exit, on_starting, post_worker_init,
    )
    workers = 4

The workers of a wrapped app share exact numbers without this module; with it, the master
checks the configuration before forking (one line and exit code 2 when a value is bad),
prepares a private state directory, and folds exited workers' counts at once. See
:mod:`wsgi_observe.multiprocess.gunicorn`. This module never imports the app or sentry_sdk.

Reads: the variables of :class:`wsgi_observe.Config` (in the master).
"""

# Only hook names at module level: gunicorn reads every name that matches one of its
# settings (``workers`` is one).
from .multiprocess.gunicorn import child_exit, on_exit, on_starting, post_fork, post_worker_init

__all__ = ["child_exit", "on_exit", "on_starting", "post_fork", "post_worker_init"]
