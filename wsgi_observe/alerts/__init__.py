"""Custom alerts: the guide's threshold checks, evaluated off the request path.

A rule compares one number from the ``/metrics`` document (overall, or per endpoint) with
a threshold. When the value crosses it, the alert fires once: a WARNING on the
``wsgi_observe.alerts`` logger and, when Sentry is on, ``sentry_sdk.capture_message(...,
level="warning")`` with the metric and value as context; with a PagerDuty routing key
(``PAGERDUTY_ROUTING_KEY``), a PagerDuty trigger too. It fires again only after the value
went back to or under ``clear_below`` (default: the threshold), which re-arms it and
resolves the PagerDuty incident.

Nothing is evaluated per request: call :func:`check_alerts` yourself, start
:meth:`AlertMonitor.start` (a background timer), or let each ``/metrics`` scrape evaluate
(:meth:`AlertMonitor.evaluate_on_scrape`). With gunicorn and a shared state directory, one
worker at a time evaluates, so an incident raises one alert, not one per worker.

Modules: ``rules`` (what to watch, what fired), ``monitor`` (evaluation, the window, the
one evaluating process), ``notifiers`` (log, Sentry) and ``pagerduty`` (Events API v2).
"""

from __future__ import annotations

from ..windows import window_snapshot
from .monitor import AlertMonitor, check_alerts
from .notifiers import LogNotifier, Notifier, SentryNotifier
from .pagerduty import DEFAULT_EVENTS_URL, PagerDutyNotifier
from .rules import DEFAULT_RULES, SEVERITIES, Alert, ThresholdAlert, error_rate_alert, p95_alert

__all__ = [
    "DEFAULT_EVENTS_URL",
    "DEFAULT_RULES",
    "SEVERITIES",
    "Alert",
    "AlertMonitor",
    "LogNotifier",
    "Notifier",
    "PagerDutyNotifier",
    "SentryNotifier",
    "ThresholdAlert",
    "check_alerts",
    "error_rate_alert",
    "p95_alert",
    "window_snapshot",
]
