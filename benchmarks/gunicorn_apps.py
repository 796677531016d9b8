"""The two apps gunicorn serves: ``bare`` (hello) and ``wrapped`` (hello + wsgi_observe).

``wrapped`` uses the process-wide store (as a user's app does), so the gunicorn hooks of
``wsgi_observe.gunicorn`` can move it onto per-worker state. The access log is off: this
measures the instrumentation, not a log sink. ``wrapped`` is built on first access, so the
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

    app = ObservabilityMiddleware(hello_app, access_log=False)
    globals()["wrapped"] = app
    return app
