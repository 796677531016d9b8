"""ObservabilityMiddleware and wrap(): health probes, /metrics, and timing of everything else.

Requests for ``/health``, ``/health/live``, ``/health/ready`` and ``/metrics`` are answered
here and never reach the app (nor the metrics). Paths under ``exclude_paths`` go straight to
the app, unobserved. Every other request is timed from entry until the server closes its
response iterable (streaming included) and counted per endpoint, method and status class.
"""

from __future__ import annotations

import hmac
import importlib
import logging
import os
from collections.abc import Iterable
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import parse_qs

import orjson

from . import _wsgi, workers
from ._time import iso_utc, iso_utc_bytes
from ._wsgi import Exchange, guarded
from .config import Config
from .endpoints import EndpointNames
from .exposition import (
    JSON_TYPE,
    OPENMETRICS_TYPE,
    PROMETHEUS_TYPE,
    choose_format,
    json_document,
    render_json,
)
from .health import Checks, ReadinessRunner
from .metrics import MetricsStore, Snapshot, process_store
from .system import SystemMetrics

if TYPE_CHECKING:
    from ._types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["ObservabilityMiddleware", "wrap"]

_log = logging.getLogger("wsgi_observe")
_new_list = list.__new__
_ALLOW = "GET, HEAD"
_NO_STORE = ("Cache-Control", "no-store")
_HEALTH_HEAD = b'{"status":"healthy","timestamp":"'
_TS_LEN = len("2025-10-06T12:00:00.000Z")


def _json_headers(length: int) -> tuple[tuple[str, str], ...]:
    return (("Content-Type", JSON_TYPE), ("Content-Length", str(length)), _NO_STORE)


_LIVE_HEADERS = _json_headers(len(_HEALTH_HEAD) + _TS_LEN + 2)
Handler = Callable[["WSGIEnvironment", "StartResponse"], Iterable[bytes]]
FinishHook = Callable[[Exchange, str, int], None]


class ObservabilityMiddleware:
    """Wrap a WSGI app with health probes, a metrics endpoint and request timing.

    Parameters: ``app`` (any WSGI callable); ``config`` (a :class:`Config`; built from the
    environment if omitted); ``checks`` (readiness checks: name -> callable, or name ->
    mapping of name -> callable for a group); ``store`` (a :class:`MetricsStore`; default: a
    fresh one; functions timed by ``performance_tracking`` are added from the process-wide
    store); any :class:`Config` field as a keyword.
    Example::

        app.wsgi_app = ObservabilityMiddleware(
            app.wsgi_app, service_name="CRM API", version="1.0.0",
            checks={"database": checks.database(connect)})

    Reads: the variables of :class:`Config` (``LOG_LEVEL``, ``SENTRY_DSN``, ...).
    """

    def __init__(
        self,
        app: WSGIApplication,
        config: Optional[Config] = None,
        *,
        checks: Optional[Checks] = None,
        store: Optional[MetricsStore] = None,
        **overrides: Any,
    ) -> None:
        if not callable(app):
            raise TypeError(f"ObservabilityMiddleware needs a WSGI callable, got {app!r}")
        if config is None:
            config = Config.from_env(**overrides)
        elif overrides:
            config = Config.from_env({}, **{**_config_values(config), **overrides})
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
        self.slow_ns = int(config.slow_request_threshold * 1e9)
        self._excluded = tuple(config.exclude_paths)
        self.finish_hooks: list[FinishHook] = []
        self._token = config.metrics_token.encode() if config.metrics_token else None
        # /health and /health/live are answered from precomputed bytes and headers: only
        # the timestamp (fixed width, so Content-Length is too) changes between calls.
        self._health_tail = b'",' + orjson.dumps(
            {"service": config.service_name, "version": config.version}
        )[1:]
        self._health_headers = _json_headers(len(_HEALTH_HEAD) + _TS_LEN + len(self._health_tail))
        self._routes: dict[str, Handler] = {
            "/health": self._health,
            "/health/live": self._live,
            "/health/ready": self._ready,
            "/metrics": self._metrics,
        }
        self.raw_app = app  # excluded paths go here: never timed, logged or traced
        self.logs_errors = False  # set when logs.py's finish hook logs exceptions itself
        workers.attach(self)
        # Logging (request context, request id, access log) and Sentry wrap self.app and
        # add finish hooks; each costs nothing per request when it is off.
        from . import logs, sentry

        logs.instrument(self)
        sentry.instrument(self)

    # Dispatch -------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        handler = self._routes.get(path)
        if handler is not None:
            return handler(environ, start_response)
        if self._excluded and path.startswith(self._excluded):
            return self.raw_app(environ, start_response)
        # Exchange.begin(), inlined: this is the per-request path.
        exchange = _new_list(Exchange)
        exchange.owner = self
        exchange.environ = environ
        exchange.upstream = start_response
        exchange.status = None
        exchange.failed = False
        store = self.store
        store.values[store.inflight_slot] += 1
        exchange.started = perf_counter_ns()
        try:
            body = self.app(environ, exchange.start_response)
        except BaseException as error:
            exchange.failed = True
            exchange.error = error
            exchange.owner = None  # ended here: a later close() must not count it again
            _wsgi.record(exchange, self)
            raise
        kind = type(body)
        if kind is list or kind is tuple:
            exchange.extend(body)
            return exchange
        return exchange.wrap(body)

    def slow(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        seconds = duration_ns / 1e9
        status = exchange.status or "500"
        _log.warning(
            "Slow request detected: %s took %.2fs",
            name,
            seconds,
            extra={
                "endpoint": name,
                "method": exchange.environ.get("REQUEST_METHOD", "GET"),
                "status": int(status[:3]) if status[:3].isdigit() else 500,
                "duration_ms": round(seconds * 1000, 3),
            },
        )

    def log_failure(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        """Log the app's exception at ERROR with its traceback (when logs.py does not)."""
        error = exchange.exception()
        if not isinstance(error, Exception):  # SystemExit, KeyboardInterrupt, GeneratorExit
            return
        environ = exchange.environ
        _log.error(
            "Unhandled exception on %s %s",
            environ.get("REQUEST_METHOD", "GET"),
            name,
            exc_info=(type(error), error, error.__traceback__),
            extra={"endpoint": name, "duration_ms": round(duration_ns / 1e6, 3)},
        )

    def add_finish_hook(self, hook: FinishHook) -> None:
        """Call ``hook(exchange, endpoint, duration_ns)`` after each observed request."""
        self.finish_hooks.append(hook)

    def resolve_endpoint(self, environ: WSGIEnvironment, status: Optional[str] = None) -> str:
        return self.names.resolve(environ, status)

    # Our own endpoints ----------------------------------------------------------------

    def _respond(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        status: str,
        body: bytes,
        content_type: str = JSON_TYPE,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> list[bytes]:
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            _NO_STORE,
            *extra,
        ]
        start_response(status, headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return []
        return [body]

    def _not_allowed(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        body = orjson.dumps({"error": "method not allowed", "allow": ["GET", "HEAD"]})
        return self._respond(
            environ, start_response, "405 Method Not Allowed", body, extra=(("Allow", _ALLOW),)
        )

    def _health(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method == "GET":
            start_response("200 OK", list(self._health_headers))
            return [_HEALTH_HEAD + iso_utc_bytes() + self._health_tail]
        if method == "HEAD":
            start_response("200 OK", list(self._health_headers))
            return []
        return self._not_allowed(environ, start_response)

    def _live(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method == "GET":
            start_response("200 OK", list(_LIVE_HEADERS))
            return [_HEALTH_HEAD + iso_utc_bytes() + b'"}']
        if method == "HEAD":
            start_response("200 OK", list(_LIVE_HEADERS))
            return []
        return self._not_allowed(environ, start_response)

    def _authorized(self, environ: WSGIEnvironment) -> bool:
        if self._token is None:
            return True
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Compared in constant time; latin-1 is how WSGI hands header bytes to us.
        return hmac.compare_digest(credentials.strip().encode("latin-1", "replace"), self._token)

    def _unauthorized(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        body = orjson.dumps({"error": "unauthorized"})
        return self._respond(
            environ,
            start_response,
            "401 Unauthorized",
            body,
            extra=(("WWW-Authenticate", 'Bearer realm="wsgi_observe"'),),
        )

    def _ready(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method != "GET" and method != "HEAD":
            return self._not_allowed(environ, start_response)
        try:
            result = self.readiness.result()
        except Exception as error:  # the probe must answer whatever happens
            guarded("readiness", error)
            result = {"status": "unhealthy", "timestamp": iso_utc(), "checks": {}}
        status = "200 OK" if result["status"] == "healthy" else "503 Service Unavailable"
        if not self._authorized(environ):
            # Without the token only the overall answer is shown, never the details.
            result = {"status": result["status"], "timestamp": result["timestamp"]}
        return self._respond(environ, start_response, status, orjson.dumps(result))

    def _metrics(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method != "GET" and method != "HEAD":
            return self._not_allowed(environ, start_response)
        if not self._authorized(environ):
            return self._unauthorized(environ, start_response)
        query = parse_qs(environ.get("QUERY_STRING", ""))
        wanted = query.get("format", [None])[-1]
        kind = choose_format(wanted, environ.get("HTTP_ACCEPT", ""))
        if kind is None:
            body = orjson.dumps(
                {
                    "error": f"unknown format {wanted!r}",
                    "formats": ["json", "prometheus", "openmetrics"],
                }
            )
            return self._respond(environ, start_response, "400 Bad Request", body)
        snapshot = self.snapshot()
        if kind == "json":
            document = json_document(
                snapshot,
                service=self.config.service_name,
                version=self.config.version,
                system=self.system.read(),
            )
            return self._respond(environ, start_response, "200 OK", render_json(document))
        from .prometheus import render_openmetrics, render_prometheus

        if kind == "openmetrics":
            body = render_openmetrics(snapshot, self._exposition_extras())
            return self._respond(environ, start_response, "200 OK", body, OPENMETRICS_TYPE)
        body = render_prometheus(snapshot, self._exposition_extras())
        return self._respond(environ, start_response, "200 OK", body, PROMETHEUS_TYPE)

    def _exposition_extras(self) -> dict[str, Any]:
        return {
            "service": self.config.service_name,
            "version": self.config.version,
            "system": self.system.read(),
            "readiness": self.readiness.last_result(),
        }

    def snapshot(self) -> Snapshot:
        """All numbers: this process's, or every gunicorn worker's when they share state."""
        snapshot = workers.snapshot(self.store)
        shared = process_store()
        if shared is not self.store and not workers.is_active():
            # In a single process, timed functions live in the process-wide store. (With
            # gunicorn workers, every store records into the worker's one state file.)
            for name, series in shared.snapshot().functions.items():
                snapshot.functions.setdefault(name, series)
        return snapshot


def _config_values(config: Config) -> dict[str, Any]:
    import dataclasses

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
    configure_logs: Optional[bool] = None,
    **overrides: Any,
) -> ObservabilityMiddleware:
    """Wrap ``app`` (a WSGI callable or ``"module:attr"``) in :class:`ObservabilityMiddleware`.

    When ``configure_logs`` is true (default: when the root logger has no handlers yet),
    it also calls :func:`configure_logging` with the same configuration.

    For gunicorn without code changes::

        gunicorn "wsgi_observe:wrap('myproject.wsgi:application')"
    """
    target = _load(app) if isinstance(app, str) else app
    middleware = ObservabilityMiddleware(target, checks=checks, **overrides)
    if configure_logs is None:
        # The no-code path: set logging up unless the app (or its framework) already did.
        configure_logs = not logging.getLogger().handlers
    if configure_logs:
        _configure_logging_for(middleware.config)
    return middleware


def _configure_logging_for(config: Config) -> None:
    from . import logs
    from .config import ConfigError

    if logs._setup is not None:
        return
    try:
        logs.configure_logging(config=config)
    except ConfigError:
        if "LOG_DIR" in os.environ:
            raise  # a directory the user chose must work: fail at start-up, naming it
        # The default ./logs is not writable here (a read-only container): console only.
        logs.configure_logging(config=config, log_dir="")
        _log.warning("wsgi_observe: ./logs is not writable; logging to the console only")
