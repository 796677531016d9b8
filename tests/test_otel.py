"""OpenTelemetry export, checked against a local OTLP/HTTP receiver decoding opentelemetry-proto:
span names, kinds, parents across a traceparent hop, attributes, status, resource,
sampling, probes, a collector that refuses or hangs, and nothing lost at shutdown."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import stop_process, wait_until
from wsgi_client import environ_for, run

from wsgi_observe import ObservabilityMiddleware, performance_tracking, trace_headers
from wsgi_observe.config import ConfigError
from wsgi_observe.integrations import otel
from wsgi_observe.logs import configure_logging, flush
from wsgi_observe.metrics import MetricsStore

if TYPE_CHECKING:
    from otlp_receiver import OtlpReceiver

pytest_plugins = ("otlp_receiver",)

SERVER, INTERNAL = 2, 1  # Span.SpanKind in opentelemetry-proto
STATUS_ERROR = 2
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def _clean(otel_clean: None) -> None:
    """Every test starts and ends without a provider or reporter."""


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def traced(app: Any, receiver: OtlpReceiver, **overrides: Any) -> ObservabilityMiddleware:
    overrides.setdefault("otel_traces_sampler_arg", 1.0)
    overrides.setdefault("access_log", False)
    overrides.setdefault("otel_exporter_otlp_endpoint", receiver.url)
    return ObservabilityMiddleware(
        app,
        store=MetricsStore(),
        service_name="crm-api",
        version="1.4.2",
        environment="staging",
        **overrides,
    )


def flushed() -> None:
    otel._state["provider"].force_flush()


def test_one_server_span_per_request_with_the_http_conventions(
    otlp_receiver: OtlpReceiver,
) -> None:
    """Name "{method} {route}", kind SERVER, the stable HTTP attributes, the resource."""
    from flask import Flask

    flask_app = Flask("leads")

    @flask_app.get("/api/leads/<int:lead_id>")
    def lead(lead_id: int) -> dict[str, int]:
        return {"id": lead_id}

    app = traced(flask_app.wsgi_app, otlp_receiver)
    environ = environ_for(
        "/api/leads/7",
        query="api_key=s3cret&page=2",
        headers={"User-Agent": "curl/8.0", "Host": "crm.example:8443"},
        REMOTE_ADDR="10.1.2.3",
        SERVER_PROTOCOL="HTTP/1.1",
    )
    assert run(app, environ).status == "200 OK"
    flushed()
    (span,) = otlp_receiver.wait_for(1)
    assert span.name == "GET /api/leads/<int:lead_id>"
    assert span.kind == SERVER
    assert span.parent_span_id == ""
    assert span.attributes == {
        "http.request.method": "GET",
        "http.route": "/api/leads/<int:lead_id>",
        "http.response.status_code": 200,
        "url.path": "/api/leads/7",
        "url.query": "api_key=[redacted]&page=2",
        "url.scheme": "http",
        "server.address": "crm.example",
        "server.port": 8443,
        "client.address": "10.1.2.3",
        "user_agent.original": "curl/8.0",
        "network.protocol.version": "1.1",
    }
    assert span.status_code == 0
    assert span.resource["service.name"] == "crm-api"
    assert span.resource["service.version"] == "1.4.2"
    assert span.resource["deployment.environment.name"] == "staging"
    assert span.scope == "wsgi_observe"


def test_otel_variables_set_the_resource(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over our configuration."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "crm-worker")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=sales,k8s.pod.name=crm-7f%2C1")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    app = ObservabilityMiddleware(hello, store=MetricsStore(), access_log=False)
    run(app, environ_for("/"))
    flushed()
    (span,) = otlp_receiver.wait_for(1)
    assert span.resource["service.name"] == "crm-worker"
    assert span.resource["team"] == "sales"
    assert span.resource["k8s.pod.name"] == "crm-7f,1"


def test_errors_set_the_error_status_and_an_exception_event(
    otlp_receiver: OtlpReceiver,
) -> None:
    """A raised exception: ERROR status, error.type, an exception event with the message
    redacted; a 5xx answer: ERROR status; a 4xx: no status (as the conventions say)."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        if path == "/raise":
            raise ValueError("bad password=hunter2")
        start_response("503 Service Unavailable" if path == "/503" else "404 Not Found", [])
        return [b""]

    middleware = traced(app, otlp_receiver)
    with pytest.raises(ValueError):
        run(middleware, environ_for("/raise"), validate=False)
    run(middleware, environ_for("/503"), validate=False)
    run(middleware, environ_for("/404"), validate=False)
    flushed()
    spans = {span.attributes["url.path"]: span for span in otlp_receiver.wait_for(3)}
    raised = spans["/raise"]
    assert raised.status_code == STATUS_ERROR
    assert raised.attributes["error.type"] == "ValueError"
    ((name, event),) = raised.events
    assert name == "exception"
    assert event["exception.type"] == "ValueError"
    assert event["exception.message"] == "bad password=[redacted]"
    assert "hunter2" not in event["exception.stacktrace"]
    assert spans["/503"].status_code == STATUS_ERROR
    assert spans["/503"].attributes["error.type"] == "503"
    assert spans["/404"].status_code == 0
    assert "error.type" not in spans["/404"].attributes


def test_a_traceparent_hop_between_two_wrapped_apps_makes_one_trace(
    otlp_receiver: OtlpReceiver,
) -> None:
    """Front calls back with trace_headers(): back's SERVER span is the child of front's,
    and a function timed by performance_tracking is a child span of the request."""
    back = traced(hello, otlp_receiver)
    headers_sent: dict[str, str] = {}

    @performance_tracking(name="back.call")
    def call_back() -> None:
        headers_sent.update(trace_headers())
        run(back, environ_for("/back", headers=trace_headers()))

    def front_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        call_back()
        return hello(environ, start_response)

    front = traced(front_app, otlp_receiver)
    run(front, environ_for("/front", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}))
    flushed()
    spans = {span.name: span for span in otlp_receiver.wait_for(3)}
    front_span, child, back_span = spans["GET /front"], spans["back.call"], spans["GET /back"]
    assert {span.trace_id for span in spans.values()} == {TRACE_ID}
    assert front_span.parent_span_id == PARENT_ID
    assert (child.kind, child.parent_span_id) == (INTERNAL, front_span.span_id)
    assert (back_span.kind, back_span.parent_span_id) == (SERVER, child.span_id)
    assert headers_sent["traceparent"] == f"00-{TRACE_ID}-{child.span_id}-01"


def test_log_lines_show_the_ids_of_the_exported_span(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """The span's trace id and span id are the ones on the request's log lines."""
    configure_logging(log_dir=str(tmp_path), fmt="json", stream=io.StringIO())

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        logging.getLogger("app").info("working")
        return hello(environ, start_response)

    run(traced(app, otlp_receiver, access_log=True), environ_for("/work"))
    flushed()
    flush()
    (span,) = otlp_receiver.wait_for(1)
    lines = [json.loads(line) for line in (tmp_path / "application.log").read_text().splitlines()]
    assert [line["message"] for line in lines] == ["working", "GET /work 200 OK"]
    for line in lines:
        assert (line["trace_id"], line["span_id"], line["trace_flags"]) == (
            span.trace_id,
            span.span_id,
            "01",
        )


def test_probes_metrics_and_excluded_paths_are_never_traced(
    otlp_receiver: OtlpReceiver,
) -> None:
    """Only the observed request reaches the receiver."""
    app = traced(hello, otlp_receiver, exclude_paths="/static")
    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/static/app.js"):
        run(app, environ_for(path, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}))
    run(app, environ_for("/observed"))
    flushed()
    assert [span.name for span in otlp_receiver.wait_for(1)] == ["GET /observed"]


def test_sampling_at_a_tenth_follows_the_ratio_and_the_caller(
    otlp_receiver: OtlpReceiver,
) -> None:
    """New traces at 0.1 are sampled about one in ten (bounded: 2000 requests); a caller's
    sampled flag is followed either way."""
    app = traced(hello, otlp_receiver, otel_traces_sampler_arg=0.1)
    for _ in range(2000):
        run(app, environ_for("/ratio"), validate=False)
    for flag in ("01", "00"):
        for _ in range(50):
            run(
                app,
                environ_for(
                    "/caller", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-{flag}"}
                ),
            )
    flushed()
    spans = otlp_receiver.spans
    ratio = [span for span in spans if span.name == "GET /ratio"]
    caller = [span for span in spans if span.name == "GET /caller"]
    assert 120 <= len(ratio) <= 290  # 200 expected; far outside would be a broken sampler
    assert len(caller) == 50 and all(span.trace_id == TRACE_ID for span in caller)


def test_unsampled_requests_still_propagate_the_trace(otlp_receiver: OtlpReceiver) -> None:
    """At ratio 0 the request is not sampled, and its headers and current span still carry
    its trace. (Its own test: tracing is set up once per process, so a second middleware in
    the test above would have shared the first one's 0.1 sampler.)"""
    seen: dict[str, Any] = {}

    def peek(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        from opentelemetry import trace

        seen["headers"] = trace_headers()
        seen["current"] = trace.get_current_span().get_span_context()
        return hello(environ, start_response)

    run(traced(peek, otlp_receiver, otel_traces_sampler_arg=0.0), environ_for("/off"))
    trace_id, span_id = seen["headers"]["traceparent"].split("-")[1:3]
    assert seen["headers"]["traceparent"].endswith("-00")
    assert (f"{seen['current'].trace_id:032x}", f"{seen['current'].span_id:016x}") == (
        trace_id,
        span_id,
    )


def test_an_application_tracer_provider_is_used_not_replaced(
    otlp_receiver: OtlpReceiver,
) -> None:
    """A provider the application set up keeps its own processors; ours adds none."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    app = traced(hello, otlp_receiver)
    run(app, environ_for("/mine", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}))
    assert trace.get_tracer_provider() is provider
    (span,) = memory.get_finished_spans()
    assert span.name == "GET /mine"
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert otlp_receiver.requests == 0
    provider.shutdown()


@pytest.mark.parametrize(
    "mode", [pytest.param("fail", id="refuses"), pytest.param("hang", id="hangs")]
)
def test_a_dead_collector_never_slows_or_fails_requests_and_is_logged_once(
    mode: str, otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """A collector answering 503, or holding the connection: every request is answered
    while an export is stuck, and the failure is one WARNING, not one per batch."""
    configure_logging(log_dir=str(tmp_path), fmt="json", stream=io.StringIO())
    otlp_receiver.mode = mode
    app = traced(hello, otlp_receiver, otel_exporter_otlp_timeout=2000)
    processor = otel._state["provider"]._active_span_processor._span_processors[0]
    processor.batch = 5  # a few requests fill a batch and wake the export thread
    for _ in range(10):
        run(app, environ_for("/a"))
    wait_until(lambda: otlp_receiver.requests >= 1)
    # The export thread is now blocked on the collector (or just failed): requests go on.
    for _ in range(200):
        assert run(app, environ_for("/b")).status == "200 OK"
    otlp_receiver.release.set()
    exporter = processor.exporter
    wait_until(lambda: exporter._down)
    processor.force_flush()
    processor.force_flush()
    flush()
    text = (tmp_path / "application.log").read_text()
    warnings = [line for line in text.splitlines() if "could not export spans" in line]
    assert len(warnings) == 1, warnings
    assert exporter.dropped >= 10


def test_an_unreachable_collector_at_exit_does_not_block_for_long(
    otlp_receiver: OtlpReceiver,
) -> None:
    """Shut down with spans queued and the collector gone: dropped, no hang, no raise."""
    port_url = otlp_receiver.url
    otlp_receiver.stop()
    app = traced(
        hello, otlp_receiver, otel_exporter_otlp_endpoint=port_url, otel_exporter_otlp_timeout=500
    )
    for _ in range(20):
        run(app, environ_for("/gone"))
    processor = otel._state["provider"]._active_span_processor._span_processors[0]
    otel.shutdown()
    assert processor.exporter.exported == 0 and processor.exporter.dropped == 20


def test_missing_opentelemetry_is_a_one_line_start_up_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT without the extra installed: ConfigError naming it."""
    import builtins

    real_import = builtins.__import__

    def no_otel(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "__import__", no_otel)
        with pytest.raises(ConfigError, match=r"pip install 'wsgi_observe\[otel\]'"):
            ObservabilityMiddleware(hello, otel=True, log_handlers=False)


def test_otel_sdk_disabled_keeps_tracing_off(otlp_receiver: OtlpReceiver) -> None:
    """OTEL_SDK_DISABLED=true wins over an endpoint: no reporter, no span."""
    from wsgi_observe import reporting

    app = traced(hello, otlp_receiver, otel_sdk_disabled=True)
    run(app, environ_for("/"))
    assert reporting.installed("traces") is None
    assert otlp_receiver.requests == 0


# Under real gunicorn -------------------------------------------------------------------

GUNICORN_APP = textwrap.dedent(
    """
    from wsgi_observe import wrap

    def hello(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    application = wrap(hello)
    """
)


@pytest.mark.slow
def test_nothing_is_lost_at_shutdown_under_gunicorn(
    otlp_receiver: OtlpReceiver,
    gunicorn: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers, spans queued for 60 s: a graceful stop exports every one of them."""
    (tmp_path / "otel_app.py").write_text(GUNICORN_APP)
    env = {
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{Path(__file__).resolve().parent.parent}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    server = gunicorn("otel_app:application", "-w", "2", env=env)
    count = 40
    for index in range(count):
        assert server.get(f"/items/{index}")[0] == 200
    assert otlp_receiver.spans == []  # still queued: the batch waits up to 5 s
    stop_process(server.process, signal.SIGTERM)
    spans = otlp_receiver.wait_for(count)
    assert sorted(span.attributes["url.path"] for span in spans) == sorted(
        f"/items/{index}" for index in range(count)
    )
    assert all(span.kind == SERVER for span in spans)


def test_init_otel_traces_a_middleware_built_before(otlp_receiver: OtlpReceiver) -> None:
    """init_otel() after the middleware was built: its requests are traced too."""
    app = ObservabilityMiddleware(hello, store=MetricsStore(), access_log=False)
    assert otel.init_otel(
        otel_exporter_otlp_endpoint=otlp_receiver.url, otel_traces_sampler="always_on"
    )
    run(app, environ_for("/late"))
    flushed()
    assert [span.name for span in otlp_receiver.wait_for(1)] == ["GET /late"]


def test_concurrent_requests_each_get_their_own_span(otlp_receiver: OtlpReceiver) -> None:
    """Threads in one worker (gthread): ids never leak between requests."""
    app = traced(hello, otlp_receiver)
    barrier = threading.Barrier(4)

    def worker(index: int) -> None:
        barrier.wait()
        for number in range(25):
            run(app, environ_for(f"/t{index}/{number}"), validate=False)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flushed()
    spans = otlp_receiver.wait_for(100)
    assert len({span.span_id for span in spans}) == 100
    assert len({span.trace_id for span in spans}) == 100
