"""Pyramid: requests named by their route pattern (``request.matched_route.pattern``).

One line in the configuration::

    config.include("wsgi_observe.integrations.pyramid")
    application = ObservabilityMiddleware(config.make_wsgi_app())

It adds a tween (outside the exception view tween) that, once the response is made, puts
the matched route's pattern into ``environ["wsgi_observe.endpoint"]``: ``/users/{id}``. A
request the route matched but no view accepted (a ``request_method`` predicate's 404) is
counted under that route too.

Traversal has no pattern. A request found by traversal is named after the resource type it
reached and the view name: ``/`` and ``/about`` for views of the root, ``/{User}`` and
``/{User}/edit`` for a ``User`` resource, so one name covers every user. A traversal 404
(no resource, no view) stays unnamed (``<unmatched>``): its path is whatever a client sent.

Pyramid is never imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._guard import guarded

__all__ = ["includeme", "name_request", "route_tween_factory"]

_KEY = "wsgi_observe.endpoint"


def name_request(request: Any, response: Any = None) -> None:
    """Name ``request`` after its matched route, or its traversal result (see the module)."""
    environ = request.environ
    if _KEY in environ:
        return
    route = getattr(request, "matched_route", None)
    if route is not None:
        pattern = getattr(route, "pattern", None)
        if isinstance(pattern, str):
            environ[_KEY] = pattern if pattern.startswith("/") else "/" + pattern
        return
    if response is not None and getattr(response, "status_code", None) == 404:
        return  # traversal found no resource or no view: the path is the client's
    context = getattr(request, "context", None)
    if context is None:
        return
    view_name = getattr(request, "view_name", "") or ""
    base = f"/{{{type(context).__name__}}}" if getattr(request, "traversed", None) else ""
    if view_name:
        environ[_KEY] = f"{base}/{view_name}"
    else:
        environ[_KEY] = base or "/"


def route_tween_factory(handler: Callable[[Any], Any], registry: Any) -> Callable[[Any], Any]:
    """The tween :func:`includeme` adds: names each request after the response is made."""

    def route_tween(request: Any) -> Any:
        response = None
        try:
            response = handler(request)
            return response
        finally:
            try:
                name_request(request, response)
            except Exception as error:
                guarded("pyramid route name", error)

    return route_tween


def includeme(config: Any) -> None:
    """``config.include("wsgi_observe.integrations.pyramid")``: add the naming tween."""
    config.add_tween("wsgi_observe.integrations.pyramid.route_tween_factory")
