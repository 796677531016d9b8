"""W3C trace context: traceparent parsing, bounded tracestate, trace fields in every log
line, trace_headers(), and one trace id shared with Sentry."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from wsgi_client import environ_for, run

from wsgi_observe import ObservabilityMiddleware, performance_tracking, trace_headers
from wsgi_observe.logs import configure_logging, flush
from wsgi_observe.metrics import MetricsStore
from wsgi_observe.tracing import (
    MAX_TRACESTATE_CHARS,
    MAX_TRACESTATE_MEMBERS,
    bound_tracestate,
    parse_traceparent,
)

if TYPE_CHECKING:
    from sentry_receiver import SentryReceiver

pytest_plugins = ("sentry_receiver",)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"
HEX16 = re.compile(r"^[0-9a-f]{16}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def lines(log_dir: Path) -> list[dict[str, Any]]:
    flush()
    text = (log_dir / "application.log").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def logging_app(seen: dict[str, Any]) -> Callable[..., list[bytes]]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        logging.getLogger("app.leads").info("Lead created")
        seen["headers"] = trace_headers()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    configure_logging(log_dir=str(tmp_path), fmt="json", stream=io.StringIO())
    return tmp_path


@pytest.mark.parametrize(
    ("header", "version_note"),
    [
        pytest.param(VALID, "00", id="version-00-sampled"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-00", "00", id="version-00-unsampled"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-03", "00", id="version-00-random-flag"),
        pytest.param(f" \t{VALID}\t ", "00", id="optional-whitespace"),
        pytest.param(f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-holds", "cc", id="future"),
        pytest.param(f"cc-{TRACE_ID}-{PARENT_ID}-01", "cc", id="future-plain"),
    ],
)
def test_a_valid_traceparent_continues_the_callers_trace(header: str, version_note: str) -> None:
    """The caller's trace id and sampled flag are kept, with a new span id of ours whose
    parent is the caller's span."""
    trace = parse_traceparent(header)
    assert trace is not None, version_note
    assert trace.trace_id == TRACE_ID
    assert trace.parent_id == PARENT_ID
    assert HEX16.match(trace.span_id) and trace.span_id != PARENT_ID
    assert trace.sampled is (not header.strip().endswith("-00"))
    assert trace.traceparent() == f"00-{TRACE_ID}-{trace.span_id}-{trace.flags}"


MALFORMED = [
    pytest.param("ff-" + VALID[3:], id="version-ff"),
    pytest.param("0-" + VALID[3:], id="version-one-digit"),
    pytest.param("000-" + VALID[3:], id="version-three-digits"),
    pytest.param(f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01", id="trace-id-short"),
    pytest.param(f"00-{TRACE_ID}0-{PARENT_ID}-01", id="trace-id-long"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID[:-1]}-01", id="parent-id-short"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-1", id="flags-short"),
    pytest.param(f"00-{'0' * 32}-{PARENT_ID}-01", id="trace-id-zero"),
    pytest.param(f"00-{TRACE_ID}-{'0' * 16}-01", id="parent-id-zero"),
    pytest.param(f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", id="upper-case-trace-id"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID.upper()}-01", id="upper-case-parent-id"),
    pytest.param(f"0A-{TRACE_ID}-{PARENT_ID}-01", id="upper-case-version"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-0A", id="upper-case-flags"),
    pytest.param(f"{VALID}-extra", id="extra-field-on-00"),
    pytest.param(f"{VALID}-", id="trailing-dash-on-00"),
    pytest.param(f"cc-{TRACE_ID}-{PARENT_ID}-01.extra", id="future-without-dash"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-0g", id="not-hex"),
    pytest.param(f"00_{TRACE_ID}_{PARENT_ID}_01", id="wrong-separator"),
    pytest.param(f"{VALID},{VALID}", id="two-headers-joined"),
    pytest.param("", id="empty"),
    pytest.param("00-" + "a" * 60_000, id="huge"),
    pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-01\n", id="newline"),
]


@pytest.mark.parametrize("header", MALFORMED)
def test_a_malformed_traceparent_is_ignored(header: str) -> None:
    """Wrong version, length, all-zero ids, upper-case hex, extra fields: not a trace."""
    assert parse_traceparent(header) is None


@pytest.mark.parametrize("header", MALFORMED)
def test_a_malformed_traceparent_never_fails_a_request_and_starts_no_trace(
    header: str, log_dir: Path
) -> None:
    """The request is answered normally; without a tracer its lines carry no trace, and
    trace_headers() gives nothing to send."""
    seen: dict[str, Any] = {}
    app = ObservabilityMiddleware(logging_app(seen), store=MetricsStore())
    response = run(app, environ_for("/api/leads", headers={"traceparent": header}))
    assert response.status == "200 OK"
    assert seen["headers"] == {}
    for line in lines(log_dir):
        assert "trace_id" not in line and "span_id" not in line and "trace_flags" not in line


def test_every_line_of_a_traced_request_carries_the_trace_fields(log_dir: Path) -> None:
    """The app's lines and the access line: trace_id, span_id, trace_flags, top level."""
    seen: dict[str, Any] = {}
    root = logging.getLogger()
    for handler in list(root.handlers):  # pytest's: the access line takes its direct write
        if type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    app = ObservabilityMiddleware(logging_app(seen), store=MetricsStore())
    run(app, environ_for("/api/leads", headers={"traceparent": VALID}))
    app_line, access_line = lines(log_dir)
    assert access_line["logger"] == "wsgi_observe.access"
    for line in (app_line, access_line):
        assert line["trace_id"] == TRACE_ID
        assert HEX16.match(line["span_id"]) and line["span_id"] != PARENT_ID
        assert line["trace_flags"] == "01"
    assert app_line["span_id"] == access_line["span_id"]
    assert seen["headers"] == {"traceparent": f"00-{TRACE_ID}-{app_line['span_id']}-01"}


def test_the_access_line_through_logging_carries_the_trace_fields(tmp_path: Path) -> None:
    """With the application's own handler on the access logger, the line still has them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    from wsgi_observe.logs import JsonFormatter

    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("wsgi_observe.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        app = ObservabilityMiddleware(
            logging_app({}), store=MetricsStore(), log_handlers=False, log_dir=str(tmp_path)
        )
        run(app, environ_for("/", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}))
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert (line["trace_id"], line["trace_flags"]) == (TRACE_ID, "00")


def test_lines_of_an_untraced_request_keep_the_guides_fields_only(log_dir: Path) -> None:
    """No traceparent and no tracer: the JSON lines are as before, without trace fields."""
    app = ObservabilityMiddleware(logging_app({}), store=MetricsStore())
    run(app, environ_for("/api/leads"))
    for line in lines(log_dir):
        assert not {"trace_id", "span_id", "trace_flags"} & set(line)
        assert line["request_id"]


def test_trace_headers_outside_a_request_are_empty() -> None:
    """No request, no trace: nothing to send downstream."""
    assert trace_headers() == {}


def test_tracestate_is_passed_on_with_the_trace(log_dir: Path) -> None:
    """A valid tracestate goes downstream with the traceparent, members unchanged."""
    seen: dict[str, Any] = {}
    app = ObservabilityMiddleware(logging_app(seen), store=MetricsStore())
    state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,tenant@vendor=x"
    run(app, environ_for("/", headers={"traceparent": VALID, "tracestate": state}))
    assert seen["headers"]["tracestate"] == state


def test_a_huge_tracestate_is_bounded(log_dir: Path) -> None:
    """A megabyte of tracestate: the request is answered, at most 32 members and 512
    characters are kept, long members first to go, and the trace itself is continued."""
    members = [f"k{index}=v{index}" for index in range(40)]
    long_ones = [f"long{index}=" + "x" * 200 for index in range(3)]
    members[3:3] = long_ones
    huge = ",".join(members) + "," + "z=" + "y" * 1_000_000
    seen: dict[str, Any] = {}
    app = ObservabilityMiddleware(logging_app(seen), store=MetricsStore())
    response = run(app, environ_for("/", headers={"traceparent": VALID, "tracestate": huge}))
    assert response.status == "200 OK"
    kept = seen["headers"]["tracestate"].split(",")
    first = members[:MAX_TRACESTATE_MEMBERS]
    assert kept == [member for member in first if member not in long_ones]
    assert len(",".join(kept)) <= MAX_TRACESTATE_CHARS
    assert seen["headers"]["traceparent"].startswith(f"00-{TRACE_ID}-")


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        pytest.param("a=1,,b=2", "a=1,b=2", id="empty-member"),
        pytest.param("a=1,B=2,c=3", "a=1,c=3", id="upper-case-key"),
        pytest.param("a=1,b=x,y,c=3", "a=1,b=x,c=3", id="member-without-equals"),
        pytest.param("a=1\r\nX-Injected: yes", None, id="header-injection"),
        pytest.param("a=1,b=\x7f", "a=1", id="control-character"),
        pytest.param("=1", None, id="no-key"),
        pytest.param("x" * 600 + "=1", None, id="key-too-long"),
    ],
)
def test_malformed_tracestate_members_are_dropped(raw: str, kept: Any) -> None:
    """Members that are not key=value as W3C defines them never go downstream."""
    assert bound_tracestate(raw) == kept


def test_performance_tracking_and_external_calls_see_the_trace(log_dir: Path) -> None:
    """A timed function and log_external_service_call inside a traced request read the
    same trace: its line carries the trace, and trace_headers() names it."""
    from wsgi_observe import log_external_service_call

    seen: dict[str, Any] = {}

    @performance_tracking(name="billing.charge")
    def charge() -> None:
        seen["headers"] = trace_headers()
        log_external_service_call("billing", "charge", True, 12.5)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        charge()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    run(
        ObservabilityMiddleware(app, store=MetricsStore()),
        environ_for("/", headers={"traceparent": VALID}),
    )
    external = next(line for line in lines(log_dir) if line["logger"] == "wsgi_observe.external")
    assert external["trace_id"] == TRACE_ID
    assert seen["headers"]["traceparent"] == f"00-{TRACE_ID}-{external['span_id']}-01"


# One trace id with Sentry ------------------------------------------------------------------


def failing_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    logging.getLogger("app").warning("about to fail")
    raise RuntimeError("boom")


def test_the_sentry_event_carries_the_callers_trace_and_our_span(
    log_dir: Path, sentry_init: Callable[..., bool], sentry_receiver: SentryReceiver
) -> None:
    """An error in a request that came with a traceparent: the Sentry event, the logs and
    the caller share the trace id, and the event names the span id the logs show."""
    sentry_init(traces_sample_rate=0.0)
    app = ObservabilityMiddleware(failing_app, store=MetricsStore())
    with pytest.raises(RuntimeError):
        run(app, environ_for("/fail", headers={"traceparent": VALID}), validate=False)
    (event,) = sentry_receiver.wait_for("event")
    warning = next(line for line in lines(log_dir) if line["message"] == "about to fail")
    context = event["contexts"]["trace"]
    assert context["trace_id"] == warning["trace_id"] == TRACE_ID
    assert context["span_id"] == warning["span_id"]
    assert context.get("parent_span_id") == PARENT_ID


@pytest.mark.parametrize(
    "rate", [pytest.param(1.0, id="sampled"), pytest.param(0.0, id="unsampled")]
)
def test_a_trace_started_here_is_the_one_sentry_reports(
    rate: float,
    log_dir: Path,
    sentry_init: Callable[..., bool],
    sentry_receiver: SentryReceiver,
) -> None:
    """No traceparent, Sentry tracing on: the request starts a trace; its lines, its
    Sentry event (and transaction when sampled) and trace_headers() give one trace id."""
    sentry_init(traces_sample_rate=rate)
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["headers"] = trace_headers()
        return failing_app(environ, start_response)

    with pytest.raises(RuntimeError):
        run(
            ObservabilityMiddleware(app, store=MetricsStore()), environ_for("/fail"), validate=False
        )
    (event,) = sentry_receiver.wait_for("event")
    warning = next(line for line in lines(log_dir) if line["message"] == "about to fail")
    assert HEX32.match(warning["trace_id"])
    assert event["contexts"]["trace"]["trace_id"] == warning["trace_id"]
    flag = "01" if rate else "00"
    assert warning["trace_flags"] == flag
    assert seen["headers"]["traceparent"] == f"00-{warning['trace_id']}-{warning['span_id']}-{flag}"
    if rate:
        (transaction,) = sentry_receiver.wait_for("transaction")
        assert transaction["contexts"]["trace"]["trace_id"] == warning["trace_id"]
        assert transaction["contexts"]["trace"]["span_id"] == warning["span_id"]


def test_a_sentry_trace_header_alone_is_continued_for_the_logs_too(
    log_dir: Path, sentry_init: Callable[..., bool], sentry_receiver: SentryReceiver
) -> None:
    """A caller with sentry-sdk alone sends sentry-trace: the logs show its trace id too."""
    sentry_init(traces_sample_rate=1.0)
    app = ObservabilityMiddleware(failing_app, store=MetricsStore())
    with pytest.raises(RuntimeError):
        run(
            app,
            environ_for("/fail", headers={"sentry-trace": f"{TRACE_ID}-{PARENT_ID}-1"}),
            validate=False,
        )
    (transaction,) = sentry_receiver.wait_for("transaction")
    warning = next(line for line in lines(log_dir) if line["message"] == "about to fail")
    assert transaction["contexts"]["trace"]["trace_id"] == warning["trace_id"] == TRACE_ID
    assert transaction["contexts"]["trace"]["parent_span_id"] == PARENT_ID
