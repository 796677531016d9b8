"""A small bare WSGI app wrapped by the middleware, served by gunicorn in tests."""

from __future__ import annotations

import os
import signal
import time

from wsgi_observe import ObservabilityMiddleware


def _app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/slow":
        # A deliberately slow endpoint: ?ms= sets its latency (default 50 ms).
        query = environ.get("QUERY_STRING", "")
        delay_ms = int(query[3:]) if query.startswith("ms=") and query[3:].isdigit() else 50
        time.sleep(delay_ms / 1000)
        body = b"slow"
    elif path == "/die":
        # Simulate a crash right after answering: the worker is killed by SIGKILL.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        os.kill(os.getpid(), signal.SIGKILL)
        return [b"die"]
    elif path.startswith("/missing"):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    else:
        body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = ObservabilityMiddleware(_app, service_name="test-basic", version="1.2.3", access_log=False)
