"""Falcon, Pyramid and Bottle, for real: their adapters under webtest and gunicorn.

The same small API in each (tests/apps/frameworks.py): names are route templates in the
framework's own syntax, counts are exact, errors are counted and logged once with their
request id, and readiness answers 200 with an optional check degraded. Bad input: a Falcon
sink, a request Falcon answers before routing, Pyramid traversal, a Bottle mount.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import webtest
from conftest import Gunicorn, wait_until

from tests.apps import frameworks
from wsgi_observe import ObservabilityMiddleware, logs
from wsgi_observe.metrics import MetricsStore

if TYPE_CHECKING:
    from sentry_receiver import SentryReceiver

pytest_plugins = ("sentry_receiver",)  # its fixtures: sentry_receiver, sentry_init

#: framework -> (builder, user route name, the status of POST /only-get)
FRAMEWORKS: dict[str, tuple[Callable[[], Any], str, int]] = {
    "falcon": (frameworks.falcon_app, "/users/{user_id:int}", 405),
    # Pyramid has no 405: a request_method predicate that refuses is a 404 of the route.
    "pyramid": (frameworks.pyramid_app, "/users/{id:\\d+}", 404),
    "bottle": (frameworks.bottle_app, "/users/<user_id:int>", 405),
}
NAMES = pytest.mark.parametrize("framework", list(FRAMEWORKS))


def observed(app: Any, **overrides: Any) -> webtest.TestApp:
    overrides.setdefault("store", MetricsStore())
    overrides.setdefault("readiness_cache_ttl", 0.0)
    return webtest.TestApp(ObservabilityMiddleware(app, **overrides))


def site(framework: str, **overrides: Any) -> webtest.TestApp:
    return observed(FRAMEWORKS[framework][0](), checks=frameworks.CHECKS, **overrides)


def counts(app: webtest.TestApp) -> dict[str, dict[str, Any]]:
    """endpoint -> (requests, {status class: count} without the zeros)."""
    series = app.get("/metrics").json["endpoints"]
    return {
        name: (data["requests"], {cls: n for cls, n in data["status"].items() if n})
        for name, data in series.items()
    }


def log_lines(name: str) -> list[dict[str, Any]]:
    logs.flush()
    path = Path(os.environ["LOG_DIR"]) / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def only_our_root_handlers() -> None:
    """As in production: drop pytest's handlers from the root logger, so ours set its level."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)


# Names and counts ------------------------------------------------------------------------


@NAMES
def test_requests_count_under_their_route_template(framework: str) -> None:
    """Distinct ids share one route-template name; an unmatched path is ``<unmatched>``."""
    _, user_route, _ = FRAMEWORKS[framework]
    app = site(framework)
    for user in (1, 2, 3):
        assert app.get(f"/users/{user}").json == {"id": user}
    app.get("/log")
    assert app.get("/no/such/17", expect_errors=True).status_int == 404
    assert counts(app) == {
        user_route: (3, {"2xx": 3}),
        "/log": (1, {"2xx": 1}),
        "<unmatched>": (1, {"4xx": 1}),
    }


@NAMES
def test_a_refused_method_counts_under_its_route(framework: str) -> None:
    """POST to a GET-only route is refused by the framework, and counted under that route."""
    _, _, refused = FRAMEWORKS[framework]
    app = site(framework)
    assert app.post("/only-get", expect_errors=True).status_int == refused
    assert counts(app) == {"/only-get": (1, {"4xx": 1})}


@NAMES
def test_view_exception_is_one_counted_error_and_one_log_line(framework: str) -> None:
    """A view that raises: one 5xx error under its route, and one ERROR line with the
    traceback, the endpoint and the request id (Falcon and Bottle answer 500 themselves;
    Pyramid lets it propagate, and the middleware logs it)."""
    app = site(framework)
    if framework == "pyramid":
        with pytest.raises(RuntimeError, match="pyramid view failed"):
            app.get("/boom", headers={"X-Request-ID": "req-boom-0001"})
    else:
        response = app.get("/boom", headers={"X-Request-ID": "req-boom-0001"}, expect_errors=True)
        assert response.status_int == 500
        assert response.headers["X-Request-ID"] == "req-boom-0001"
    series = app.get("/metrics").json["endpoints"]["/boom"]
    assert (series["requests"], series["errors"], series["status"]["5xx"]) == (1, 1, 1)
    (line,) = log_lines("errors.log")
    assert line["message"] == "Unhandled exception on GET /boom"
    assert (line["endpoint"], line["request_id"]) == ("/boom", "req-boom-0001")
    assert line["exception"]["type"] == "RuntimeError"
    assert f"{framework} view failed" in line["exception"]["traceback"]


@NAMES
def test_view_log_line_and_access_line_share_the_request_id(framework: str) -> None:
    """A line logged in a view and the access line carry the caller's request id; the access
    line names the route."""
    only_our_root_handlers()
    app = site(framework)
    response = app.get("/log", headers={"X-Request-ID": "req-log-0001"})
    assert response.headers["X-Request-ID"] == "req-log-0001"
    lines = log_lines("application.log")
    (view_line,) = [line for line in lines if line.get("marker") == f"{framework}-view"]
    assert view_line["request_id"] == "req-log-0001"
    (access,) = [line for line in lines if line["logger"] == "wsgi_observe.access"]
    assert (access["endpoint"], access["status"], access["request_id"]) == (
        "/log",
        200,
        "req-log-0001",
    )


@NAMES
def test_readiness_is_200_with_the_optional_check_degraded(framework: str) -> None:
    """The database check is healthy and the SendGrid key missing: 200, ``degraded``."""
    response = site(framework).get("/health/ready")
    assert (response.status_int, response.json["status"]) == (200, "degraded")
    sendgrid = response.json["checks"]["external_services"]["sendgrid"]
    assert (sendgrid["status"], sendgrid["required"]) == ("degraded", False)


# Falcon ----------------------------------------------------------------------------------


def test_falcon_sink_and_requests_answered_before_routing() -> None:
    """A sink counts under its prefix whatever the path; a 401 from a middleware that runs
    before routing counts under the route its path matches."""
    app = site("falcon")
    for path in ("/files/a/b.txt", "/files/c.txt", "/files/d/e/f"):
        assert app.get(path).text == "file " + path
    assert app.get("/private/report", expect_errors=True).status_int == 401
    assert counts(app) == {"/files": (3, {"2xx": 3}), "/private/{thing}": (1, {"4xx": 1})}


def test_falcon_middleware_alone_names_routes_but_not_sinks() -> None:
    """RouteTemplateMiddleware without the app (falcon.App(middleware=[...])) names routes;
    sinks keep their normalised path, as documented."""
    app = observed(frameworks.falcon_app(adapter="middleware"))
    app.get("/users/7")
    app.get("/files/a")
    assert counts(app) == {"/users/{user_id:int}": (1, {"2xx": 1}), "/files/a": (1, {"2xx": 1})}


def test_falcon_name_routes_twice_adds_one_error_log() -> None:
    """name_routes() called twice still logs a converted exception once."""
    from wsgi_observe.integrations.falcon import name_routes

    app = observed(name_routes(frameworks.falcon_app()))
    assert app.get("/boom", expect_errors=True).status_int == 500
    assert len(log_lines("errors.log")) == 1
    assert counts(app) == {"/boom": (1, {"5xx": 1})}


# Pyramid ---------------------------------------------------------------------------------


def test_pyramid_traversal_is_named_by_resource_type_and_view() -> None:
    """Traversal has no pattern: names are the resource type and view name, one per kind
    of resource; a traversal 404 is ``<unmatched>``."""
    app = observed(frameworks.pyramid_traversal_app())
    for path in ("/", "/about", "/users", "/users/17", "/users/18", "/users/19/edit"):
        assert app.get(path).status_int == 200
    for path in ("/users/abc", "/users/17/nope"):
        assert app.get(path, expect_errors=True).status_int == 404
    assert counts(app) == {
        "/": (1, {"2xx": 1}),
        "/about": (1, {"2xx": 1}),
        "/{Users}": (1, {"2xx": 1}),
        "/{User}": (2, {"2xx": 2}),
        "/{User}/edit": (1, {"2xx": 1}),
        "<unmatched>": (2, {"4xx": 2}),
    }


# Bottle ----------------------------------------------------------------------------------


def test_bottle_mounted_app_is_named_with_its_prefix() -> None:
    """Routes of an app mounted at /shop/ count under their full rule."""
    app = site("bottle")
    for item in (3, 4):
        assert app.get(f"/shop/items/{item}").json == {"item": item}
    assert counts(app) == {"/shop/items/<item_id:int>": (2, {"2xx": 2})}


# Sentry ----------------------------------------------------------------------------------


@NAMES
def test_one_transaction_and_one_event_with_sentry(
    framework: str, sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """With sentry-sdk's own integration for the framework on (it is auto-enabled), a request
    is one transaction (named by its template), and a view's exception one event."""
    import sentry_sdk

    sentry_init(traces_sample_rate=1.0)
    _, user_route, _ = FRAMEWORKS[framework]
    app = site(framework)
    app.get("/users/5")
    if framework == "pyramid":
        with pytest.raises(RuntimeError):
            app.get("/boom")
    else:
        assert app.get("/boom", expect_errors=True).status_int == 500
    sentry_receiver.wait_for("transaction", 2)
    (event,) = sentry_receiver.wait_for("event")
    sentry_sdk.flush(timeout=5)
    names = sorted(t["transaction"] for t in sentry_receiver.transactions)
    assert len(names) == 2  # one per request: sentry-sdk's inner WSGI middleware stood aside
    if framework != "bottle":
        assert names == sorted(["/boom", user_route])
    # (sentry-sdk's BottleIntegration names transactions itself, by its transaction_style:
    # the view function by default, the rule with transaction_style="url".)
    assert len(sentry_receiver.events) == 1
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert event["tags"]["endpoint"] == "/boom"


# Under gunicorn --------------------------------------------------------------------------


@pytest.mark.slow
@NAMES
def test_framework_under_gunicorn_counts_exactly_across_workers(
    gunicorn: Callable[..., Gunicorn], framework: str
) -> None:
    """Two workers: exact counts per template, the error counted and logged once with its
    request id, and readiness 200 with the optional check degraded."""
    _, user_route, _ = FRAMEWORKS[framework]
    server = gunicorn(f"tests.apps.frameworks:{framework}_application", "-w", "2")
    for user in range(1, 21):
        status, _, body = server.get(f"/users/{user}")
        assert (status, json.loads(body)) == (200, {"id": user})
    assert server.get("/no/such/1")[0] == 404
    status, headers, _ = server.get("/boom", headers={"X-Request-ID": "req-gunicorn-0001"})
    assert status == 500

    def settled() -> dict[str, Any] | None:
        doc: dict[str, Any] = json.loads(server.get("/metrics")[2])
        total = doc["application"]["requests"]["total"]
        assert total <= 22, f"{total} requests recorded, expected 22"
        return doc if total == 22 else None

    series = wait_until(settled)["endpoints"]
    assert {name: data["requests"] for name, data in series.items()} == {
        user_route: 20,
        "<unmatched>": 1,
        "/boom": 1,
    }
    assert series["/boom"]["errors"] == 1

    status, _, body = server.get("/health/ready")
    assert (status, json.loads(body)["status"]) == (200, "degraded")

    errors_log = Path(server.log_dir or os.environ["LOG_DIR"]) / "errors.log"

    def error_lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in errors_log.read_text().splitlines()]

    (line,) = wait_until(error_lines)
    assert (line["endpoint"], line["request_id"]) == ("/boom", "req-gunicorn-0001")
    if framework != "pyramid":
        assert headers["X-Request-ID"] == "req-gunicorn-0001"
