"""Hostile input and misbehaving apps (issue 9): nothing a client or an app sends may forge a
log line, flood Sentry, break ``/metrics``, duplicate a header or leave a count behind.

Each test goes through the public API (the middleware, ``configure_logging``,
``init_sentry``, real gunicorn), so it proves the behaviour whatever module holds the code.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

from wsgi_observe import ObservabilityMiddleware
from wsgi_observe.logs import ConsoleFormatter, configure_logging, flush
from wsgi_observe.metrics import MetricsStore

if TYPE_CHECKING:
    from conftest import Gunicorn
    from sentry_receiver import SentryReceiver

pytest_plugins = ("sentry_receiver",)  # its fixtures: sentry_receiver, sentry_init

# What a console line looks like, and one that a hostile path tries to slip in.
FORGED = "2026-01-01 00:00:00 [ERROR] root: FORGED"
_LINE_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


def call(
    app: Any,
    path: str = "/",
    *,
    query: str = "",
    method: str = "GET",
    headers: Optional[dict[str, str]] = None,
    validate: bool = True,
) -> tuple[Any, list[tuple[str, str]], bytes]:
    """One request, inside ``wsgiref.validate`` unless the test breaks PEP 3333 on purpose;
    returns (status, headers, body)."""
    environ: dict[str, Any] = {
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "REQUEST_METHOD": method,
        "QUERY_STRING": query,
    }
    setup_testing_defaults(environ)
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen: dict[str, Any] = {}

    def start_response(status: Any, response_headers: Any, exc_info: Any = None) -> Any:
        seen["status"] = status
        seen["headers"] = list(response_headers)
        return lambda data: None

    body = (validator(app) if validate else app)(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return seen["status"], seen["headers"], data


def metrics_of(middleware: Any, query: str = "") -> dict[str, Any]:
    status, _, body = call(middleware, "/metrics", query=query)
    assert status == "200 OK"
    return json.loads(body)  # type: ignore[no-any-return]


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def swallowed_errors(request: pytest.FixtureRequest) -> list[BaseException]:
    """The errors the runtime guard swallowed so far in this test (conftest's tripwire)."""
    return request.getfixturevalue("_raise_guarded_errors")  # type: ignore[no-any-return]


# 1. The console format: one record, one line; no terminal controls ------------------------


def _console_output(run: Callable[[], None]) -> str:
    """What the console handler wrote while ``run()`` ran (console format, no files)."""
    stream = io.StringIO()
    configure_logging("INFO", log_dir="", fmt="console", stream=stream)
    run()
    flush()
    return stream.getvalue()


def test_a_path_with_an_encoded_newline_cannot_forge_a_console_line() -> None:
    """A request for ``/api/leads%0A2026-01-01 ... FORGED`` writes no line of its own."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        logging.getLogger("tests.leads").warning("lead created")
        return hello(environ, start_response)

    middleware = ObservabilityMiddleware(validator(app), store=MetricsStore())
    # The server decodes %0A: PATH_INFO holds a real line break.
    output = _console_output(lambda: call(middleware, "/api/leads\n" + FORGED))

    lines = output.splitlines()
    assert any("lead created" in line for line in lines)
    assert not [line for line in lines if line.startswith(FORGED)]
    assert all(_LINE_START.match(line) for line in lines), lines
    assert "/api/leads\\n" + FORGED in output


def test_terminal_escape_codes_never_reach_the_console_raw() -> None:
    """ANSI and other control characters in the path, method, message, logger name and an
    exception message are written escaped (``\\x1b``), never as raw control bytes."""
    escape = "\x1b[2J\x1b]0;pwned\x07"

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        logging.getLogger("tests.leads").warning("client said %s", escape)
        logging.getLogger("tests." + escape).warning("from a hostile logger name")
        try:
            raise ValueError("bad input " + escape)
        except ValueError:
            logging.getLogger("tests.leads").exception("lookup failed")
        return hello(environ, start_response)

    middleware = ObservabilityMiddleware(app, store=MetricsStore())
    output = _console_output(
        lambda: call(middleware, "/leads/" + escape, method="G" + escape, validate=False)
    )

    assert "client said" in output and "hostile logger name" in output
    assert "lookup failed" in output and "ValueError: bad input" in output
    assert not [ch for ch in output if ch != "\n" and (ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0)]
    assert output.count("\\x1b[2J\\x1b]0;pwned\\x07") >= 5  # message, name, path, method, error


def test_a_traceback_cannot_forge_a_console_line_either() -> None:
    """An exception message with line breaks keeps its text, indented under the traceback."""

    def run() -> None:
        try:
            raise ValueError("bad input\n" + FORGED)
        except ValueError:
            logging.getLogger("tests.leads").exception("lookup failed")

    lines = _console_output(run).splitlines()

    assert lines[0].endswith("lookup failed") and lines[1] == "Traceback (most recent call last):"
    (forged,) = [line for line in lines if FORGED in line]
    assert forged[0].isspace()
    assert any(line.startswith("ValueError: bad input") for line in lines)


def test_colours_are_the_only_escape_codes_on_a_terminal() -> None:
    """With colour on, the level's colour codes are the only escape sequences written."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter(color=True))
    logger = logging.getLogger("tests.colour")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("red \x1b[32mgreen\x1b[0m")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    line = stream.getvalue()
    assert line.count("\x1b[") == 2  # the level's colour and its reset
    assert "\x1b[31m[ERROR]\x1b[0m" in line
    assert "red \\x1b[32mgreen\\x1b[0m" in line


# 2. A path beyond Latin-1 under Sentry: no feedback loop ----------------------------------


class _InternalLines(logging.Handler):
    """Collects the runtime guard's lines, whichever logger they are written to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "wsgi_observe internal error" in message:
            self.lines.append(message)


@pytest.mark.parametrize(
    "raises", [pytest.param(False, id="answers"), pytest.param(True, id="raises")]
)
def test_a_path_beyond_latin_1_never_floods_sentry(
    sentry_receiver: SentryReceiver,
    sentry_init: Callable[..., bool],
    request: pytest.FixtureRequest,
    raises: bool,
) -> None:
    """One request whose PATH_INFO holds characters above U+00FF (servers pass them) gives
    one Sentry event per real error and no internal error (the event keeps its URL), with
    sentry-sdk's logging integration on (the default)."""
    sentry_init(traces_sample_rate=1.0)
    internal = _InternalLines()
    logging.getLogger().addHandler(internal)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        # Proves the logging integration is on: an app's ERROR line becomes an event.
        logging.getLogger("tests.app").error("the app's own error line")
        if raises:
            raise RuntimeError("the app failed")
        return hello(environ, start_response)

    middleware = ObservabilityMiddleware(app, store=MetricsStore())
    try:
        if raises:
            with pytest.raises(RuntimeError):
                call(middleware, "/caf\u0101/\u4e2d\u6587", validate=False)
        else:
            status, _, _ = call(middleware, "/caf\u0101/\u4e2d\u6587", validate=False)
            assert status == "200 OK"
        expected = 2 if raises else 1
        sentry_receiver.wait_for("event", count=expected)
        sentry_receiver.wait_for("transaction")
        import sentry_sdk

        # Events are queued while the request runs (a feedback loop included): a flush
        # delivers all of them.
        sentry_sdk.flush(timeout=10)
    finally:
        logging.getLogger().removeHandler(internal)

    events = sentry_receiver.events
    messages = sorted(
        event.get("logentry", {}).get("message") or event["exception"]["values"][-1]["type"]
        for event in events
    )
    assert messages == (
        ["RuntimeError", "the app's own error line"] if raises else ["the app's own error line"]
    )
    assert len(sentry_receiver.payloads("transaction")) == 1
    assert internal.lines == []
    assert swallowed_errors(request) == []
    urls = {event["request"]["url"] for event in events if "request" in event}
    assert urls == {"http://127.0.0.1/caf%C4%81/%E4%B8%AD%E6%96%87"}, urls


# 3. A lone surrogate in an endpoint name ---------------------------------------------------


def test_a_lone_surrogate_in_an_endpoint_name_never_breaks_metrics() -> None:
    """An adapter naming a request ``/x\\ud800`` gets a 200 from every format, now and later."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi_observe.endpoint"] = "/x\ud800"
        return hello(environ, start_response)

    middleware = ObservabilityMiddleware(validator(app), store=MetricsStore())
    for round_ in (1, 2):
        call(middleware, "/x")
        for fmt in ("json", "prometheus", "openmetrics"):
            status, _, body = call(middleware, "/metrics", query=f"format={fmt}")
            assert status == "200 OK", (round_, fmt)
            text = body.decode("utf-8")  # strict: no surrogate escaped into the output
            assert "/x\ufffd" in text or "/x\\ufffd" in text
        endpoints = metrics_of(middleware)["endpoints"]
        assert endpoints["/x\ufffd"]["requests"] == round_


# 4. X-Request-ID: the app's own wins -------------------------------------------------------


@pytest.mark.parametrize("name", ["X-Request-ID", "x-request-id", "X-REQUEST-ID"])
@pytest.mark.parametrize("incoming", [pytest.param(None, id="new-id"), "client-id-42"])
def test_an_apps_own_request_id_header_is_the_only_one(name: str, incoming: Optional[str]) -> None:
    """An app that sets X-Request-ID (any case) gets exactly that one header back."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), (name, "app-7")])
        return [b"ok"]

    middleware = ObservabilityMiddleware(validator(app), store=MetricsStore())
    headers = {"X-Request-ID": incoming} if incoming else None
    _, response_headers, _ = call(middleware, "/api/leads", headers=headers)

    ids = [value for key, value in response_headers if key.lower() == "x-request-id"]
    assert ids == ["app-7"]


def test_a_request_id_is_sent_back_when_the_app_sets_none() -> None:
    """Without an app's own header, the client's id comes back, once."""
    middleware = ObservabilityMiddleware(validator(hello), store=MetricsStore())
    _, response_headers, _ = call(middleware, "/", headers={"X-Request-ID": "client-id-42"})

    ids = [value for key, value in response_headers if key.lower() == "x-request-id"]
    assert ids == ["client-id-42"]


# 5. Accept negotiation ---------------------------------------------------------------------

_OPENMETRICS = "application/openmetrics-text"
_TEXT = "text/plain; version=0.0.4"
_JSON = "application/json"
_PROTOBUF = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        pytest.param(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            _OPENMETRICS,
            id="prometheus-2.42",
        ),
        pytest.param(
            "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
            "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            _OPENMETRICS,
            id="prometheus-2.49",
        ),
        pytest.param(
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
            "application/openmetrics-text;version=0.0.1;q=0.5,"
            "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
            "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            _OPENMETRICS,
            id="prometheus-3",
        ),
        pytest.param(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
            "encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,"
            "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            _PROTOBUF,
            id="prometheus-native-histograms",
        ),
        pytest.param("text/plain", _TEXT, id="text-plain"),
        pytest.param("text/plain;version=0.0.4", _TEXT, id="text-0.0.4"),
        pytest.param("*/*", _JSON, id="anything"),
        pytest.param(
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
            "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
            _JSON,
            id="browser",
        ),
        pytest.param("application/openmetrics-text;q=0, text/plain", _TEXT, id="openmetrics-q0"),
        pytest.param("text/plain;q=0.2, application/json;q=0.9", _JSON, id="json-preferred"),
        pytest.param("application/json;q=0.1, text/plain", _TEXT, id="q-beats-order"),
        pytest.param("text/*;q=0.9, */*;q=0.1", _TEXT, id="text-wildcard"),
        pytest.param("text/plain;q=0, */*", _JSON, id="text-refused"),
        pytest.param("APPLICATION/OPENMETRICS-TEXT; VERSION=1.0.0", _OPENMETRICS, id="upper-om"),
        pytest.param("Text/Plain", _TEXT, id="mixed-case-text"),
        pytest.param(";;;,,,/ , q=1;;", _JSON, id="garbage"),
        pytest.param("text/plain;q=banana, application/openmetrics-text;q=2", _JSON, id="bad-q"),
        pytest.param("\x00\xff" * 3000, _JSON, id="long-junk"),
    ],
)
def test_accept_negotiation_honours_quality_order_specificity_and_case(
    accept: str, expected: str
) -> None:
    """``/metrics`` answers in the format the ``Accept`` header ranks highest (RFC 9110)."""
    middleware = ObservabilityMiddleware(hello, store=MetricsStore())
    status, headers, _ = call(middleware, "/metrics", headers={"Accept": accept}, validate=False)

    assert status == "200 OK"
    assert dict(headers)["Content-Type"].startswith(expected)


# 6. An invalid status from the app ---------------------------------------------------------


@pytest.mark.parametrize(
    "status", [pytest.param("", id="empty"), pytest.param(b"200 OK", id="bytes"), 200]
)
def test_an_invalid_status_is_counted_as_a_server_error(status: Any) -> None:
    """A request answered with a status that is not a status line counts as 5xx (the server
    answers it with an error), and in_flight returns to 0."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = ObservabilityMiddleware(app, store=MetricsStore())
    call(middleware, "/api/leads", validate=False)
    call(middleware, "/api/leads", validate=False)

    requests = metrics_of(middleware)["application"]["requests"]
    assert requests["total"] == 2
    assert requests["errors"] == 2
    assert requests["status"]["5xx"] == 2
    assert requests["in_flight"] == 0


def test_in_flight_returns_to_zero_when_bookkeeping_fails(request: pytest.FixtureRequest) -> None:
    """A request whose recording fails (an endpoint name that cannot be turned into text)
    still leaves in_flight at 0, and the next request is counted."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no name")

        __repr__ = __str__

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/broken":
            environ["wsgi_observe.endpoint"] = Unprintable()
        return hello(environ, start_response)

    middleware = ObservabilityMiddleware(app, store=MetricsStore())
    call(middleware, "/broken", validate=False)
    swallowed = list(swallowed_errors(request))
    swallowed_errors(request).clear()
    call(middleware, "/fine")

    requests = metrics_of(middleware)["application"]["requests"]
    assert requests["in_flight"] == 0
    assert requests["total"] >= 1
    assert swallowed  # the failure was reported, not hidden


def test_invalid_statuses_under_gunicorn_are_counted_and_leave_nothing_in_flight(
    gunicorn: Callable[..., Gunicorn],
) -> None:
    """Under real gunicorn, every request with an invalid status is counted (as 5xx) and
    in_flight goes back to 0 (0.1 left them uncounted and in_flight stuck)."""
    server = gunicorn("wsgi_observe:wrap('tests.apps.bad_status:app')", "-w", "2")
    paths = ["/status/empty", "/status/bytes", "/status/int", "/fine"] * 5
    answers = [server.get(path)[0] for path in paths]
    assert answers == [500, 500, 500, 200] * 5  # gunicorn refuses each invalid status

    status, _, body = server.get("/metrics")
    assert status == 200
    requests = json.loads(body)["application"]["requests"]
    assert requests["total"] == 20
    assert requests["status"]["5xx"] == 15
    assert requests["status"]["2xx"] == 5
    assert requests["in_flight"] == 0


# 7. A bad configuration value under gunicorn: one line, no traceback ------------------------


def _finished(server: Gunicorn, timeout_s: float = 60.0) -> tuple[int, str]:
    """gunicorn's exit code and output, once it has stopped by itself."""
    code = server.process.wait(timeout=timeout_s)
    return code, server.output()


def test_a_bad_value_stops_gunicorn_in_the_master_with_one_line(
    gunicorn: Callable[..., Gunicorn],
) -> None:
    """With our config module, the master checks the configuration before forking: one line
    naming the variable, exit code 2, no worker ever started."""
    server = gunicorn("tests.apps.basic:app", "-w", "2", env={"LOG_LEVEL": "LOUD"}, ready=False)
    code, output = _finished(server)

    assert code == 2, output
    assert "Traceback" not in output
    assert "Booting worker" not in output
    (line,) = [line for line in output.splitlines() if "LOG_LEVEL" in line]
    assert "LOUD" in line
    assert len(output.splitlines()) <= 3, output


@pytest.mark.parametrize(
    "app",
    [
        pytest.param("wsgi_observe:wrap('tests.apps.bad_status:app')", id="wrap"),
        pytest.param("tests.apps.basic:app", id="middleware-in-module"),
    ],
)
def test_a_bad_value_stops_gunicorn_workers_with_one_line_each(
    gunicorn: Callable[..., Gunicorn], app: str
) -> None:
    """Without our config module, each worker says what is wrong in one line, without a
    traceback, and gunicorn stops instead of respawning workers forever."""
    server = gunicorn(app, "-w", "3", env={"LOG_LEVEL": "LOUD"}, config=False, ready=False)
    code, output = _finished(server)

    assert code == 4, output  # gunicorn's "App failed to load"
    assert "Traceback" not in output
    ours = [line for line in output.splitlines() if "LOG_LEVEL" in line]
    assert 1 <= len(ours) <= 3, output
    assert all("LOUD" in line for line in ours)
    assert len(output.splitlines()) <= 25, output


# 9. A state directory that is not a directory ----------------------------------------------


def _regular_file(tmp: str) -> str:
    path = os.path.join(tmp, "file")
    with open(path, "w") as handle:
        handle.write("x")
    return path


def _symlink(tmp: str) -> str:
    target = os.path.join(tmp, "real")
    os.mkdir(target, 0o700)  # a perfectly good directory: the link is what is refused
    path = os.path.join(tmp, "link")
    os.symlink(target, path)
    return path


def _fifo(tmp: str) -> str:
    path = os.path.join(tmp, "fifo")
    os.mkfifo(path, 0o600)
    return path


@pytest.mark.parametrize(
    ("make", "what"),
    [
        pytest.param(_regular_file, "is a regular file, not a directory", id="regular-file"),
        pytest.param(_symlink, "is a symbolic link, not a directory", id="symlink"),
        pytest.param(_fifo, "is a FIFO, not a directory", id="fifo"),
    ],
)
def test_a_state_dir_that_is_no_directory_is_named_for_what_it_is(
    tmp_path: Any, make: Callable[[str], str], what: str
) -> None:
    """The refusal says what the path is (not "does not exist"), naming the variable."""
    from wsgi_observe.multiprocess import statedir

    os.chmod(tmp_path, stat.S_IRWXU)
    path = make(str(tmp_path))
    with pytest.raises(statedir.StateDirError) as refused:
        statedir.check_private(path, variable="WSGI_OBSERVE_STATE_DIR")

    message = str(refused.value)
    assert message == f"WSGI_OBSERVE_STATE_DIR={path!r}: {what}"
    assert "\n" not in message


@pytest.mark.parametrize(
    ("make", "what"),
    [
        pytest.param(_symlink, "is a symbolic link, not a directory", id="symlink"),
        pytest.param(_fifo, "is a FIFO, not a directory", id="fifo"),
    ],
)
def test_gunicorn_refuses_a_state_dir_that_is_no_directory_in_one_line(
    gunicorn: Callable[..., Gunicorn], tmp_path: Any, make: Callable[[str], str], what: str
) -> None:
    """gunicorn with our hooks stops at once, saying what the path is (0.1 followed the
    symlink and took a FIFO for a missing directory)."""
    os.chmod(tmp_path, stat.S_IRWXU)
    path = make(str(tmp_path))
    server = gunicorn("tests.apps.basic:app", env={"WSGI_OBSERVE_STATE_DIR": path}, ready=False)
    code, output = _finished(server, timeout_s=30.0)

    assert code == 2, output
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if "WSGI_OBSERVE_STATE_DIR" in line]
    assert line.endswith(what)
