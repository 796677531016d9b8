"""wsgi_observe.logs: configure_logging, JSON lines, LogContext, helpers, request context,
request ids, the access log and secret redaction through a wrapped app."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from conftest import wait_until
from webtest import TestApp
from wsgi_client import call, environ_for

from wsgi_observe import logs
from wsgi_observe.config import ConfigError
from wsgi_observe.logs import (
    LogContext,
    configure_logging,
    get_logger,
    log_api_call,
    log_business_event,
    log_database_query,
    log_external_service_call,
)
from wsgi_observe.metrics import MetricsStore
from wsgi_observe.middleware import ObservabilityMiddleware

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CONSOLE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[(?P<level>[A-Z]+)\] (?P<rest>.*)$")
SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TEXT = [("Content-Type", "text/plain")]


@pytest.fixture(autouse=True)
def _no_log_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LOG_DIR: these tests pass ``log_dir`` themselves, or set the variable they test."""
    monkeypatch.delenv("LOG_DIR", raising=False)


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Collect(logging.Handler):
    """A handler wsgi_observe does not know."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _setup(tmp_path: Path, **kwargs: Any) -> io.StringIO:
    console = io.StringIO()
    kwargs.setdefault("fmt", "json")
    configure_logging(kwargs.pop("level", "INFO"), log_dir=tmp_path, stream=console, **kwargs)
    return console


def _lines(path: Path) -> list[dict[str, Any]]:
    logs.flush()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _drop_pytest_handlers() -> None:
    """Leave only our handlers on the root logger, as in production (pytest adds its own)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)


def _wrapped(app: Callable[..., Any], **kwargs: Any) -> ObservabilityMiddleware:
    return ObservabilityMiddleware(app, store=MetricsStore(), **kwargs)


def _hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", TEXT)
    return [b"Hello, world!"]


def _access(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "wsgi_observe.access"]


# configure_logging --------------------------------------------------------------------


def test_configure_creates_log_dir_and_both_files(tmp_path: Path) -> None:
    """LOG_DIR is created; INFO goes to application.log only, ERROR to both files."""
    log_dir = tmp_path / "nested" / "logs"
    _setup(log_dir)
    logger = get_logger("app.test")
    logger.info("all good")
    logger.error("it broke")
    application = _lines(log_dir / "application.log")
    errors = _lines(log_dir / "errors.log")
    assert [line["message"] for line in application] == ["all good", "it broke"]
    assert [line["message"] for line in errors] == ["it broke"]


def test_json_line_carries_the_guides_fields(tmp_path: Path) -> None:
    """A JSON line has timestamp (UTC, ms, Z), level, logger, message, module, function, line."""
    _setup(tmp_path)
    get_logger("app.routes.leads").info("Lead created successfully")
    (line,) = _lines(tmp_path / "application.log")
    assert TIMESTAMP.match(line["timestamp"])
    assert line["level"] == "INFO"
    assert line["logger"] == "app.routes.leads"
    assert line["message"] == "Lead created successfully"
    assert line["module"] == "test_logs"
    assert line["function"] == "test_json_line_carries_the_guides_fields"
    assert isinstance(line["line"], int)
    assert "request" not in line


def test_extra_fields_are_top_level_and_never_replace_core_fields(tmp_path: Path) -> None:
    """Every extra= field lands in the line; one named like a core field is kept as name_."""
    _setup(tmp_path)
    get_logger("app").info("Lead created", extra={"lead_id": 7, "source": "web", "level": 3})
    (line,) = _lines(tmp_path / "application.log")
    assert line["lead_id"] == 7
    assert line["source"] == "web"
    assert line["level"] == "INFO"
    assert line["level_"] == 3


def test_exception_is_logged_with_type_message_and_traceback(tmp_path: Path) -> None:
    """logger.exception() gives an exception block with type, message and traceback."""
    _setup(tmp_path)
    try:
        raise ValueError("bad lead")
    except ValueError:
        get_logger("app").exception("Failed to process request")
    (line,) = _lines(tmp_path / "errors.log")
    assert line["exception"]["type"] == "ValueError"
    assert line["exception"]["message"] == "bad lead"
    assert "Traceback (most recent call last)" in line["exception"]["traceback"]
    assert 'raise ValueError("bad lead")' in line["exception"]["traceback"]


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _Custom:
    def __str__(self) -> str:
        return "custom!"


def test_values_json_cannot_hold_become_strings_and_logging_never_raises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Odd values are stringified, odd keys too, and a broken __str__ never escapes logging."""
    _setup(tmp_path)
    _drop_pytest_handlers()  # pytest's own capture handler re-raises formatting errors
    logger = get_logger("app")
    loop: list[Any] = []
    loop.append(loop)
    logger.info(
        "odd values",
        extra={
            "obj": _Custom(),
            "when": Path("/tmp/x"),
            "big": 2**80,
            "raw": b"\xffbytes",
            "mixed": {1: "int key", (1, 2): "tuple key", None: "none key"},
            "surrogate": "\udcff",
            "loop": loop,
            "tags": {"b"},
        },
    )
    logger.info("broken arg %s", _Unprintable())
    logger.info(_Unprintable())
    logger.info("broken extra", extra={"thing": _Unprintable()})
    lines = _lines(tmp_path / "application.log")
    assert len(lines) == 4
    odd = lines[0]
    assert odd["obj"] == "custom!"
    assert odd["when"] == "/tmp/x"
    assert odd["big"] == str(2**80)
    assert odd["raw"] == "\ufffdbytes"
    assert odd["mixed"]["1"] == "int key"
    assert odd["mixed"]["(1, 2)"] == "tuple key"
    assert odd["tags"] == ["b"]
    assert "could not be formatted" in lines[1]["message"]
    assert lines[2]["message"].startswith("<unprintable _Unprintable>")
    assert lines[3]["thing"] == "<unprintable _Unprintable>"
    assert "Logging error" not in capsys.readouterr().err


def test_configure_twice_does_not_duplicate_handlers(tmp_path: Path) -> None:
    """A second configure_logging() replaces the first: one line per call, same handler count."""
    _setup(tmp_path)
    count = len(logging.getLogger().handlers)
    _setup(tmp_path)
    assert len(logging.getLogger().handlers) == count
    get_logger("app").warning("once")
    assert [line["message"] for line in _lines(tmp_path / "application.log")] == ["once"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("LOG_LEVEL", "LOUD", id="level"),
        pytest.param("LOG_FORMAT", "xml", id="format"),
    ],
)
def test_bad_variable_raises_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str
) -> None:
    """A bad LOG_LEVEL or LOG_FORMAT fails with one line naming the variable."""
    monkeypatch.setenv("LOG_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        configure_logging(stream=io.StringIO())


def test_unwritable_log_dir_raises_config_error_naming_log_dir(tmp_path: Path) -> None:
    """A LOG_DIR that can't hold files fails clearly and installs nothing."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    before = list(logging.getLogger().handlers)
    with pytest.raises(ConfigError, match="LOG_DIR"):
        configure_logging(log_dir=blocker / "logs", stream=io.StringIO())
    assert logging.getLogger().handlers == before


def test_environment_variables_choose_level_dir_and_format(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """LOG_LEVEL, LOG_DIR and LOG_FORMAT are read through Config.from_env()."""
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "envlogs"))
    monkeypatch.setenv("LOG_FORMAT", "console")
    console = io.StringIO()
    configure_logging(stream=console)
    logger = get_logger("app.env")
    logger.info("hidden")
    logger.warning("shown")
    assert [line["message"] for line in _lines(tmp_path / "envlogs" / "application.log")] == [
        "shown"
    ]
    assert CONSOLE.match(console.getvalue().strip())


@pytest.mark.parametrize(
    ("environment", "tty", "fmt", "expected"),
    [
        pytest.param("development", True, None, "console", id="dev-tty"),
        pytest.param("development", False, None, "json", id="dev-pipe"),
        pytest.param("production", True, None, "json", id="prod-tty"),
        pytest.param("staging", True, None, "json", id="staging-tty"),
        pytest.param("production", False, "console", "console", id="explicit-console"),
        pytest.param("development", True, "json", "json", id="explicit-json"),
    ],
)
def test_console_format_follows_environment_tty_and_log_format(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    environment: str,
    tty: bool,
    fmt: Optional[str],
    expected: str,
) -> None:
    """Console text in development on a TTY, JSON otherwise and in production, LOG_FORMAT wins."""
    monkeypatch.setenv("SENTRY_ENVIRONMENT", environment)
    stream = _TTY() if tty else io.StringIO()
    configure_logging(log_dir="", fmt=fmt, stream=stream)
    get_logger("app").warning("hello")
    logs.flush()
    text = stream.getvalue().strip()
    if expected == "json":
        assert json.loads(text)["message"] == "hello"
    else:
        assert CONSOLE.match(re.sub(r"\x1b\[[0-9;]*m", "", text))


def test_console_line_matches_the_guide_and_colours_only_a_tty(tmp_path: Path) -> None:
    """The console line is the guide's; ANSI colour appears on a TTY only."""
    plain = io.StringIO()
    configure_logging(log_dir="", fmt="console", stream=plain)
    get_logger("app.routes.leads").info("Lead created successfully")
    line = plain.getvalue().rstrip("\n")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[INFO\] app\.routes\.leads: Lead created successfully",
        line,
    )
    tty = _TTY()
    configure_logging(log_dir="", fmt="console", stream=tty)
    get_logger("app").error("red alert")
    assert "\x1b[31m[ERROR]\x1b[0m app: red alert" in tty.getvalue()


def test_console_line_ends_with_method_and_path_during_a_request(tmp_path: Path) -> None:
    """Inside a request the console line ends with '| METHOD path'."""
    console = io.StringIO()
    configure_logging(log_dir="", fmt="console", stream=console)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        get_logger("app.routes.leads").info("Lead created successfully")
        start_response("201 Created", TEXT)
        return [b"ok"]

    call(_wrapped(app, access_log=False), "/api/leads", method="POST")
    assert (
        console.getvalue()
        .splitlines()[0]
        .endswith("[INFO] app.routes.leads: Lead created successfully | POST /api/leads")
    )


def test_info_lines_are_flushed_within_the_interval_and_errors_at_once(tmp_path: Path) -> None:
    """Buffered INFO lines reach the file by themselves; an ERROR line is written immediately."""
    configure_logging(log_dir=tmp_path, fmt="json", stream=io.StringIO(), flush_interval_s=0.05)
    logger = get_logger("app")
    logger.error("now")
    assert "now" in (tmp_path / "errors.log").read_text()
    logger.info("soon")
    wait_until(lambda: "soon" in (tmp_path / "application.log").read_text(), timeout=5.0)


class _LoggingStream(io.StringIO):
    """A console that logs what it is given (stderr redirected into logging)."""

    def write(self, text: str) -> int:
        get_logger("echo").warning("echo %d chars", len(text))
        return super().write(text)


def test_a_console_that_logs_while_written_does_not_deadlock(tmp_path: Path) -> None:
    """A target that logs from inside a flush neither deadlocks nor recurses forever."""
    configure_logging(log_dir=tmp_path, fmt="json", stream=_LoggingStream(), buffer_bytes=0)
    _drop_pytest_handlers()
    done = threading.Event()

    def log_once() -> None:
        get_logger("app").warning("first")
        done.set()

    worker = threading.Thread(target=log_once, daemon=True)
    worker.start()
    assert done.wait(10), "logging deadlocked"
    worker.join(5)
    messages = [line["message"] for line in _lines(tmp_path / "application.log")]
    assert messages[0] == "first"
    assert "echo" in messages[1]


def test_a_broken_console_never_raises_and_is_reported_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A closed console stream: the files still get every line, stderr hears of it once."""
    console = io.StringIO()
    configure_logging(log_dir=tmp_path, fmt="json", stream=console)
    console.close()
    logger = get_logger("app")
    for number in range(3):
        logger.warning("line %d", number)
    assert len(_lines(tmp_path / "application.log")) == 3
    assert capsys.readouterr().err.count("wsgi_observe: cannot write log lines") == 1


# LogContext ---------------------------------------------------------------------------


def test_log_context_adds_fields_nests_and_restores(tmp_path: Path) -> None:
    """Fields apply inside the block, inner blocks add to outer ones, leaving restores."""
    _setup(tmp_path)
    logger = get_logger("app")
    with LogContext(logger, customer_id="12345", operation="create_lead"):
        logger.info("outer")
        with LogContext(operation="score", step=2):
            logger.info("inner")
        logger.info("outer again")
    logger.info("outside")
    outer, inner, again, outside = _lines(tmp_path / "application.log")
    assert (outer["customer_id"], outer["operation"]) == ("12345", "create_lead")
    assert (inner["customer_id"], inner["operation"], inner["step"]) == ("12345", "score", 2)
    assert again["operation"] == "create_lead" and "step" not in again
    assert "customer_id" not in outside


def test_log_context_is_isolated_across_threads(tmp_path: Path) -> None:
    """A LogContext in one thread never shows in another thread's lines."""
    _setup(tmp_path)
    logger = get_logger("app")
    inside = threading.Event()
    release = threading.Event()

    def worker() -> None:
        with LogContext(logger, who="worker"):
            inside.set()
            release.wait(5)
            logger.info("from worker")

    thread = threading.Thread(target=worker)
    thread.start()
    assert inside.wait(5)
    logger.info("from main")
    release.set()
    thread.join(5)
    by_message = {line["message"]: line for line in _lines(tmp_path / "application.log")}
    assert by_message["from worker"]["who"] == "worker"
    assert "who" not in by_message["from main"]


# Helpers ------------------------------------------------------------------------------


def test_log_helpers_write_structured_fields(tmp_path: Path) -> None:
    """log_api_call, log_external_service_call and log_business_event carry their fields."""
    _setup(tmp_path)
    log_api_call("/api/leads", "POST", 201, 145.5, customer="acme")
    log_external_service_call("twilio", "send_sms", True, 234.5)
    log_external_service_call("twilio", "send_sms", False, 9.0)
    log_business_event("lead_created", 42, {"source": "website", "score": 85, "api_key": "k1"})
    api, ok, failed, event = _lines(tmp_path / "application.log")
    assert api["message"] == "POST /api/leads 201 145.50ms"
    assert (api["endpoint"], api["method"], api["status"], api["duration_ms"]) == (
        "/api/leads",
        "POST",
        201,
        145.5,
    )
    assert api["customer"] == "acme"
    assert api["function"] == "test_log_helpers_write_structured_fields"
    assert (ok["level"], ok["service"], ok["operation"], ok["success"]) == (
        "INFO",
        "twilio",
        "send_sms",
        True,
    )
    assert (failed["level"], failed["success"]) == ("WARNING", False)
    assert (event["event"], event["entity_id"]) == ("lead_created", 42)
    assert event["data"] == {"source": "website", "score": 85, "api_key": "[redacted]"}


def test_log_database_query_is_debug_truncated_and_redacted(tmp_path: Path) -> None:
    """Queries log at DEBUG only, on one line, cut to MAX_QUERY_CHARS, secrets redacted."""
    _setup(tmp_path, level="INFO")
    log_database_query("SELECT 1", 1.0, 1)
    assert _lines(tmp_path / "application.log") == []
    _setup(tmp_path, level="DEBUG")
    log_database_query("SELECT *\n  FROM leads WHERE status = 'new'", 25.3, 150)
    log_database_query("UPDATE users SET password = 'hunter2' WHERE id = 1", 2.0, 1)
    log_database_query("SELECT " + "x, " * 1000 + "y FROM t", 3.0, 0)
    plain, secret, long = _lines(tmp_path / "application.log")
    assert plain["level"] == "DEBUG"
    assert plain["query"] == "SELECT * FROM leads WHERE status = 'new'"
    assert (plain["duration_ms"], plain["rows"]) == (25.3, 150)
    assert "hunter2" not in json.dumps(secret)
    assert len(long["query"]) == logs.MAX_QUERY_CHARS + 1 and long["query"].endswith("…")


# The wrapped app: request context, request id, access log ----------------------------


def test_request_id_is_generated_sane_unique_and_returned(tmp_path: Path) -> None:
    """Without a client id each request gets a fresh sane id in environ and X-Request-ID."""
    _setup(tmp_path)
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append(environ["wsgi_observe.request_id"])
        return _hello(environ, start_response)

    client = TestApp(_wrapped(app))
    ids = [client.get("/hello").headers["X-Request-ID"] for _ in range(50)]
    assert ids == seen
    assert len(set(ids)) == 50
    assert all(SANE_ID.match(value) for value in ids)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        pytest.param("req-123.abc:9_Z", True, id="sane"),
        pytest.param("a" * 128, True, id="max-length"),
        pytest.param("a" * 129, False, id="too-long"),
        pytest.param("bad id<script>", False, id="bad-characters"),
        pytest.param("", False, id="empty"),
    ],
)
def test_client_request_id_is_kept_only_when_sane(tmp_path: Path, sent: str, kept: bool) -> None:
    """A sane X-Request-ID from the client is used; anything else is replaced."""
    _setup(tmp_path)
    response = TestApp(_wrapped(_hello)).get("/hello", headers={"X-Request-ID": sent})
    returned = response.headers["X-Request-ID"]
    assert (returned == sent) is kept
    assert SANE_ID.match(returned)


def test_request_id_header_does_not_mutate_the_apps_header_list(tmp_path: Path) -> None:
    """The app's own (shared) header list is never appended to."""
    _setup(tmp_path)
    app = _wrapped(_hello)
    for _ in range(3):
        call(app, "/hello")
    assert TEXT == [("Content-Type", "text/plain")]


def test_lines_logged_during_a_request_carry_request_block_and_id(tmp_path: Path) -> None:
    """App lines inside a request have request{method,path,remote_addr,user_agent}, request_id."""
    _setup(tmp_path)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        get_logger("app.routes.leads").info("Lead created successfully")
        start_response("201 Created", TEXT)
        return [b"ok"]

    client = TestApp(_wrapped(app), extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    response = client.post(
        "/api/leads?page=2", headers={"User-Agent": "Mozilla/5.0 test"}, status=201
    )
    get_logger("app").info("after the request")
    lines = _lines(tmp_path / "application.log")
    (inside,) = [line for line in lines if line["message"] == "Lead created successfully"]
    assert inside["request"] == {
        "method": "POST",
        "path": "/api/leads?page=2",
        "remote_addr": "127.0.0.1",
        "user_agent": "Mozilla/5.0 test",
    }
    assert inside["request_id"] == response.headers["X-Request-ID"]
    (after,) = [line for line in lines if line["message"] == "after the request"]
    assert "request" not in after and "request_id" not in after


def test_access_line_has_endpoint_status_duration_bytes_and_id(tmp_path: Path) -> None:
    """One INFO access line per request: method, endpoint template, path, status, ... request_id."""
    _setup(tmp_path)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environ["wsgi_observe.endpoint"] = "/api/leads/<int:id>"
        start_response("404 Not Found", TEXT)
        return [b"no such", b" lead"]

    response = TestApp(_wrapped(app)).get("/api/leads/42?q=1", status=404)
    (line,) = _access(_lines(tmp_path / "application.log"))
    assert line["level"] == "INFO"
    assert line["method"] == "GET"
    assert line["endpoint"] == "/api/leads/<int:id>"
    assert line["path"] == "/api/leads/42?q=1"
    assert line["status"] == 404
    assert line["bytes"] == 12
    assert line["duration_ms"] >= 0
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert line["message"] == "GET /api/leads/42?q=1 404 Not Found"
    assert TIMESTAMP.match(line["timestamp"])


def test_access_line_skips_logging_records_when_only_our_handlers_listen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only our handlers installed the access line is written without a LogRecord."""
    _setup(tmp_path)
    _drop_pytest_handlers()
    made: list[str] = []
    original = logging.Logger.makeRecord

    def spy(self: logging.Logger, name: str, *args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(logging.Logger, "makeRecord", spy)
    call(_wrapped(_hello), "/fast")
    assert "wsgi_observe.access" not in made
    (line,) = _access(_lines(tmp_path / "application.log"))
    assert line["path"] == "/fast"


def test_access_line_goes_through_logging_when_other_handlers_listen(tmp_path: Path) -> None:
    """A handler we don't know receives the access line as an ordinary record."""
    _setup(tmp_path)
    foreign = _Collect()
    logging.getLogger().addHandler(foreign)
    try:
        call(_wrapped(_hello), "/slow-path")
    finally:
        logging.getLogger().removeHandler(foreign)
    (record,) = [r for r in foreign.records if r.name == "wsgi_observe.access"]
    assert record.getMessage().startswith("GET /slow-path 200")
    assert record.__dict__["status"] == 200
    (line,) = _access(_lines(tmp_path / "application.log"))
    assert line["path"] == "/slow-path" and line["endpoint"] == "/slow-path"


@pytest.mark.parametrize(
    "fast", [pytest.param(True, id="direct"), pytest.param(False, id="logging")]
)
def test_access_line_fields_are_the_same_on_both_paths(tmp_path: Path, fast: bool) -> None:
    """The direct write and the logging fallback give the same access fields."""
    _setup(tmp_path)
    if fast:
        _drop_pytest_handlers()
    call(_wrapped(_hello), "/same")
    (line,) = _access(_lines(tmp_path / "application.log"))
    expected = {"method", "endpoint", "path", "status", "duration_ms", "bytes", "request_id"}
    assert expected | {"remote_addr", "user_agent"} <= set(line)
    assert {"timestamp", "level", "logger", "message"} <= set(line)
    assert (line["status"], line["bytes"], line["endpoint"]) == (200, 13, "/same")


def test_access_log_off_writes_no_access_line_but_keeps_context(tmp_path: Path) -> None:
    """access_log=False drops the access line; request ids and context stay when configured."""
    _setup(tmp_path)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        get_logger("app").info("inside")
        return _hello(environ, start_response)

    response = TestApp(_wrapped(app, access_log=False)).get("/quiet")
    lines = _lines(tmp_path / "application.log")
    assert _access(lines) == []
    assert lines[0]["request_id"] == response.headers["X-Request-ID"]


def test_no_request_context_without_access_log_log_handlers_or_configured_logging() -> None:
    """Metrics only (access_log and log_handlers off, no configure_logging()): no request id."""
    app = _wrapped(_hello, access_log=False, log_handlers=False)
    assert app.app is _hello
    assert "X-Request-ID" not in TestApp(app).get("/hello").headers


def test_access_lines_follow_the_log_level(tmp_path: Path) -> None:
    """LOG_LEVEL=WARNING silences access lines."""
    _setup(tmp_path, level="WARNING")
    call(_wrapped(_hello), "/hello")
    assert _access(_lines(tmp_path / "application.log")) == []


def test_health_and_metrics_probes_are_not_access_logged(tmp_path: Path) -> None:
    """/health, /health/live and /metrics never produce access lines."""
    _setup(tmp_path)
    client = TestApp(_wrapped(_hello))
    for path in ("/health", "/health/live", "/metrics"):
        client.get(path)
    client.get("/hello")
    assert [line["path"] for line in _access(_lines(tmp_path / "application.log"))] == ["/hello"]


def test_streaming_body_keeps_request_context_and_counts_bytes(tmp_path: Path) -> None:
    """Lines logged while a generator body streams carry the request; bytes add up."""
    _setup(tmp_path)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        for index in range(3):
            get_logger("app.stream").info("chunk %d", index)
            yield b"abcd"

    request_id = call(_wrapped(app), "/stream").header("X-Request-ID")
    lines = _lines(tmp_path / "application.log")
    chunks = [line for line in lines if line["logger"] == "app.stream"]
    assert [line["request_id"] for line in chunks] == [request_id] * 3
    (access,) = _access(lines)
    assert (access["bytes"], access["request_id"]) == (12, request_id)


def test_app_exception_is_logged_once_with_traceback_and_request(tmp_path: Path) -> None:
    """An exception from the app is logged once at ERROR (logger wsgi_observe), then re-raised."""
    _setup(tmp_path)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError, match="database went away"):
        _wrapped(app)(environ_for("/api/leads", "POST"), lambda *a: None)
    (error,) = _lines(tmp_path / "errors.log")
    assert error["logger"] == "wsgi_observe"
    assert error["level"] == "ERROR"
    assert error["exception"]["type"] == "RuntimeError"
    assert "database went away" in error["exception"]["traceback"]
    assert error["request"]["path"] == "/api/leads"
    assert error["request"]["method"] == "POST"
    assert error["endpoint"] == "/api/leads"
    application = _lines(tmp_path / "application.log")
    assert [line["level"] for line in application].count("ERROR") == 1
    (access,) = _access(application)
    assert access["status"] == 500
    assert access["request_id"] == error["request_id"]


def test_slow_request_warning_goes_through_the_formatter(tmp_path: Path) -> None:
    """The middleware's slow-request WARNING keeps its fields and the request block."""
    _setup(tmp_path)
    call(_wrapped(_hello, slow_request_threshold=1e-9), "/slow")
    (line,) = [
        line
        for line in _lines(tmp_path / "application.log")
        if line["message"].startswith("Slow request detected: /slow took")
    ]
    assert line["level"] == "WARNING"
    assert (line["endpoint"], line["method"], line["status"]) == ("/slow", "GET", 200)
    assert line["duration_ms"] >= 0
    assert line["request"]["path"] == "/slow"


# Secrets ------------------------------------------------------------------------------


def test_secrets_never_reach_any_log_file_or_the_console(tmp_path: Path) -> None:
    """Authorization, Cookie, secret query values and DSNs are redacted from every line."""
    secrets = {
        "bearer": "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.Zm9v",
        "cookie": "sessvalue-7d1f3a",
        "api_key": "apikey-99a1b2c3",
        "token": "tok-5e6f7a8b",
        "dsn_key": "0123456789abcdef0123456789abcdef",
        "password": "pg-hunter2-pass",
    }
    dsn = f"https://{secrets['dsn_key']}@o1.ingest.sentry.io/42"
    console = _setup(tmp_path, level="DEBUG")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        logger = get_logger("app.secrets")
        logger.info("Sentry DSN is %s", dsn)
        logger.info(
            "request headers",
            extra={"environ": {k: v for k, v in environ.items() if k.startswith("HTTP_")}},
        )
        logger.info("auth", extra={"authorization": environ.get("HTTP_AUTHORIZATION")})
        logger.warning("db at postgres://crm:%s@db:5432/crm", secrets["password"])
        log_database_query(f"SELECT 1 FROM users WHERE password = '{secrets['password']}'", 1.0, 1)
        if environ["PATH_INFO"] == "/fail":
            raise ValueError(f"cannot reach {dsn}")
        return _hello(environ, start_response)

    client = TestApp(_wrapped(app, slow_request_threshold=1e-9))
    headers = {
        "Authorization": f"Bearer {secrets['bearer']}",
        "Cookie": f"session={secrets['cookie']}",
    }
    query = f"?api_key={secrets['api_key']}&token={secrets['token']}&page=2"
    client.get("/ok" + query, headers=headers)
    with pytest.raises(ValueError):
        client.get("/fail" + query, headers=headers)
    logs.flush()
    written = {path.name: path.read_text("utf-8") for path in tmp_path.iterdir()}
    written["console"] = console.getvalue()
    assert "application.log" in written and "errors.log" in written
    assert "[redacted]" in written["application.log"]
    for where, text in written.items():
        for name, secret in secrets.items():
            assert secret not in text, f"{name} leaked into {where}"
    access = _access(_lines(tmp_path / "application.log"))
    assert access[0]["path"] == "/ok?api_key=[redacted]&token=[redacted]&page=2"
