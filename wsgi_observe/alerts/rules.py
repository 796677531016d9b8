"""Alert rules (a threshold over one number of the ``/metrics`` document) and alerts.

Pure data: nothing here reads a clock, a file or the network. :class:`ThresholdAlert` says
what to watch; :class:`Alert` is one crossing (or, with ``resolved=True``, the end of one)
that the monitor hands to its notifiers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

__all__ = [
    "DEFAULT_RULES",
    "SEVERITIES",
    "Alert",
    "ThresholdAlert",
    "error_rate_alert",
    "p95_alert",
]

MetricFn = Callable[[dict[str, Any]], Optional[float]]

#: Severities an alert may have: PagerDuty's Events API v2 set, most urgent first.
SEVERITIES = ("critical", "error", "warning", "info")


@dataclass(frozen=True)
class ThresholdAlert:
    """Fire when a metric goes above ``threshold``; re-arm at or under ``clear_below``.

    Parameters: ``name``; ``metric`` (a dotted path into the ``/metrics`` JSON document,
    such as ``"application.response_times.p95"``, or with ``per_endpoint=True`` into each
    endpoint's entry, such as ``"p95"``; or a callable given that document or entry and
    returning a number or None); ``threshold``; ``per_endpoint`` (one alert state per
    endpoint); ``min_requests`` (no verdict on fewer requests in the window);
    ``clear_below`` (hysteresis: default ``threshold``); ``severity`` (``critical``,
    ``error``, ``warning`` or ``info``: what PagerDuty is told). Example::

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
    severity: str = "warning"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"severity={self.severity!r}: expected critical, error, warning or info"
            )

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
    threshold: float = 0.05,
    *,
    min_requests: int = 20,
    per_endpoint: bool = False,
    severity: str = "critical",
) -> ThresholdAlert:
    """The guide's "Error Rate Spike": errors / requests above 5%, once 20 requests are in."""
    return ThresholdAlert(
        "Error rate spike",
        "error_rate" if per_endpoint else "application.requests.error_rate",
        threshold,
        per_endpoint=per_endpoint,
        min_requests=min_requests,
        severity=severity,
    )


def p95_alert(
    threshold_s: float = 2.0,
    *,
    min_requests: int = 20,
    per_endpoint: bool = False,
    severity: str = "warning",
) -> ThresholdAlert:
    """The guide's "Performance Degradation": p95 response time above 2 seconds."""
    return ThresholdAlert(
        "Performance degradation",
        "p95" if per_endpoint else "application.response_times.p95",
        threshold_s,
        per_endpoint=per_endpoint,
        min_requests=min_requests,
        severity=severity,
    )


#: The guide's two threshold alerts, over all endpoints together.
DEFAULT_RULES: tuple[ThresholdAlert, ...] = (error_rate_alert(), p95_alert())


@dataclass(frozen=True)
class Alert:
    """One firing (or, with ``resolved``, its end): which rule, on which endpoint (None:
    overall), what value, over what window, how severe."""

    rule: str
    metric: str
    value: float
    threshold: float
    endpoint: Optional[str]
    requests: int
    window_s: Optional[float]
    severity: str = "warning"
    resolved: bool = False

    @property
    def message(self) -> str:
        where = f" on {self.endpoint}" if self.endpoint is not None else ""
        if self.resolved:
            return f"Alert resolved: {self.rule}{where}: {self.metric} = {self.value:.4g}"
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
