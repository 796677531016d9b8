"""Our own HTTP answers: ``/health``, ``/health/live``, ``/health/ready``, ``/metrics`` and
``/metrics/dashboard``.

All of them answer GET and HEAD (HEAD: the same status and headers, no body); any other method
gets 405 with ``Allow``. Every answer carries ``Cache-Control: no-store``. With a metrics
token, ``/metrics`` and ``/metrics/dashboard`` need ``Authorization: Bearer <token>``
(compared in constant time; the dashboard also takes ``?token=`` when
``metrics_token_in_query`` is on, since a browser cannot send the header) and
``/health/ready`` shows only its overall status without it.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import parse_qs

import orjson

from ._guard import guarded
from ._time import iso_utc, iso_utc_bytes
from .exposition import (
    FORMATS,
    JSON_TYPE,
    OPENMETRICS_TYPE,
    PROMETHEUS_TYPE,
    PROTOBUF_TYPE,
    json_document,
    negotiate,
    render_json,
)
from .exposition.html import (
    CONTENT_SECURITY_POLICY,
    HTML_TYPE,
    PERIODS,
    REFRESH_CHOICES,
    SORTS,
    DashboardView,
    Sparkline,
    render_dashboard,
    sparklines,
    summary,
)
from .health import is_ready
from .system import process_info
from .windows import WindowError, Windows, parse_window

if TYPE_CHECKING:
    from ._types import StartResponse, WSGIEnvironment
    from .config import Config
    from .health import ReadinessRunner
    from .metrics import Snapshot
    from .system import SystemMetrics

__all__ = ["Handler", "Routes", "ScrapeHook"]

Handler = Callable[["WSGIEnvironment", "StartResponse"], Iterable[bytes]]
#: Called after each ``/metrics`` answer with the snapshot it showed (alerts use it).
ScrapeHook = Callable[["Snapshot"], None]


_ALLOW = "GET, HEAD"
_NO_STORE = ("Cache-Control", "no-store")
_HEALTH_HEAD = b'{"status":"healthy","timestamp":"'
_TS_LEN = len("2025-10-06T12:00:00.000Z")
# The dashboard page: a strict policy (nothing runs, nothing loads), no sniffing, no framing,
# and no Referer (a token in the page's URL must not leave with a click).
_PAGE_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)
#: The sparklines of the dashboard: one point a minute over the last 15 minutes.
SPARK_STEP_S = 60.0
SPARK_SPAN_S = 900.0
_MAX_QUERY_FIELDS = 16


def _json_headers(length: int) -> tuple[tuple[str, str], ...]:
    return (("Content-Type", JSON_TYPE), ("Content-Length", str(length)), _NO_STORE)


_LIVE_HEADERS = _json_headers(len(_HEALTH_HEAD) + _TS_LEN + 2)


def respond(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str = JSON_TYPE,
    extra: tuple[tuple[str, str], ...] = (),
) -> list[bytes]:
    """One complete answer; a HEAD gets the same headers and no body."""
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), _NO_STORE]
    headers.extend(extra)
    start_response(status, headers)
    if environ.get("REQUEST_METHOD") == "HEAD":
        return []
    return [body]


def not_allowed(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    body = orjson.dumps({"error": "method not allowed", "allow": ["GET", "HEAD"]})
    return respond(
        environ, start_response, "405 Method Not Allowed", body, extra=(("Allow", _ALLOW),)
    )


class Routes:
    """The handlers of our paths, built once from the middleware's parts.

    ``snapshot`` gives the numbers a scrape shows (this process's, or every worker's).
    """

    def __init__(
        self,
        config: Config,
        readiness: ReadinessRunner,
        system: SystemMetrics,
        snapshot: Callable[[], Snapshot],
        last_readiness: Optional[Callable[[], Optional[dict[str, Any]]]] = None,
        windows: Optional[Windows] = None,
    ) -> None:
        self.config = config
        self.readiness = readiness
        self.system = system
        self.snapshot = snapshot
        # The newest readiness result any process of the server has (default: this one's).
        self.last_readiness = last_readiness or readiness.last_result
        self.scrape_hooks: list[ScrapeHook] = []
        #: the ring of recent snapshots behind ``?window=`` and the dashboard (None: none)
        self.windows = windows
        # The dashboard's sparkline points of the steps the ring handed out last time (a
        # finished step is the same object next time: its points are not computed again).
        self._spark_memo: dict[int, Any] = {}
        self._spark_lock = threading.Lock()
        self._token = config.metrics_token.encode() if config.metrics_token else None
        # /health and /health/live are answered from precomputed bytes and headers: only
        # the timestamp (fixed width, so Content-Length is too) changes between calls.
        self._health_tail = (
            b'",' + orjson.dumps({"service": config.service_name, "version": config.version})[1:]
        )
        self._health_headers = _json_headers(len(_HEALTH_HEAD) + _TS_LEN + len(self._health_tail))

    def table(self) -> dict[str, Handler]:
        return {
            "/health": self.health,
            "/health/live": self.live,
            "/health/ready": self.ready,
            "/metrics": self.metrics,
            "/metrics/dashboard": self.dashboard,
        }

    def health(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method == "GET":
            start_response("200 OK", list(self._health_headers))
            return [_HEALTH_HEAD + iso_utc_bytes() + self._health_tail]
        if method == "HEAD":
            start_response("200 OK", list(self._health_headers))
            return []
        return not_allowed(environ, start_response)

    def live(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method == "GET":
            start_response("200 OK", list(_LIVE_HEADERS))
            return [_HEALTH_HEAD + iso_utc_bytes() + b'"}']
        if method == "HEAD":
            start_response("200 OK", list(_LIVE_HEADERS))
            return []
        return not_allowed(environ, start_response)

    def is_authorized(self, environ: WSGIEnvironment) -> bool:
        if self._token is None:
            return True
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Compared in constant time; latin-1 is how WSGI hands header bytes to us.
        return hmac.compare_digest(credentials.strip().encode("latin-1", "replace"), self._token)

    def unauthorized(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        return respond(
            environ,
            start_response,
            "401 Unauthorized",
            orjson.dumps({"error": "unauthorized"}),
            extra=(("WWW-Authenticate", 'Bearer realm="wsgi_observe"'),),
        )

    def ready(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method != "GET" and method != "HEAD":
            return not_allowed(environ, start_response)
        try:
            result = self.readiness.result()
        except Exception as error:  # the probe must answer whatever happens
            guarded("readiness", error)
            result = {"status": "unhealthy", "timestamp": iso_utc(), "checks": {}}
        # 200 while every required check is healthy: an optional one never blocks traffic.
        status = "200 OK" if is_ready(result) else "503 Service Unavailable"
        if not self.is_authorized(environ):
            # Without the token only the overall answer is shown, never the details.
            result = {"status": result["status"], "timestamp": result["timestamp"]}
        return respond(environ, start_response, status, orjson.dumps(result))

    def metrics(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method != "GET" and method != "HEAD":
            return not_allowed(environ, start_response)
        if not self.is_authorized(environ):
            return self.unauthorized(environ, start_response)
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        wanted = query.get("format", [None])[-1] or None
        kind = negotiate(wanted, environ.get("HTTP_ACCEPT", ""))
        if kind is None:
            body = orjson.dumps({"error": f"unknown format {wanted!r}", "formats": list(FORMATS)})
            return respond(environ, start_response, "400 Bad Request", body)
        window = query.get("window", [None])[-1]
        seconds: Optional[float] = None
        if window is not None:
            try:
                seconds = self.check_window(window, kind)
            except WindowError as error:
                body = orjson.dumps({"error": str(error)})
                return respond(environ, start_response, "400 Bad Request", body)
        live = self.snapshot()
        snapshot = live
        if seconds is not None and self.windows is not None:
            snapshot = self.windows.window_snapshot_for(seconds, live)
        body, content_type = self.render(kind, snapshot)
        answer = respond(environ, start_response, "200 OK", body, content_type)
        if self.windows is not None:
            try:
                self.windows.tick(live)  # the ring's snapshot, if one is due: this one
            except Exception as error:
                guarded("recent windows", error)
        for hook in self.scrape_hooks:
            try:
                hook(snapshot)
            except Exception as error:
                guarded("scrape hook", error)
        return answer

    def document(self, snapshot: Snapshot, *, system: bool = True) -> dict[str, Any]:
        """The ``/metrics`` JSON document of ``snapshot`` (with the system block or not)."""
        config = self.config
        return json_document(
            snapshot,
            service=config.service_name,
            version=config.version,
            system=self.system.read() if system else None,
        )

    def check_window(self, text: str, kind: str) -> float:
        """The seconds of ``?window=``; :class:`WindowError` (a 400) if it can't be had."""
        if kind != "json":
            raise WindowError(
                "window is for the JSON format; Prometheus computes windows itself "
                "(rate(...[5m]), histogram_quantile)"
            )
        if self.windows is None:
            raise WindowError("recent windows are off")
        seconds = parse_window(text)
        self.windows.check(seconds)
        return seconds

    def render(self, kind: str, snapshot: Snapshot) -> tuple[bytes, str]:
        """The body and content type of ``snapshot`` in format ``kind``."""
        config = self.config
        if kind == "json":
            return render_json(self.document(snapshot)), JSON_TYPE
        from .exposition.prometheus import render_openmetrics, render_prometheus

        extras: dict[str, Any] = {
            "service": config.service_name,
            "version": config.version,
            "system": self.system.read(),
            "readiness": self.last_readiness(),
        }
        if kind == "openmetrics":
            return render_openmetrics(snapshot, extras), OPENMETRICS_TYPE
        if kind == "protobuf":
            from .exposition.protobuf import render_protobuf

            return render_protobuf(snapshot, extras), PROTOBUF_TYPE
        return render_prometheus(snapshot, extras), PROMETHEUS_TYPE

    # The dashboard page ---------------------------------------------------------------------

    def dashboard(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        """``/metrics/dashboard``: one self-contained HTML page (see
        :mod:`wsgi_observe.exposition.html`); ``?sort=``, ``?window=`` and ``?refresh=``."""
        method = environ.get("REQUEST_METHOD")
        if method != "GET" and method != "HEAD":
            return not_allowed(environ, start_response)
        try:
            query = parse_qs(
                environ.get("QUERY_STRING", ""),
                keep_blank_values=True,
                max_num_fields=_MAX_QUERY_FIELDS,
            )
        except ValueError:
            return _bad_request(environ, start_response, "too many query parameters")
        links: tuple[tuple[str, str], ...] = ()
        if not self.is_authorized(environ):
            token = query.get("token", [None])[-1]
            if not (self.config.metrics_token_in_query and self._token_matches(token)):
                return self.unauthorized(environ, start_response)
            links = (("token", token or ""),)  # the page's links must carry it too
        try:
            sort, period, refresh = _page_options(query)
        except ValueError as error:
            return _bad_request(environ, start_response, str(error))
        view = self.dashboard_view(sort=sort, period=period, refresh=refresh, links=links)
        return respond(
            environ, start_response, "200 OK", render_dashboard(view), HTML_TYPE, _PAGE_HEADERS
        )

    def _token_matches(self, token: Optional[str]) -> bool:
        if token is None or self._token is None:
            return False
        return hmac.compare_digest(token.encode("utf-8", "replace"), self._token)

    def dashboard_view(
        self,
        *,
        sort: str = "traffic",
        period: Optional[str] = None,
        refresh: int = 0,
        links: tuple[tuple[str, str], ...] = (),
    ) -> DashboardView:
        """What the dashboard shows now: since start, the recent windows when kept, the last
        readiness result (never a new probe), the processes and the machine."""
        snapshot = self.snapshot()
        documents = {"all": self.document(snapshot, system=False)}
        lines: dict[str, Sparkline] = {}
        step = SPARK_STEP_S
        windows = self.windows
        if windows is not None and windows.enabled:
            if period is None:
                period = "15m"
            try:
                step, lines = self._recent(windows, snapshot, period, documents)
            except Exception as error:  # a ring that fails: the page without it, never a 500
                guarded("recent windows", error)
            try:
                windows.tick(snapshot)  # the ring's snapshot, if one is due: this one
            except Exception as error:
                guarded("recent windows", error)
        processes = snapshot.processes
        if not processes:
            own = process_info(os.getpid(), "process")
            processes = [own] if own is not None else []
        try:
            readiness = self.last_readiness()
        except Exception as error:  # the page must answer whatever happens
            guarded("readiness", error)
            readiness = None
        if period is None or period not in documents:
            period = "all"
        return DashboardView(
            service=self.config.service_name,
            version=self.config.version,
            documents=documents,
            sort=sort,
            period=period,
            refresh=refresh,
            sparklines=lines,
            spark_step_s=step,
            readiness=readiness,
            processes=processes,
            system=self.system.read(),
            kpis=documents["all"].get("kpis"),
            links=links,
            generated_at=snapshot.taken_at,
        )

    def _recent(
        self,
        windows: Windows,
        snapshot: Snapshot,
        period: str,
        documents: dict[str, dict[str, Any]],
    ) -> tuple[float, dict[str, Sparkline]]:
        """The 1, 5 and 15 minute windows into ``documents`` (per endpoint only for the
        table's ``period``), and the sparklines with their step."""
        for label, seconds in PERIODS.items():
            try:
                window = windows.window_snapshot_for(seconds, snapshot)
            except WindowError:  # longer than what is kept
                continue
            documents[label] = summary(
                window,
                endpoints=label == period,
                seconds=window.window_s if window.window_s is not None else seconds,
            )
        # One point a minute over 15 minutes; over less when the ring keeps less, and one
        # point per snapshot when those are further apart than a minute.
        step = max(SPARK_STEP_S, windows.interval_s)
        steps = int(min(SPARK_SPAN_S, windows.span_s) // step)
        try:
            series = windows.series(step, step * steps, snapshot) if steps > 1 else []
        except WindowError:
            series = []
        # Whole steps over the span, and the newest one running from the last whole step
        # to now.
        with self._spark_lock:  # one page at a time uses (and refills) the memo
            return step, sparklines(series, step, steps=steps + 1, memo=self._spark_memo)


def _page_options(query: dict[str, list[str]]) -> tuple[str, Optional[str], int]:
    """``(sort, period, refresh)`` from the dashboard's query (``ValueError``: one line)."""
    sort = query.get("sort", ["traffic"])[-1]
    if sort not in SORTS:
        raise ValueError(f"sort={sort[:40]!r}: expected {', '.join(SORTS)}")
    period = query.get("window", [None])[-1]
    if period is not None and period not in PERIODS and period != "all":
        raise ValueError(f"window={period[:40]!r}: expected {', '.join(PERIODS)} or all")
    raw = query.get("refresh", ["0"])[-1]
    if raw not in {str(seconds) for seconds in REFRESH_CHOICES}:
        choices = ", ".join(str(seconds) for seconds in REFRESH_CHOICES)
        raise ValueError(f"refresh={raw[:40]!r}: expected one of {choices} (seconds; 0: off)")
    return sort, period, int(raw)


def _bad_request(
    environ: WSGIEnvironment, start_response: StartResponse, message: str
) -> list[bytes]:
    return respond(environ, start_response, "400 Bad Request", orjson.dumps({"error": message}))
