"""The apps gunicorn serves: ``bare`` (hello), ``wrapped`` and ``default`` (hello + wsgi_observe).

``wrapped`` is metrics only (``access_log=False, log_handlers=False``): the instrumentation,
which the throughput target is about. ``default`` is the configuration a user gets by
wrapping: request ids, the logging context and the JSON access line, written by both
workers to ``LOG_DIR`` (a temporary folder run.py sets) and to gunicorn's output (a file).
Both share their numbers across the workers through their state files. They are built on
first access, so the bare server never imports wsgi_observe.
"""

from __future__ import annotations

from typing import Any

from benchmarks.apps import hello_app

bare = hello_app


def __getattr__(name: str) -> Any:
    if name not in ("wrapped", "default"):
        raise AttributeError(name)
    from wsgi_observe import ObservabilityMiddleware

    if name == "wrapped":
        app = ObservabilityMiddleware(hello_app, access_log=False, log_handlers=False)
    else:
        app = ObservabilityMiddleware(hello_app)
    globals()[name] = app
    return app
