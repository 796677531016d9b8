"""ObservabilityMiddleware and wrap(): our paths, and one pipeline for every other request.

Requests for ``/health``, ``/health/live``, ``/health/ready`` and ``/metrics`` (and routes
added with :meth:`ObservabilityMiddleware.add_route`) are answered here and never reach the
app, nor the metrics. Paths under ``exclude_paths`` go straight to the app, unobserved.
Every other request runs through one pipeline, composed when the middleware is built, in
a fixed order:

1. the request context: a request id (``X-Request-ID`` in and out), the logging context
   and the trace context (a W3C ``traceparent``, or a new trace when a tracer is on; see
   :mod:`wsgi_observe.tracing`), so every line logged during the request carries them;
2. the reporters (:mod:`wsgi_observe.reporting`): OpenTelemetry's span, then Sentry's scope;
3. the app;

and, when the server closes the response (streaming included), the finish steps:

4. metrics (per endpoint, method and status class; HDR latency histogram);
5. the exception line (an app that raised) and the access line;
6. the slow-request warning;
7. the reporter's end of the request, then steps added with ``add_finish_step`` (alerts).

Each step checks at request time whether it is on, so calling ``configure_logging()`` or
``init_sentry()`` before or after building the middleware gives the same result.
This module is the composition root: it imports the layers (logs, exposition, multiprocess)
and nothing imports it but the public API.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Optional

from . import multiprocess, reporting, tracing
from ._guard import guarded
from ._wsgi import Exchange, native_path
from .config import Config, ConfigError
from .endpoints import EndpointNames
from .health import Checks, ReadinessRunner
from .logs import access as _access
from .logs import context as _context
from .logs import setup as _log_setup
from .metrics import MetricsStore, Snapshot, process_store
from .routes import Handler, Routes, ScrapeHook
from .system import SystemMetrics
from .windows import Windows

if TYPE_CHECKING:
    from ._types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["FinishStep", "ObservabilityMiddleware", "wrap"]

_log = logging.getLogger("wsgi_observe")
_enter_request = _context.enter
_ID_KEY = _context.ID_KEY
_new_id = _context.new_request_id
_pop_id = _context.pop_request_id
_is_sane_id = _context.is_sane_id
_begin_trace = tracing.begin
#: A finish step: ``step(exchange, endpoint, duration_ns)``, after each observed request.
FinishStep = Callable[[Exchange, str, int], None]


class ObservabilityMiddleware:
    """Wrap a WSGI app with health probes, a metrics endpoint, logging and request timing.

    Parameters: ``app`` (any WSGI callable); ``config`` (a :class:`Config`; built from the
    environment if omitted); ``checks`` (readiness checks: name -> callable, or name ->
    mapping of name -> callable for a group); ``store`` (a :class:`MetricsStore`; default: a
    fresh one); ``clock`` (wall-clock seconds of the recent windows' snapshots, for tests);
    any :class:`Config` field as a keyword. Building it installs the guide's
    log handlers once per process (unless ``log_handlers`` is off) and starts Sentry when a
    DSN is configured. Example::

        app.wsgi_app = ObservabilityMiddleware(
            app.wsgi_app, service_name="CRM API", version="1.0.0",
            checks={"database": checks.database(connect)})

    Reads: the variables of :class:`Config` (``LOG_LEVEL``, ``LOG_DIR``, ``SENTRY_DSN``, ...).
    """

    def __init__(
        self,
        app: WSGIApplication,
        config: Optional[Config] = None,
        *,
        checks: Optional[Checks] = None,
        store: Optional[MetricsStore] = None,
        clock: Callable[[], float] = time.time,
        **overrides: Any,
    ) -> None:
        if not callable(app):
            raise TypeError(f"ObservabilityMiddleware needs a WSGI callable, got {app!r}")
        try:
            if config is None:
                config = Config.from_env(**overrides)
            elif overrides:
                config = Config.from_env({}, **{**_config_values(config), **overrides})
        except ConfigError as error:
            _stop_server_worker(error)
            raise
        self.app = app
        self.config = config
        # Each middleware counts its own requests (a fresh store), while functions timed by
        # performance_tracking go to the process-wide store, which snapshot() adds in.
        self.store = store if store is not None else MetricsStore()
        self.names = EndpointNames(config.max_endpoints)
        self.readiness = ReadinessRunner(
            checks, timeout_s=config.readiness_timeout, cache_ttl_s=config.readiness_cache_ttl
        )
        self.system = SystemMetrics()
        # Recent windows (/metrics?window=, the alerts, the dashboard): a ring of snapshots,
        # in the state directory once this process shares its numbers.
        self.windows = Windows(
            self.snapshot,
            interval_s=config.window_interval,
            span_s=config.window_span,
            clock=clock,
            directory=self._shared_dir,
        )
        # Readiness results are shared too when processes share their numbers, so every
        # worker's /metrics shows the newest probe of the server.
        self.readiness.result_hooks.append(multiprocess.publish_readiness)
        self.routes = Routes(
            config,
            self.readiness,
            self.system,
            self.snapshot,
            lambda: multiprocess.latest_readiness(self.readiness.last_result()),
            windows=self.windows,
        )
        self._routes: dict[str, Handler] = self.routes.table()
        self._finish_steps: list[FinishStep] = []
        self.slow_ns = int(config.slow_request_threshold * 1e9)
        self._excluded = tuple(config.exclude_paths)
        # The request context is on when logs want it (checked again per request, for a
        # configure_logging() that comes later).
        self._context = config.access_log or config.log_handlers
        self._access_log = config.access_log
        # The first request of each process decides whether its numbers are shared with
        # other processes: until then every path takes the detour ("" prefixes them all).
        self._built_pid = os.getpid()
        self._gate = threading.Lock()
        self._detour: tuple[str, ...] = ("",)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_rearm_after_fork(self))
        try:
            if config.log_handlers:
                _log_setup.install(config)
            if config.sentry_dsn:
                # The one integration a configuration switches on by itself (the guide's
                # "automatically initialized"); it plugs into the reporter slot.
                sentry = importlib.import_module(".integrations.sentry", __package__)
                sentry.start_from_config(config)
            elif "sentry_sdk" in sys.modules:
                # The application started Sentry itself: report through its client.
                sentry = importlib.import_module(".integrations.sentry", __package__)
                sentry.adopt_active_client()
            if config.is_otel_on:
                # OTEL_EXPORTER_OTLP_ENDPOINT (or otel=True): the "traces" reporter slot.
                otel = importlib.import_module(".integrations.otel", __package__)
                otel.start_from_config(config)
        except ConfigError as error:
            _stop_server_worker(error)
            raise

    # The request path -------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        detour = self._detour
        if detour:
            text = path
            try:
                excluded = path.startswith(detour)
            except (TypeError, AttributeError):  # not a str: a server that broke PEP 3333
                text = native_path(path)
                excluded = text.startswith(detour)
            if excluded and self._take_detour(environ, text):
                return self.app(environ, start_response)  # excluded: never timed or logged
        handler = self._routes.get(path)
        if handler is not None:
            return handler(environ, start_response)
        # Exchange.begin(), inlined: this is the per-request path.
        exchange = Exchange()
        exchange.owner = self
        exchange.environ = environ
        exchange.upstream = start_response
        exchange.status = None
        exchange.failed = False
        exchange.reporter = None
        exchange.inner = None
        reporter = reporting.current
        if self._context or reporter is not None or _log_setup.active is not None:
            # enter_request(), inlined.
            request_id = environ.get("HTTP_X_REQUEST_ID")
            if request_id is None or _is_sane_id(request_id) is None:
                try:  # new_request_id(), inlined
                    request_id = _pop_id()
                except IndexError:
                    request_id = _new_id()
            environ[_ID_KEY] = request_id
            # A trace when a traceparent came in or a tracer (a reporter) is on. (Without
            # logs or a reporter nothing would carry a trace: metrics only never looks.)
            if reporter is not None or "HTTP_TRACEPARENT" in environ:
                _begin_trace(environ)
            _enter_request(environ)
            exchange.request_id = request_id
        else:
            exchange.request_id = None
        store = self.store
        store.values[store.inflight_slot] += 1
        exchange.started = perf_counter_ns()
        try:
            if reporter is None:
                body = self.app(environ, exchange.start_response)
            else:
                body = reporter.run(self.app, environ, exchange, self.names)
        except BaseException as error:
            exchange.fail(error)
            exchange.close()  # ended here: the finish steps run now, once
            raise
        kind = type(body)
        if kind is list or kind is tuple:
            exchange.extend(body)
            return exchange
        return exchange.wrap_other(body, kind)

    def _take_detour(self, environ: WSGIEnvironment, path: str) -> bool:
        """The first request of a process (and excluded paths): True if ``path`` is excluded
        (our own paths never are)."""
        if self._detour == ("",):
            self._first_request(environ)
        excluded = self._excluded
        return bool(excluded) and path.startswith(excluded) and path not in self._routes

    def _first_request(self, environ: WSGIEnvironment) -> None:
        """Share this process's numbers with the others when it is one of several."""
        with self._gate:
            if self._detour != ("",):
                return
            try:
                if multiprocess.should_share(environ, self._built_pid):
                    multiprocess.share(self.store, self.names, self.config)
            except Exception as error:  # numbers per process, never a failed request
                guarded("multi-process state", error)
            finally:
                self._detour = self._excluded
            try:
                self.windows.start()  # a daemon thread: snapshots off the request path
            except Exception as error:
                guarded("recent windows", error)

    def finish(self, exchange: Exchange) -> None:
        """The finish steps of one request, in order (called once, by the exchange)."""
        duration_ns = perf_counter_ns() - exchange.started
        store = self.store
        try:
            name = store.record_request(exchange, duration_ns, self.names)
        except Exception as error:
            name = "<unrecorded>"
            guarded("request bookkeeping", error)
        finally:
            store.values[store.inflight_slot] -= 1  # always, whatever happened above
        try:
            if exchange.failed:
                self._log_failure(exchange, name, duration_ns)
            if self._access_log:
                _access.write_access_line(exchange, name, duration_ns)
            if duration_ns > self.slow_ns:
                self._log_slow(exchange, name, duration_ns)
            reporter = exchange.reporter
            if reporter is not None:
                reporter.finish(exchange, name, duration_ns)
            steps = self._finish_steps
            if steps:
                for step in steps:
                    step(exchange, name, duration_ns)
        except Exception as error:
            guarded("request finish", error)
        finally:
            if exchange.request_id is not None:
                exchange.environ[_ID_KEY] = None  # the request context ends (logs.context)

    def _log_slow(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        seconds = duration_ns / 1e9
        _log.warning(
            "Slow request detected: %s took %.2fs",
            name,
            seconds,
            extra={
                "endpoint": name,
                "method": exchange.environ.get("REQUEST_METHOD", "GET"),
                "status": _access.status_code(exchange.status),
                "duration_ms": round(seconds * 1000, 3),
            },
        )

    def _log_failure(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        """The app's exception at ERROR with its traceback (SystemExit & co. are not errors)."""
        error = exchange.exception()
        if not isinstance(error, Exception):
            return
        environ = exchange.environ
        _log.error(
            "Unhandled exception on %s %s",
            environ.get("REQUEST_METHOD", "GET"),
            name,
            exc_info=(type(error), error, error.__traceback__),
            extra={
                "endpoint": name,
                "status": _access.status_code(exchange.status),
                "duration_ms": duration_ns // 1000 / 1000,
            },
        )

    # Extension points -------------------------------------------------------------------

    def add_finish_step(self, step: FinishStep) -> None:
        """Call ``step(exchange, endpoint, duration_ns)`` after each observed request (after
        metrics, logs and the reporter). It must be quick: it runs on the request path."""
        self._finish_steps.append(step)

    def add_route(self, path: str, handler: Handler) -> None:
        """Answer ``path`` with ``handler`` (a WSGI callable) instead of the app: never
        counted, logged or traced. Our own paths can't be taken over."""
        if path in ("/health", "/health/live", "/health/ready", "/metrics", "/metrics/dashboard"):
            raise ValueError(f"{path} is answered by wsgi_observe itself")
        if not path.startswith("/") or not callable(handler):
            raise ValueError("add_route() needs a path starting with '/' and a WSGI callable")
        self._routes = {**self._routes, path: handler}

    def add_scrape_hook(self, hook: ScrapeHook) -> None:
        """Call ``hook(snapshot)`` after each ``/metrics`` answer, with what it showed."""
        self.routes.scrape_hooks.append(hook)

    def resolve_endpoint(self, environ: WSGIEnvironment, status: Optional[str] = None) -> str:
        return self.names.resolve(environ, status)

    def _shared_dir(self) -> Optional[str]:
        """The state directory while this process shares its numbers there, else None."""
        table = self.store.table
        return getattr(table, "state_dir", None) if multiprocess.is_shared(self.store) else None

    def snapshot(self) -> Snapshot:
        """All numbers: this process's, or every process's when they share state."""
        snapshot = multiprocess.snapshot(self.store, max_endpoints=self.config.max_endpoints)
        shared = process_store()
        if shared is not self.store and not multiprocess.is_shared(shared):
            # In a single process, timed functions live in the process-wide store. (With
            # several processes, every store records into the process's one state file.)
            own = shared.snapshot()
            for name, series in own.functions.items():
                snapshot.functions.setdefault(name, series)
            for name, kpi in own.kpis.items():  # and so do business KPIs
                snapshot.kpis.setdefault(name, kpi)
        snapshot.state = multiprocess.state()
        return snapshot


def _rearm_after_fork(middleware: ObservabilityMiddleware) -> Callable[[], None]:
    """A fork hook that makes a child's first request decide again (weakly held)."""
    ref = weakref.ref(middleware)

    def rearm() -> None:
        current = ref()
        if current is not None:
            current._gate = threading.Lock()  # a parent's thread may have held it
            current._detour = ("",)

    return rearm


def _config_values(config: Config) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _load(target: str) -> WSGIApplication:
    """Import ``"package.module:attr"`` (or ``"module:factory()"``), as gunicorn does."""
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise ValueError(f"wrap() expects 'module:attribute', got {target!r}")
    module = importlib.import_module(module_name)
    attr = attr or "application"
    call = attr.endswith("()")
    if call:
        attr = attr[:-2]
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if call:
        obj = obj()
    if not callable(obj):
        raise TypeError(f"{target!r} is not a WSGI callable")
    return obj  # type: ignore[no-any-return]


def wrap(
    app: WSGIApplication | str,
    *,
    checks: Optional[Checks] = None,
    **overrides: Any,
) -> ObservabilityMiddleware:
    """Wrap ``app`` (a WSGI callable or ``"module:attr"``) in :class:`ObservabilityMiddleware`.

    The same as building the middleware yourself, for gunicorn without code changes::

        gunicorn "wsgi_observe:wrap('myproject.wsgi:application')"

    A bad configuration value stops a gunicorn worker with one line (no traceback) and
    gunicorn with it.
    """
    target = _load(app) if isinstance(app, str) else app
    return ObservabilityMiddleware(target, checks=checks, **overrides)


def _stop_server_worker(error: ConfigError) -> None:
    """In a gunicorn worker, a bad configuration ends the worker with one line and the exit
    code that makes gunicorn stop (it would restart a worker that fails otherwise).

    Only the master's first worker exits with that code; the others wait (bounded) for the
    master's SIGTERM. A second worker exiting with it while the master is already stopping
    makes gunicorn's master die with a traceback of its own."""
    import signal

    if "gunicorn.workers.base" not in sys.modules or "gunicorn.arbiter" not in sys.modules:
        return
    print(f"wsgi_observe: {error}", file=sys.stderr, flush=True)
    # The worker object, from the SIGTERM handler it installed before loading the app.
    worker = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if worker is not None and getattr(worker, "alive", True) is False:
        raise SystemExit(0)  # the master is stopping us already
    if worker is not None and getattr(worker, "age", 1) != 1:
        # Every worker reads the same environment, so the first one fails too and stops
        # gunicorn; its SIGTERM ends this one.
        import time

        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:  # built outside the main thread: don't wait
            pass
        else:
            time.sleep(10.0)
    raise SystemExit(4)  # gunicorn's APP_LOAD_ERROR: "App failed to load"
