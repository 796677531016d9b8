"""The request context and the access line's direct write, as the hot path now does them:
the context ends with one store (a copied context sees the end too), the exchange it keeps
holds no body, the access line's bytes are those of the plain encoding, X-Request-ID is found
in any case, request ids stay unique across batches, and level changes take effect at once."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import wait_until
from webtest import TestApp
from wsgi_client import call, environ_for, run

from wsgi_observe import logs
from wsgi_observe.logs import access as access_module
from wsgi_observe.logs import configure_logging, current_request_id, get_logger
from wsgi_observe.logs import context as context_module
from wsgi_observe.metrics import MetricsStore
from wsgi_observe.middleware import ObservabilityMiddleware

TEXT = [("Content-Type", "text/plain")]


@pytest.fixture(autouse=True)
def _no_log_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_DIR", raising=False)


def _setup(tmp_path: Path, level: str = "INFO") -> None:
    configure_logging(level, log_dir=tmp_path, stream=io.StringIO(), fmt="json")
    # Only our handlers on the root logger, as in production (pytest adds its own), so the
    # access line takes the direct write.
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)


def _raw_lines(path: Path) -> list[bytes]:
    logs.flush()
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def _access(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in _raw_lines(path)]
    return [line for line in lines if line["logger"] == "wsgi_observe.access"]


def _wrapped(app: Callable[..., Any], **kwargs: Any) -> ObservabilityMiddleware:
    return ObservabilityMiddleware(app, store=MetricsStore(), **kwargs)


def _hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", TEXT)
    return [b"Hello, world!"]


# The request context ends with the request --------------------------------------------


def test_the_context_ends_when_the_request_finishes(tmp_path: Path) -> None:
    """Inside: the environ and the id; after close(): nothing, and lines carry no request."""
    _setup(tmp_path)
    inside: list[Any] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        inside.append((context_module.current_request(), current_request_id()))
        return _hello(environ, start_response)

    response = TestApp(_wrapped(app)).get("/hello")
    ((environ, request_id),) = inside
    assert environ is not None and environ["PATH_INFO"] == "/hello"
    assert request_id == response.headers["X-Request-ID"]
    assert context_module.current_request() is None
    assert current_request_id() is None
    assert context_module.current_trace() is None
    get_logger("app").info("between requests")
    lines = [json.loads(line) for line in _raw_lines(tmp_path / "application.log")]
    (between,) = [line for line in lines if line["message"] == "between requests"]
    assert "request" not in between and "request_id" not in between


def test_a_copied_context_carries_the_request_while_it_runs_and_not_after(
    tmp_path: Path,
) -> None:
    """A thread started with copy_context() during a request logs with its id while the
    request runs; once the request has finished, its lines carry no request."""
    _setup(tmp_path)
    started, request_done, logged_after = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def background() -> None:
        seen["during"] = current_request_id()
        get_logger("app.worker").info("during the request")
        started.set()
        assert request_done.wait(10)
        seen["after"] = current_request_id()
        get_logger("app.worker").info("after the request")
        logged_after.set()

    threads: list[threading.Thread] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(background,))
        thread.start()
        threads.append(thread)
        assert started.wait(10)
        return _hello(environ, start_response)

    response = TestApp(_wrapped(app)).get("/spawn")
    request_done.set()
    assert logged_after.wait(10)
    threads[0].join(10)
    assert seen == {"during": response.headers["X-Request-ID"], "after": None}
    lines = [json.loads(line) for line in _raw_lines(tmp_path / "application.log")]
    by_message = {line["message"]: line for line in lines}
    assert by_message["during the request"]["request_id"] == response.headers["X-Request-ID"]
    assert by_message["during the request"]["request"]["path"] == "/spawn"
    assert "request_id" not in by_message["after the request"]


def test_the_context_keeps_no_body_after_the_request(tmp_path: Path) -> None:
    """The context keeps the last environ until the next request, never the body."""
    _setup(tmp_path)
    body = b"x" * 100_000 + bytes(sys.getrefcount.__name__, "ascii")  # one unique object
    refs = sys.getrefcount(body)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", TEXT)
        return [body]

    assert call(_wrapped(app), "/big").body == body
    assert sys.getrefcount(body) == refs


def test_enter_and_leave_request_still_work_on_their_own() -> None:
    """The public enter_request()/leave_request() pair (no middleware)."""
    environ = environ_for("/manual", headers={"X-Request-ID": "manual-1"})
    try:
        assert context_module.enter_request(environ) == "manual-1"
        assert context_module.current_request() is environ
        assert current_request_id() == "manual-1"
        assert environ["wsgi_observe.request_id"] == "manual-1"
    finally:
        context_module.leave_request()
    assert context_module.current_request() is None and current_request_id() is None


# Request ids ------------------------------------------------------------------------------


def test_request_ids_are_unique_and_count_across_batch_boundaries() -> None:
    """Ids are made 256 at a time: the counter runs on through every boundary."""
    prefix = context_module._prefix
    ids = [context_module.new_request_id() for _ in range(1030)]
    assert len(set(ids)) == len(ids)
    assert all(value.startswith(prefix) for value in ids)
    numbers = [int(value[len(prefix) :], 16) for value in ids]
    assert numbers == list(range(numbers[0], numbers[0] + len(ids)))
    assert [value[len(prefix) :] for value in ids] == [f"{n:x}" for n in numbers]


# X-Request-ID in the app's headers ---------------------------------------------------------


def _sending(name: str, value: str) -> Callable[..., Any]:
    """An app that answers with the header ``name: value`` besides Content-Type."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [*TEXT, (name, value)])
        return [b"ok"]

    return app


@pytest.mark.parametrize(
    "name", ["X-Request-ID", "x-request-id", "X-REQUEST-ID", "x-ReQuEsT-iD", "X-Request-Id"]
)
def test_the_apps_own_request_id_header_is_kept_in_any_case(tmp_path: Path, name: str) -> None:
    """Header names are case-insensitive: the app's own id is kept, never doubled."""
    _setup(tmp_path)
    response = call(_wrapped(_sending(name, "app-chosen")), "/own")
    assert [value for key, value in response.headers if key.lower() == "x-request-id"] == [
        "app-chosen"
    ]


@pytest.mark.parametrize(
    "name", ["X-Request-IDs", "X-Request_ID", "X-Request-\u0130D", "Request-ID", "X-Correlation-ID"]
)
def test_other_header_names_do_not_count_as_the_request_id(tmp_path: Path, name: str) -> None:
    """Near misses (an extra letter, an underscore, a dotted capital I) are other headers."""
    _setup(tmp_path)
    response = run(_wrapped(_sending(name, "other")), environ_for("/other"), validate=False)
    ours = [value for key, value in response.headers if key == "X-Request-ID"]
    assert len(ours) == 1 and ours[0] != "other"
    assert (name, "other") in response.headers


# The access line's direct write ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "agent"),
    [
        pytest.param("/plain", "curl/8.5", id="plain"),
        pytest.param('/quote"and\\backslash', 'agent "quoted"', id="escapes"),
        pytest.param("/caf\xc3\xa9", "Mozilla/5.0 \u00e9t\u00e9", id="utf-8"),
        pytest.param("/tab\there", "line\nbreak", id="controls"),
    ],
)
def test_the_direct_access_line_is_byte_for_byte_the_plain_encoding(
    tmp_path: Path, path: str, agent: str
) -> None:
    """The line written without a record is exactly orjson's encoding of the plain dict,
    in the documented order: timestamp, level, logger, message, then the fields."""
    _setup(tmp_path)
    environ = environ_for(path, headers={"User-Agent": agent}, REMOTE_ADDR="10.0.0.7")
    response = run(_wrapped(_hello), environ, validate=False)
    raw_lines = _raw_lines(tmp_path / "application.log")
    (raw,) = [line for line in raw_lines if b'"wsgi_observe.access"' in line]
    line = json.loads(raw)
    assert list(line)[:4] == ["timestamp", "level", "logger", "message"]
    plain = {
        "timestamp": line["timestamp"],
        "level": "INFO",
        "logger": "wsgi_observe.access",
        "message": line["message"],
        "method": "GET",
        "endpoint": line["endpoint"],
        "path": line["path"],
        "status": 200,
        "duration_ms": line["duration_ms"],
        "bytes": 13,
        "request_id": response.header("X-Request-ID"),
        "remote_addr": "10.0.0.7",
        "user_agent": agent,
    }
    assert raw == orjson.dumps(plain, option=orjson.OPT_APPEND_NEWLINE)
    assert line["message"] == f"GET {line['path']} 200 OK"


def test_access_line_timestamps_are_the_requests_end_across_milliseconds(tmp_path: Path) -> None:
    """The timestamp of each line is when its request ended, to the millisecond, also
    when requests end in new milliseconds and after the clock offset is re-synced."""
    _setup(tmp_path)
    app = _wrapped(_hello)
    windows = []
    for index in range(8):
        if index == 4:
            access_module._resync_clock()
        before = time.time()
        call(app, f"/t{index}")
        after = time.time()
        windows.append((before, after))
        # The next request ends in a later millisecond: wait for the clock, not a fixed time.
        wait_until(lambda until=after + 0.002: time.time() >= until, timeout=5, interval=0.0005)
    lines = _access(tmp_path / "application.log")
    assert [line["path"] for line in lines] == [f"/t{index}" for index in range(8)]
    for line, (before, after) in zip(lines, windows):
        stamp = datetime.strptime(line["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        assert before - 0.002 <= stamp <= after + 0.001
    assert len({line["timestamp"] for line in lines}) == 8


def test_the_access_line_survives_a_value_the_encoder_refuses(tmp_path: Path) -> None:
    """A User-Agent with a lone surrogate (not UTF-8) and a server that puts a non-string in
    the environ: the careful encoder writes the line, with its timestamp, level and logger."""
    _setup(tmp_path)
    environ = environ_for(
        "/odd", headers={"User-Agent": "bot\ud800"}, REMOTE_ADDR=("10.0.0.7", 5000, object())
    )
    run(_wrapped(_hello), environ, validate=False)
    (line,) = _access(tmp_path / "application.log")
    assert (line["level"], line["logger"], line["path"]) == ("INFO", "wsgi_observe.access", "/odd")
    assert line["timestamp"].endswith("Z") and isinstance(line["remote_addr"], (str, list))
    assert line["user_agent"].startswith("bot") and line["status"] == 200


class _Text(str):
    """A str subclass, as a server may hand over."""


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"),
    [
        ("REMOTE_ADDR", b"10.0.0.7", "remote_addr", "10.0.0.7"),
        ("REMOTE_ADDR", _Text("10.0.0.8"), "remote_addr", "10.0.0.8"),
        (
            "HTTP_USER_AGENT",
            "curl/8.5 caf\xc3\xa9".encode("latin-1"),
            "user_agent",
            "curl/8.5 café",
        ),
        ("HTTP_USER_AGENT", "x" * 600, "user_agent", "x" * 512),
        ("HTTP_USER_AGENT", None, "user_agent", None),
        ("REQUEST_METHOD", b"GET", "method", "GET"),
        ("PATH_INFO", _Text("/plain"), "path", "/plain"),
    ],
    ids=[
        "bytes-addr",
        "str-subclass-addr",
        "bytes-agent",
        "long-agent",
        "no-agent",
        "bytes-method",
        "str-subclass-path",
    ],
)
def test_the_access_line_writes_odd_request_values_as_plain_text(
    tmp_path: Path, key: str, value: Any, field: str, expected: Any
) -> None:
    """Values that are not plain ``str`` (a server that broke PEP 3333) are written as the
    text they hold, never as base64 or a type's repr; a User-Agent is cut to 512 characters."""
    _setup(tmp_path)
    environ = environ_for("/odd")
    environ.pop("HTTP_USER_AGENT", None)
    if value is not None:
        environ[key] = value
    app = _wrapped(_hello)
    run(app, environ, validate=False)
    (line,) = _access(tmp_path / "application.log")
    assert line[field] == expected
    assert line["request_id"] and line["duration_ms"] >= 0 and "trace_id" not in line
    # ... and the request is counted (a method that is not a str as OTHER).
    (series,) = app.snapshot().endpoints.values()
    assert series.count == 1
    if key == "REQUEST_METHOD":
        assert series.by == {("OTHER", "2xx"): 1}


@pytest.mark.parametrize(
    ("values", "path", "endpoint"),
    [
        ({"PATH_INFO": b"/odd/7"}, "/odd/7", "/odd/<int>"),
        ({"PATH_INFO": "/odd/café".encode()}, "/odd/café", "/odd/caf\xc3\xa9"),
        ({"PATH_INFO": None}, "", "/"),
        ({"PATH_INFO": 5}, "", "/"),
        (
            {"SCRIPT_NAME": b"/app", "PATH_INFO": b"/odd", "QUERY_STRING": b"token=s3cret&x=1"},
            "/app/odd?token=[redacted]&x=1",
            "/odd",
        ),
    ],
    ids=["bytes", "bytes-utf-8", "none", "int", "bytes-script-and-query"],
)
@pytest.mark.parametrize("excluded", [(), ("/static",)], ids=["no-exclusions", "exclusions"])
def test_a_path_that_is_not_a_str_is_served_counted_and_logged(
    tmp_path: Path, values: dict[str, Any], path: str, endpoint: str, excluded: tuple[str, ...]
) -> None:
    """A server that broke PEP 3333 (PATH_INFO as bytes, None, a number): the app still
    answers, also as the process's first request, the request is counted under a name, and
    the access line and the app's own line show the path as text (secrets redacted), never
    base64, a repr or a lost line."""
    _setup(tmp_path)
    app_log = logging.getLogger("test.odd")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        app_log.info("inside")
        return _hello(environ, start_response)

    wrapped = _wrapped(app, exclude_paths=excluded)
    environ = environ_for("/")
    environ.update(values)
    response = run(wrapped, environ, validate=False)
    assert response.body == b"Hello, world!"
    lines = [json.loads(line) for line in _raw_lines(tmp_path / "application.log")]
    inside, access = lines
    assert inside["message"] == "inside" and inside["request"]["path"] == path
    assert access["logger"] == "wsgi_observe.access"
    assert access["path"] == path and access["message"] == f"GET {path} 200 OK"
    assert access["endpoint"] == endpoint
    endpoints = wrapped.snapshot().endpoints
    assert list(endpoints) == [endpoint] and endpoints[endpoint].count == 1


_ACCESS = logging.getLogger("wsgi_observe.access")
# Ways to silence the access logger between two requests, each with its undoing.
_SILENCERS: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
    "setLevel": (lambda: _ACCESS.setLevel(logging.WARNING), lambda: _ACCESS.setLevel(0)),
    "disable": (lambda: logging.disable(logging.INFO), lambda: logging.disable(logging.NOTSET)),
    "disabled": (
        lambda: setattr(_ACCESS, "disabled", True),
        lambda: setattr(_ACCESS, "disabled", False),
    ),
}


@pytest.mark.parametrize("how", sorted(_SILENCERS))
def test_level_changes_take_effect_on_the_next_request(tmp_path: Path, how: str) -> None:
    """The direct write reads logging's own cache of isEnabledFor(): silencing the access
    logger between two requests (a level, logging.disable(), dictConfig's ``disabled``)
    applies to the second one already, and undoing it to the third."""
    _setup(tmp_path)
    app = _wrapped(_hello)
    silence, undo = _SILENCERS[how]
    call(app, "/before")
    silence()
    try:
        call(app, "/silenced")
    finally:
        undo()
    call(app, "/after")
    paths = [line["path"] for line in _access(tmp_path / "application.log")]
    assert paths == ["/before", "/after"]


def test_logging_still_caches_is_enabled_for_where_the_access_line_reads_it() -> None:
    """The direct write relies on Logger._cache (logging's own, since Python 3.7): if a new
    Python drops it, this fails, rather than every access line quietly taking the long way."""
    logger = logging.getLogger("wsgi_observe.access")
    assert access_module._enabled is logger._cache  # type: ignore[attr-defined]
    logger.isEnabledFor(logging.INFO)
    assert logger._cache.get(logging.INFO) is logger.isEnabledFor(logging.INFO)  # type: ignore[attr-defined]


def test_a_request_without_user_agent_or_address_takes_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No User-Agent and no REMOTE_ADDR are ordinary (a script, a unix socket): the line is
    written with nulls directly, never through the slow path for odd values."""
    _setup(tmp_path)

    def refuse(*args: Any) -> Any:
        raise AssertionError("the slow path ran")

    monkeypatch.setattr(access_module, "_plain_request", refuse)
    environ = environ_for("/plain")
    environ.pop("HTTP_USER_AGENT", None)
    environ.pop("REMOTE_ADDR", None)
    run(_wrapped(_hello), environ)
    (line,) = _access(tmp_path / "application.log")
    assert (line["user_agent"], line["remote_addr"], line["path"]) == (None, None, "/plain")
