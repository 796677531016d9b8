"""Custom alerts: the guide's threshold checks, evaluated off the request path.

A rule compares one number from the ``/metrics`` document (overall, or per endpoint) with
a threshold. When the value crosses it, the alert fires once: a WARNING on the
``wsgi_observe.alerts`` logger and, when Sentry is on, ``sentry_sdk.capture_message(...,
level="warning")`` with the metric and value as context. It fires again only after the
value went back to or under ``clear_below`` (default: the threshold), which re-arms it.

The numbers come from a rolling window (default 5 minutes): the difference between the
middleware's snapshot now and the one taken ``window_s`` ago, rendered by the same
``json_document`` that ``/metrics`` uses. A spike therefore shows up even after months of
healthy traffic, and heals when it is over. Nothing is evaluated per request: call
:func:`check_alerts` yourself, start :meth:`AlertMonitor.start` (a background timer), or
let each ``/metrics`` scrape evaluate (:meth:`AlertMonitor.evaluate_on_scrape`).

With gunicorn and a shared state directory, every worker sees every worker's numbers; a
lock file in that directory makes one worker at a time the one that evaluates, so an
incident raises one alert, not one per worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from ._guard import guarded
from .exposition.json import json_document
from .metrics import SeriesData, Snapshot

if TYPE_CHECKING:
    from .middleware import ObservabilityMiddleware

__all__ = [
    "DEFAULT_RULES",
    "Alert",
    "AlertMonitor",
    "ThresholdAlert",
    "check_alerts",
    "error_rate_alert",
    "p95_alert",
]

_log = logging.getLogger("wsgi_observe.alerts")

MetricFn = Callable[[dict[str, Any]], Optional[float]]


@dataclass(frozen=True)
class ThresholdAlert:
    """Fire when a metric goes above ``threshold``; re-arm at or under ``clear_below``.

    Parameters: ``name``; ``metric`` (a dotted path into the ``/metrics`` JSON document,
    such as ``"application.response_times.p95"``, or with ``per_endpoint=True`` into each
    endpoint's entry, such as ``"p95"``; or a callable given that document or entry and
    returning a number or None); ``threshold``; ``per_endpoint`` (one alert state per
    endpoint); ``min_requests`` (no verdict on fewer requests in the window);
    ``clear_below`` (hysteresis: default ``threshold``). Example::

        queue = ThresholdAlert("Queue depth", lambda doc: jobs.qsize(), 1000)
        slow = ThresholdAlert("Slow endpoint", "p99", 5.0, per_endpoint=True)
        AlertMonitor(middleware, [*DEFAULT_RULES, queue, slow]).start(interval_s=60)

    Reads: nothing from the environment.
    """

    name: str
    metric: Union[str, MetricFn]
    threshold: float
    per_endpoint: bool = False
    min_requests: int = 0
    clear_below: Optional[float] = None

    def value(self, data: dict[str, Any]) -> Optional[float]:
        """The metric in ``data`` (the document, or one endpoint's entry), or None."""
        if callable(self.metric):
            found: Any = self.metric(data)
        else:
            found = data
            for part in self.metric.split("."):
                if not isinstance(found, dict) or part not in found:
                    return None
                found = found[part]
        if isinstance(found, bool) or not isinstance(found, (int, float)):
            return None
        return float(found)

    @property
    def metric_name(self) -> str:
        if callable(self.metric):
            return getattr(self.metric, "__name__", self.name)
        return self.metric

    @property
    def rearm_at(self) -> float:
        return self.threshold if self.clear_below is None else self.clear_below


def error_rate_alert(
    threshold: float = 0.05, *, min_requests: int = 20, per_endpoint: bool = False
) -> ThresholdAlert:
    """The guide's "Error Rate Spike": errors / requests above 5%, once 20 requests are in."""
    return ThresholdAlert(
        "Error rate spike",
        "error_rate" if per_endpoint else "application.requests.error_rate",
        threshold,
        per_endpoint=per_endpoint,
        min_requests=min_requests,
    )


def p95_alert(
    threshold_s: float = 2.0, *, min_requests: int = 20, per_endpoint: bool = False
) -> ThresholdAlert:
    """The guide's "Performance Degradation": p95 response time above 2 seconds."""
    return ThresholdAlert(
        "Performance degradation",
        "p95" if per_endpoint else "application.response_times.p95",
        threshold_s,
        per_endpoint=per_endpoint,
        min_requests=min_requests,
    )


#: The guide's two threshold alerts, over all endpoints together.
DEFAULT_RULES: tuple[ThresholdAlert, ...] = (error_rate_alert(), p95_alert())


@dataclass(frozen=True)
class Alert:
    """One firing: which rule, on which endpoint (None: overall), what value, over what."""

    rule: str
    metric: str
    value: float
    threshold: float
    endpoint: Optional[str]
    requests: int
    window_s: Optional[float]

    @property
    def message(self) -> str:
        where = f" on {self.endpoint}" if self.endpoint is not None else ""
        return (
            f"Alert: {self.rule}{where}: {self.metric} = {self.value:.4g} "
            f"exceeds {self.threshold:.4g}"
        )

    def context(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "metric": self.metric,
            "value": self.value,
            "threshold": self.threshold,
            "endpoint": self.endpoint,
            "requests": self.requests,
            "window_s": self.window_s,
        }


def _minus(now: SeriesData, before: Optional[SeriesData]) -> SeriesData:
    if before is None:
        return now
    delta = SeriesData(
        count=now.count - before.count,
        errors=now.errors - before.errors,
        sum_ns=now.sum_ns - before.sum_ns,
        hist={k: v - before.hist.get(k, 0) for k, v in now.hist.items()},
        by={k: v - before.by.get(k, 0) for k, v in now.by.items()},
    )
    if delta.count < 0 or delta.errors < 0 or any(v < 0 for v in delta.hist.values()):
        return now  # the counters were reset (a new worker table): count from zero
    delta.hist = {k: v for k, v in delta.hist.items() if v}
    delta.by = {k: v for k, v in delta.by.items() if v}
    return delta


def window_snapshot(now: Snapshot, before: Optional[Snapshot]) -> Snapshot:
    """What happened between ``before`` and ``now`` (everything, when ``before`` is None)."""
    if before is None:
        return now
    endpoints = {}
    for name, series in now.endpoints.items():
        delta = _minus(series, before.endpoints.get(name))
        if delta.count:
            endpoints[name] = delta
    return Snapshot(
        endpoints=endpoints,
        functions={},
        inflight=now.inflight,
        started_at=before.taken_at,
        taken_at=now.taken_at,
    )


class _Leader:
    """An exclusive lock file: when processes share state, one of them evaluates alerts.

    The lock lives in this process's state directory, known once its numbers are shared
    (a single process is always the leader). It is taken in a forked child afresh.
    """

    def __init__(self, state_dir: Optional[str] = None) -> None:
        self.state_dir = state_dir  # WSGI_OBSERVE_STATE_DIR, when configured
        self.fd: Optional[int] = None
        self.pid = os.getpid()

    def is_leader(self) -> bool:
        if self.pid != os.getpid():  # a forked child: the parent's lock is the parent's
            self.fd, self.pid = None, os.getpid()
        if self.fd is not None:
            return True
        from .multiprocess import state

        state_dir = state().get("state_dir") or self.state_dir
        if not state_dir:
            return True
        import fcntl

        try:
            fd = os.open(
                os.path.join(state_dir, "alerts.lock"),
                os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
        except OSError:
            return True  # cannot coordinate: better twice than never
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False  # another process evaluates; we try again next time
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None


class AlertMonitor:
    """Evaluates threshold rules over a middleware's metrics; fires once per crossing.

    Parameters: ``middleware`` (an :class:`ObservabilityMiddleware`); ``rules`` (default
    :data:`DEFAULT_RULES`); ``window_s`` (seconds the numbers look back; None: since
    start); ``clock`` (a monotonic clock, for tests). Example::

        monitor = AlertMonitor(app.wsgi_app, [error_rate_alert(), p95_alert(per_endpoint=True)])
        monitor.start(interval_s=60)     # or: monitor.evaluate_on_scrape()
        monitor.check()                  # -> the alerts that fired just now

    Reads: nothing from the environment (``WSGI_OBSERVE_STATE_DIR`` via the middleware's
    config decides whether workers elect one evaluator).
    """

    def __init__(
        self,
        middleware: ObservabilityMiddleware,
        rules: Optional[Iterable[ThresholdAlert]] = None,
        *,
        window_s: Optional[float] = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.middleware = middleware
        self.rules: tuple[ThresholdAlert, ...] = tuple(DEFAULT_RULES if rules is None else rules)
        self.window_s = window_s
        self.clock = clock
        self.firing: set[tuple[str, Optional[str]]] = set()
        self._history: deque[tuple[float, Snapshot]] = deque()
        self._lock = threading.Lock()
        self._leader = _Leader(middleware.config.state_dir)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # Evaluation ------------------------------------------------------------------------

    def check(self) -> list[Alert]:
        """Evaluate every rule now; report and return the alerts that fired just now."""
        with self._lock:
            if not self._leader.is_leader():
                return []
            now = self.clock()
            snapshot = self.middleware.snapshot()
            document = json_document(
                window_snapshot(snapshot, self._baseline(now)),
                service=self.middleware.config.service_name,
                version=self.middleware.config.version,
            )
            self._remember(now, snapshot)
            fired = []
            for rule in self.rules:
                for endpoint, data, requests in self._subjects(rule, document):
                    alert = self._evaluate(rule, endpoint, data, requests)
                    if alert is not None:
                        fired.append(alert)
        for alert in fired:
            self._report(alert)
        return fired

    def _remember(self, now: float, snapshot: Snapshot) -> None:
        # One snapshot per tenth of the window is plenty: memory stays at ~11 snapshots
        # however often checks run, and the window is window_s to 1.1 * window_s long.
        if self.window_s is None:
            return
        if not self._history or now - self._history[-1][0] >= self.window_s / 10:
            self._history.append((now, snapshot))

    def _baseline(self, now: float) -> Optional[Snapshot]:
        """The newest snapshot at least ``window_s`` old (older ones are dropped)."""
        if self.window_s is None:
            return None
        cutoff = now - self.window_s
        history = self._history
        while len(history) > 1 and history[1][0] <= cutoff:
            history.popleft()
        if history and history[0][0] <= cutoff:
            return history[0][1]
        return None  # younger than the window: everything since start

    def _subjects(
        self, rule: ThresholdAlert, document: dict[str, Any]
    ) -> Iterable[tuple[Optional[str], dict[str, Any], int]]:
        if rule.per_endpoint:
            for name, entry in document["endpoints"].items():
                yield name, entry, int(entry.get("requests", 0))
        else:
            yield None, document, int(document["application"]["requests"]["total"])

    def _evaluate(
        self, rule: ThresholdAlert, endpoint: Optional[str], data: dict[str, Any], requests: int
    ) -> Optional[Alert]:
        key = (rule.name, endpoint)
        if requests < rule.min_requests:
            return None  # too little traffic for a verdict either way
        try:
            value = rule.value(data)
        except Exception as error:  # a user's metric function failing must not stop the rest
            guarded(f"alert metric {rule.name!r}", error)
            return None
        if value is None:
            return None
        if key in self.firing:
            if value <= rule.rearm_at:
                self.firing.discard(key)
                _log.info(
                    "Alert resolved: %s%s: %s = %.4g",
                    rule.name,
                    f" on {endpoint}" if endpoint is not None else "",
                    rule.metric_name,
                    value,
                    extra={"alert": rule.name, "endpoint": endpoint, "value": value},
                )
            return None
        if value > rule.threshold:
            self.firing.add(key)
            return Alert(
                rule.name,
                rule.metric_name,
                value,
                rule.threshold,
                endpoint,
                requests,
                self.window_s,
            )
        return None

    def _report(self, alert: Alert) -> None:
        _log.warning(
            alert.message,
            extra={
                "alert": alert.rule,
                "metric": alert.metric,
                "value": alert.value,
                "threshold": alert.threshold,
                "endpoint": alert.endpoint,
                "requests": alert.requests,
            },
        )
        from .integrations.sentry import is_active

        if not is_active():
            return
        try:
            import sentry_sdk

            context = alert.context()
            sentry_sdk.capture_message(
                alert.message,
                level="warning",
                extras=context,
                contexts={"alert": context},
                tags={"alert": alert.rule, "endpoint": alert.endpoint or "*"},
                # One Sentry issue per rule and endpoint, whatever the values were.
                fingerprint=["wsgi_observe.alert", alert.rule, alert.endpoint or "*"],
            )
        except Exception as error:
            guarded("alert to sentry", error)

    # Ways to run it ----------------------------------------------------------------------

    def start(self, interval_s: float = 60.0) -> AlertMonitor:
        """Check every ``interval_s`` seconds in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return self
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.check()
                except Exception as error:
                    guarded("alert check", error)

        self._thread = threading.Thread(target=run, name="wsgi_observe-alerts", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the background timer (if started) and give up the evaluator lock."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)
        with self._lock:
            self._leader.release()

    def evaluate_on_scrape(self) -> AlertMonitor:
        """Check after each ``/metrics`` request the middleware answers (off the app's path)."""
        add_hook = getattr(self.middleware, "add_scrape_hook", None)
        if add_hook is None:
            raise TypeError("evaluate_on_scrape() needs an ObservabilityMiddleware")
        monitor = weakref.ref(self)

        def check_after_scrape(snapshot: Snapshot) -> None:
            current = monitor()
            if current is not None:
                current.check()

        add_hook(check_after_scrape)
        return self


_monitors: weakref.WeakKeyDictionary[Any, AlertMonitor] = weakref.WeakKeyDictionary()


def check_alerts(
    middleware: ObservabilityMiddleware, rules: Optional[Sequence[ThresholdAlert]] = None
) -> list[Alert]:
    """Evaluate ``rules`` (default :data:`DEFAULT_RULES`) for ``middleware`` now.

    The alert state (what is firing) is kept per middleware between calls, so calling this
    from a cron-like loop fires once per crossing. Returns the alerts that fired now.
    """
    monitor = _monitors.get(middleware)
    wanted = tuple(DEFAULT_RULES if rules is None else rules)
    if monitor is None or monitor.rules != wanted:
        monitor = _monitors[middleware] = AlertMonitor(middleware, wanted)
    return monitor.check()
