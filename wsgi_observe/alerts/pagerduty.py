"""PagerDuty straight from the in-process alerts (Events API v2), for one machine without
Prometheus.

A crossing sends ``event_action: trigger`` with a ``dedup_key`` that is stable per rule
(and endpoint), so PagerDuty keeps one incident per alert however often it is told; going
back under sends ``resolve`` with the same key. Events are queued and sent by a thread of
this process, never on the caller's path: each attempt has a connect and read timeout,
429 and 5xx answers and connection errors are retried with exponential backoff (and
jitter, or the ``Retry-After`` the answer gives) inside a time budget per event, and a
4xx is not retried. In order: a resolve never overtakes its trigger.

The routing key goes into the request body only: never into a log line, an error, or
``repr()``; any text PagerDuty answers is scrubbed of it before it is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from .. import _http
from .._guard import guarded
from .._time import iso_utc
from ..config import DEFAULT_PAGERDUTY_EVENTS_URL
from ..redact import REDACTED, redact_value
from .rules import Alert

if TYPE_CHECKING:
    import urllib3

    from ..config import Config

__all__ = ["DEFAULT_EVENTS_URL", "PagerDutyNotifier"]

DEFAULT_EVENTS_URL = DEFAULT_PAGERDUTY_EVENTS_URL

_log = logging.getLogger("wsgi_observe.alerts.pagerduty")
_MAX_DEDUP_KEY = 255
_MAX_SUMMARY = 1024


def _mask(key: str) -> str:
    # Enough to tell two keys apart in a debugger, never enough to use one.
    return f"{key[:3]}…(redacted)" if len(key) >= 12 else "***"


def _number(value: float) -> Any:
    """A JSON-safe number: infinities and NaN (which JSON cannot hold) become text."""
    return value if math.isfinite(value) else str(value)


def _forget_in_child(notifier: weakref.ref[PagerDutyNotifier]) -> None:
    alive = notifier()
    if alive is not None:
        alive._forget(closed=alive.closed)


def _retry_after(raw: Optional[str]) -> Optional[float]:
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to our own backoff


class PagerDutyNotifier:
    """Sends alerts to PagerDuty's Events API v2: trigger on a crossing, resolve at its end.

    Parameters: ``routing_key`` (the integration key of an Events API v2 integration);
    ``events_url`` (default PagerDuty's ``/v2/enqueue``); ``service`` and ``environment``
    (in the ``dedup_key`` and ``source``); ``host`` (default this machine's name);
    ``timeout_s`` (connect and read timeout of one attempt); ``budget_s`` (all attempts
    and waits of one event); ``backoff_base_s``/``backoff_max_s`` (the wait before retry
    *n* is ``min(max, base * 2 ** (n - 1))``, scaled by a random factor in [0.5, 1));
    ``max_queue`` (events waiting; more are dropped with a warning). Example::

        pagerduty = PagerDutyNotifier(key, service="CRM API")
        AlertMonitor(middleware, notifiers=[pagerduty]).start(interval_s=60)
        pagerduty.flush(timeout_s=5)       # wait until what is queued was sent

    Reads: nothing from the environment; :class:`AlertMonitor` builds one from ``Config``
    (``PAGERDUTY_ROUTING_KEY``, ``PAGERDUTY_EVENTS_URL``) when a key is configured.
    """

    def __init__(
        self,
        routing_key: str,
        *,
        events_url: str = DEFAULT_EVENTS_URL,
        service: str = "wsgi-app",
        environment: str = "production",
        host: Optional[str] = None,
        timeout_s: float = 10.0,
        budget_s: float = 60.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        max_queue: int = 100,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(routing_key, str) or not routing_key.strip():
            raise ValueError("routing_key: expected a non-empty string")  # never echoed
        if timeout_s <= 0 or budget_s <= 0 or max_queue < 1:
            raise ValueError("timeout_s and budget_s must be above 0, max_queue at least 1")
        self._key = routing_key.strip()
        self.events_url = events_url
        self.service = service
        self.environment = environment
        self.host = host or socket.gethostname()
        self.timeout_s = float(timeout_s)
        self.budget_s = float(budget_s)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.max_queue = int(max_queue)
        self._jitter = jitter
        self._queue: deque[tuple[dict[str, Any], str]] = deque()
        self._thread: Optional[threading.Thread] = None
        self._pool: Optional[urllib3.PoolManager] = None
        self._forget()
        # In a forked child, the queue, lock and thread are the parent's (a lock held by
        # the parent's sender thread would never be released): start afresh, closed or not.
        notifier = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_in_child(notifier))

    @classmethod
    def from_config(cls, config: Config, **options: Any) -> PagerDutyNotifier:
        """One for ``config``'s routing key, events URL, service name and environment."""
        if not config.pagerduty_routing_key:
            raise ValueError("PAGERDUTY_ROUTING_KEY is not set")
        return cls(
            config.pagerduty_routing_key,
            events_url=config.pagerduty_events_url,
            service=config.service_name,
            environment=config.environment,
            **options,
        )

    def __repr__(self) -> str:
        return (
            f"PagerDutyNotifier(events_url={self.events_url!r}, routing_key={_mask(self._key)!r})"
        )

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("PagerDutyNotifier cannot be pickled")  # it would copy the key

    # What is sent ----------------------------------------------------------------------

    def dedup_key(self, rule: str, endpoint: Optional[str]) -> str:
        """``wsgi_observe/<service>/<environment>/<rule>[ on <endpoint>]``, 255 chars at most."""
        key = f"wsgi_observe/{self.service}/{self.environment}/{rule}"
        if endpoint is not None:
            key += f" on {endpoint}"
        if len(key) > _MAX_DEDUP_KEY:
            digest = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:32]
            key = f"{key[: _MAX_DEDUP_KEY - 33]}#{digest}"
        return key

    def event(self, alert: Alert) -> dict[str, Any]:
        """The Events API v2 body for ``alert``, without the routing key."""
        dedup_key = self.dedup_key(alert.rule, alert.endpoint)
        if alert.resolved:
            return {"event_action": "resolve", "dedup_key": dedup_key}
        return {
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "client": "wsgi_observe",
            "payload": {
                "summary": alert.message[:_MAX_SUMMARY],
                "source": f"{self.service} on {self.host}"[:_MAX_SUMMARY],
                "severity": alert.severity,
                "timestamp": iso_utc(),
                "component": alert.endpoint or "*",
                "group": self.service,
                "class": alert.rule,
                "custom_details": {
                    "rule": alert.rule,
                    "metric": alert.metric,
                    "value": _number(alert.value),
                    "threshold": _number(alert.threshold),
                    "endpoint": alert.endpoint,
                    "requests": alert.requests,
                    "window_s": alert.window_s,
                    "environment": self.environment,
                },
            },
        }

    # The queue -------------------------------------------------------------------------

    def notify(self, alert: Alert) -> None:
        """Queue the trigger (or resolve) of ``alert``; returns at once."""
        where = f" on {alert.endpoint}" if alert.endpoint is not None else ""
        action = "resolve" if alert.resolved else "trigger"
        label = f"{action} of {alert.rule!r}{where}"
        event = self.event(alert)
        with self._cond:
            if self._closed.is_set():
                return
            if len(self._queue) >= self.max_queue:
                _log.warning("PagerDuty queue full (%d events): %s dropped", self.max_queue, label)
                return
            self._queue.append((event, label))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="wsgi_observe-pagerduty", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued event was sent or given up; False if time ran out."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (``timeout_s`` at most), then stop the sending thread; later
        events are dropped."""
        self.flush(timeout_s)
        with self._cond:
            self._closed.set()  # also cuts short a backoff wait in progress
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=max(self.timeout_s, 1.0))
        if self._pool is not None:
            self._pool.clear()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`: events are no longer sent."""
        return self._closed.is_set()

    def _forget(self, closed: bool = False) -> None:
        self._cond = threading.Condition()
        self._queue.clear()
        self._busy = False
        self._closed = threading.Event()
        if closed:
            self._closed.set()
        self._thread = None
        self._pool = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed.is_set():
                    self._cond.wait()
                if self._closed.is_set():
                    self._queue.clear()
                    self._cond.notify_all()
                    return
                event, label = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(event, label)
            except Exception as error:  # never let the thread die with events queued
                guarded("pagerduty notifier", error)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    # The wire --------------------------------------------------------------------------

    def _deliver(self, event: dict[str, Any], label: str) -> bool:
        import urllib3

        if self._pool is None:
            self._pool = _http.new_pool(headers={"User-Agent": "wsgi_observe-pagerduty"})
        body = json.dumps({"routing_key": self._key, **event}).encode("utf-8")
        started = time.monotonic()
        deadline = started + self.budget_s
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            retry_after: Optional[float] = None
            try:
                response = _http.request(
                    self._pool,
                    "POST",
                    self.events_url,
                    body=body,
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                    timeout_s=min(self.timeout_s, max(remaining, 0.001)),
                )
            except urllib3.exceptions.HTTPError as error:
                # Connection refused, reset, or no answer in time: a dedup_key makes a
                # repeated trigger or resolve harmless, so every one of these is retried.
                reason = self._scrub(_http.describe_error(error))
            else:
                status = response.status
                if 200 <= status < 300:
                    _log.info("PagerDuty %s accepted (dedup_key %s)", label, event["dedup_key"])
                    return True
                reason = f"HTTP {status}{self._answer(response.data)}"
                if status != 429 and status < 500:
                    _log.warning("PagerDuty refused the %s: %s", label, reason)
                    return False
                if status == 429:
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            if retry_after is not None:
                delay = retry_after
            else:
                scale = 0.5 + 0.5 * min(max(self._jitter(), 0.0), 1.0)
                delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)) * scale
            elapsed = time.monotonic() - started
            if time.monotonic() + delay >= deadline:
                _log.warning(
                    "PagerDuty %s not delivered: %s; gave up after %d attempt%s in %.1fs",
                    label,
                    reason,
                    attempt,
                    "" if attempt == 1 else "s",
                    elapsed,
                )
                return False
            _log.info("PagerDuty %s failed (%s); retry %d in %.2fs", label, reason, attempt, delay)
            if self._closed.wait(delay):
                _log.warning("PagerDuty %s not delivered: %s; stopped", label, reason)
                return False

    def _answer(self, data: bytes) -> str:
        """PagerDuty's own words (``message`` and ``errors``), scrubbed, or nothing."""
        try:
            payload = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return ""
        if not isinstance(payload, dict):
            return ""
        words = [str(payload.get("message") or "")]
        errors = payload.get("errors")
        if isinstance(errors, list):
            words.extend(str(item) for item in errors[:5])
        text = "; ".join(word for word in words if word)[:500]
        return f" ({self._scrub(text)})" if text else ""

    def _scrub(self, text: str) -> str:
        # PagerDuty should never echo the key, but if it does, it must not reach a log.
        text = text.replace(self._key, REDACTED)
        return str(redact_value(text))
