"""Bottle: requests named by their route rule (``route.rule``).

One line, on the app you serve (``bottle.default_app()`` for the module-level ``@route``)::

    from wsgi_observe.integrations.bottle import name_routes

    app = name_routes(bottle.Bottle())
    application = ObservabilityMiddleware(app)

It adds an ``after_request`` hook (which Bottle runs for every request, errors and
``abort()`` included) that puts the matched rule into ``environ["wsgi_observe.endpoint"]``:
``/users/<id:int>``. A 405 (the path matched a rule of another method) is counted under
that rule; a path that matches nothing stays unnamed (``<unmatched>``). A Bottle app
mounted with ``app.mount("/api/", sub)`` has its rules moved into ``app`` with the prefix,
so its requests are named ``/api/users/<id>`` by the hook of ``app``. An exception that
Bottle turns into a 500 page (``catchall``, its default) is logged once at ERROR with its
traceback and request id (Bottle itself writes it to ``wsgi.errors`` only).

Bottle is imported only when a request is named.
"""

from __future__ import annotations

import sys
from typing import Any, Optional, TypeVar

from .._guard import guarded
from ._errors import log_unhandled

__all__ = ["name_request", "name_routes"]

_KEY = "wsgi_observe.endpoint"
_App = TypeVar("_App")


def _rule_of(route: Any) -> Optional[str]:
    rule = getattr(route, "rule", None)
    if not isinstance(rule, str) or not rule:
        return None
    return rule if rule.startswith("/") else "/" + rule


def name_request(app: Any, environ: dict[str, Any], status: Optional[int], allow: str) -> None:
    """Name the request of ``environ`` after the rule it matched in ``app`` (a 405: the
    rule of one of the ``allow``-ed methods)."""
    if _KEY in environ:
        return
    route = environ.get("bottle.route")
    if route is None:
        if status != 405 or not allow:
            return  # nothing matched: a 404 is <unmatched>
        method = allow.split(",")[0].strip()
        try:
            route, _args = app.router.match({**environ, "REQUEST_METHOD": method})
        except Exception:  # bottle.HTTPError: nothing matches that way either
            return
    name = _rule_of(route)
    if name:
        environ[_KEY] = name


def name_routes(app: _App) -> _App:
    """Name every request of the Bottle ``app`` after its route rule; returns the app."""

    def after_request() -> None:
        # Bottle runs this hook in a ``finally``: a view's exception is still in flight.
        error = sys.exc_info()[1]
        try:
            import bottle

            response = bottle.response
            environ = bottle.request.environ
            name_request(app, environ, response.status_code, response.headers.get("Allow", ""))
            if (
                error is not None
                and not isinstance(error, bottle.HTTPResponse)
                and getattr(app, "catchall", True)
            ):
                # Bottle answers 500 and writes the traceback to wsgi.errors only.
                log_unhandled(environ, error)
        except Exception as failure:
            guarded("bottle route name", failure)

    app.add_hook("after_request", after_request)  # type: ignore[attr-defined]
    return app
