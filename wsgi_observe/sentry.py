"""Sentry: :func:`init_sentry` and the per-request reporting that :func:`instrument` installs.

Without a DSN nothing here runs per request and ``sentry_sdk`` is never imported (every
import of it is inside a function). With one, each observed request runs in its own
isolation scope: an exception from the app (before the body or mid-stream) is sent with
the request's context, endpoint, environment and release, then propagates unchanged; a
sampled request becomes an ``http.server`` transaction named by its endpoint template and
finished when the server closes the response.

Why it is cheap (sentry-sdk's own ``SentryWsgiMiddleware`` does all of this eagerly):

- The sampling decision comes first, from the same random number the SDK would compare, so
  an unsampled request (90% in production) never builds a transaction: it pays for one
  isolation scope fork and a propagation context that still tells downstream services
  "not sampled" (``sentry-trace: ...-0``).
- Request data, tags and the request breadcrumb are added by an event processor, which
  runs only when an event is actually sent.
- A list body (the common case) is returned untouched; only an iterable that runs app code
  while it is iterated is wrapped, so the request's scope is active then too.
- The transaction is finished from the middleware's finish hook, which runs exactly once
  per request, with the endpoint name the metrics use.

Our own ``/health*`` and ``/metrics`` never reach the wrapper, and the ``traces_sampler``
that :func:`init_sentry` installs drops them (and ``exclude_paths``) even when a framework
integration of sentry-sdk sees them first.
"""

from __future__ import annotations

import contextvars
import sys
import time
import weakref
from random import random
from typing import TYPE_CHECKING, Any, Callable, Optional

from ._wsgi import guarded

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from ._types import StartResponse, WSGIApplication, WSGIEnvironment
    from .config import Config

__all__ = ["PROBE_PATHS", "init_sentry", "instrument", "make_traces_sampler", "scrub_event"]

#: Paths answered by the middleware itself: never traced.
PROBE_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/metrics"})

_OP = "http.server"
_ORIGIN = "auto.http.wsgi_observe"
_PLACEHOLDER_NAME = "generic WSGI request"  # until the endpoint is known (sentry's own)
_ENVIRON_KEY = "wsgi_observe.sentry"
# Not traced, as in sentry-sdk's own WSGI integration: CORS preflights and HEAD checks.
_UNTRACED_METHODS = frozenset({"OPTIONS", "HEAD"})
_MARK = "_wsgi_observe_sentry"
_HOOKS = ("before_send", "before_send_transaction", "before_breadcrumb", "traces_sampler")
# Top-level event keys that hold no user data (and whose names would confuse the scrubber).
_NOT_SCRUBBED = frozenset(
    {
        "_meta",
        "debug_meta",
        "environment",
        "event_id",
        "level",
        "measurements",
        "modules",
        "platform",
        "release",
        "sdk",
        "server_name",
        "start_timestamp",
        "timestamp",
        "transaction_info",
        "type",
    }
)
_PLAIN_CONTEXTS = frozenset({"app", "device", "os", "runtime"})

_new = object.__new__
_LAZY: dict[str, Any] = {}  # things built on first use (they need sentry_sdk or redact)


# Setup ------------------------------------------------------------------------------------


def init_sentry(
    dsn: Optional[str] = None,
    environment: Optional[str] = None,
    release: Optional[str] = None,
    traces_sample_rate: Optional[float] = None,
    *,
    config: Optional[Config] = None,
    **sentry_options: Any,
) -> bool:
    """Start Sentry from ``SENTRY_DSN``; return whether it is on.

    Parameters: ``dsn``, ``environment``, ``release`` and ``traces_sample_rate`` override
    ``config`` (default: :meth:`Config.from_env`), whose ``sentry_dsn``, ``environment``,
    ``version`` and ``traces_sample_rate`` they default to; the sample rate defaults to 1.0
    in development and 0.1 elsewhere. Other keywords go to ``sentry_sdk.init``; your own
    ``before_send``, ``before_send_transaction``, ``before_breadcrumb`` and
    ``traces_sampler`` run first, then ours (scrubbing; never sampling probes). Example::

        from wsgi_observe import init_sentry
        init_sentry()                      # in a gunicorn post_fork hook, or at start-up
        init_sentry(release="crm@1.4.2", traces_sample_rate=0.05)

    Middlewares created before the call are instrumented by it. Without a DSN it does
    nothing and returns False. Reads: ``SENTRY_DSN``, ``SENTRY_ENVIRONMENT``,
    ``SENTRY_TRACES_SAMPLE_RATE``, ``WSGI_OBSERVE_VERSION`` (and ``SENTRY_RELEASE``, via
    sentry-sdk, when no version is configured).
    """
    from .config import Config

    cfg = config if config is not None else Config.from_env()
    given = {
        "sentry_dsn": dsn,
        "environment": environment,
        "version": release,
        "traces_sample_rate": traces_sample_rate,
    }
    changes = {name: value for name, value in given.items() if value is not None}
    if changes:
        cfg = cfg.replace(**changes)
    if not cfg.sentry_dsn:
        return False

    import sentry_sdk

    if release is None and cfg.version == Config.version:
        # No version configured: let sentry-sdk find one (SENTRY_RELEASE, git, ...).
        release_value: Optional[str] = None
    else:
        release_value = cfg.version
    user_hooks = {name: sentry_options.pop(name, None) for name in _HOOKS}
    # PII stays off: neither ``send_default_pii`` nor ``data_collection`` is passed, which
    # sentry-sdk treats as ``send_default_pii=False`` (and newer releases warn when the
    # deprecated flag is passed at all). Yours, in ``sentry_options``, win.
    options: dict[str, Any] = {
        "dsn": cfg.sentry_dsn,
        "environment": cfg.environment,
        "release": release_value,
        "traces_sampler": make_traces_sampler(
            cfg.effective_traces_sample_rate,
            exclude_paths=cfg.exclude_paths,
            sampler=user_hooks["traces_sampler"],
        ),
        "before_send": _chain(user_hooks["before_send"], scrub_event),
        "before_send_transaction": _chain(user_hooks["before_send_transaction"], scrub_event),
        "before_breadcrumb": _chain(user_hooks["before_breadcrumb"], scrub_breadcrumb),
    }
    options.update(sentry_options)
    sentry_sdk.init(**options)

    # A gunicorn post_fork hook calls this after the app (and its middlewares) exist.
    from . import workers

    for middleware in list(workers._middlewares):
        _wrap(middleware)
    return True


def instrument(middleware: Any) -> None:
    """Wrap ``middleware.app`` for Sentry when a Sentry client is active.

    Called at the end of ``ObservabilityMiddleware.__init__``. With ``config.sentry_dsn``
    set and no client yet, it calls :func:`init_sentry` with the middleware's config (once:
    later middlewares find the client active). Without either it does nothing at all.
    """
    if getattr(middleware, _MARK, None) is not None:
        return
    if not _is_active():
        if not middleware.config.sentry_dsn:
            return
        init_sentry(config=middleware.config)
    _wrap(middleware)


def _is_active() -> bool:
    sentry_sdk = sys.modules.get("sentry_sdk")
    return sentry_sdk is not None and bool(sentry_sdk.get_client().is_active())


def _wrap(middleware: Any) -> None:
    if getattr(middleware, _MARK, None) is not None:
        return
    wrapper = SentryWrapper(middleware.app, middleware)
    middleware.app = wrapper
    middleware.add_finish_hook(wrapper.finish_hook)
    setattr(middleware, _MARK, wrapper)


def make_traces_sampler(
    rate: float,
    *,
    exclude_paths: Iterable[str] = (),
    sampler: Optional[Callable[[dict[str, Any]], Any]] = None,
) -> Callable[[dict[str, Any]], Any]:
    """A ``traces_sampler``: 0 for probes, ``/metrics`` and ``exclude_paths``; else ``sampler``
    if given, else the parent's decision when there is one, else ``rate``.

    It looks at ``wsgi_environ`` (any sentry WSGI integration passes it) or
    ``asgi_scope``, so probes are never sampled whichever integration sees them.
    """
    prefixes = tuple(exclude_paths)

    def traces_sampler(context: dict[str, Any]) -> Any:
        environ = context.get("wsgi_environ")
        if environ is not None:
            path = environ.get("PATH_INFO") or ""
        else:
            asgi_scope = context.get("asgi_scope")
            path = asgi_scope.get("path") or "" if isinstance(asgi_scope, dict) else ""
        if path in PROBE_PATHS or (prefixes and path.startswith(prefixes)):
            return 0.0
        if sampler is not None:
            return sampler(context)
        parent = context.get("parent_sampled")
        if parent is not None:
            return 1.0 if parent else 0.0
        return rate

    # For the wrapper: a caller's "not sampled" stands, and (without a user sampler) every
    # request it sees gets ``rate``, so it need not call us per request.
    traces_sampler.inherits_parent = sampler is None  # type: ignore[attr-defined]
    traces_sampler.constant_rate = rate if sampler is None else None  # type: ignore[attr-defined]
    return traces_sampler


def _chain(
    first: Optional[Callable[[Any, Any], Any]], last: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    """``first`` (the user's hook), then ``last`` (ours), so nothing secret leaves."""
    if first is None:
        return last

    def hook(item: Any, hint: Any) -> Any:
        item = first(item, hint)
        if item is None:
            return None
        return last(item, hint)

    return hook


# Scrubbing (runs only for what is actually sent) ---------------------------------------


def scrub_event(event: dict[str, Any], hint: Any = None) -> dict[str, Any]:
    """``event`` with secrets replaced in place: secret-named keys (``Authorization``,
    ``HTTP_COOKIE``, ``api_key``, ...) and secrets inside strings (query values, DSNs and
    URL credentials, ``Bearer`` tokens), in request data, frame variables, breadcrumbs,
    extras, contexts, messages and span data alike.
    """
    try:
        scrub = _scrubber()
        for key, value in event.items():
            if key in _NOT_SCRUBBED:
                continue
            if key == "contexts" and type(value) is dict:
                for name, context in value.items():
                    if name not in _PLAIN_CONTEXTS:
                        value[name] = scrub(name, context, 10)
            else:
                event[key] = scrub(key, value, 12)
    except Exception as error:  # a scrubbing bug must not lose the event
        guarded("sentry scrub_event", error)
    return event


def scrub_breadcrumb(crumb: dict[str, Any], hint: Any = None) -> dict[str, Any]:
    """A breadcrumb with secrets replaced (same rules as :func:`scrub_event`)."""
    try:
        scrub = _scrubber()
        for key, value in crumb.items():
            if key != "timestamp":
                crumb[key] = scrub(key, value, 6)
    except Exception as error:
        guarded("sentry scrub_breadcrumb", error)
    return crumb


def _scrubber() -> Callable[[Any, Any, int], Any]:
    """``scrub(key, value, depth)``: ``value`` scrubbed in place (strings: a new string),
    by :mod:`wsgi_observe.redact`'s rules. Built once; events repeat the same keys, so
    whether a key names a secret is remembered (in a bounded dict)."""
    cached = _LAZY.get("scrub")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    from .redact import REDACTED, is_secret_header, is_secret_name, redact_text

    secret_keys: dict[Any, bool] = {}

    def is_secret(key: Any) -> bool:
        secret = secret_keys.get(key)
        if secret is None:
            if type(key) is not str:
                return False
            if key[:5].upper() == "HTTP_":
                secret = is_secret_header(key)
            else:
                secret = is_secret_name(key)
            if len(secret_keys) >= 2048:
                secret_keys.clear()  # bounded, whatever keys events carry
            secret_keys[key] = secret
        return secret

    def walk(container: Any, depth: int) -> None:
        # Strings are handled here, inline: most nodes are strings in a dict.
        items = container.items() if type(container) is dict else enumerate(container)
        keyed = type(container) is dict
        for name, item in items:
            kind = type(item)
            if kind is str:
                if keyed and is_secret(name):
                    container[name] = REDACTED
                else:
                    text = redact_text(item)
                    if text is not item:
                        container[name] = text
            elif kind is dict or kind is list:
                if depth > 0:
                    walk(item, depth - 1)
            elif keyed and item is not None and is_secret(name):
                container[name] = REDACTED

    def scrub(key: Any, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is dict or kind is list:
            walk(value, depth)
            return value
        if key is not None and value is not None and is_secret(key):
            return REDACTED
        if kind is str:
            return redact_text(value)
        return value

    _LAZY["scrub"] = scrub
    return scrub


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
    """``scheme://host/script/path``: never the query string, never credentials."""
    from sentry_sdk.integrations.wsgi import get_request_url

    from .redact import redact_dsn

    return redact_dsn(get_request_url(environ))


def _capture(error: BaseException) -> None:
    """Send ``error`` as an unhandled exception, with the active scope's context."""
    if isinstance(error, (KeyboardInterrupt, GeneratorExit)):
        return
    if isinstance(error, SystemExit) and error.code in (0, None):
        return
    try:
        import sentry_sdk
        from sentry_sdk.utils import event_from_exception

        event, hint = event_from_exception(
            (type(error), error, error.__traceback__),
            client_options=sentry_sdk.get_client().options,
            mechanism={"type": "wsgi_observe", "handled": False},
        )
        sentry_sdk.capture_event(event, hint=hint)
        _mark_reported(error)
    except Exception as failure:
        guarded("sentry capture", failure)


# sentry-sdk's own deduplication remembers the last exception per context, but a
# mid-stream error is captured inside the request's context and then logged at ERROR (by
# wsgi_observe.logs, or a server) outside it, where the logging integration would report
# it a second time. So a reported exception carries a mark (an attribute: built-in
# exceptions cannot be weakly referenced, and a set would keep tracebacks alive).
_REPORTED_MARK = "_wsgi_observe_reported"


def _mark_reported(error: BaseException) -> None:
    try:
        setattr(error, _REPORTED_MARK, True)
    except (AttributeError, TypeError):  # pragma: no cover - an exception without __dict__
        pass


def _drop_reported(event: dict[str, Any], hint: Any) -> Optional[dict[str, Any]]:
    """Global event processor: an exception we reported already is not sent again."""
    if hint:
        exc_info = hint.get("exc_info")
        if exc_info and getattr(exc_info[1], _REPORTED_MARK, False):
            return None
    return event


def _install_dedupe() -> None:
    if "dedupe" not in _LAZY:
        from sentry_sdk.scope import add_global_event_processor

        add_global_event_processor(_drop_reported)  # type: ignore[arg-type]
        _LAZY["dedupe"] = True


class _Request:
    """One request's Sentry state; ``process`` is its event processor."""

    __slots__ = ("context", "environ", "started", "transaction", "upstream", "wrapper")

    if TYPE_CHECKING:
        wrapper: SentryWrapper
        environ: WSGIEnvironment
        upstream: StartResponse
        started: float
        transaction: Any
        context: Optional[contextvars.Context]

    @classmethod
    def start(
        cls, wrapper: SentryWrapper, environ: WSGIEnvironment, start_response: StartResponse
    ) -> _Request:
        request = _new(cls)
        request.wrapper = wrapper
        request.environ = environ
        request.upstream = start_response
        request.started = time.time()
        request.transaction = None
        request.context = None
        return request

    def status(self) -> Optional[str]:
        # The middleware hands the app its Exchange's bound start_response: read the
        # status there instead of wrapping start_response on every request.
        exchange = getattr(self.upstream, "__self__", None)
        status = getattr(exchange, "status", None)
        return status if isinstance(status, str) else None

    def process(self, event: dict[str, Any], hint: Any) -> dict[str, Any]:
        try:
            self._add_request_data(event)
        except Exception as error:
            guarded("sentry event processor", error)
        return event

    def _add_request_data(self, event: dict[str, Any]) -> None:
        import sentry_sdk

        from .redact import redact_headers, redact_query

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
        endpoint = self.wrapper.endpoint(environ, status)
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

    def finish(self, exchange: Any, name: str) -> None:
        transaction, self.transaction = self.transaction, None
        if transaction is None:
            return  # finished already: exactly once
        context, self.context = self.context, None  # no cycle through the scope's processor
        self.environ.pop(_ENVIRON_KEY, None)
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


def _valid_rate(rate: Any) -> Optional[float]:
    if isinstance(rate, bool):
        return 1.0 if rate else 0.0
    if isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0:
        return float(rate)
    return None


class SentryWrapper:
    """The app as :func:`instrument` leaves it: one isolation scope per request, errors
    captured and re-raised unchanged, sampled requests traced. See the module docstring."""

    def __init__(self, app: WSGIApplication, middleware: Any) -> None:
        import sentry_sdk

        self.app = app
        self._sdk = sentry_sdk
        self._middleware = weakref.ref(middleware)
        _install_dedupe()

    def endpoint(self, environ: WSGIEnvironment, status: Optional[str]) -> Optional[str]:
        middleware = self._middleware()
        if middleware is None:
            return None
        return str(middleware.resolve_endpoint(environ, status))

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        sdk = self._sdk
        if sdk.get_current_scope().span is not None:
            return self._nested(environ, start_response)
        with sdk.isolation_scope() as scope:
            try:
                request: Optional[_Request] = self._begin(environ, start_response, scope)
            except Exception as error:
                guarded("sentry request start", error)
                request = None
            try:
                body = self.app(environ, start_response)
            except BaseException as error:
                _capture(error)
                raise
            kind = type(body)
            if kind is list or kind is tuple:
                return body  # nothing runs while a list is iterated; the hook finishes
            file_wrapper = environ.get("wsgi.file_wrapper")
            if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
                return body  # keep it a file_wrapper, or servers lose sendfile
            context = request.context if request is not None else None
            return _ScopedBody(body, context or contextvars.copy_context())

    def _begin(
        self, environ: WSGIEnvironment, start_response: StartResponse, scope: Any
    ) -> _Request:
        request = _Request.start(self, environ, start_response)
        scope.clear_breadcrumbs()
        scope.add_event_processor(request.process)

        sdk = self._sdk
        client = sdk.get_client()
        options = client.options
        sampler = options.get("traces_sampler")
        header = environ.get("HTTP_SENTRY_TRACE")
        incoming: Optional[dict[str, str]] = None
        if header:
            incoming = {"sentry-trace": header}
            baggage = environ.get("HTTP_BAGGAGE")
            if baggage:
                incoming["baggage"] = baggage
        if (
            options.get("enable_tracing") is False
            or (sampler is None and options.get("traces_sample_rate") is None)
            or environ.get("REQUEST_METHOD") in _UNTRACED_METHODS
        ):
            # Errors only: continue the caller's trace, or start a new one.
            if incoming is not None:
                scope.generate_propagation_context(incoming)
            else:
                scope.set_new_propagation_context()
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
                    self._not_sampled(scope, rand, rate)
                    return request
                transaction, baggage = self._head_transaction(scope, rand)
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
            return request

        # A continued trace (or a sampler we cannot second-guess): the SDK decides.
        transaction = sdk.continue_trace(
            incoming or {}, op=_OP, name=_PLACEHOLDER_NAME, source="route", origin=_ORIGIN
        )
        transaction = sdk.start_transaction(
            transaction, custom_sampling_context={"wsgi_environ": environ}
        )
        if transaction.sampled:
            self._traced(request, transaction, environ)
        else:
            # Active but unsampled: outgoing requests then carry "-0" as the SDK's would.
            sdk.get_current_scope().span = transaction
        return request

    def _head_transaction(self, scope: Any, rand: float) -> tuple[Any, Any]:
        """A new trace's transaction, decided "sampled" already, and its baggage, which
        carries our random number as ``sample_rand`` (the SDK reads it from there)."""
        from sentry_sdk.tracing import Transaction
        from sentry_sdk.tracing_utils import Baggage

        scope.set_new_propagation_context()
        baggage = Baggage({"sample_rand": f"{rand:.6f}"}, mutable=True)
        transaction = Transaction(
            op=_OP,
            name=_PLACEHOLDER_NAME,
            source="route",
            origin=_ORIGIN,
            trace_id=scope.get_active_propagation_context().trace_id,
            same_process_as_parent=False,
            sampled=True,
            baggage=baggage,
        )
        return transaction, baggage

    def _traced(self, request: _Request, transaction: Any, environ: WSGIEnvironment) -> None:
        self._sdk.get_current_scope().span = transaction
        request.transaction = transaction
        request.context = contextvars.copy_context()
        environ[_ENVIRON_KEY] = request

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

    def _not_sampled(self, scope: Any, rand: float, rate: float) -> None:
        try:
            context = _unsampled_context_class()()
            context._wo_rand = rand
            context._wo_rate = rate
            scope._propagation_context = context
        except Exception:  # pragma: no cover - SDK internals moved: a plain new trace
            scope.set_new_propagation_context()

    def _nested(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """An outer sentry integration (e.g. FlaskIntegration) owns the scope and the
        transaction: add our request data, capture errors, and name its transaction."""
        sdk = self._sdk
        request = _Request.start(self, environ, start_response)
        sdk.get_isolation_scope().add_event_processor(request.process)
        try:
            body = self.app(environ, start_response)
        except BaseException as error:
            _capture(error)
            raise
        try:
            transaction = sdk.get_current_scope().transaction
            name = self.endpoint(environ, request.status())
            if transaction is not None and name is not None:
                # Now: the outer integration finishes its transaction as soon as we return.
                transaction.name = name
                transaction.source = "route"
        except Exception as error:
            guarded("sentry nested naming", error)
        return body

    def finish_hook(self, exchange: Any, name: str, duration_ns: int) -> None:
        """The middleware's finish hook: ends a sampled request's transaction, once."""
        request = exchange.environ.get(_ENVIRON_KEY)
        if request is None or getattr(request, "wrapper", None) is not self:
            return
        try:
            request.finish(exchange, name)
        except Exception as error:
            guarded("sentry finish", error)
