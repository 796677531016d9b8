"""The two apps gunicorn serves: ``bare`` (hello) and ``wrapped`` (hello + wsgi_observe).

``wrapped`` is the default configuration, as a user gets it by wrapping: request ids, the
logging context and the JSON access line, written by both workers to ``LOG_DIR`` (a
temporary folder run.py sets) and to gunicorn's stderr (a file). Its numbers are shared
by the workers through their state files. ``wrapped`` is built on first access, so the
bare server never imports wsgi_observe.
"""

from __future__ import annotations

from typing import Any

from benchmarks.apps import hello_app

bare = hello_app


def __getattr__(name: str) -> Any:
    if name != "wrapped":
        raise AttributeError(name)
    from wsgi_observe import ObservabilityMiddleware

    app = ObservabilityMiddleware(hello_app)
    globals()["wrapped"] = app
    return app
