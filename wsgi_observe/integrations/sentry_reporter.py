"""The Sentry reporter: each observed request in its own isolation scope, cheaply.

An exception from the app (before the body or mid-stream) is sent with the request's
context, endpoint, environment and release, then propagates unchanged; a sampled request
becomes an ``http.server`` transaction named by its endpoint template and finished when the
server closes the response.

Why it is cheap (sentry-sdk's own ``SentryWsgiMiddleware`` does all of this eagerly):

- The sampling decision comes first, from the same random number the SDK would compare, so
  an unsampled request (90% in production) never builds a transaction: it pays for one
  isolation scope fork and a propagation context that says "not sampled"
  (``sentry-trace: ...-0``, baggage ``sentry-sampled=false``) to whatever asks the scope
  for trace headers: ``sentry_sdk.get_traceparent()``/``get_baggage()``, the scope's
  ``iter_trace_propagation_headers()``, and error events, which join that trace.
  sentry-sdk's ``http.client`` integration (so ``requests`` and ``urllib3`` too) only
  propagates from a span inside a transaction, so those calls carry no trace header from
  an unsampled request here (``SentryWsgiMiddleware``'s unsampled transaction sends "-0").
- Request data, tags and the request breadcrumb are added by an event processor, which
  runs only when an event is actually sent.
- A list body (the common case) is returned untouched; only an iterable that runs app code
  while it is iterated is wrapped, so the request's scope is active then too.
- The transaction is finished by the middleware's finish steps, which run exactly once per
  request, with the endpoint name the metrics use.

The outermost Sentry layer owns the request. A framework integration of sentry-sdk that
wraps the app *inside* ours (Django's, Bottle's, Pyramid's and Falcon's patch the framework's
WSGI entry with ``SentryWsgiMiddleware``) would start a second transaction, in a second trace,
for the same request; while our reporter runs the app, sentry-sdk's own "a WSGI middleware is
already active" flag is set, so that inner middleware passes the request through (its other
parts still run: Django's still reports the exceptions it turns into 500 pages, in our scope).

sentry-sdk internals this relies on (supported: ``>=2.0,<3``, pinned in setup.cfg; each is
checked by ``tests/test_sentry_sdk_contract.py``, which names the one a new release moved).
None has a public replacement that keeps the cost; measured in-process per request
(middleware and reporter, sentry-sdk 2.75, a transport that drops everything):

- ``sentry_sdk.tracing_utils.PropagationContext``, subclassed to add "-0" and our baggage,
  and written to ``scope._propagation_context``. The public way to say "not sampled" is an
  unsampled ``Transaction`` as the scope's span: 33 µs per unsampled request instead of
  14 µs (a plain ``set_new_propagation_context()`` costs the same 14 µs but says nothing
  about sampling, so a downstream service would decide again).
- ``sentry_sdk.tracing_utils.Baggage``, built with ``sample_rand``: the only way to hand our
  random number to the transaction (the SDK reads it there, else derives its own from the
  trace id), so the trace's dynamic sampling context matches the decision we made.
- ``sentry_sdk.tracing.Transaction(...)`` built with ``sampled=True`` and then started with
  the public ``start_transaction(transaction)``. Passing the same keywords to
  ``start_transaction(**kwargs)`` makes the transaction keep the request's scope, which
  keeps the transaction: a reference cycle per sampled request (about 12 objects each
  left to the garbage collector, measured), and ``scope=None`` is outside its typed
  signature.
- ``client.monitor.downsample_factor``: sentry-sdk's backpressure, which halves the rate
  while its transport is unhealthy; there is no public accessor. Read with ``getattr``, so
  a client without it means no downsampling.
- Helpers: ``sentry_sdk.integrations.wsgi.get_request_url`` here,
  ``sentry_sdk.utils.event_from_exception`` and
  ``sentry_sdk.scope.add_global_event_processor`` in :mod:`.sentry`.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from random import random
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import quote

from .._guard import guarded
from ..tracing import TRACE_KEY
from .sentry import _capture, _install_dedupe

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from .._types import WSGIApplication, WSGIEnvironment
    from .._wsgi import Exchange
    from ..endpoints import EndpointNames
    from ..tracing import TraceContext

__all__ = ["SentryReporter"]

_OP = "http.server"
_ORIGIN = "auto.http.wsgi_observe"
_PLACEHOLDER_NAME = "generic WSGI request"  # until the endpoint is known (sentry's own)
# Not traced, as in sentry-sdk's own WSGI integration: CORS preflights and HEAD checks.
_UNTRACED_METHODS = frozenset({"OPTIONS", "HEAD"})
_new = object.__new__
_LAZY: dict[str, Any] = {}


# Request data (built lazily, only for events that are sent) ------------------------------


def _request_headers(environ: WSGIEnvironment) -> dict[str, str]:
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").title()] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers[key.replace("_", "-").title()] = value
    return headers


def _request_url(environ: WSGIEnvironment) -> str:
    """``scheme://host/script/path``: never the query string, never credentials.

    A path with characters above U+00FF (PEP 3333 forbids them, some servers pass them)
    is percent-encoded first: sentry-sdk's own helper would fail on it.
    """
    from sentry_sdk.integrations.wsgi import get_request_url

    from ..redact import redact_dsn

    path = environ.get("PATH_INFO", "")
    script = environ.get("SCRIPT_NAME", "")
    if not (path.isascii() and script.isascii()):
        environ = {
            **environ,
            "PATH_INFO": _latin_1_safe(path),
            "SCRIPT_NAME": _latin_1_safe(script),
        }
    return redact_dsn(get_request_url(environ))


def _latin_1_safe(text: str) -> str:
    try:
        text.encode("latin-1")
        return text
    except UnicodeEncodeError:
        return quote(text.encode("utf-8", "replace"), safe="/")


class _Request:
    """One request's Sentry state; ``process`` is its event processor."""

    __slots__ = ("context", "environ", "exchange", "names", "started", "transaction")

    if TYPE_CHECKING:
        environ: WSGIEnvironment
        exchange: Exchange
        names: EndpointNames
        started: float
        transaction: Any
        context: Optional[contextvars.Context]

    @classmethod
    def start(cls, environ: WSGIEnvironment, exchange: Exchange, names: EndpointNames) -> _Request:
        request = _new(cls)
        request.environ = environ
        request.exchange = exchange
        request.names = names
        request.started = time.time()
        request.transaction = None
        request.context = None
        return request

    def status(self) -> Optional[str]:
        status = self.exchange.status
        return status if isinstance(status, str) else None

    def endpoint(self, environ: WSGIEnvironment, status: Optional[str]) -> Optional[str]:
        try:
            return self.names.resolve(environ, status)
        except Exception as error:
            guarded("sentry endpoint name", error)
            return None

    def process(self, event: dict[str, Any], hint: Any) -> dict[str, Any]:
        try:
            self._add_request_data(event)
        except Exception as error:
            guarded("sentry event processor", error)
        return event

    def _add_request_data(self, event: dict[str, Any]) -> None:
        import sentry_sdk

        from ..redact import redact_headers, redact_query

        environ = self.environ
        method = environ.get("REQUEST_METHOD", "GET")
        url = _request_url(environ)
        query = environ.get("QUERY_STRING") or ""
        request = event.get("request")
        if not isinstance(request, dict):
            request = event["request"] = {}
        request["url"] = url
        request["method"] = method
        if query:
            request["query_string"] = redact_query(query)
        else:
            request.pop("query_string", None)
        request["headers"] = redact_headers(_request_headers(environ))
        request["env"] = {
            key: environ[key] for key in ("SERVER_NAME", "SERVER_PORT") if key in environ
        }
        request.pop("cookies", None)

        status = self.status()
        endpoint = self.endpoint(environ, status)
        tags = event.get("tags")
        if not isinstance(tags, dict):
            tags = event["tags"] = {}
        if endpoint is not None:
            tags["endpoint"] = endpoint
        options = sentry_sdk.get_client().options
        for name in ("environment", "release"):
            value = event.get(name) or options.get(name)
            if value:
                tags.setdefault(name, value)
        if event.get("type") == "transaction":
            return
        if endpoint is not None and event.get("transaction") in (None, _PLACEHOLDER_NAME):
            event["transaction"] = endpoint
            event.setdefault("transaction_info", {"source": "route"})
        data: dict[str, Any] = {"method": method, "url": url}
        if query:
            data["http.query"] = redact_query(query)
        if status is not None and status[:3].isdigit():
            data["status_code"] = int(status[:3])
        from datetime import datetime, timezone

        crumb = {
            "type": "http",
            "category": "request",
            "level": "info",
            "message": f"{method} {endpoint or environ.get('PATH_INFO', '/')}",
            "data": data,
            "timestamp": datetime.fromtimestamp(self.started, timezone.utc),
        }
        breadcrumbs = event.get("breadcrumbs")
        if not isinstance(breadcrumbs, dict):
            breadcrumbs = event["breadcrumbs"] = {}
        values = breadcrumbs.get("values")
        if not isinstance(values, list):
            values = breadcrumbs["values"] = []
        # This request's scope started with no breadcrumbs: the request comes first.
        values.insert(0, crumb)

    def finish(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        """The request has ended: finish its transaction, once, named by its endpoint."""
        transaction, self.transaction = self.transaction, None
        if transaction is None:
            return  # finished already: exactly once
        context, self.context = self.context, None  # no cycle through the scope's processor
        exchange.reporter = None
        transaction.name = name
        transaction.source = "route"
        status = exchange.status
        if isinstance(status, str) and status[:3].isdigit():
            transaction.set_http_status(int(status[:3]))
        if exchange.failed:
            transaction.set_status("internal_error")
        if context is not None:
            # Under the request's scopes, so its data and event processor apply.
            context.run(transaction.finish)
        else:
            transaction.finish()


class _ScopedBody:
    """The app's iterable, iterated and closed inside the request's context (its scopes).

    Like sentry's ``_ScopedResponse``, but a ``contextvars.Context`` entered per chunk is
    a C call, not two scope forks. ``close()`` reaches the app's iterable exactly once.
    """

    __slots__ = ("_body", "_closed", "_context", "_iterator")

    def __init__(self, body: Iterable[bytes], context: contextvars.Context) -> None:
        self._body = body
        self._context = context
        self._iterator: Optional[Iterator[bytes]] = None
        self._closed = False

    def __iter__(self) -> _ScopedBody:
        return self

    def __next__(self) -> bytes:
        return self._context.run(self._next)

    def _next(self) -> bytes:
        iterator = self._iterator
        if iterator is None:
            iterator = self._iterator = iter(self._body)
        try:
            return next(iterator)
        except StopIteration:
            raise
        except BaseException as error:
            _capture(error)
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._body, "close", None)
        if close is not None:
            self._context.run(self._close, close)

    @staticmethod
    def _close(close: Callable[[], object]) -> None:
        try:
            close()
        except BaseException as error:
            _capture(error)
            raise


def _unsampled_context_class() -> type:
    """A PropagationContext that says "not sampled" downstream, as an unsampled
    transaction would (``sentry-trace: <trace>-<span>-0``; baggage with ``sampled=false``,
    our ``sample_rand`` and ``sample_rate``). Built lazily: it subclasses an SDK class."""
    cls = _LAZY.get("unsampled")
    if cls is None:
        from sentry_sdk.tracing_utils import Baggage, PropagationContext

        class UnsampledContext(PropagationContext):
            __slots__ = ("_wo_rand", "_wo_rate")
            _wo_rand: float
            _wo_rate: float

            def to_traceparent(self) -> str:
                return f"{super().to_traceparent()}-0"

            def get_baggage(self) -> Any:
                if self.baggage is None:
                    baggage = Baggage.populate_from_propagation_context(self)
                    items = baggage.sentry_items
                    items["sampled"] = "false"
                    items["sample_rand"] = f"{self._wo_rand:.6f}"
                    items["sample_rate"] = str(self._wo_rate)
                    self.baggage = baggage
                return self.baggage

        cls = _LAZY["unsampled"] = UnsampledContext
    return cls


def _wsgi_middleware_flag() -> Optional[contextvars.ContextVar[Any]]:
    """sentry-sdk's flag that makes a nested ``SentryWsgiMiddleware`` pass requests through
    (None if this sentry-sdk has no such flag: then an inner one traces as well)."""
    try:
        from sentry_sdk.integrations import wsgi
    except ImportError:  # pragma: no cover - part of every sentry-sdk 2.x
        return None
    flag = getattr(wsgi, "_wsgi_middleware_applied", None)
    return flag if isinstance(flag, contextvars.ContextVar) else None


def _incoming(environ: WSGIEnvironment, trace: Optional[TraceContext]) -> Optional[dict[str, str]]:
    """What the caller sent to continue its trace: its ``sentry-trace`` (and ``baggage``),
    else the W3C ``traceparent`` the request's trace came from, as a ``sentry-trace``. A
    ``sentry-trace`` of another trace than the ``traceparent`` loses: one id everywhere."""
    header = environ.get("HTTP_SENTRY_TRACE")
    if trace is not None and trace.parent_id is not None:
        if not header or not header.strip().startswith(trace.trace_id):
            flag = "1" if trace.sampled else "0"
            header = f"{trace.trace_id}-{trace.parent_id}-{flag}"
    if not header:
        return None
    incoming = {"sentry-trace": header}
    baggage = environ.get("HTTP_BAGGAGE")
    if baggage:
        incoming["baggage"] = baggage
    return incoming


def _share_ids(context: Any, trace: TraceContext) -> None:
    """Give Sentry's propagation context the request's trace and span ids (the ones its
    log lines and its OpenTelemetry span carry), so events and headers name them too."""
    context.trace_id = trace.trace_id
    context.span_id = trace.span_id


def _valid_rate(rate: Any) -> Optional[float]:
    if isinstance(rate, bool):
        return 1.0 if rate else 0.0
    if isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0:
        return float(rate)
    return None


class SentryReporter:
    """The reporter :func:`~wsgi_observe.init_sentry` installs: one isolation scope per
    request, errors captured and re-raised unchanged, sampled requests traced. See the
    module docstring. Example::

        reporting.install(SentryReporter(), "errors")   # what init_sentry() does

    Reads: nothing from the environment (sentry-sdk's client options).
    """

    def __init__(self) -> None:
        import sentry_sdk

        self._sdk = sentry_sdk
        self._outer_flag = _wsgi_middleware_flag()
        _install_dedupe()

    def run(
        self,
        app: WSGIApplication,
        environ: WSGIEnvironment,
        exchange: Exchange,
        names: EndpointNames,
    ) -> Iterable[bytes]:
        sdk = self._sdk
        if sdk.get_current_scope().span is not None:
            return self._nested(app, environ, exchange, names)
        with sdk.isolation_scope() as scope:
            try:
                request: Optional[_Request] = self._begin(environ, exchange, names, scope)
            except Exception as error:
                guarded("sentry request start", error)
                request = None
            flag = self._outer_flag
            token = flag.set(True) if flag is not None else None
            try:
                body = app(environ, exchange.start_response)
            except BaseException as error:
                _capture(error)
                raise
            finally:
                if flag is not None and token is not None:
                    flag.reset(token)
            kind = type(body)
            if kind is list or kind is tuple:
                return body  # nothing runs while a list is iterated; the hook finishes
            file_wrapper = environ.get("wsgi.file_wrapper")
            if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
                return body  # keep it a file_wrapper, or servers lose sendfile
            context = request.context if request is not None else None
            return _ScopedBody(body, context or contextvars.copy_context())

    def finish(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        """Nothing to do for the reporter itself: a traced request finishes through its
        own state (``exchange.reporter``), which the middleware calls."""

    def _begin(
        self, environ: WSGIEnvironment, exchange: Exchange, names: EndpointNames, scope: Any
    ) -> _Request:
        request = _Request.start(environ, exchange, names)
        scope.clear_breadcrumbs()
        scope.add_event_processor(request.process)

        sdk = self._sdk
        client = sdk.get_client()
        options = client.options
        sampler = options.get("traces_sampler")
        trace: Optional[TraceContext] = environ.get(TRACE_KEY)
        incoming = _incoming(environ, trace)
        if (
            options.get("enable_tracing") is False
            or (sampler is None and options.get("traces_sample_rate") is None)
            or environ.get("REQUEST_METHOD") in _UNTRACED_METHODS
        ):
            # Errors only: continue the caller's trace, or start a new one; either way the
            # request's trace (its ids are in the logs) when it has one.
            if incoming is not None:
                scope.generate_propagation_context(incoming)
            else:
                scope.set_new_propagation_context()
            if trace is not None:
                _share_ids(scope.get_active_propagation_context(), trace)
                if trace.sampled is None:
                    trace.sampled = False  # nobody traces this request
            return request

        if incoming is None:
            # Head of a trace: decide now, as the SDK would (same sampler, same kind of
            # six-digit random number, which the transaction then carries downstream).
            rate = self._rate(sampler, options, environ)
            if rate is not None:
                monitor = getattr(client, "monitor", None)
                if monitor is not None and monitor.downsample_factor:
                    rate /= 2**monitor.downsample_factor  # the SDK's backpressure
                rand = int(random() * 1_000_000) / 1_000_000
                if not rand < rate:
                    self._not_sampled(scope, rand, rate, trace)
                    return request
                transaction, baggage = self._head_transaction(scope, rand, trace)
                transaction = sdk.start_transaction(
                    transaction, custom_sampling_context={"wsgi_environ": environ}
                )
                # A forced "sampled" reads as rate 1.0: the trace's DSC must say ours.
                transaction.sample_rate = rate
                baggage.sentry_items["sample_rate"] = str(rate)
                self._traced(request, transaction, environ)
                return request
        elif incoming["sentry-trace"].rstrip().endswith("-0") and getattr(
            sampler, "inherits_parent", False
        ):
            # The caller did not sample this trace, and our sampler follows the caller.
            scope.generate_propagation_context(incoming)
            if trace is not None:
                _share_ids(scope.get_active_propagation_context(), trace)
            return request

        # A continued trace (or a sampler we cannot second-guess): the SDK decides.
        transaction = sdk.continue_trace(
            incoming or {}, op=_OP, name=_PLACEHOLDER_NAME, source="route", origin=_ORIGIN
        )
        if trace is not None:
            # The ids of the request's logs (also after a trace Sentry refused to continue).
            transaction.trace_id = trace.trace_id
            transaction.span_id = trace.span_id
        transaction = sdk.start_transaction(
            transaction, custom_sampling_context={"wsgi_environ": environ}
        )
        if trace is not None and trace.sampled is None:
            trace.sampled = bool(transaction.sampled)
        if transaction.sampled:
            self._traced(request, transaction, environ)
        else:
            # Active but unsampled: outgoing requests then carry "-0" as the SDK's would.
            sdk.get_current_scope().span = transaction
        return request

    def _head_transaction(
        self, scope: Any, rand: float, trace: Optional[TraceContext] = None
    ) -> tuple[Any, Any]:
        """A new trace's transaction, decided "sampled" already, and its baggage, which
        carries our random number as ``sample_rand`` (the SDK reads it from there). It
        has the request's trace and span ids, when the request has a trace."""
        from sentry_sdk.tracing import Transaction
        from sentry_sdk.tracing_utils import Baggage

        scope.set_new_propagation_context()
        context = scope.get_active_propagation_context()
        if trace is not None:
            _share_ids(context, trace)
            if trace.sampled is None:
                trace.sampled = True
        baggage = Baggage({"sample_rand": f"{rand:.6f}"}, mutable=True)
        transaction = Transaction(
            op=_OP,
            name=_PLACEHOLDER_NAME,
            source="route",
            origin=_ORIGIN,
            trace_id=context.trace_id,
            span_id=trace.span_id if trace is not None else None,
            same_process_as_parent=False,
            sampled=True,
            baggage=baggage,
        )
        return transaction, baggage

    def _traced(self, request: _Request, transaction: Any, environ: WSGIEnvironment) -> None:
        self._sdk.get_current_scope().span = transaction
        request.transaction = transaction
        request.context = contextvars.copy_context()
        request.exchange.reporter = request  # the middleware finishes it, once

    def _rate(
        self, sampler: Any, options: dict[str, Any], environ: WSGIEnvironment
    ) -> Optional[float]:
        """The rate the SDK would use for a new trace; None when only the SDK can tell."""
        if sampler is None:
            return _valid_rate(options.get("traces_sample_rate"))
        constant = getattr(sampler, "constant_rate", None)
        if constant is not None:
            # Ours, without a user sampler: probes and excluded paths never get here.
            return float(constant)
        try:
            rate = sampler(
                {
                    "transaction_context": {
                        "op": _OP,
                        "name": _PLACEHOLDER_NAME,
                        "source": "route",
                        "origin": _ORIGIN,
                    },
                    "parent_sampled": None,
                    "wsgi_environ": environ,
                }
            )
        except Exception:
            return None  # the SDK will call it again, and log why it fails
        return _valid_rate(rate)

    def _not_sampled(
        self, scope: Any, rand: float, rate: float, trace: Optional[TraceContext] = None
    ) -> None:
        try:
            context = _unsampled_context_class()()
            context._wo_rand = rand
            context._wo_rate = rate
            scope._propagation_context = context
        except Exception:  # pragma: no cover - SDK internals moved: a plain new trace
            scope.set_new_propagation_context()
            context = scope.get_active_propagation_context()
        if trace is not None:
            _share_ids(context, trace)
            if trace.sampled is None:
                trace.sampled = False

    def _nested(
        self,
        app: WSGIApplication,
        environ: WSGIEnvironment,
        exchange: Exchange,
        names: EndpointNames,
    ) -> Iterable[bytes]:
        """An outer sentry integration (e.g. FlaskIntegration) owns the scope and the
        transaction: add our request data, capture errors, and name its transaction."""
        sdk = self._sdk
        request = _Request.start(environ, exchange, names)
        sdk.get_isolation_scope().add_event_processor(request.process)
        try:
            body = app(environ, exchange.start_response)
        except BaseException as error:
            _capture(error)
            raise
        try:
            transaction = sdk.get_current_scope().transaction
            name = request.endpoint(environ, request.status())
            if transaction is not None and name is not None:
                # Now: the outer integration finishes its transaction as soon as we return.
                transaction.name = name
                transaction.source = "route"
        except Exception as error:
            guarded("sentry nested naming", error)
        return body
