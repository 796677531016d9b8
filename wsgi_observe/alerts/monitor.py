"""The alert monitor: evaluates threshold rules off the request path, fires once per crossing.

The numbers come from a recent window (default 5 minutes) of the middleware's own ring of
snapshots (:mod:`wsgi_observe.windows`, the one behind ``/metrics?window=``), rendered by
the same ``json_document`` that ``/metrics`` uses. A spike therefore shows up even after
months of healthy traffic, and heals when it is over.

With gunicorn and a shared state directory, every worker sees every worker's numbers; a
lock file in that directory makes one worker at a time the one that evaluates, so an
incident raises one alert, not one per worker. What is firing is kept in that directory
too (``alerts.firing.json``), so the worker that takes over when the evaluator is recycled
knows which alerts to resolve, instead of firing them again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional

from .._guard import guarded
from ..exposition.json import json_document
from ..metrics import Snapshot
from ..windows import Windows, window_snapshot
from .notifiers import LogNotifier, Notifier, SentryNotifier
from .rules import DEFAULT_RULES, Alert, ThresholdAlert

if TYPE_CHECKING:
    from ..middleware import ObservabilityMiddleware

__all__ = ["AlertMonitor", "check_alerts", "window_snapshot"]

_log = logging.getLogger("wsgi_observe.alerts")

#: The file, in the state directory, naming the alerts that are firing.
FIRING_FILE = "alerts.firing.json"
_FIRING_MAX_BYTES = 64 * 1024
_FIRING_MAX_ITEMS = 1000

Key = tuple[str, Optional[str]]


class _Leader:
    """An exclusive lock file: when processes share state, one of them evaluates alerts.

    The lock lives in this process's state directory, known once its numbers are shared
    (a single process is always the leader). It is taken in a forked child afresh.
    ``took_over`` is set when this process has just become the evaluator of a shared
    directory, so the monitor reads what its predecessor left firing.
    """

    def __init__(self, state_dir: Optional[str] = None) -> None:
        self.state_dir = state_dir  # WSGI_OBSERVE_STATE_DIR, when configured
        self.fd: Optional[int] = None
        self.pid = os.getpid()
        self.directory: Optional[str] = None  # where the lock (and the firing file) is
        self.took_over = False

    def is_leader(self) -> bool:
        if self.pid != os.getpid():  # a forked child: the parent's lock is the parent's
            self.fd, self.pid, self.directory = None, os.getpid(), None
        if self.fd is not None:
            return True
        from ..multiprocess import state

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
        self.directory = state_dir
        self.took_over = True
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None
            self.directory = None

    def load_firing(self) -> set[Key]:
        """What the previous evaluator left firing (nothing, if the file is not sound)."""
        if self.directory is None:
            return set()
        from ..multiprocess.statedir import read_regular

        try:
            data = json.loads(
                read_regular(os.path.join(self.directory, FIRING_FILE), _FIRING_MAX_BYTES)
            )
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as error:
            _log.warning("Ignoring %s: %s", FIRING_FILE, error)
            return set()
        items = data.get("firing") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return set()
        keys: set[Key] = set()
        for item in items[:_FIRING_MAX_ITEMS]:
            if (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], str)
                and (item[1] is None or isinstance(item[1], str))
            ):
                keys.add((item[0], item[1]))
        return keys

    def save_firing(self, firing: set[Key]) -> None:
        """Write what is firing, privately and atomically (a temp file, then a rename)."""
        if self.directory is None:
            return
        body = json.dumps({"firing": sorted(map(list, firing), key=str)}).encode("utf-8")
        temp = os.path.join(self.directory, f".tmp-alerts-{os.getpid()}")
        final = os.path.join(self.directory, FIRING_FILE)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                os.unlink(temp)  # a leftover of a crashed process that had our pid
            except FileNotFoundError:
                pass
            fd = os.open(temp, flags, 0o600)
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except OSError as error:  # a full disk: the next evaluator may re-send, no more
            _log.debug("Cannot write %s: %s", FIRING_FILE, error)


class AlertMonitor:
    """Evaluates threshold rules over a middleware's metrics; fires once per crossing.

    Parameters: ``middleware`` (an :class:`ObservabilityMiddleware`); ``rules`` (default
    :data:`DEFAULT_RULES`); ``window_s`` (seconds the numbers look back; None: since
    start); ``clock`` (for tests: the monitor then keeps a ring of its own on that clock
    instead of using the middleware's); ``notifiers`` (more places to tell,
    besides the log and Sentry: anything with ``notify(alert)``). When the middleware's
    config has a PagerDuty routing key, a :class:`PagerDutyNotifier` is added. Example::

        monitor = AlertMonitor(app.wsgi_app, [error_rate_alert(), p95_alert(per_endpoint=True)])
        monitor.start(interval_s=60)     # or: monitor.evaluate_on_scrape()
        monitor.check()                  # -> the alerts that fired just now

    Reads: nothing from the environment (``WSGI_OBSERVE_STATE_DIR`` via the middleware's
    config decides whether workers elect one evaluator; ``PAGERDUTY_ROUTING_KEY`` and
    ``PAGERDUTY_EVENTS_URL`` via the config turn PagerDuty on).
    """

    def __init__(
        self,
        middleware: ObservabilityMiddleware,
        rules: Optional[Iterable[ThresholdAlert]] = None,
        *,
        window_s: Optional[float] = 300.0,
        clock: Optional[Callable[[], float]] = None,
        notifiers: Iterable[Notifier] = (),
    ) -> None:
        from .pagerduty import PagerDutyNotifier

        self.middleware = middleware
        self.rules: tuple[ThresholdAlert, ...] = tuple(DEFAULT_RULES if rules is None else rules)
        self.window_s = window_s
        self.windows = _windows_for(middleware, window_s, clock)
        self.firing: set[Key] = set()
        extra = list(notifiers)
        self._owned: list[PagerDutyNotifier] = []
        config = middleware.config
        if config.pagerduty_routing_key and not any(
            isinstance(n, PagerDutyNotifier) for n in extra
        ):
            self._owned.append(PagerDutyNotifier.from_config(config))
        self.notifiers: tuple[Notifier, ...] = (
            LogNotifier(),
            SentryNotifier(),
            *extra,
            *self._owned,
        )
        self._lock = threading.Lock()
        _every.add(self)  # a forked child gets a fresh lock (see _after_fork)
        self._leader = _Leader(config.state_dir)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # Evaluation ------------------------------------------------------------------------

    def check(self) -> list[Alert]:
        """Evaluate every rule now; report and return the alerts that fired just now."""
        with self._lock:
            if not self._leader.is_leader():
                return []
            if self._leader.took_over:
                self._leader.took_over = False
                names = {rule.name for rule in self.rules}
                self.firing |= {key for key in self._leader.load_firing() if key[0] in names}
            snapshot = self.middleware.snapshot()
            if self.windows is not None and self.window_s is not None:
                self.windows.tick(snapshot)  # the ring's snapshot, if one is due: this one
                snapshot = self.windows.window_snapshot_for(self.window_s, snapshot)
            document = json_document(
                snapshot,
                service=self.middleware.config.service_name,
                version=self.middleware.config.version,
            )
            before = set(self.firing)
            changes = []
            for rule in self.rules:
                for endpoint, data, requests in self._subjects(rule, document):
                    alert = self._evaluate(rule, endpoint, data, requests)
                    if alert is not None:
                        changes.append(alert)
            if self.firing != before:
                self._leader.save_firing(self.firing)
        for alert in changes:
            self._report(alert)
        return [alert for alert in changes if not alert.resolved]

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
        """The alert that starts or ends now (``resolved``), or None."""
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
            if value > rule.rearm_at:
                return None
            self.firing.discard(key)
            resolved = True
        elif value > rule.threshold:
            self.firing.add(key)
            resolved = False
        else:
            return None
        return Alert(
            rule.name,
            rule.metric_name,
            value,
            rule.threshold,
            endpoint,
            requests,
            self.window_s,
            severity=rule.severity,
            resolved=resolved,
        )

    def _report(self, alert: Alert) -> None:
        if any(notifier.closed for notifier in self._owned):
            self._reopen()  # stopped, then used again (start() or check() after stop())
        for notifier in self.notifiers:
            try:
                notifier.notify(alert)
            except Exception as error:  # one notifier failing must not silence the others
                guarded(f"alert notifier {type(notifier).__name__}", error)

    def _reopen(self) -> None:
        from .pagerduty import PagerDutyNotifier

        fresh = [PagerDutyNotifier.from_config(self.middleware.config) for _ in self._owned]
        kept = [n for n in self.notifiers if not any(n is owned for owned in self._owned)]
        self._owned = fresh
        self.notifiers = (*kept, *fresh)

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

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the background timer (if started), give up the evaluator lock, and let the
        PagerDuty notifier this monitor made deliver what it holds (``timeout_s`` at most)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=timeout_s)
        with self._lock:
            self._leader.release()
        for notifier in self._owned:
            notifier.close(timeout_s=timeout_s)

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


def _windows_for(
    middleware: Any, window_s: Optional[float], clock: Optional[Callable[[], float]]
) -> Optional[Windows]:
    """The middleware's ring when it holds ``window_s``; else (a window it does not keep, a
    test clock, an object without a ring) one of the monitor's own: a snapshot per tenth
    of the window, so the window is ``window_s`` within 5 %."""
    if window_s is None:
        return None  # since start: no ring
    if not window_s > 0:
        raise ValueError(f"window_s={window_s!r}: expected seconds > 0, or None (since start)")
    shared = getattr(middleware, "windows", None)
    if (
        clock is None
        and isinstance(shared, Windows)
        and shared.enabled
        and shared.interval_s <= window_s <= shared.span_s
    ):
        return shared
    return Windows(
        middleware.snapshot,
        interval_s=window_s / 10,
        span_s=window_s * 1.1,
        clock=clock or time.time,
    )


_monitors: weakref.WeakKeyDictionary[Any, AlertMonitor] = weakref.WeakKeyDictionary()
#: Every monitor of this process, weakly.
_every: weakref.WeakSet[AlertMonitor] = weakref.WeakSet()


def _after_fork() -> None:
    """In a forked child: a monitor's lock may have been held by a thread of the parent
    (its timer mid-check, in a gunicorn master with ``--preload``); held for ever in the
    child, a check there (``evaluate_on_scrape``: every ``/metrics``) would hang."""
    for monitor in list(_every):
        monitor._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


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
