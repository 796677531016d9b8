"""A Grafana dashboard for wsgi_observe (the JSON model Grafana 10 and 11 import).

The Prometheus data source is a variable (``$datasource``), and so are ``$job``,
``$instance`` and ``$endpoint``; every ``rate()`` and ``increase()`` looks back
``$__rate_interval``. Rows: traffic, latency, errors, readiness, processes, system and
timed functions. The queries use the raw series (not the recording rules), so the
dashboard works without the rules loaded.

The latency panels read the classic ``_bucket`` series (``histograms="classic"``) or the
native histograms (``histograms="native"``, for a Prometheus scraping with
``--enable-feature=native-histograms``): ``histogram_quantile`` over ``sum(rate())`` of
the native series, and a heatmap of the native histogram itself, which Grafana draws
from its own buckets (shown working in Grafana 10.3 and 11; an older Grafana may leave
that one panel empty).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from .promql import (
    BUCKETS,
    CALL_HISTOGRAM,
    CALLS_TOTAL,
    CHECK_HEALTHY_SERIES,
    CHECK_LATENCY_SERIES,
    CPU_USAGE_SERIES,
    DISK_TOTAL_SERIES,
    DISK_USED_SERIES,
    ERRORS_TOTAL,
    HISTOGRAM,
    IN_FLIGHT_SERIES,
    INFO_SERIES,
    MEM_AVAILABLE_SERIES,
    MEM_TOTAL_SERIES,
    MEM_USED_SERIES,
    PROC_CPU_TOTAL,
    PROC_FDS_SERIES,
    PROC_RSS_SERIES,
    PROC_THREADS_SERIES,
    QUANTILES,
    READY_AT_SERIES,
    READY_SERIES,
    REQUESTS_TOTAL,
    check_histograms,
)
from .rules import DEFAULT_JOB

__all__ = ["DASHBOARD_UID", "ROWS", "Panel", "grafana_dashboard", "render_grafana_dashboard"]

#: The dashboard's uid: importing a newer export replaces the older one.
DASHBOARD_UID = "wsgi-observe"
#: Grafana's JSON model version this is written in (Grafana 10.4 and 11 read it as is).
SCHEMA_VERSION = 39
_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_RATE = "[$__rate_interval]"
# Selectors: the job and instances chosen, and the endpoints chosen for per-endpoint panels.
_S = 'job="$job", instance=~"$instance"'
_E = _S + ', endpoint=~"$endpoint"'


@dataclass(frozen=True)
class Panel:
    """One panel: its title, what it shows, its queries (``(expr, legend)``), unit and kind.

    ``has_data``: whether the demo under load gives it data (the real-Prometheus test
    checks exactly that; failed timed calls, for one, do not happen there). ``format``:
    the targets' result format (default: ``heatmap`` for a heatmap, which turns classic
    cumulative buckets into cells; a native histogram is drawn as ``time_series``).
    """

    title: str
    description: str
    targets: tuple[tuple[str, str], ...]
    unit: str = "short"
    kind: str = "timeseries"
    has_data: bool = True
    threshold: Optional[float] = None
    options: dict[str, Any] = field(default_factory=dict)
    format: str = ""


def _quantile(q: float, by: str, histogram: str, selector: str, native: bool) -> str:
    """``histogram_quantile`` over the instances' sum: of the classic ``histogram_bucket``
    series (by ``le``), or of the native ``histogram`` (``sum`` adds them bucket by bucket)."""
    if native:
        total = f"sum by ({by}) " if by else "sum"
        series = histogram
    else:
        total = f"sum by ({by + ', ' if by else ''}le) "
        series = histogram + "_bucket"
    return f"histogram_quantile({q}, {total}(rate({series}{{{selector}}}{_RATE})))"


def _heatmap(native: bool) -> Panel:
    if native:
        return Panel(
            "Latency heatmap",
            "Requests per native histogram bucket (seconds) over time; Grafana 10.3 or "
            "later draws native histograms.",
            ((f"sum(increase({HISTOGRAM}{{{_E}}}{_RATE}))", "requests"),),
            "s",
            kind="heatmap",
            format="time_series",
        )
    return Panel(
        "Latency heatmap",
        "Requests per histogram bucket (le, seconds) over time.",
        ((f"sum by (le) (increase({BUCKETS}{{{_E}}}{_RATE}))", "{{le}}"),),
        "s",
        kind="heatmap",
    )


def _rows(
    error_ratio: float, latency_p95_s: float, histograms: str = "classic"
) -> list[tuple[str, list[Panel]]]:
    native = histograms == "native"
    source = "native histograms" if native else "histogram buckets"
    return [
        (
            "Traffic",
            [
                Panel(
                    "Request rate",
                    "Requests per second over the chosen instances.",
                    ((f"sum(rate({REQUESTS_TOTAL}{{{_S}}}{_RATE}))", "requests/s"),),
                    "reqps",
                ),
                Panel(
                    "Requests by status class",
                    "Requests per second by status class (2xx, 3xx, 4xx, 5xx).",
                    ((f"sum by (status) (rate({REQUESTS_TOTAL}{{{_S}}}{_RATE}))", "{{status}}"),),
                    "reqps",
                ),
                Panel(
                    "Requests by endpoint",
                    "Requests per second by endpoint (route template).",
                    (
                        (
                            f"sum by (endpoint) (rate({REQUESTS_TOTAL}{{{_E}}}{_RATE}))",
                            "{{endpoint}}",
                        ),
                    ),
                    "reqps",
                ),
                Panel(
                    "In flight",
                    "Requests being served at scrape time, per instance.",
                    ((f"sum by (instance) ({IN_FLIGHT_SERIES}{{{_S}}})", "{{instance}}"),),
                ),
            ],
        ),
        (
            "Latency",
            [
                Panel(
                    "p50 / p95 / p99",
                    f"Request duration quantiles from the {source}, all endpoints.",
                    tuple(
                        (_quantile(q, "", HISTOGRAM, _S, native), f"p{round(q * 100)}")
                        for q in QUANTILES
                    ),
                    "s",
                    threshold=latency_p95_s,
                ),
                Panel(
                    "p95 by endpoint",
                    "95th percentile of the request duration, per endpoint.",
                    ((_quantile(0.95, "endpoint", HISTOGRAM, _E, native), "{{endpoint}}"),),
                    "s",
                    threshold=latency_p95_s,
                ),
                _heatmap(native),
            ],
        ),
        (
            "Errors",
            [
                Panel(
                    "Error ratio",
                    "Failed requests (5xx or an exception) over all requests.",
                    (
                        (
                            f"sum(rate({ERRORS_TOTAL}{{{_S}}}{_RATE}))\n/\n"
                            f"sum(rate({REQUESTS_TOTAL}{{{_S}}}{_RATE}))",
                            "error ratio",
                        ),
                    ),
                    "percentunit",
                    threshold=error_ratio,
                ),
                Panel(
                    "Errors by endpoint",
                    "Failed requests per second, per endpoint.",
                    (
                        (
                            f"sum by (endpoint) (rate({ERRORS_TOTAL}{{{_E}}}{_RATE})) > 0",
                            "{{endpoint}}",
                        ),
                    ),
                    "reqps",
                ),
                Panel(
                    "5xx by endpoint",
                    "5xx answers per second, per endpoint and method.",
                    (
                        (
                            f"sum by (endpoint, method) "
                            f'(rate({REQUESTS_TOTAL}{{{_E}, status="5xx"}}{_RATE})) > 0',
                            "{{method}} {{endpoint}}",
                        ),
                    ),
                    "reqps",
                ),
            ],
        ),
        (
            "Readiness",
            [
                Panel(
                    "Ready",
                    "1 when the last /health/ready run was healthy, per instance. "
                    "Readiness series reflect the last probe.",
                    (
                        (
                            f"min by (instance) (last_over_time({READY_SERIES}{{{_S}}}{_RATE}))",
                            "{{instance}}",
                        ),
                    ),
                ),
                Panel(
                    "Checks healthy",
                    "1 when the check was healthy in the last run, 0 when not, per check.",
                    (
                        (
                            f"min by (check, group) "
                            f"(last_over_time({CHECK_HEALTHY_SERIES}{{{_S}}}{_RATE}))",
                            "{{group}} {{check}}",
                        ),
                    ),
                ),
                Panel(
                    "Check latency",
                    "How long each check took in the last run.",
                    (
                        (
                            f"max by (check, group) "
                            f"(last_over_time({CHECK_LATENCY_SERIES}{{{_S}}}{_RATE}))",
                            "{{group}} {{check}}",
                        ),
                    ),
                    "s",
                ),
                Panel(
                    "Age of the last readiness run",
                    "Seconds since the last /health/ready run: probes keep this small.",
                    (
                        (
                            f"time() - max by (instance) "
                            f"(last_over_time({READY_AT_SERIES}{{{_S}}}{_RATE}))",
                            "{{instance}}",
                        ),
                    ),
                    "s",
                ),
            ],
        ),
        (
            "Processes",
            [
                Panel(
                    "Resident memory per process",
                    "RSS of the gunicorn master and of each worker.",
                    ((f"{PROC_RSS_SERIES}{{{_S}}}", "{{instance}} {{role}} {{pid}}"),),
                    "bytes",
                ),
                Panel(
                    "CPU per process",
                    "CPU time per second (1 = one core) of the master and each worker.",
                    (
                        (
                            f"rate({PROC_CPU_TOTAL}{{{_S}}}{_RATE})",
                            "{{instance}} {{role}} {{pid}}",
                        ),
                    ),
                    "percentunit",
                ),
                Panel(
                    "Threads and open files",
                    "Threads and open file descriptors of each process.",
                    (
                        (f"{PROC_THREADS_SERIES}{{{_S}}}", "threads {{role}} {{pid}}"),
                        (f"{PROC_FDS_SERIES}{{{_S}}}", "fds {{role}} {{pid}}"),
                    ),
                ),
            ],
        ),
        (
            "System",
            [
                Panel(
                    "CPU usage",
                    "Machine CPU usage between scrapes.",
                    ((f"{CPU_USAGE_SERIES}{{{_S}}}", "{{instance}}"),),
                    "percentunit",
                ),
                Panel(
                    "Memory",
                    "Machine memory used, available and in total.",
                    (
                        (f"{MEM_USED_SERIES}{{{_S}}}", "used {{instance}}"),
                        (f"{MEM_AVAILABLE_SERIES}{{{_S}}}", "available {{instance}}"),
                        (f"{MEM_TOTAL_SERIES}{{{_S}}}", "total {{instance}}"),
                    ),
                    "bytes",
                ),
                Panel(
                    "Disk used",
                    "Share of the disk in use.",
                    (
                        (
                            f"{DISK_USED_SERIES}{{{_S}}} / {DISK_TOTAL_SERIES}{{{_S}}}",
                            "{{instance}}",
                        ),
                    ),
                    "percentunit",
                ),
            ],
        ),
        (
            "Timed functions",
            [
                Panel(
                    "Calls by function",
                    "Calls per second of functions timed by performance_tracking.",
                    ((f"sum by (function) (rate({CALLS_TOTAL}{{{_S}}}{_RATE}))", "{{function}}"),),
                    "ops",
                ),
                Panel(
                    "p95 by function",
                    "95th percentile of the duration of each timed function.",
                    ((_quantile(0.95, "function", CALL_HISTOGRAM, _S, native), "{{function}}"),),
                    "s",
                ),
                Panel(
                    "Failed calls by function",
                    "Calls per second that raised, per timed function.",
                    (
                        (
                            f"sum by (function) "
                            f'(rate({CALLS_TOTAL}{{{_S}, result="error"}}{_RATE})) > 0',
                            "{{function}}",
                        ),
                    ),
                    "ops",
                    has_data=False,
                ),
            ],
        ),
    ]


#: The rows' titles, in order.
ROWS = tuple(title for title, _ in _rows(0.05, 2.0))


def _panel_json(panel: Panel, panel_id: int, x: int, y: int, width: int) -> dict[str, Any]:
    targets = []
    for index, (expr, legend) in enumerate(panel.targets):
        target: dict[str, Any] = {
            "datasource": dict(_DATASOURCE),
            "expr": expr,
            "legendFormat": legend,
            "range": True,
            "refId": chr(ord("A") + index),
        }
        target_format = panel.format or ("heatmap" if panel.kind == "heatmap" else "")
        if target_format:
            target["format"] = target_format
        targets.append(target)
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.threshold is not None:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [
                {"color": "green", "value": None},
                {"color": "red", "value": panel.threshold},
            ],
        }
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    options: dict[str, Any] = {"legend": {"displayMode": "list", "placement": "bottom"}}
    if panel.kind == "heatmap":
        options = {
            "calculate": False,
            "yAxis": {"unit": panel.unit},
            "color": {"scheme": "Oranges"},
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": dict(_DATASOURCE),
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {**options, **panel.options},
        "targets": targets,
    }


def _variable(name: str, label: str, query: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": dict(_DATASOURCE),
        "query": query,
        "definition": query,
        "refresh": 2,  # on time range change
        "sort": 1,
        "hide": 0,
        **extra,
    }


def grafana_dashboard(
    job: str = DEFAULT_JOB,
    *,
    error_ratio: float = 0.05,
    latency_p95_s: float = 2.0,
    histograms: str = "classic",
) -> dict[str, Any]:
    """The dashboard's JSON model; ``job`` is the ``$job`` variable's default, the
    thresholds draw lines on the error and latency panels, and ``histograms``
    (``classic`` or ``native``) is the form of the latency histograms the panels read."""
    check_histograms(histograms)
    description = (
        "Traffic, latency, errors, readiness, processes, system and timed functions of WSGI "
        "apps wrapped by wsgi_observe (wsgi-observe export grafana-dashboard"
    )
    if histograms == "native":
        description += " --histograms native: latency from native histograms"
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for title, row in _rows(error_ratio, latency_p95_s, histograms):
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        width = 24 // len(row) if len(row) <= 4 else 8
        for index, panel in enumerate(row):
            x = (index * width) % 24
            if index and x == 0:
                y += 8
            panels.append(_panel_json(panel, panel_id, x, y, width))
            panel_id += 1
        y += 8
    return {
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
            {"type": "panel", "id": "heatmap", "name": "Heatmap", "version": ""},
        ],
        "uid": DASHBOARD_UID,
        "title": "wsgi_observe",
        "description": description + ").",
        "tags": ["wsgi_observe", "python", "wsgi"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "links": [],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "regex": "",
                    "hide": 0,
                    "refresh": 1,
                    "current": {},
                },
                _variable(
                    "job",
                    "Job",
                    f"label_values({INFO_SERIES}, job)",
                    current={"selected": True, "text": job, "value": job},
                    includeAll=False,
                    multi=False,
                ),
                _variable(
                    "instance",
                    "Instance",
                    f'label_values({INFO_SERIES}{{job="$job"}}, instance)',
                    current={"selected": True, "text": "All", "value": "$__all"},
                    includeAll=True,
                    allValue=".*",
                    multi=True,
                ),
                _variable(
                    "endpoint",
                    "Endpoint",
                    f"label_values({REQUESTS_TOTAL}{{{_S}}}, endpoint)",
                    current={"selected": True, "text": "All", "value": "$__all"},
                    includeAll=True,
                    allValue=".*",
                    multi=True,
                ),
            ]
        },
        "panels": panels,
    }


def panels_with_data(histograms: str = "classic") -> dict[str, bool]:
    """Each panel's title and whether the demo under load gives it data (for the tests)."""
    rows = _rows(0.05, 2.0, histograms)
    return {panel.title: panel.has_data for _, row in rows for panel in row}


def render_grafana_dashboard(
    job: str = DEFAULT_JOB,
    *,
    error_ratio: float = 0.05,
    latency_p95_s: float = 2.0,
    histograms: str = "classic",
) -> str:
    """The dashboard as JSON text (what ``wsgi-observe export grafana-dashboard`` prints)."""
    model = grafana_dashboard(
        job, error_ratio=error_ratio, latency_p95_s=latency_p95_s, histograms=histograms
    )
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"
