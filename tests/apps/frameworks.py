"""The same small API in Falcon, Pyramid and Bottle, each named through its adapter.

Each ``<framework>_app()`` returns the framework's WSGI app; ``falcon_application`` and the
others are those apps wrapped by ObservabilityMiddleware, for gunicorn. Routes, in each
framework's own syntax: users by integer id, ``/boom`` (raises), ``/log`` (logs a line),
``/only-get`` (GET only), plus what is special to each (Falcon: a sink and a route behind
a middleware that answers 401 before routing; Pyramid: a traversal app; Bottle: a mount).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from wsgi_observe import ObservabilityMiddleware, checks

log = logging.getLogger("tests.frameworks")

CHECKS = {
    "database": checks.database(lambda: sqlite3.connect(":memory:")),
    "external_services": checks.optional({"sendgrid": checks.env_configured("SENDGRID_API_KEY")}),
}


# Falcon ----------------------------------------------------------------------------------


def falcon_app(*, adapter: str = "name_routes") -> Any:
    import falcon

    from wsgi_observe.integrations.falcon import RouteTemplateMiddleware, name_routes

    class Users:
        def on_get(self, req: Any, resp: Any, user_id: int) -> None:
            resp.media = {"id": user_id}

    class Boom:
        def on_get(self, req: Any, resp: Any) -> None:
            raise RuntimeError("falcon view failed")

    class Log:
        def on_get(self, req: Any, resp: Any) -> None:
            log.info("inside the view", extra={"marker": "falcon-view"})
            resp.text = "logged"

    class OnlyGet:
        def on_get(self, req: Any, resp: Any) -> None:
            resp.text = "get only"

    class Private:
        def on_get(self, req: Any, resp: Any, thing: str) -> None:
            resp.text = thing

    class Auth:
        """Answers 401 before routing for /private/*."""

        def process_request(self, req: Any, resp: Any) -> None:
            if req.path.startswith("/private/"):
                resp.status = falcon.HTTP_401
                resp.text = "who are you?"
                resp.complete = True

    def files(req: Any, resp: Any, **params: Any) -> None:
        resp.text = "file " + req.path

    middleware = [Auth()]
    if adapter == "middleware":
        middleware.append(RouteTemplateMiddleware())
    app = falcon.App(middleware=middleware)
    app.add_route("/users/{user_id:int}", Users())
    app.add_route("/boom", Boom())
    app.add_route("/log", Log())
    app.add_route("/only-get", OnlyGet())
    app.add_route("/private/{thing}", Private())
    app.add_sink(files, "/files")
    return name_routes(app) if adapter == "name_routes" else app


# Pyramid ---------------------------------------------------------------------------------


def pyramid_app() -> Any:
    from pyramid.config import Configurator
    from pyramid.response import Response

    def user(request: Any) -> Any:
        return {"id": int(request.matchdict["id"])}

    def boom(request: Any) -> Any:
        raise RuntimeError("pyramid view failed")

    def log_line(request: Any) -> Any:
        log.info("inside the view", extra={"marker": "pyramid-view"})
        return Response("logged")

    def only_get(request: Any) -> Any:
        return Response("get only")

    with Configurator() as config:
        config.include("wsgi_observe.integrations.pyramid")
        config.add_route("user", "/users/{id:\\d+}")
        config.add_view(user, route_name="user", renderer="json")
        config.add_route("boom", "/boom")
        config.add_view(boom, route_name="boom")
        config.add_route("log", "/log")
        config.add_view(log_line, route_name="log")
        config.add_route("only_get", "/only-get")
        config.add_view(only_get, route_name="only_get", request_method="GET")
        return config.make_wsgi_app()


class Resource(dict):  # type: ignore[type-arg]
    """A traversal node (location-aware, as Pyramid wants)."""

    def __init__(self, name: str, parent: Any) -> None:
        super().__init__()
        self.__name__ = name
        self.__parent__ = parent


class Root(Resource):
    pass


class Users(Resource):
    def __getitem__(self, key: str) -> Any:
        if not key.isdigit():
            raise KeyError(key)
        return User(key, self)


class User(Resource):
    pass


def pyramid_traversal_app() -> Any:
    from pyramid.config import Configurator
    from pyramid.response import Response

    root = Root("", None)
    root["users"] = Users("users", root)

    def show(request: Any) -> Any:
        return Response(f"{type(request.context).__name__} {request.context.__name__}")

    with Configurator(root_factory=lambda request: root) as config:
        config.include("wsgi_observe.integrations.pyramid")
        config.add_view(show, context=Root)
        config.add_view(show, context=Root, name="about")
        config.add_view(show, context=Users)
        config.add_view(show, context=User)
        config.add_view(show, context=User, name="edit")
        return config.make_wsgi_app()


# Bottle ----------------------------------------------------------------------------------


def bottle_app() -> Any:
    import bottle

    from wsgi_observe.integrations.bottle import name_routes

    app = bottle.Bottle()

    @app.get("/users/<user_id:int>")
    def user(user_id: int) -> Any:
        return {"id": user_id}

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("bottle view failed")

    @app.get("/log")
    def log_line() -> Any:
        log.info("inside the view", extra={"marker": "bottle-view"})
        return "logged"

    @app.get("/only-get")
    def only_get() -> Any:
        return "get only"

    shop = bottle.Bottle()

    @shop.get("/items/<item_id:int>")
    def item(item_id: int) -> Any:
        return {"item": item_id}

    app.mount("/shop/", shop)
    return name_routes(app)


def _wrapped(app: Any, service: str) -> ObservabilityMiddleware:
    return ObservabilityMiddleware(app, service_name=service, checks=CHECKS)


def __getattr__(name: str) -> Any:
    """``falcon_application``, ``pyramid_application``, ``bottle_application`` (built on
    first use, so importing this module imports no framework)."""
    builders = {
        "falcon_application": falcon_app,
        "pyramid_application": pyramid_app,
        "bottle_application": bottle_app,
    }
    if name not in builders:
        raise AttributeError(name)
    value = _wrapped(builders[name](), name.split("_")[0])
    globals()[name] = value
    return value
