"""A local OTLP/HTTP receiver on 127.0.0.1 that decodes what it gets with opentelemetry-proto.

``OtlpReceiver`` accepts ``POST /v1/traces`` bodies (``ExportTraceServiceRequest``,
protobuf), keeps every span as a plain :class:`Span` with its resource, and can instead
answer 503 (``mode = "fail"``) or hold the request until released (``mode = "hang"``).
Used as a pytest plugin (``pytest_plugins = ("otlp_receiver",)``) it gives the fixtures
``otlp_receiver`` and ``otel_clean`` (OpenTelemetry's global provider and our reporter
reset around a test).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import pytest

__all__ = ["OtlpReceiver", "Span", "reset_otel_globals"]


@dataclass
class Span:
    """One received span, ids as lowercase hex."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    scope: str
    flags: int
    start_ns: int
    end_ns: int


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in any_value.array_value.values]
    if kind is None:
        return None
    return getattr(any_value, kind)


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


@dataclass
class OtlpReceiver:
    """The receiver: ``url`` (base), ``traces_url``, ``spans``, ``requests`` and ``mode``."""

    spans: list[Span] = field(default_factory=list)
    requests: int = 0
    mode: str = "ok"
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)
    server: Optional[ThreadingHTTPServer] = None
    thread: Optional[threading.Thread] = None

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def traces_url(self) -> str:
        return f"{self.url}/v1/traces"

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests += 1
                    mode = receiver.mode
                if mode == "hang":
                    receiver.release.wait(30)
                if mode != "ok" or self.path != "/v1/traces":
                    self.send_response(503 if self.path == "/v1/traces" else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                spans = list(_decode(body))
                with receiver.arrived:
                    receiver.spans.extend(spans)
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Span]:
        """At least ``count`` spans (fails after ``timeout``, a safety net)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.spans) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.spans)} spans arrived, expected {count}")
                self.arrived.wait(left)
            return list(self.spans)


def _decode(body: bytes) -> Iterator[Span]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield Span(
                    name=span.name,
                    kind=span.kind,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    attributes=_attributes(span.attributes),
                    status_code=span.status.code,
                    status_message=span.status.message,
                    events=[(event.name, _attributes(event.attributes)) for event in span.events],
                    resource=resource,
                    scope=scope_spans.scope.name,
                    flags=span.flags,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                )


def reset_otel_globals() -> None:
    """Stop our tracing and forget OpenTelemetry's global provider (it may be set once
    per process; OpenTelemetry's own tests reset it the same way)."""
    from opentelemetry import trace
    from opentelemetry.util._once import Once

    from wsgi_observe.integrations import otel

    otel.shutdown()
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A receiver on 127.0.0.1, stopped at the end of the test."""
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def otel_clean() -> Iterator[None]:
    """No OpenTelemetry provider or reporter before the test, none left after it."""
    reset_otel_globals()
    try:
        yield
    finally:
        reset_otel_globals()
