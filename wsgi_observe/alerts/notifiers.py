"""Where an alert goes: the log, Sentry, and anything with a ``notify(alert)`` method.

A notifier is told of every crossing (``alert.resolved`` False) and of its end (True). It
is called by the one process that evaluates, after the evaluation, never while a request
is served; still, one that talks to a network must not block its caller (the PagerDuty
notifier queues and sends from a thread of its own).
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from .._guard import guarded
from .rules import Alert

__all__ = ["LogNotifier", "Notifier", "SentryNotifier"]

_log = logging.getLogger("wsgi_observe.alerts")


@runtime_checkable
class Notifier(Protocol):
    """Anything told of alerts: ``notify(alert)`` returns quickly and never raises."""

    def notify(self, alert: Alert) -> None: ...


class LogNotifier:
    """A WARNING on the ``wsgi_observe.alerts`` logger per crossing, an INFO when it ends.

    The metric, value, threshold, endpoint and request count go into the record's extra
    fields (so the JSON log line carries them). Reads: nothing from the environment.
    """

    def notify(self, alert: Alert) -> None:
        if alert.resolved:
            _log.info(
                alert.message,
                extra={"alert": alert.rule, "endpoint": alert.endpoint, "value": alert.value},
            )
            return
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


class SentryNotifier:
    """``sentry_sdk.capture_message(..., level="warning")`` per crossing, when Sentry is on.

    One Sentry issue per rule and endpoint (a fixed fingerprint), whatever the values were;
    the end of an alert is not sent. Reads: nothing from the environment.
    """

    def notify(self, alert: Alert) -> None:
        if alert.resolved:
            return
        from ..integrations.sentry import is_active

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
                fingerprint=["wsgi_observe.alert", alert.rule, alert.endpoint or "*"],
            )
        except Exception as error:
            guarded("alert to sentry", error)
