"""LOG_FORMAT=ecs: Elastic Common Schema lines, nested, for app lines, the access line
(direct and through logging) and exceptions; user fields under labels; same redaction."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from wsgi_client import environ_for, run

from wsgi_observe import LogContext, ObservabilityMiddleware, log_business_event
from wsgi_observe.config import Config, ConfigError
from wsgi_observe.logs import configure_logging, flush
from wsgi_observe.logs.ecs import ECS_VERSION, EcsFormatter
from wsgi_observe.metrics import MetricsStore

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    log = logging.getLogger("app.leads")
    with LogContext(log, customer_id="12345", **{"tenant.id": 7}):
        log.info("Lead created", extra={"lead_id": 7, "token": "s3cret-t0ken"})
        log_business_event("lead_created", 7, {"source": "web", "score": 85, "tags": ["a", "b"]})
        try:
            raise KeyError("api_key=k3y-v4lue")
        except KeyError:
            log.exception("lookup failed")
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"created"]


def drop_pytest_handlers() -> None:
    """Leave only our handlers on the root logger, as in production (pytest adds its own),
    so the access line takes its direct write."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)


def ecs_lines(
    tmp_path: Path, headers: dict[str, str], *, direct: bool = True
) -> list[dict[str, Any]]:
    config = Config.from_env(service_name="crm-api", version="1.4.2", environment="staging")
    configure_logging(log_dir=str(tmp_path), fmt="ecs", stream=io.StringIO(), config=config)
    if direct:
        drop_pytest_handlers()
    middleware = ObservabilityMiddleware(app, store=MetricsStore(), config=config)
    run(
        middleware,
        environ_for(
            "/api/leads",
            "POST",
            query="api_key=k3y-v4lue&page=2",
            headers=headers,
            REMOTE_ADDR="10.1.2.3",
        ),
    )
    flush()
    text = (tmp_path / "application.log").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_every_line_has_the_ecs_base_fields_nested(tmp_path: Path) -> None:
    """@timestamp, log.level, log.logger, message, ecs.version, service.*, process.pid:
    nested objects, never dotted keys."""
    lines = ecs_lines(tmp_path, {"User-Agent": "curl/8.0"})
    assert len(lines) == 4
    for line in lines:
        assert line["@timestamp"].endswith("Z")
        assert line["ecs"] == {"version": ECS_VERSION}
        assert line["service"] == {"name": "crm-api", "version": "1.4.2", "environment": "staging"}
        assert isinstance(line["process"]["pid"], int)
        assert line["log"]["level"] in ("info", "error")
        assert not [key for key in line if "." in key and key != "@timestamp"]
        assert line["http"]["request"]["method"] == "POST"
        assert line["url"] == {"path": "/api/leads", "query": "api_key=[redacted]&page=2"}
        assert line["client"] == {"ip": "10.1.2.3"}
        assert line["user_agent"] == {"original": "curl/8.0"}
    assert {line["http"]["request"]["id"] for line in lines} == {lines[0]["http"]["request"]["id"]}


@pytest.mark.parametrize(
    "direct", [pytest.param(True, id="direct"), pytest.param(False, id="logging")]
)
def test_the_access_line_has_the_http_and_event_fields(tmp_path: Path, direct: bool) -> None:
    """Status code, body bytes, event.duration in nanoseconds, the route as a label, the
    same whether written directly or through logging."""
    access = ecs_lines(tmp_path, {}, direct=direct)[-1]
    assert (access["log"]["level"], access["log"]["logger"]) == ("info", "wsgi_observe.access")
    assert access["message"] == "POST /api/leads?api_key=[redacted]&page=2 201 Created"
    assert access["http"]["response"] == {"status_code": 201, "body": {"bytes": 7}}
    assert access["event"]["outcome"] == "success"
    assert isinstance(access["event"]["duration"], int) and access["event"]["duration"] > 0
    assert access["labels"] == {"endpoint": "/api/leads"}
    assert access["service"]["name"] == "crm-api"


def test_user_fields_go_under_labels_flat_and_redacted(tmp_path: Path) -> None:
    """LogContext and extra= fields are labels (dots and nesting flattened with "_"),
    never top-level ECS fields; secret-named fields are redacted."""
    created, business, _failed, _access = ecs_lines(tmp_path, {})
    assert created["message"] == "Lead created"
    assert created["labels"] == {
        "customer_id": "12345",
        "tenant_id": 7,
        "lead_id": 7,
        "token": "[redacted]",
    }
    assert business["labels"]["data_source"] == "web"
    assert business["labels"]["data_score"] == 85
    assert business["labels"]["data_tags"] == ["a", "b"]
    assert business["labels"]["event"] == "lead_created"


def test_an_exception_is_error_type_message_and_stack_trace(tmp_path: Path) -> None:
    """The exception is ECS's error object, its secrets redacted."""
    failed = ecs_lines(tmp_path, {})[2]
    assert failed["log"]["level"] == "error"
    error = failed["error"]
    assert error["type"] == "KeyError"
    assert "k3y-v4lue" not in json.dumps(failed)
    assert error["stack_trace"].startswith("Traceback (most recent call last):")


def test_a_traced_request_has_trace_and_span_ids(tmp_path: Path) -> None:
    """trace.id and span.id on every line of a request that has a trace."""
    lines = ecs_lines(tmp_path, {"traceparent": TRACEPARENT})
    spans = {line["span"]["id"] for line in lines}
    assert {line["trace"]["id"] for line in lines} == {TRACE_ID}
    assert len(spans) == 1 and "00f067aa0ba902b7" not in spans


def test_the_access_line_through_logging_is_ecs_too(tmp_path: Path) -> None:
    """An app that configured logging itself gets our files in ECS, the access line
    mapped to ECS fields by the formatter."""
    root = logging.getLogger()
    theirs = logging.StreamHandler(io.StringIO())
    root.addHandler(theirs)
    root.setLevel(logging.INFO)
    try:
        middleware = ObservabilityMiddleware(
            app, store=MetricsStore(), log_dir=str(tmp_path), log_format="ecs"
        )
        run(middleware, environ_for("/api/leads", "POST"))
        flush()
    finally:
        root.removeHandler(theirs)
    text = (tmp_path / "application.log").read_text("utf-8")
    access = [json.loads(line) for line in text.splitlines()][-1]
    assert access["log"]["logger"] == "wsgi_observe.access"
    assert access["http"]["response"]["status_code"] == 201
    assert access["event"]["duration"] > 0
    assert access["labels"]["endpoint"] == "/api/leads"
    assert "method" not in access["labels"]


def test_the_formatter_never_raises_on_odd_values() -> None:
    """Unserialisable extras become text under labels."""
    formatter = EcsFormatter()
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    record.odd = {"nested": {object()}, "when": b"\xff"}
    line = json.loads(formatter.format(record))
    assert line["message"] == "hello x"
    assert set(line["labels"]) == {"odd_nested", "odd_when"}


@pytest.mark.parametrize("value", ["xml", "logfmt", "ECS2"])
def test_an_unknown_log_format_is_a_one_line_error(value: str) -> None:
    """LOG_FORMAT accepts json, console or ecs; anything else fails at start-up."""
    with pytest.raises(ConfigError, match=r"LOG_FORMAT=.*expected json, console or ecs"):
        Config.from_env({"LOG_FORMAT": value})
