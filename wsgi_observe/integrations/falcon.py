"""Falcon: requests named by their route template (``req.uri_template``).

One line, after the routes are added::

    from wsgi_observe.integrations.falcon import name_routes

    app = name_routes(falcon.App())          # or name_routes(app) before serving it
    app.add_route("/users/{user_id:int}", users)
    application = ObservabilityMiddleware(app)

It adds :class:`RouteTemplateMiddleware`, whose ``process_response`` (which Falcon runs for
every request, errors included) puts the template into ``environ["wsgi_observe.endpoint"]``:
``/users/{user_id:int}``. A request answered before routing (a middleware's 401) is named
by the route its path matches; a 405 by its route too. A sink is named by its prefix
(``add_sink(handler, "/files")`` gives ``/files``), a static route by its prefix, so paths
under them share one name. A path that matches nothing stays unnamed (``<unmatched>``).
An exception that Falcon's default handler turns into a 500 is logged once at ERROR with
its traceback and request id (Falcon itself writes it to ``wsgi.errors`` only).

Falcon is never imported here; the WSGI ``falcon.App`` only (not ``falcon.asgi.App``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, TypeVar

from .._guard import guarded
from ._errors import log_unhandled

__all__ = ["RouteTemplateMiddleware", "name_routes", "template_of"]

_KEY = "wsgi_observe.endpoint"
_App = TypeVar("_App")


def template_of(app: Any, req: Any) -> Optional[str]:
    """The template a request to ``app`` matches when Falcon did not route it itself: its
    route's, else the prefix of the sink or static route it falls under; None if none."""
    path = req.path
    router = getattr(app, "_router", None)
    find = getattr(router, "find", None)
    if find is not None:
        route = find(path, req=req)
        if route is not None and len(route) >= 4 and isinstance(route[3], str):
            return str(route[3])
    # Sinks and static routes, in the order Falcon tries them (private, so read with care).
    for entry in getattr(app, "_sink_and_static_routes", ()):
        matcher, _obj, is_sink = entry
        if not matcher.match(path):
            continue
        prefix = getattr(matcher, "pattern" if is_sink else "_prefix", None)
        return prefix if isinstance(prefix, str) and prefix else None
    return None


class RouteTemplateMiddleware:
    """Falcon middleware: names each request after ``req.uri_template``.

    ``app``: the ``falcon.App`` it is added to, so that sinks, static routes and requests
    answered before routing are named too (:func:`name_routes` passes it). Without it those
    keep their normalised path. It never raises. Example::

        app = falcon.App(middleware=[RouteTemplateMiddleware()])

    Reads: nothing from the environment.
    """

    def __init__(self, app: Any = None) -> None:
        self.app = app

    def process_response(self, req: Any, resp: Any, resource: Any, req_succeeded: bool) -> None:
        try:
            env = req.env
            if _KEY in env:
                return  # named already (by the app, or by a second copy)
            template = req.uri_template
            if template is None and self.app is not None:
                template = template_of(self.app, req)
            if template:
                env[_KEY] = template
        except Exception as error:
            guarded("falcon route name", error)


def name_routes(app: _App) -> _App:
    """Add :class:`RouteTemplateMiddleware` to the Falcon ``app``, log the exceptions its
    default handler turns into 500s, and return the app."""
    app.add_middleware(RouteTemplateMiddleware(app))  # type: ignore[attr-defined]
    handlers = getattr(app, "_error_handlers", None)
    default = handlers.get(Exception) if isinstance(handlers, dict) else None
    if default is not None and not getattr(default, "_wsgi_observe", False):
        app.add_error_handler(Exception, _logging_handler(default))  # type: ignore[attr-defined]
    return app


def _logging_handler(default: Callable[..., Any]) -> Callable[..., Any]:
    """Falcon's handler for ``Exception`` (a 500 page, the traceback to ``wsgi.errors``),
    preceded by our one ERROR line (see :mod:`wsgi_observe.integrations._errors`)."""

    def handle(req: Any, resp: Any, ex: Exception, params: Any) -> Any:
        try:
            env = req.env
            if _KEY not in env:
                template = req.uri_template
                if template:
                    env[_KEY] = template
            log_unhandled(env, ex)
        except Exception as error:
            guarded("falcon exception log", error)
        return default(req, resp, ex, params)

    handle._wsgi_observe = True  # type: ignore[attr-defined]
    return handle
