"""PromQL pieces shared by the rules and the dashboard, named from the exposition's families.

Every metric name used by ``wsgi-observe export`` comes from a
:class:`wsgi_observe.exposition.families.Family`, so a renamed series breaks these
files' tests instead of silently leaving a dashboard empty.
"""

from __future__ import annotations

import re

from ..exposition.families import (
    CALL_DURATION,
    CALLS,
    CHECK_HEALTHY,
    CHECK_LATENCY,
    CHECK_STATUS,
    CPU_USAGE,
    DISK_TOTAL,
    DISK_USED,
    DURATION,
    ERRORS,
    IN_FLIGHT,
    INFO,
    MEM_AVAILABLE,
    MEM_TOTAL,
    MEM_USED,
    PROC_CPU,
    PROC_FDS,
    PROC_RSS,
    PROC_THREADS,
    QUANTILES,
    READY,
    READY_AT,
    REQUESTS,
)

__all__ = [
    "BUCKETS",
    "CALL_BUCKETS",
    "CALL_HISTOGRAM",
    "HISTOGRAM",
    "HISTOGRAMS",
    "QUANTILES",
    "check_duration",
    "check_histograms",
    "duration_seconds",
    "matchers",
    "metric",
    "string",
]

#: Which form of the latency histograms the files query: ``classic`` (the ``_bucket``
#: series every Prometheus stores) or ``native`` (the native histograms a Prometheus with
#: ``--enable-feature=native-histograms`` stores under the histogram's own name).
HISTOGRAMS = ("classic", "native")

#: Sample names as Prometheus stores them (a counter's carry ``_total``).
REQUESTS_TOTAL = REQUESTS.sample
ERRORS_TOTAL = ERRORS.sample
BUCKETS = DURATION.name + "_bucket"
HISTOGRAM = DURATION.name  # the native series: one sample holds every bucket
CALLS_TOTAL = CALLS.sample
CALL_BUCKETS = CALL_DURATION.name + "_bucket"
CALL_HISTOGRAM = CALL_DURATION.name
INFO_SERIES = INFO.sample
IN_FLIGHT_SERIES = IN_FLIGHT.name
READY_SERIES = READY.name
READY_AT_SERIES = READY_AT.name
CHECK_HEALTHY_SERIES = CHECK_HEALTHY.name
CHECK_STATUS_SERIES = CHECK_STATUS.name
CHECK_LATENCY_SERIES = CHECK_LATENCY.name
CPU_USAGE_SERIES = CPU_USAGE.name
MEM_USED_SERIES = MEM_USED.name
MEM_TOTAL_SERIES = MEM_TOTAL.name
MEM_AVAILABLE_SERIES = MEM_AVAILABLE.name
DISK_USED_SERIES = DISK_USED.name
DISK_TOTAL_SERIES = DISK_TOTAL.name
PROC_RSS_SERIES = PROC_RSS.name
PROC_CPU_TOTAL = PROC_CPU.sample
PROC_THREADS_SERIES = PROC_THREADS.name
PROC_FDS_SERIES = PROC_FDS.name

_DURATION = re.compile(
    r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?\Z"
)
_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def duration_seconds(text: str) -> float:
    """Seconds of a Prometheus duration (``1d``, ``5m``, ``1h30m``, ``500ms``).

    Raises ``ValueError`` for anything else (``5 min``, ``-1m``, ``1.5h``, ``m``).
    """
    found = _DURATION.match(text) if isinstance(text, str) and text else None
    if found is None or not any(found.groups()):
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h or 1d")
    return sum(int(value) * unit for value, unit in zip(found.groups(), _UNITS) if value)


def check_duration(text: str, *, zero: bool = False) -> str:
    """``text`` if it is a Prometheus duration (above 0 unless ``zero``), else ValueError."""
    if duration_seconds(text) <= 0 and not zero:
        raise ValueError(f"{text!r} must be longer than 0")
    return text


def check_histograms(text: str) -> str:
    """``text`` if it is one of :data:`HISTOGRAMS`, else ValueError."""
    if text not in HISTOGRAMS:
        raise ValueError(f"{text!r} is neither classic nor native")
    return text


def string(text: str) -> str:
    """A PromQL string literal (double quotes; backslash, quote and newline escaped)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def matchers(**labels: str) -> str:
    """``{a="x", b=~"y"}`` from ``a="x"``; a value starting with ``=~``/``!=``/``!~`` keeps
    that operator; values are quoted as PromQL strings unless they are ``$variables``."""
    parts = []
    for name, value in labels.items():
        operator = "="
        for candidate in ("=~", "!=", "!~"):
            if value.startswith(candidate):
                operator, value = candidate, value[len(candidate) :]
                break
        parts.append(f"{name}{operator}{string(value)}")
    return "{" + ", ".join(parts) + "}"


def metric(family_sample: str, **labels: str) -> str:
    """A selector: ``name{labels}``."""
    return family_sample + (matchers(**labels) if labels else "")
