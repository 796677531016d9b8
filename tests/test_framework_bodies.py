"""Framework bodies (issue 18): what the server gets back, and that nothing was lost doing it.

A Flask (werkzeug) response held in memory is handed to the server as a list, its
``ClosingIterator`` closed once by our ``close()``; a streamed one, a HEAD, ``str`` chunks, a
``ClosingIterator`` we did not see built, or one already started, are streamed through our
generator as before. Either way: the same bytes as the app alone, the app's close() exactly
once, the request timed until ``close()``, a mid-stream error counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from wsgiref.validate import validator

import flask
import pytest
from werkzeug.wsgi import ClosingIterator
from wsgi_client import environ_for

from wsgi_observe import ObservabilityMiddleware, _wsgi
from wsgi_observe import middleware as middleware_module
from wsgi_observe.metrics import MetricsStore


class Recorder:
    """A server-side start_response that remembers the status and headers."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status, headers, exc_info=None):
        self.status, self.headers = status, headers
        return lambda data: None


def serve(app, environ) -> tuple[Recorder, bytes, object]:
    """Call ``app`` like a server: iterate the body, then close it (once)."""
    recorder = Recorder()
    body = app(environ, recorder)
    try:
        data = b"".join(body)
    finally:
        body.close()
    return recorder, data, body


class Clock:
    """perf_counter_ns for the middleware, moved by hand: durations without sleeping."""

    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def closes() -> list[str]:
    """What each response's close callbacks saw, in order."""
    return []


@pytest.fixture
def flask_app(closes: list[str]) -> flask.Flask:
    """A Flask app: a JSON route, a streamed route (one that fails half-way), str chunks."""
    app = flask.Flask("bodies")

    @app.after_request
    def on_close(response: flask.Response) -> flask.Response:
        path = flask.request.path
        response.call_on_close(lambda: closes.append(path))
        return response

    @app.get("/api/leads/<int:lead_id>")
    def lead(lead_id: int) -> flask.Response:
        return flask.jsonify(id=lead_id, name="Ada")

    @app.get("/stream/<int:fail_at>")
    def stream(fail_at: int) -> flask.Response:
        def chunks() -> Iterator[bytes]:
            for index in range(3):
                if index == fail_at:
                    raise RuntimeError("mid-stream failure")
                closes.append(f"chunk {index}")
                yield b"chunk %d;" % index

        return flask.Response(chunks(), mimetype="text/plain")

    @app.get("/text")
    def text() -> flask.Response:
        return flask.Response(["h\u00e9llo ", b"bytes"], mimetype="text/plain")

    return app


def observed(app: flask.Flask) -> ObservabilityMiddleware:
    middleware = ObservabilityMiddleware(
        validator(app.wsgi_app), store=MetricsStore(), access_log=False, log_handlers=False
    )
    app.wsgi_app = validator(middleware)  # type: ignore[method-assign]
    return middleware


def served_bare(app: flask.Flask, path: str, method: str = "GET") -> tuple[str, bytes]:
    recorder, data, _ = serve(app.wsgi_app, environ_for(path, method=method))
    assert recorder.status is not None
    return recorder.status, data


def test_an_in_memory_flask_response_is_a_list_with_the_same_bytes_closed_once(
    flask_app: flask.Flask, closes: list[str]
) -> None:
    """A JSON response goes to the server as our list: same status, headers and bytes as the
    app alone, werkzeug's close() (and its call_on_close) once, counted under the rule."""
    status, expected = served_bare(flask_app, "/api/leads/17")
    assert closes == ["/api/leads/17"]
    middleware = ObservabilityMiddleware(
        flask_app.wsgi_app, store=MetricsStore(), access_log=False, log_handlers=False
    )
    recorder, data, body = serve(middleware, environ_for("/api/leads/17"))
    assert type(body) is _wsgi.Exchange and isinstance(body.inner, ClosingIterator)
    assert (recorder.status, data) == (status, expected)
    assert closes == ["/api/leads/17"] * 2
    body.close()  # a second close() does nothing
    assert closes == ["/api/leads/17"] * 2
    series = middleware.snapshot().endpoints["/api/leads/<int:lead_id>"]
    assert (series.count, series.errors) == (1, 0)


def test_an_in_memory_flask_response_is_timed_until_close(
    flask_app: flask.Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The duration ends when the server calls close(), not when the app returned."""
    clock = Clock()
    monkeypatch.setattr(middleware_module, "perf_counter_ns", clock)
    middleware = observed(flask_app)
    body = flask_app.wsgi_app(environ_for("/api/leads/1"), Recorder())
    clock.now += 2_000_000_000  # the server takes 2 s to send it
    assert b"".join(body) == b'{"id":1,"name":"Ada"}\n'
    clock.now += 1_000_000_000
    body.close()
    series = middleware.snapshot().endpoints["/api/leads/<int:lead_id>"]
    assert (series.count, series.sum_ns) == (1, 3_000_000_000)


def test_an_app_close_that_raises_still_ends_the_request_once(flask_app: flask.Flask) -> None:
    """A call_on_close that raises: close() raises it, the request is counted once, failed."""

    @flask_app.get("/bad-close")
    def bad_close() -> flask.Response:
        response = flask.jsonify(ok=True)
        response.call_on_close(lambda: 1 / 0)
        return response

    middleware = ObservabilityMiddleware(
        flask_app.wsgi_app, store=MetricsStore(), access_log=False, log_handlers=False
    )
    body = middleware(environ_for("/bad-close"), Recorder())
    assert b"".join(body) == b'{"ok":true}\n'
    with pytest.raises(ZeroDivisionError):
        body.close()
    body.close()
    series = middleware.snapshot().endpoints["/bad-close"]
    assert (series.count, series.errors) == (1, 1)
    assert middleware.snapshot().inflight == 0


def test_a_streamed_flask_response_is_still_streamed_chunk_by_chunk(
    flask_app: flask.Flask, closes: list[str]
) -> None:
    """A generator response is not read ahead: each chunk leaves when the server asks."""
    middleware = observed(flask_app)
    body = flask_app.wsgi_app(environ_for("/stream/9"), Recorder())
    assert closes == []  # nothing produced yet
    chunks = iter(body)
    assert next(chunks) == b"chunk 0;"
    assert closes == ["chunk 0"]
    assert b"".join(chunks) == b"chunk 1;chunk 2;"
    body.close()
    assert closes == ["chunk 0", "chunk 1", "chunk 2", "/stream/9"]
    series = middleware.snapshot().endpoints["/stream/<int:fail_at>"]
    assert (series.count, series.errors) == (1, 0)


def test_a_streamed_flask_response_that_fails_half_way_is_an_error_closed_once(
    flask_app: flask.Flask, closes: list[str]
) -> None:
    """The exception reaches the server, close() runs once and the error is counted."""
    middleware = ObservabilityMiddleware(
        flask_app.wsgi_app, store=MetricsStore(), access_log=False, log_handlers=False
    )
    body = middleware(environ_for("/stream/1"), Recorder())
    with pytest.raises(RuntimeError, match="mid-stream"):
        for _ in body:
            pass
    body.close()
    body.close()
    assert closes == ["chunk 0", "/stream/1"]
    series = middleware.snapshot().endpoints["/stream/<int:fail_at>"]
    assert (series.count, series.errors) == (1, 1)


@pytest.mark.parametrize(
    ("path", "method"),
    [
        pytest.param("/api/leads/3", "HEAD", id="head-sends-no-body"),
        pytest.param("/text", "GET", id="str-chunks-encoded-by-werkzeug"),
        pytest.param("/nowhere", "GET", id="404-page"),
    ],
)
def test_flask_bodies_we_do_not_take_whole_are_the_app_bytes(
    flask_app: flask.Flask, path: str, method: str
) -> None:
    """A HEAD (werkzeug sends nothing), str chunks and a 404 come out as the app sends them."""
    expected = served_bare(flask_app, path, method)
    observed(flask_app)
    assert served_bare(flask_app, path, method) == expected
    if method == "HEAD":
        assert expected[1] == b""


def test_a_closing_iterator_of_the_app_own_is_streamed_and_closed_once() -> None:
    """A ClosingIterator that is not a werkzeug response's (or one already started) is
    streamed: every chunk, each of its callbacks once."""
    calls: list[str] = []

    def chunks() -> Iterator[bytes]:
        yield b"a"
        yield b"b"

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/started":
            started = chunks()
            next(started)  # the app took the first chunk itself
            return ClosingIterator(started, [lambda: calls.append("started")])
        return ClosingIterator(chunks(), [lambda: calls.append("own")])

    middleware = ObservabilityMiddleware(
        validator(app), store=MetricsStore(), access_log=False, log_handlers=False
    )
    _, data, _ = serve(validator(middleware), environ_for("/own"))
    assert data == b"ab" and calls == ["own"]
    _, data, _ = serve(validator(middleware), environ_for("/started"))
    assert data == b"b" and calls == ["own", "started"]
    assert {name: s.count for name, s in middleware.snapshot().endpoints.items()} == {
        "/own": 1,
        "/started": 1,
    }


def test_a_generator_body_is_iterated_once_through_one_iterator() -> None:
    """Our stream hands out one iterator however often iter() is called, counts the bytes
    and, when the server drops it half-way, neither closes the app twice nor fails."""
    closed: list[int] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"12"
            yield b"345"

        def close(self) -> None:
            closed.append(1)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    middleware = ObservabilityMiddleware(
        app, store=MetricsStore(), access_log=False, log_handlers=False
    )
    body = middleware(environ_for("/gen"), Recorder())
    first = iter(body)
    assert iter(body) is first
    assert next(first) == b"12"
    del first  # a client gone: the server drops the iterator, then closes
    body.close()
    body.close()
    assert closed == [1]
    series = middleware.snapshot().endpoints["/gen"]
    assert (series.count, series.errors) == (1, 0)
    exchange = body.exchange  # type: ignore[attr-defined]
    assert exchange.body_bytes() == 2


def test_the_adopter_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Body types are remembered once each, and no more than the cap: generated classes
    cannot grow the cache."""
    monkeypatch.setattr(_wsgi, "_ADOPTERS", {})
    monkeypatch.setattr(_wsgi, "_MAX_ADOPTERS", 3)
    middleware = ObservabilityMiddleware(
        lambda e, s: (s("200 OK", []), e["body"])[1],
        store=MetricsStore(),
        access_log=False,
        log_handlers=False,
    )
    for index in range(10):
        kind = type(f"Body{index}", (), {"__iter__": lambda self: iter([b"x"])})
        environ = environ_for("/many")
        environ["body"] = kind()
        assert serve(middleware, environ)[1] == b"x"
    assert len(_wsgi._ADOPTERS) == 3
