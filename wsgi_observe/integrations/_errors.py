"""The one ERROR line for an exception a framework turned into a 500 page itself.

Falcon and Bottle catch a view's exception, answer 500 and write the traceback to
``wsgi.errors`` only, so the WSGI app never raises and the middleware has nothing to log.
Their adapters call :func:`log_unhandled` at that moment instead: the same line the
middleware writes for an app that raises ("Unhandled exception on GET /boom", with the
traceback, the endpoint and the request id), once. (Sentry's integrations for these
frameworks report the exception themselves; sentry-sdk's deduplication drops this line's
copy.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..endpoints import normalise_path

__all__ = ["log_unhandled"]

_log = logging.getLogger("wsgi_observe")


def log_unhandled(environ: Mapping[str, Any], error: BaseException) -> None:
    """Log ``error`` at ERROR with its traceback, named like the request's metrics."""
    if not isinstance(error, Exception):
        return
    name = environ.get("wsgi_observe.endpoint")
    if not isinstance(name, str):
        name = normalise_path(str(environ.get("PATH_INFO") or "/"))
    _log.error(
        "Unhandled exception on %s %s",
        environ.get("REQUEST_METHOD", "GET"),
        name,
        exc_info=(type(error), error, error.__traceback__),
        extra={"endpoint": name, "status": 500},
    )
