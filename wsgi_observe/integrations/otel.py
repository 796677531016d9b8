"""OpenTelemetry: one SERVER span per observed request, exported over OTLP/HTTP.

Turned on by the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; ``OTEL_SDK_DISABLED=true`` keeps it off) or the
``otel=True`` keyword (``WSGI_OBSERVE_OTEL``), when a middleware is built; or explicitly by
:func:`init_otel`. Needs the extra: ``pip install 'wsgi_observe[otel]'``.

- The TracerProvider: one the application set up already (the global one, or
  ``init_otel(tracer_provider=...)``) is used as it is, never replaced, with its own
  sampler and exporters. Otherwise we build one, make it the global provider (so the
  application's own instrumentation joins the same traces), with the resource
  ``service.name``, ``service.version`` and ``deployment.environment.name`` from
  :class:`~wsgi_observe.Config` (``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win),
  the sampler of ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` (parent-based ratio by
  default, at ``traces_sample_rate``'s default: 1.0 in development, 0.1 elsewhere), and
  :mod:`.otel_export`'s batch queue and OTLP/HTTP exporter, flushed at exit.
- The span: named ``{method} {route template}`` (the endpoint name the metrics use; just
  ``{method}`` when no route matched), kind SERVER, with the stable HTTP semantic
  conventions (``http.request.method``, ``http.route``, ``http.response.status_code``,
  ``url.path``, ``url.query`` redacted, ``url.scheme``, ``server.address``,
  ``server.port``, ``client.address``, ``user_agent.original``,
  ``network.protocol.version``), status ERROR and an ``exception`` event (message and
  stack trace redacted) on a 5xx or a raised exception, and ``error.type``. It continues
  the request's trace (:mod:`wsgi_observe.tracing`): its trace id and span id are the
  ones of the request's log lines and its Sentry event. It is current while the app runs,
  so spans the app starts are its children; functions timed by ``performance_tracking``
  become child spans too. Probes, ``/metrics`` and ``exclude_paths`` never reach it.

Why it is cheap: with our own provider the sampling decision is made here, from the
trace id, exactly as the SDK's ``ParentBased(TraceIdRatioBased)`` makes it; an unsampled
request (90% at 0.1) builds no SDK span, only the non-recording span context that lets
the app's own instrumentation join the trace. A sampled one builds its span with the ids
the request already has. With a provider of the application's, whose sampler may be
anything, the SDK is asked for every request.
"""

from __future__ import annotations

import logging
import threading
import traceback
from random import getrandbits
from typing import TYPE_CHECKING, Any, Optional

from .. import reporting, tracing
from .._guard import guarded
from ..config import Config, ConfigError
from ..tracing import TRACE_KEY

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._types import WSGIApplication, WSGIEnvironment
    from .._wsgi import Exchange
    from ..endpoints import EndpointNames
    from ..tracing import TraceContext

__all__ = ["OtelReporter", "init_otel", "is_active", "shutdown", "start_from_config"]

_log = logging.getLogger("wsgi_observe.otel")
_MAX_AGENT = 512
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_LOW_64 = (1 << 64) - 1
#: What this module built and installed (one per process).
_state: dict[str, Any] = {}


def _sdk() -> tuple[Any, Any]:
    """The OpenTelemetry modules, or a one-line ConfigError naming the extra."""
    try:
        from opentelemetry import context, trace
        from opentelemetry.sdk import trace as sdk_trace  # noqa: F401 - the SDK is needed
    except ImportError:
        raise ConfigError(
            "OpenTelemetry tracing is on (OTEL_EXPORTER_OTLP_ENDPOINT or WSGI_OBSERVE_OTEL) "
            "but OpenTelemetry is not installed: pip install 'wsgi_observe[otel]'"
        ) from None
    return context, trace


def init_otel(
    config: Optional[Config] = None, *, tracer_provider: Any = None, **overrides: Any
) -> bool:
    """Trace every observed request with OpenTelemetry; return whether it is on.

    Parameters: ``config`` (default :meth:`Config.from_env`, with ``overrides``, any
    Config field); ``tracer_provider`` (one of yours: used as it is). Without one, the
    global provider is used when the application set one up, else ours is built from
    ``config`` (see the module docstring). Every middleware of the process traces from
    then on, built before or after the call. Example::

        from wsgi_observe.integrations.otel import init_otel
        init_otel(otel_exporter_otlp_endpoint="http://otel-collector:4318")

    Returns False (and does nothing) with ``OTEL_SDK_DISABLED=true``. Reads: the
    ``OTEL_*`` variables of :class:`Config`, through it.
    """
    cfg = config if config is not None else Config.from_env(**overrides)
    if config is not None and overrides:
        cfg = config.replace(**overrides)
    if cfg.otel_sdk_disabled:
        return False
    context, trace = _sdk()
    provider = tracer_provider
    decision: Optional[_Decision] = None
    ours = _state.get("provider")
    if provider is None:
        current = trace.get_tracer_provider()
        if ours is not None and current is ours:
            provider, decision = ours, _state["decision"]
        elif isinstance(current, trace.ProxyTracerProvider):
            provider, decision = _own_provider(cfg)
            trace.set_tracer_provider(provider)
            if trace.get_tracer_provider() is provider:
                _state.update(provider=provider, decision=decision)
            else:  # the application set one meanwhile: theirs
                provider.shutdown()
                provider, decision = trace.get_tracer_provider(), None
        else:
            provider = current  # the application's: used as it is
    elif ours is not None and provider is ours:
        decision = _state["decision"]
    reporter = OtelReporter(provider, decision, context, trace)
    reporting.install(reporter, "traces")
    tracing.install_child_spans(reporter.children)
    _state["reporter"] = reporter
    return True


def start_from_config(config: Config) -> None:
    """What a middleware whose configuration turns OpenTelemetry on does: once."""
    if not is_active():
        init_otel(config)


def is_active() -> bool:
    """Whether our OpenTelemetry reporter is installed in this process."""
    reporter = _state.get("reporter")
    return reporter is not None and reporting.installed("traces") is reporter


def shutdown() -> None:
    """Stop tracing: uninstall the reporter and flush and shut down the provider we built
    (a provider of the application's is left alone). Mostly for tests."""
    reporter = _state.pop("reporter", None)
    if reporter is not None:
        reporting.uninstall(reporter)
        if tracing.child_spans is reporter.children:
            tracing.install_child_spans(None)
    provider = _state.pop("provider", None)
    _state.pop("decision", None)
    if provider is not None:
        provider.shutdown()


# Our own provider ------------------------------------------------------------------------


class _Decision:
    """The sampler of our provider, decided here without the SDK: parent-based or not, and
    the ratio bound on the trace id's low 64 bits (the SDK's TraceIdRatioBased math)."""

    __slots__ = ("bound", "parent_based")

    def __init__(self, parent_based: bool, rate: float) -> None:
        self.parent_based = parent_based
        self.bound = round(rate * (_LOW_64 + 1))

    def sampled(self, trace: TraceContext) -> bool:
        if self.parent_based and trace.parent_id is not None and trace.sampled is not None:
            return trace.sampled
        return int(trace.trace_id[16:], 16) < self.bound


def _sampler(cfg: Config) -> tuple[Any, _Decision]:
    from opentelemetry.sdk.trace import sampling

    name = cfg.otel_traces_sampler or "parentbased_traceidratio"
    rate = cfg.otel_traces_sampler_arg
    if rate is None:
        rate = cfg.effective_traces_sample_rate if cfg.otel_traces_sampler is None else 1.0
    base = name.removeprefix("parentbased_")
    if base == "always_on":
        rate = 1.0
    elif base == "always_off":
        rate = 0.0
    root = sampling.TraceIdRatioBased(rate)
    parent_based = name.startswith("parentbased_")
    return (sampling.ParentBased(root) if parent_based else root), _Decision(parent_based, rate)


def _resource(cfg: Config) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.version import __version__ as sdk_version

    attributes: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        "service.name": cfg.service_name,
        "service.version": cfg.version,
        "deployment.environment.name": cfg.environment,
    }
    attributes.update(cfg.otel_resource_attributes)
    if cfg.otel_service_name:
        attributes["service.name"] = cfg.otel_service_name
    return Resource(attributes)


class _PresetIds:
    """Our provider's id generator: the ids a request already has (set just before its
    span is started, in this thread), else random ones like the SDK's."""

    def __init__(self) -> None:
        self._local = threading.local()

    def preset(self, trace_id: int, span_id: int) -> None:
        local = self._local
        local.trace_id = trace_id
        local.span_id = span_id

    def generate_span_id(self) -> int:
        local = self._local
        value: int = getattr(local, "span_id", 0)
        if value:
            local.span_id = 0
            return value
        return getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        local = self._local
        value: int = getattr(local, "trace_id", 0)
        if value:
            local.trace_id = 0
            return value
        return getrandbits(128) or 1

    def is_trace_id_random(self) -> bool:
        return True


def _own_provider(cfg: Config) -> tuple[Any, _Decision]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    from .otel_export import BatchExport, OtlpHttpExporter

    class PresetIds(_PresetIds, IdGenerator):
        pass

    sampler, decision = _sampler(cfg)
    provider = TracerProvider(sampler=sampler, resource=_resource(cfg), id_generator=PresetIds())
    timeout_s = (cfg.otel_exporter_otlp_timeout or 10_000.0) / 1000.0
    headers = dict(cfg.otel_exporter_otlp_headers)
    exporter = OtlpHttpExporter(cfg.otlp_traces_url, headers, timeout_s)
    provider.add_span_processor(BatchExport(exporter))
    return provider, decision


# The reporter ----------------------------------------------------------------------------


def _host_port(environ: WSGIEnvironment) -> tuple[Optional[str], Optional[int]]:
    """``server.address`` and ``server.port``: from the Host header, else the server's."""
    server_port = environ.get("SERVER_PORT")
    port: Optional[int] = int(str(server_port)) if str(server_port).isdigit() else None
    host = environ.get("HTTP_HOST")
    if not host:
        return environ.get("SERVER_NAME") or None, port
    name, _, given = host.rpartition(":")
    if name and given.isdigit() and not given.startswith("0"):
        return name.strip("[]") or None, int(given)
    return host.strip("[]") or None, port


def _attributes(environ: WSGIEnvironment, method: str) -> dict[str, Any]:
    """The stable HTTP server semantic conventions known when the request starts."""
    from ..logs.context import wsgi_text
    from ..redact import redact_query

    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    attributes: dict[str, Any] = {
        "http.request.method": method if method in _KNOWN_METHODS else "_OTHER",
        "url.path": path if path.isascii() else wsgi_text(path),
        "url.scheme": environ.get("wsgi.url_scheme", "http"),
    }
    if method not in _KNOWN_METHODS:
        attributes["http.request.method_original"] = method
    query = environ.get("QUERY_STRING")
    if query:
        attributes["url.query"] = redact_query(query if query.isascii() else wsgi_text(query))
    host, port = _host_port(environ)
    if host:
        attributes["server.address"] = host
    if port is not None:
        attributes["server.port"] = port
    client = environ.get("REMOTE_ADDR")
    if client:
        attributes["client.address"] = client
    agent = environ.get("HTTP_USER_AGENT")
    if agent:
        attributes["user_agent.original"] = agent[:_MAX_AGENT]
    protocol = environ.get("SERVER_PROTOCOL", "")
    if protocol.startswith("HTTP/"):
        attributes["network.protocol.version"] = protocol[5:]
    return attributes


def _exception_attributes(error: BaseException) -> dict[str, str]:
    """The exception event's message and stack trace, redacted like the logs."""
    from ..redact import redact_text

    try:
        stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    except Exception:  # pragma: no cover - traceback copes with broken __str__ itself
        stack = ""
    try:
        message = str(error)
    except Exception:
        message = f"<unprintable {type(error).__name__}>"
    return {"exception.message": redact_text(message), "exception.stacktrace": redact_text(stack)}


def _error_type(error: BaseException) -> str:
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


class _ServerSpan:
    """One request's span: finished, once, by the middleware's finish steps."""

    __slots__ = ("method", "span")

    def __init__(self, span: Any, method: str) -> None:
        self.span = span
        self.method = method

    def finish(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        span, self.span = self.span, None
        if span is None:
            return
        try:
            _finish_span(span, self.method, exchange, name)
        except Exception as error:
            guarded("otel span finish", error)
            span.end()


def _finish_span(span: Any, method: str, exchange: Exchange, name: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    label = method if method in _KNOWN_METHODS else "HTTP"
    if name and not name.startswith("<"):  # <unmatched>, <overflow>: no route
        span.update_name(f"{label} {name}")
        span.set_attribute("http.route", name)
    status = exchange.status
    code = int(status[:3]) if isinstance(status, str) and status[:3].isdigit() else None
    if code is not None:
        span.set_attribute("http.response.status_code", code)
    error = exchange.exception() if exchange.failed else None
    if isinstance(error, Exception):
        span.record_exception(error, attributes=_exception_attributes(error), escaped=True)
        span.set_attribute("error.type", _error_type(error))
        span.set_status(Status(StatusCode.ERROR, _error_type(error)))
    elif code is None or code >= 500:
        span.set_attribute("error.type", str(code) if code is not None else "_OTHER")
        span.set_status(Status(StatusCode.ERROR))
    span.end()


class OtelReporter:
    """The ``"traces"`` reporter :func:`init_otel` installs: one SERVER span per request.
    See the module docstring. Example::

        reporting.install(OtelReporter(provider, None, context, trace), "traces")

    Reads: nothing from the environment.
    """

    def __init__(self, provider: Any, decision: Optional[_Decision], context: Any, trace: Any):
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
        from opentelemetry.trace.span import TraceState

        from .. import _version

        self.provider = provider
        self.tracer = provider.get_tracer("wsgi_observe", _version.__version__)
        self.decision = decision
        self.ids: Any = getattr(provider, "id_generator", None) if decision is not None else None
        self.children = _ChildSpans(self.tracer, context, trace)
        self._attach = context.attach
        self._detach = context.detach
        self._in_context = trace.set_span_in_context
        self._root = context.Context()
        self._span_context = SpanContext
        self._non_recording = NonRecordingSpan
        self._flags = (TraceFlags(TraceFlags.DEFAULT), TraceFlags(TraceFlags.SAMPLED))
        self._server = SpanKind.SERVER
        self._trace_state = TraceState

    def run(
        self,
        app: WSGIApplication,
        environ: WSGIEnvironment,
        exchange: Exchange,
        names: EndpointNames,
    ) -> Iterable[bytes]:
        trace: Optional[TraceContext] = environ.get(TRACE_KEY)
        if trace is None:  # pragma: no cover - the middleware always begins one for us
            return app(environ, exchange.start_response)
        try:
            context = self._start(environ, exchange, trace)
        except Exception as error:
            guarded("otel span start", error)
            return app(environ, exchange.start_response)
        token = self._attach(context)
        try:
            return app(environ, exchange.start_response)
        finally:
            self._detach(token)

    def finish(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        """Nothing to do: each traced request finishes through its own span."""

    def _start(self, environ: WSGIEnvironment, exchange: Exchange, trace: TraceContext) -> Any:
        """The context the app runs in: our span's (sampled), or its ids alone."""
        decision = self.decision
        if decision is not None:
            sampled = trace.sampled = decision.sampled(trace)
            if not sampled:
                # No SDK span; the ids, so that spans the app starts join this trace.
                return self._in_context(
                    self._non_recording(
                        self._span_context(
                            int(trace.trace_id, 16),
                            int(trace.span_id, 16),
                            False,
                            self._flags[0],
                            self._state(trace),
                        )
                    )
                )
            self.ids.preset(int(trace.trace_id, 16), int(trace.span_id, 16))
        method = environ.get("REQUEST_METHOD", "GET")
        span = self.tracer.start_span(
            method if method in _KNOWN_METHODS else "HTTP",
            context=self._parent(trace),
            kind=self._server,
            attributes=_attributes(environ, method),
        )
        ids = span.get_span_context()
        if ids.is_valid:  # a provider of the application's chose its own ids
            trace.trace_id = f"{ids.trace_id:032x}"
            trace.span_id = f"{ids.span_id:016x}"
        trace.sampled = bool(ids.trace_flags.sampled)
        if span.is_recording():
            exchange.reporter = _ServerSpan(span, method)
        return self._in_context(span)

    def _parent(self, trace: TraceContext) -> Any:
        """The caller's span as a remote parent, or an empty context (a new trace)."""
        if trace.parent_id is None:
            return self._root
        return self._in_context(
            self._non_recording(
                self._span_context(
                    int(trace.trace_id, 16),
                    int(trace.parent_id, 16),
                    True,
                    self._flags[1 if trace.sampled else 0],
                    self._state(trace),
                )
            )
        )

    def _state(self, trace: TraceContext) -> Any:
        if not trace.tracestate:
            return None
        try:
            return self._trace_state.from_header([trace.tracestate])
        except Exception:  # pragma: no cover - bound_tracestate kept valid members only
            return None


class _ChildSpans:
    """Functions timed by ``performance_tracking`` as child spans of a recorded span."""

    __slots__ = ("_attach", "_current", "_detach", "_in_context", "_tracer")

    def __init__(self, tracer: Any, context: Any, trace: Any) -> None:
        self._tracer = tracer
        self._attach = context.attach
        self._detach = context.detach
        self._current = trace.get_current_span
        self._in_context = trace.set_span_in_context

    def start(self, name: str) -> Any:
        if not self._current().is_recording():
            return None  # an unsampled request, or no request: no span
        span = self._tracer.start_span(name)
        token = self._attach(self._in_context(span))
        child = tracing.enter_child(f"{span.get_span_context().span_id:016x}")
        return span, token, child

    def end(self, handle: Any, error: Optional[BaseException]) -> None:
        from opentelemetry.trace import Status, StatusCode

        span, token, child = handle
        tracing.leave_child(child)
        self._detach(token)
        if isinstance(error, Exception):
            span.record_exception(error, attributes=_exception_attributes(error), escaped=True)
            span.set_attribute("error.type", _error_type(error))
            span.set_status(Status(StatusCode.ERROR, _error_type(error)))
        span.end()
