"""A wrapped app whose recent windows run on a clock the test moves, served by gunicorn.

``WINDOWS_TEST_CLOCK`` names a file holding seconds to add to the wall clock: the test
writes it to jump minutes ahead without waiting (every worker reads the same file, so the
processes of the server agree on the time, as they do on the real clock).
"""

from __future__ import annotations

import os
import time

from wsgi_observe import ObservabilityMiddleware, kpis

_CLOCK_FILE = os.environ.get("WINDOWS_TEST_CLOCK", "")


def clock() -> float:
    try:
        with open(_CLOCK_FILE, encoding="ascii") as file:
            offset = float(file.read().strip() or 0)
    except (OSError, ValueError):
        offset = 0.0
    return time.time() + offset


orders = kpis.counter("orders_total", "Orders by the path that took them.", labels=("path",))


def _app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    orders.labels(path=path).inc()  # a business KPI, windowed like the requests
    failed = path.startswith("/api/fail")
    body = str(os.getpid()).encode()
    status = "500 Internal Server Error" if failed else "200 OK"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = ObservabilityMiddleware(
    _app, service_name="windows-test", access_log=False, log_handlers=False, clock=clock
)
