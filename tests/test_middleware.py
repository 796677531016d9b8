"""The middleware between two wsgiref validators: PEP 3333, our endpoints, and bad input."""

from __future__ import annotations

import io
import itertools
import json
import re
from wsgiref.util import FileWrapper
from wsgiref.validate import validator

import pytest
from webtest import TestApp
from wsgi_client import environ_for

from wsgi_observe import ObservabilityMiddleware, _wsgi, wrap
from wsgi_observe import middleware as middleware_module
from wsgi_observe.endpoints import OVERFLOW, UNMATCHED
from wsgi_observe.metrics import MetricsStore

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Recorder:
    """A server-side start_response that remembers what it was given."""

    def __init__(self) -> None:
        self.status = None
        self.headers = None
        self.written: list[bytes] = []

    def __call__(self, status, headers, exc_info=None):
        if exc_info is not None and self.status is not None:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status, self.headers = status, headers
        return self.written.append


def serve(app, environ) -> tuple[Recorder, bytes]:
    """Call ``app`` like a server does: iterate the body, then close it."""
    recorder = Recorder()
    body = app(environ, recorder)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return recorder, b"".join(recorder.written) + data


class ClosingBody:
    """An app iterable that counts close() calls and can fail mid-stream."""

    def __init__(self, chunks, fail_at=None):
        self.chunks = list(chunks)
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self):
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_at:
                raise RuntimeError("mid-stream failure")
            yield chunk

    def close(self):
        self.closed += 1


def make(app, **options):
    """The middleware between two validators, with its own store."""
    options.setdefault("access_log", False)
    inner = validator(app)
    middleware = ObservabilityMiddleware(inner, store=MetricsStore(), **options)
    return middleware, validator(middleware)


def counts(middleware) -> dict:
    return {name: s.count for name, s in middleware.snapshot().endpoints.items()}


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


# PEP 3333 ---------------------------------------------------------------------------------


def test_close_is_called_exactly_once_on_a_normal_end():
    """The app's close() runs once when the server closes our wrapper."""
    body = ClosingBody([b"a", b"b"])
    middleware, app = make(lambda e, s: (s("200 OK", [("Content-Type", "text/plain")]), body)[1])
    recorder, data = serve(app, environ_for("/stream"))
    assert data == b"ab" and recorder.status == "200 OK"
    assert body.closed == 1
    assert counts(middleware) == {"/stream": 1}


def test_close_is_called_exactly_once_after_a_mid_stream_error():
    """An exception while iterating propagates, close() runs once and an error is counted."""
    body = ClosingBody([b"a", b"b", b"c"], fail_at=1)
    middleware = ObservabilityMiddleware(
        lambda e, s: (s("200 OK", [("Content-Type", "text/plain")]), body)[1],
        store=MetricsStore(),
        access_log=False,
    )
    result = middleware(environ_for("/stream"), Recorder())
    with pytest.raises(RuntimeError, match="mid-stream"):
        for _ in result:
            pass
    result.close()
    result.close()
    assert body.closed == 1
    series = middleware.snapshot().endpoints["/stream"]
    assert series.count == 1 and series.errors == 1


def test_close_is_called_exactly_once_when_the_client_disconnects():
    """A server that stops iterating early (client gone) still closes once, and we record."""
    body = ClosingBody([b"a", b"b", b"c"])
    middleware = ObservabilityMiddleware(
        lambda e, s: (s("200 OK", [("Content-Type", "text/plain")]), body)[1],
        store=MetricsStore(),
        access_log=False,
    )
    result = middleware(environ_for("/stream"), Recorder())
    iterator = iter(result)
    assert next(iterator) == b"a"
    result.close()
    assert body.closed == 1
    assert middleware.snapshot().endpoints["/stream"].count == 1


def test_generator_body_is_closed_once():
    """A generator app body is closed exactly once (no double close via yield from)."""
    closes = []

    def app(environ, start_response):
        def gen():
            try:
                start_response("200 OK", [("Content-Type", "text/plain")])
                yield b"x"
                yield b"y"
            finally:
                closes.append(1)

        return gen()

    middleware, wrapped = make(app)
    result = wrapped(environ_for("/gen"), Recorder())
    iterator = iter(result)
    next(iterator)
    result.close()
    assert closes == [1]
    assert counts(middleware) == {"/gen": 1}


def test_status_set_lazily_inside_the_first_next_is_recorded():
    """start_response called from inside the generator is still seen."""

    def app(environ, start_response):
        def gen():
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            yield b"busy"

        return gen()

    middleware, wrapped = make(app)
    recorder, data = serve(wrapped, environ_for("/lazy"))
    assert recorder.status.startswith("503") and data == b"busy"
    series = middleware.snapshot().endpoints["/lazy"]
    assert series.errors == 1 and series.by == {("GET", "5xx"): 1}


def test_exception_before_start_response_propagates_unchanged_and_is_counted():
    """The very same exception object reaches the server, after being counted as an error."""
    boom = ValueError("before")

    def app(environ, start_response):
        raise boom

    middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
    with pytest.raises(ValueError) as caught:
        middleware(environ_for("/boom"), Recorder())
    assert caught.value is boom
    series = middleware.snapshot().endpoints["/boom"]
    assert series.count == 1 and series.errors == 1
    assert middleware.snapshot().inflight == 0


def test_exception_after_start_response_propagates_unchanged():
    """An app raising after start_response: same exception, counted once."""
    boom = KeyError("after")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise boom

    middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
    with pytest.raises(KeyError) as caught:
        middleware(environ_for("/x"), Recorder())
    assert caught.value is boom
    assert middleware.snapshot().endpoints["/x"].errors == 1


def test_start_response_with_exc_info_is_passed_through():
    """An app that recovers with exc_info gets the server's behaviour, and the 500 is recorded."""

    def app(environ, start_response):
        try:
            raise RuntimeError("handled")
        except RuntimeError:
            import sys

            start_response(
                "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
            )
            return [b"sorry"]

    middleware, wrapped = make(app)
    recorder, data = serve(wrapped, environ_for("/err"))
    assert recorder.status.startswith("500") and data == b"sorry"
    assert middleware.snapshot().endpoints["/err"].errors == 1


def test_write_callable_is_the_servers_own():
    """The legacy write() callable returned by start_response still works."""

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"early ")
        return [b"late"]

    middleware, wrapped = make(app)
    _, data = serve(wrapped, environ_for("/write"))
    assert data == b"early late"
    assert counts(middleware) == {"/write": 1}


def test_file_wrapper_is_rewrapped_in_the_servers_class():
    """A wsgi.file_wrapper body comes back as the server's class, and close() finishes it."""
    handle = io.BytesIO(b"file-contents")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](handle, 4)

    middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
    environ = environ_for("/file")
    environ["wsgi.file_wrapper"] = FileWrapper
    result = middleware(environ, Recorder())
    assert isinstance(result, FileWrapper)
    assert b"".join(result) == b"file-contents"
    assert middleware.snapshot().endpoints.get("/file") is None  # not finished until close()
    result.close()
    assert handle.closed
    assert counts(middleware) == {"/file": 1}


def test_list_body_keeps_its_length_for_servers_that_ask():
    """wsgiref sets Content-Length from len(body) == 1; our wrapper keeps __len__."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"sized"]

    middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
    result = middleware(environ_for("/sized"), Recorder())
    assert len(result) == 1
    assert list(result) == [b"sized"]
    result.close()


def test_response_is_unchanged_byte_for_byte():
    """Status, headers and body the app produced reach the client untouched."""
    headers = [("Content-Type", "text/csv"), ("X-Custom", "1"), ("Set-Cookie", "a=b")]

    def app(environ, start_response):
        start_response("201 Created", list(headers))
        return [b"a,b\n", b"1,2\n"]

    _, wrapped = make(app)
    recorder, data = serve(wrapped, environ_for("/csv", "POST"))
    # The one addition is the request id, after the app's own headers.
    assert recorder.status == "201 Created" and recorder.headers[:-1] == headers
    assert recorder.headers[-1][0] == "X-Request-ID"
    assert data == b"a,b\n1,2\n"


# Our endpoints ----------------------------------------------------------------------------


@pytest.fixture
def client() -> TestApp:
    return TestApp(
        ObservabilityMiddleware(
            hello,
            store=MetricsStore(),
            service_name="iSwitch Roofs CRM API",
            version="1.0.0",
            access_log=False,
        )
    )


def test_health_has_the_guides_shape(client):
    """GET /health: status, service, timestamp (ms, Z), version; no-store."""
    response = client.get("/health")
    assert response.status_int == 200
    assert set(response.json) == {"status", "service", "timestamp", "version"}
    assert response.json["status"] == "healthy"
    assert response.json["service"] == "iSwitch Roofs CRM API"
    assert response.json["version"] == "1.0.0"
    assert ISO.match(response.json["timestamp"])
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"] == "application/json"


def test_live_has_the_guides_shape(client):
    """GET /health/live: status and timestamp only."""
    response = client.get("/health/live")
    assert set(response.json) == {"status", "timestamp"}
    assert ISO.match(response.json["timestamp"])


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready", "/metrics"])
def test_head_gives_the_same_status_and_headers_without_a_body(client, path):
    """HEAD answers like GET with an empty body (load balancers, UptimeRobot)."""
    get = client.get(path)
    head = client.head(path)
    assert head.status_int == get.status_int
    assert head.body == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert head.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready", "/metrics"])
def test_other_methods_get_405_with_allow(path, method):
    """Any method but GET and HEAD is refused with 405 and an Allow header."""
    middleware = ObservabilityMiddleware(hello, store=MetricsStore(), access_log=False)
    recorder, body = serve(middleware, environ_for(path, method))
    assert recorder.status.startswith("405")
    assert dict(recorder.headers)["Allow"] == "GET, HEAD"
    assert json.loads(body)["error"] == "method not allowed"


def test_probes_and_metrics_are_not_counted_as_traffic(client):
    """Our own endpoints never show up in the application's numbers."""
    for path in ["/health", "/health/live", "/health/ready", "/metrics"]:
        client.get(path)
    client.get("/api/leads")
    doc = client.get("/metrics").json
    assert doc["application"]["requests"]["total"] == 1
    assert list(doc["endpoints"]) == ["/api/leads"]


def test_metrics_json_has_the_guides_blocks_and_units(client, monkeypatch):
    """application, endpoints and system blocks with the guide's field names and units."""
    ticks = itertools.count(step=2_000_000)  # the middleware's clock: 2 ms per request
    with monkeypatch.context() as patch:
        patch.setattr(middleware_module, "perf_counter_ns", lambda: next(ticks))
        for _ in range(3):
            client.get("/api/leads")
    doc = client.get("/metrics").json
    assert ISO.match(doc["timestamp"])
    app = doc["application"]
    assert app["requests"]["total"] == 3 and app["requests"]["errors"] == 0
    assert app["requests"]["error_rate"] == 0.0
    assert set(app["response_times"]) >= {"average", "p50", "p95", "p99"}
    assert app["response_times"]["average"] == 0.002  # seconds
    assert app["response_times"]["p50"] == pytest.approx(0.002, rel=0.01)  # HDR precision
    assert app["uptime_seconds"] >= 0
    endpoint = doc["endpoints"]["/api/leads"]
    assert endpoint["requests"] == 3 and endpoint["errors"] == 0
    assert endpoint["avg_response_time"] == 0.002
    assert {"p50", "p95", "p99", "max"} <= set(endpoint)
    assert endpoint["status"]["2xx"] == 3
    system = doc["system"]
    assert set(system["cpu"]) == {"usage_percent", "count"}
    assert set(system["memory"]) == {"total_mb", "available_mb", "used_mb", "percent"}
    assert set(system["disk"]) == {"total_gb", "used_gb", "free_gb", "percent"}


def test_errors_are_5xx_or_exceptions_not_4xx():
    """A 404 or 400 is not an error; a 500 is."""

    def app(environ, start_response):
        code = environ["PATH_INFO"].rsplit("/", 1)[-1]
        start_response(f"{code} Something", [("Content-Type", "text/plain")])
        return [b""]

    client = TestApp(ObservabilityMiddleware(app, store=MetricsStore(), access_log=False))
    client.get("/s/400", status=400)
    client.get("/s/500", status=500)
    client.get("/s/302", status=302)
    doc = client.get("/metrics").json
    assert doc["application"]["requests"]["total"] == 3
    assert doc["application"]["requests"]["errors"] == 1


def test_exclude_paths_are_not_observed(store):
    """Excluded prefixes reach the app but never the metrics."""
    client = TestApp(
        ObservabilityMiddleware(
            hello, store=store, exclude_paths=["/static", "/stream"], access_log=False
        )
    )
    client.get("/static/app.js")
    client.get("/stream/events")
    client.get("/api/x")
    assert list(client.get("/metrics").json["endpoints"]) == ["/api/x"]


def test_metrics_token_guards_metrics_but_not_health(store):
    """With a token, /metrics needs the bearer; /health and /health/live stay open."""
    client = TestApp(
        ObservabilityMiddleware(hello, store=store, metrics_token="s3cret", access_log=False)
    )
    assert client.get("/metrics", status=401).headers["WWW-Authenticate"].startswith("Bearer")
    client.get("/metrics", headers={"Authorization": "Bearer nope"}, status=401)
    client.get("/metrics", headers={"Authorization": "Basic s3cret"}, status=401)
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_int == 200
    assert client.get("/health").status_int == 200
    assert client.get("/health/live").status_int == 200


# Endpoint names ---------------------------------------------------------------------------


def test_flask_route_templates_name_the_endpoints(store):
    """Flask's matched rule names the endpoint: one key for every id; unrouted 404s share one."""
    import flask  # a test dependency (setup.cfg's test extra): missing means a broken install

    app = flask.Flask(__name__)

    @app.route("/api/leads/<int:lead_id>")
    def lead(lead_id):
        return {"id": lead_id}

    app.wsgi_app = ObservabilityMiddleware(app.wsgi_app, store=store, access_log=False)
    client = TestApp(app)
    for lead_id in range(5):
        client.get(f"/api/leads/{lead_id}")
    client.get("/random/a", status=404)
    client.get("/random/b", status=404)
    endpoints = client.get("/metrics").json["endpoints"]
    assert endpoints["/api/leads/<int:lead_id>"]["requests"] == 5
    assert endpoints[UNMATCHED]["requests"] == 2
    assert len(endpoints) == 2


def test_adapter_named_endpoint_wins(store):
    """environ['wsgi_observe.endpoint'] set by the app or an adapter is used as the name."""

    def app(environ, start_response):
        environ["wsgi_observe.endpoint"] = "/orders/{order_id}"
        return hello(environ, start_response)

    client = TestApp(ObservabilityMiddleware(app, store=store, access_log=False))
    client.get("/orders/1")
    client.get("/orders/2")
    assert client.get("/metrics").json["endpoints"]["/orders/{order_id}"]["requests"] == 2


def test_paths_are_normalised_and_capped(store):
    """Ids and uuids collapse; past max_endpoints, names share the overflow bucket."""
    client = TestApp(ObservabilityMiddleware(hello, store=store, max_endpoints=3, access_log=False))
    client.get("/api/leads/17")
    client.get("/api/leads/18")
    client.get("/api/leads/0b9a6a8e-7c52-4c9f-9e53-3b7f4a9d2c11")
    client.get("/a")
    client.get("/b")
    client.get("/c")
    endpoints = client.get("/metrics").json["endpoints"]
    assert endpoints["/api/leads/<int>"]["requests"] == 2
    assert endpoints["/api/leads/<uuid>"]["requests"] == 1
    assert endpoints["/a"]["requests"] == 1
    assert endpoints[OVERFLOW]["requests"] == 2
    assert len(endpoints) == 4


# Bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"REQUEST_METHOD": "BREW", "PATH_INFO": "/pot"}, id="odd-method"),
        pytest.param(
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/caf\xc3\xa9/\xff\xfe"}, id="non-utf8-path"
        ),
        pytest.param(
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/" + "a" * 100_000}, id="very-long-path"
        ),
        pytest.param({"REQUEST_METHOD": "GET"}, id="no-path-info"),
        pytest.param({}, id="no-method-no-path"),
        pytest.param(
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/h", "HTTP_X_BIG": "x" * 1_000_000},
            id="huge-header",
        ),
        pytest.param({"REQUEST_METHOD": "GET", "PATH_INFO": '/a\tb\n"c\\'}, id="control-chars"),
    ],
)
def test_bad_input_never_breaks_the_response_and_is_counted(environ):
    """Odd methods, odd paths and missing keys: the app's answer is unchanged and counted."""
    store = MetricsStore()
    middleware = ObservabilityMiddleware(hello, store=store, access_log=False)
    recorder, body = serve(middleware, environ)
    assert recorder.status == "200 OK" and body == b"hello"
    snapshot = middleware.snapshot()
    assert sum(s.count for s in snapshot.endpoints.values()) == 1
    assert all(len(name) <= 210 for name in snapshot.endpoints)
    json.loads(TestApp(middleware).get("/metrics").body)  # still renders


def test_random_methods_do_not_grow_memory():
    """Thousands of invented methods share the OTHER label."""
    store = MetricsStore()
    middleware = ObservabilityMiddleware(hello, store=store, access_log=False)
    for i in range(2000):
        serve(middleware, environ_for("/m", f"X{i}"))
    series = middleware.snapshot().endpoints["/m"]
    assert series.by == {("OTHER", "2xx"): 2000}
    assert len(store.endpoints["/m"].by) == 1  # one cached label, not one per method
    assert len([key for key in store.table.keys if key[0] == "c"]) == 1


def test_wrap_imports_a_module_attribute():
    """wrap('module:attr') loads the app the way gunicorn does."""
    middleware = wrap("tests.apps.basic:_app", store=MetricsStore(), access_log=False)
    recorder, body = serve(middleware, environ_for("/pid"))
    assert recorder.status == "200 OK" and body.isdigit()


def test_wrap_rejects_a_bad_target():
    """A target without a module, or not callable, fails with a clear error."""
    with pytest.raises(ValueError):
        wrap(":app")
    with pytest.raises(TypeError):
        wrap("json:__name__")


def test_overall_percentiles_merge_every_endpoint_exactly(store):
    """The application's p50/p99 come from all endpoints' HDR buckets summed exactly."""
    import random

    from wsgi_observe.histograms import merge_all, percentiles_sorted

    middleware = ObservabilityMiddleware(hello, store=store, access_log=False)
    rng = random.Random(3)
    for name in ("/a", "/b", "/c"):
        for _ in range(300):
            exchange = _wsgi.Exchange.begin(middleware, environ_for(name), Recorder())
            exchange.status = "200 OK"
            exchange.started -= int(rng.lognormvariate(10, 1.5))
            exchange.close()
    snapshot = middleware.snapshot()
    expected = merge_all(series.sorted_hist() for series in snapshot.endpoints.values())
    assert snapshot.overall == expected
    doc = TestApp(middleware).get("/metrics").json
    wanted = percentiles_sorted(*expected, [50, 99])
    assert doc["application"]["response_times"]["p50"] == round(wanted[50] / 1e6, 6)
    assert doc["application"]["response_times"]["p99"] == round(wanted[99] / 1e6, 6)


def test_app_exception_is_logged_once_at_error_with_traceback(caplog):
    """Without configure_logging, the middleware itself logs the app's exception once."""

    def app(environ, start_response):
        raise ZeroDivisionError("division by zero in a view")

    middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
    with caplog.at_level("ERROR", logger="wsgi_observe"), pytest.raises(ZeroDivisionError):
        middleware(environ_for("/api/divide"), Recorder())
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert errors[0].exc_info[0] is ZeroDivisionError
    assert errors[0].endpoint == "/api/divide"
