"""The apps under test and the peer middlewares wsgi_observe is compared against.

Every builder takes the app to wrap and returns a WSGI callable. A peer builder raises
:class:`Unavailable` when its library is not installed, so the suite runs everywhere and
marks that row "n/a". wsgi_observe itself is imported plainly: a configuration of ours that
cannot be built is an error, which fails the run (it is never shown as "n/a").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from time import perf_counter
from typing import Any

__all__ = [
    "HELLO_BODY",
    "PrometheusStyleMiddleware",
    "SENTRY_QUEUE_SIZE",
    "Unavailable",
    "default",
    "hello_app",
    "observe",
    "observe_otel",
    "opentelemetry",
    "opentelemetry_ratio",
    "prometheus_style",
    "sentry_wsgi",
    "status_app",
]

HELLO_BODY = b"Hello, World!"
_HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO_BODY)))]


#: sentry-sdk's transport queue (default 100) for both Sentry configurations: deep enough
#: that no sampled transaction is dropped while a batch runs; the batch's drain flushes it.
SENTRY_QUEUE_SIZE = 1_000_000


class Unavailable(Exception):
    """A peer library (or the local Sentry sink) is not available: its row says "n/a"."""


def need(module: str, what: str | None = None) -> Any:
    """Import the third-party ``module`` or raise :class:`Unavailable` naming it."""
    if module.split(".")[0] == "wsgi_observe":
        raise ValueError("import wsgi_observe plainly: a missing piece of ours is an error")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise Unavailable(f"{what or module} not available ({error})") from None


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """A bare hello app: list body, answers 200 to everything."""
    start_response("200 OK", list(_HELLO_HEADERS))
    return [HELLO_BODY]


def status_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Hello, with the status taken from ``environ["bench.status"]`` (to fill the metrics)."""
    start_response(environ.get("bench.status", "200 OK"), list(_HELLO_HEADERS))
    return [HELLO_BODY]


# Peers --------------------------------------------------------------------------------


class PrometheusStyleMiddleware:
    """What prometheus_flask_exporter does per request, as a WSGI middleware.

    A labelled ``Histogram.observe`` (method, path, status) and a labelled ``Counter.inc``
    (method, status), recorded once the app has answered (its ``after_request``), into a
    fresh ``CollectorRegistry``.
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        prometheus_client = need("prometheus_client")
        registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.app = app
        self.registry = registry
        self.latency = prometheus_client.Histogram(
            "flask_http_request_duration_seconds",
            "Flask HTTP request duration in seconds",
            ("method", "path", "status"),
            registry=registry,
        )
        self.requests = prometheus_client.Counter(
            "flask_http_request_total",
            "Total number of HTTP requests",
            ("method", "status"),
            registry=registry,
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = perf_counter()
        seen: list[str] = []

        def _start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            seen.append(status)
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        body = self.app(environ, _start_response)
        status = seen[-1][:3] if seen else "500"
        method = environ.get("REQUEST_METHOD", "GET")
        self.latency.labels(method, environ.get("PATH_INFO", "/"), status).observe(
            max(perf_counter() - started, 0.0)
        )
        self.requests.labels(method, status).inc()
        return body


def prometheus_style(app: Callable[..., Any]) -> Callable[..., Any]:
    return PrometheusStyleMiddleware(app)


def opentelemetry(app: Callable[..., Any]) -> tuple[Callable[..., Any], Callable[[], None]]:
    """OpenTelemetryMiddleware with the SDK's TracerProvider; spans are built and discarded."""
    wsgi = need("opentelemetry.instrumentation.wsgi", "opentelemetry-instrumentation-wsgi")
    sdk_trace = need("opentelemetry.sdk.trace", "opentelemetry-sdk")
    export = need("opentelemetry.sdk.trace.export", "opentelemetry-sdk")

    class DiscardExporter(export.SpanExporter):  # type: ignore[misc,name-defined]
        """Accepts every span and sends it nowhere: nothing leaves the machine."""

        def export(self, spans: Any) -> Any:
            return export.SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

    provider = sdk_trace.TracerProvider()
    # Synchronous processor: every span's end-of-life cost is paid inside the request.
    provider.add_span_processor(export.SimpleSpanProcessor(DiscardExporter()))
    wrapped = wsgi.OpenTelemetryMiddleware(app, tracer_provider=provider)
    return wrapped, lambda: provider.force_flush()


def sentry_wsgi(
    app: Callable[..., Any], dsn: str, traces_sample_rate: float
) -> tuple[Callable[..., Any], Callable[[], None]]:
    """sentry-sdk's SentryWsgiMiddleware, the client sending to the local sink."""
    sentry_sdk = need("sentry_sdk", "sentry-sdk")
    integration = need("sentry_sdk.integrations.wsgi", "sentry-sdk")
    sentry_sdk.init(
        dsn=dsn, traces_sample_rate=traces_sample_rate, transport_queue_size=SENTRY_QUEUE_SIZE
    )
    return integration.SentryWsgiMiddleware(app), lambda: sentry_sdk.flush(timeout=120)


# wsgi_observe ---------------------------------------------------------------------------


def observe(app: Callable[..., Any], **config: Any) -> Any:
    """Metrics only, unless ``config`` asks for more: ``ObservabilityMiddleware(app,
    store=MetricsStore(), access_log=False, log_handlers=False, **config)``."""
    from wsgi_observe.metrics import MetricsStore
    from wsgi_observe.middleware import ObservabilityMiddleware

    store = config.pop("store", None) or MetricsStore()
    config.setdefault("access_log", False)
    config.setdefault("log_handlers", False)
    return ObservabilityMiddleware(app, store=store, **config)


def default(app: Callable[..., Any]) -> Any:
    """``ObservabilityMiddleware(app)``: the configuration a user gets by wrapping, read from
    the environment (the suite sets ``LOG_DIR`` to a temporary folder): request ids, the
    logging context, and the JSON access line through the log handlers it installs
    (``LOG_DIR/application.log`` and the console, here the worker's stderr file)."""
    from wsgi_observe.middleware import ObservabilityMiddleware

    return ObservabilityMiddleware(app)


# Tracing at a 0.1 sample ratio (issue 13) ---------------------------------------------------

#: The sample ratio of both OpenTelemetry-at-0.1 configurations.
OTEL_RATIO = 0.1


def _discarding_exporter() -> Any:
    export = need("opentelemetry.sdk.trace.export", "opentelemetry-sdk")

    class DiscardExporter(export.SpanExporter):  # type: ignore[misc,name-defined]
        """Accepts every span and sends it nowhere: nothing leaves the machine."""

        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Any) -> Any:
            self.spans += len(spans)
            return export.SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

    return DiscardExporter()


def opentelemetry_ratio(app: Callable[..., Any]) -> tuple[Any, Callable[[], None], Any]:
    """OpenTelemetryMiddleware with ParentBased(TraceIdRatioBased(0.1)) and the SDK's
    BatchSpanProcessor into a discarding exporter: (app, drain, exporter)."""
    wsgi = need("opentelemetry.instrumentation.wsgi", "opentelemetry-instrumentation-wsgi")
    sdk_trace = need("opentelemetry.sdk.trace", "opentelemetry-sdk")
    sampling = need("opentelemetry.sdk.trace.sampling", "opentelemetry-sdk")
    export = need("opentelemetry.sdk.trace.export", "opentelemetry-sdk")
    exporter = _discarding_exporter()
    provider = sdk_trace.TracerProvider(
        sampler=sampling.ParentBased(sampling.TraceIdRatioBased(OTEL_RATIO))
    )
    provider.add_span_processor(export.BatchSpanProcessor(exporter))
    wrapped = wsgi.OpenTelemetryMiddleware(app, tracer_provider=provider)
    return wrapped, lambda: provider.force_flush(), exporter


def observe_otel(app: Callable[..., Any]) -> tuple[Any, Callable[[], None], Any]:
    """Metrics only plus wsgi_observe's OpenTelemetry at 0.1, its own provider and batch
    queue, the OTLP exporter swapped for a discarding one: (app, drain, exporter)."""
    need("opentelemetry.sdk.trace", "opentelemetry-sdk")
    from wsgi_observe.integrations import otel

    wrapped = observe(
        app,
        otel=True,
        otel_exporter_otlp_endpoint="http://127.0.0.1:9/",  # never used: swapped below
        otel_traces_sampler_arg=OTEL_RATIO,
        environment="production",
    )
    provider = otel._state["provider"]
    processor = provider._active_span_processor._span_processors[0]
    exporter = processor.exporter = _discarding_exporter()
    return wrapped, lambda: provider.force_flush(), exporter
