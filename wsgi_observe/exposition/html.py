"""The dashboard page: plain data -> one self-contained HTML document (pure functions).

The page needs nothing but itself: no script at all, one ``<style>`` element allowed by its
hash, sparklines as inline SVG (presentation attributes, never ``style=``), a ``data:``
favicon so the browser asks the app for nothing. It works with JavaScript off: sorting and
the choice of period are links the server answers, and the refresh interval the user picks
is a ``<meta http-equiv="refresh">``.

Every text that reaches the page is escaped here (endpoint names, check names and messages,
KPI names and label values, the service name: all may come from clients), and control
characters are shown as ``\\x..`` escapes first.

``render_dashboard(view)`` renders a :class:`DashboardView`; :func:`sparklines` turns a
series of short-window snapshots into the points it draws.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any, Optional
from urllib.parse import urlencode

from .html_kpis import _kpis
from .html_text import (
    _count,
    _error_class,
    _label,
    _percent,
    _rate,
    _seconds,
    _status,
    _text,
    _uptime,
    _utc,
    _value,
)
from .html_view import DashboardView, Sparkline, sparklines, step_points, summary

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "HTML_TYPE",
    "PERIODS",
    "REFRESH_CHOICES",
    "SORTS",
    "DashboardView",
    "Sparkline",
    "render_dashboard",
    "sparklines",
    "step_points",
    "summary",
]

HTML_TYPE = "text/html; charset=utf-8"
#: ``?sort=``: the endpoint table's order (each descending, ties by name).
SORTS = ("traffic", "errors", "p99")
#: ``?window=``: the period of the endpoint table, as the overview names them.
PERIODS = {"1m": 60.0, "5m": 300.0, "15m": 900.0}
#: ``?refresh=``: seconds between reloads the page offers (0: never).
REFRESH_CHOICES = (0, 5, 10, 30, 60)

_STYLE = """
:root{color-scheme:light dark;--fg:#1d2330;--muted:#5b6576;--bg:#fff;--panel:#f4f6f9;
--line:#d8dde5;--accent:#2f6fde;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e}
@media (prefers-color-scheme:dark){:root{--fg:#e4e8ee;--muted:#98a2b3;--bg:#12151b;
--panel:#1b2029;--line:#2c3340;--accent:#6ea0ff;--ok:#3fb950;--warn:#d29922;--bad:#f85149}}
*{box-sizing:border-box}
body{margin:0;padding:1rem 1.5rem 2rem;font:14px/1.4 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.4rem 1.5rem;
border-bottom:1px solid var(--line);padding-bottom:.6rem}
h1{font-size:1.35rem;margin:0}h2{font-size:1.05rem;margin:1.6rem 0 .5rem}
.muted,.meta{color:var(--muted)}.meta{font-size:.85rem}
nav{font-size:.85rem;color:var(--muted)}nav a,nav b{margin-left:.35rem}
a{color:var(--accent)}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .55rem;border-bottom:1px solid var(--line);text-align:right;
white-space:nowrap;vertical-align:middle}
th{font-weight:600;background:var(--panel)}
th:first-child,td:first-child,td.text,th.text{text-align:left}
td.name{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:normal;
word-break:break-all;max-width:32rem;text-align:left}
td.msg,td.meta{text-align:left;white-space:normal;word-break:break-word;max-width:36rem}
.wrap{overflow-x:auto}
.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad);font-weight:600}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:.7rem;font-weight:600;
border:1px solid currentColor}
svg.spark{display:block}svg.spark polyline{fill:none;stroke-width:1.5}
svg.spark .p95{stroke:var(--warn)}svg.spark .rate{stroke:var(--accent)}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;margin:0}
dt{color:var(--muted)}dd{margin:0;font-variant-numeric:tabular-nums}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(15rem,1fr));gap:1rem}
.card{background:var(--panel);border:1px solid var(--line);border-radius:.4rem;padding:.6rem .8rem}
.card h3{font-size:.9rem;margin:0 0 .4rem}
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


#: Nothing may load or run but the page's own style (by hash) and its ``data:`` favicon.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {_csp_hash(_STYLE)}; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

_SPARK_W = 120
_SPARK_H = 24


# Links -----------------------------------------------------------------------------------


def _href(view: DashboardView, **changes: Any) -> str:
    params = {"sort": view.sort, "window": view.period, "refresh": str(view.refresh)}
    params.update({key: str(value) for key, value in changes.items()})
    pairs = [(k, v) for k, v in params.items()]
    pairs.extend(view.links)
    return escape("?" + urlencode(pairs), quote=True)


def _choices(view: DashboardView, key: str, options: Sequence[tuple[str, str]], now: str) -> str:
    parts = []
    for value, label in options:
        if value == now:
            parts.append(f"<b>{_text(label)}</b>")
        else:
            parts.append(f'<a href="{_href(view, **{key: value})}">{_text(label)}</a>')
    return "".join(parts)


# Sparklines ------------------------------------------------------------------------------


def _xs(steps: int) -> tuple[str, ...]:
    """The x coordinates of ``steps`` points across a sparkline, as text."""
    dx = _SPARK_W / (steps - 1)
    return tuple(f"{i * dx:.1f}," for i in range(steps))


_XS: dict[int, tuple[str, ...]] = {}


def _spark(values: Sequence[Optional[float]], top: float, cls: str, label: str) -> str:
    """An inline SVG polyline of ``values`` (None: a gap) up to ``top``; ``label`` is
    escaped already."""
    steps = len(values)
    if steps < 2:
        return ""
    xs = _XS.get(steps)
    if xs is None:
        xs = _XS[steps] = _xs(steps)
    scale = (_SPARK_H - 2) / top if top > 0 else 0.0
    bottom = _SPARK_H - 1
    lines = []
    points: list[str] = []
    for x, value in zip(xs, values):
        if value is None:
            if len(points) > 1:
                lines.append(points)
            points = []
            continue
        points.append(f"{x}{bottom - value * scale:.1f}")
    if len(points) > 1:
        lines.append(points)
    body = "".join(f'<polyline class="{cls}" points="{" ".join(p)}"/>' for p in lines)
    return (
        f'<svg class="spark" width="{_SPARK_W}" height="{_SPARK_H}" '
        f'viewBox="0 0 {_SPARK_W} {_SPARK_H}" role="img" aria-label="{label}">'
        f"<title>{label}</title>{body}</svg>"
    )


# Sections --------------------------------------------------------------------------------

_PERIOD_LABELS = {
    "1m": "last 1 min",
    "5m": "last 5 min",
    "15m": "last 15 min",
    "all": "since start",
}


def _period_seconds(view: DashboardView, period: str) -> float:
    seconds = PERIODS.get(period)
    if seconds is not None:
        document = view.documents.get(period) or {}
        shown = document.get("window_seconds")
        return float(shown) if isinstance(shown, (int, float)) and shown > 0 else seconds
    document = view.documents.get("all") or {}
    uptime = (document.get("application") or {}).get("uptime_seconds")
    return float(uptime) if isinstance(uptime, (int, float)) else 0.0


def _overview(view: DashboardView) -> str:
    rows = []
    for period in ("1m", "5m", "15m", "all"):
        label = _PERIOD_LABELS[period]
        document = view.documents.get(period)
        if document is None:
            rows.append(
                f'<tr><td>{label}</td><td colspan="7" class="text muted">not kept</td></tr>'
            )
            continue
        application = document.get("application") or {}
        requests = application.get("requests") or {}
        times = application.get("response_times") or {}
        total = requests.get("total")
        rate = requests.get("error_rate")
        rows.append(
            f"<tr><td>{label}</td><td>{_count(total)}</td>"
            f"<td>{_rate(total, _period_seconds(view, period))}</td>"
            f"<td>{_count(requests.get('errors'))}</td>"
            f"<td{_error_class(rate)}>{_percent(rate)}</td>"
            f"<td>{_seconds(times.get('p50'))}</td><td>{_seconds(times.get('p95'))}</td>"
            f"<td>{_seconds(times.get('p99'))}</td></tr>"
        )
    return (
        '<h2 id="overview">Overview</h2><div class="wrap"><table><thead><tr><th>Period</th>'
        "<th>Requests</th><th>Req/s</th><th>Errors</th><th>Error rate</th><th>p50</th>"
        "<th>p95</th><th>p99</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
    )


def _sort_key(sort: str) -> Any:
    if sort == "errors":
        return lambda item: (-item[1].get("errors", 0), -item[1].get("error_rate", 0), item[0])
    if sort == "p99":
        return lambda item: (-item[1].get("p99", 0), item[0])
    return lambda item: (-item[1].get("requests", 0), item[0])


_EMPTY: dict[str, Any] = {}


def _endpoints(view: DashboardView) -> str:
    period = view.period if view.period in view.documents else "all"
    document = view.documents.get(period) or {}
    shown = document.get("endpoints") or {}
    names = set(shown)
    names.update((view.documents.get("all") or {}).get("endpoints") or ())
    rows_data = sorted(
        ((name, shown.get(name) or _EMPTY) for name in names), key=_sort_key(view.sort)
    )
    seconds = _period_seconds(view, period)
    steps = max((len(line.rate) for line in view.sparklines.values()), default=0)
    minutes = view.spark_step_s * (steps - 1) / 60 if steps > 1 else 15
    # An endpoint without a request in any step: a flat line at 0 over the same steps.
    idle = None
    if steps:
        model = next(iter(view.sparklines.values())).rate
        idle = Sparkline([None] * steps, [None if v is None else 0.0 for v in model])
    span = f"{minutes:.0f} min" if minutes >= 1 else f"{minutes * 60:.0f} s"
    rows = []
    for name, data in rows_data:
        requests = data.get("requests", 0)
        rate = data.get("error_rate")
        line = view.sparklines.get(name) or idle
        text = _text(name)
        if line is not None:
            p95_top = max([v for v in line.p95 if v is not None], default=0.0)
            label = f"p95 of {text}, up to {_seconds(p95_top) if p95_top else '—'}"
            p95 = _spark(line.p95, p95_top, "p95", label)
            top_rate = max([v for v in line.rate if v is not None], default=0.0)
            label = f"requests/s of {text}, up to {top_rate:.3g}"
            per_s = _spark(line.rate, top_rate, "rate", label)
        else:
            p95 = per_s = ""
        has_times = bool(requests)
        rows.append(
            f'<tr><td class="name">{text}</td><td>{_count(requests)}</td>'
            f"<td>{_rate(requests, seconds)}</td><td>{_count(data.get('errors', 0))}</td>"
            f"<td{_error_class(rate)}>{_percent(rate) if has_times else '—'}</td>"
            f"<td>{_seconds(data.get('p50')) if has_times else '—'}</td>"
            f"<td>{_seconds(data.get('p95')) if has_times else '—'}</td>"
            f"<td>{_seconds(data.get('p99')) if has_times else '—'}</td>"
            f"<td>{p95}</td><td>{per_s}</td></tr>"
        )
    if not rows:
        rows.append('<tr><td colspan="10" class="text muted">no requests yet</td></tr>')

    def head(key: str, label: str) -> str:
        if view.sort == key:
            return f'<th aria-sort="descending">{label} ▼</th>'
        return f'<th><a href="{_href(view, sort=key)}">{label}</a></th>'

    periods: list[tuple[str, str]] = [
        (p, _PERIOD_LABELS[p]) for p in ("1m", "5m", "15m") if p in view.documents
    ]
    periods.append(("all", _PERIOD_LABELS["all"]))
    sorts = [("traffic", "traffic"), ("errors", "errors"), ("p99", "p99")]
    return (
        f'<h2 id="endpoints">Endpoints</h2><nav>Period:{_choices(view, "window", periods, period)}'
        f" · Sort by:{_choices(view, 'sort', sorts, view.sort)}</nav>"
        '<div class="wrap"><table><thead><tr><th>Endpoint</th>'
        + head("traffic", "Requests")
        + "<th>Req/s</th>"
        + head("errors", "Errors")
        + "<th>Error rate</th><th>p50</th><th>p95</th>"
        + head("p99", "p99")
        + f"<th>p95, last {span}</th><th>Req/s, last {span}</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
    )


def _functions(view: DashboardView) -> str:
    functions = (view.documents.get("all") or {}).get("functions")
    if not isinstance(functions, Mapping) or not functions:
        return ""
    rows = []
    for name, data in functions.items():
        if not isinstance(data, Mapping):
            continue
        rate = data.get("error_rate")
        rows.append(
            f'<tr><td class="name">{_text(name)}</td><td>{_count(data.get("calls"))}</td>'
            f"<td>{_count(data.get('errors'))}</td><td{_error_class(rate)}>{_percent(rate)}</td>"
            f"<td>{_seconds(data.get('p50'))}</td><td>{_seconds(data.get('p95'))}</td>"
            f"<td>{_seconds(data.get('p99'))}</td></tr>"
        )
    return (
        '<h2 id="functions">Timed functions</h2><div class="wrap"><table><thead><tr>'
        "<th>Function</th><th>Calls</th><th>Errors</th><th>Error rate</th><th>p50</th>"
        "<th>p95</th><th>p99</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>"
    )


def _check_rows(checks: Mapping[str, Any], prefix: str = "") -> list[str]:
    rows = []
    for name, result in checks.items():
        if not isinstance(result, Mapping):
            continue
        label = f"{prefix}{name}"
        if not isinstance(result.get("status"), str):  # a group: its members
            rows.extend(_check_rows(result, prefix=f"{label} / "))
            continue
        latency = result.get("latency_ms")
        required = result.get("required", True) is not False
        rows.append(
            f'<tr><td class="name">{_text(label)}</td><td class="text">'
            f"{_status(result.get('status'))}</td>"
            f'<td class="text">{"required" if required else "optional"}</td>'
            f"<td>{_count(latency) + ' ms' if isinstance(latency, (int, float)) else '—'}</td>"
            f'<td class="msg">{_text(result.get("message") or "")}</td></tr>'
        )
    return rows


def _readiness(view: DashboardView) -> str:
    result = view.readiness
    if not isinstance(result, Mapping):
        return (
            '<h2 id="readiness">Readiness</h2><p class="muted">No readiness probe has run yet '
            "(the page shows the last result of <code>/health/ready</code>).</p>"
        )
    checks = result.get("checks")
    rows = _check_rows(checks) if isinstance(checks, Mapping) else []
    if not rows:
        rows.append('<tr><td colspan="5" class="text muted">no checks configured</td></tr>')
    return (
        f'<h2 id="readiness">Readiness</h2><p>{_status(result.get("status"))} '
        f'<span class="meta">last probe {_text(result.get("timestamp", "—"))}</span></p>'
        '<div class="wrap"><table><thead><tr><th>Check</th><th>Status</th><th>Kind</th>'
        "<th>Latency</th><th>Message</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    )


def _workers(view: DashboardView) -> str:
    rows = []
    now = view.generated_at
    for info in view.processes:
        if not isinstance(info, Mapping):
            continue
        cpu = info.get("cpu_seconds")
        started = info.get("started_at")
        average = "—"
        if isinstance(cpu, (int, float)) and isinstance(started, (int, float)) and now > started:
            average = f"{cpu / (now - started) * 100:.1f} %"
        rows.append(
            f'<tr><td>{_text(info.get("pid", "—"))}</td><td class="text">'
            f"{_text(info.get('role', ''))}</td>"
            f"<td>{_count(info.get('rss_mb'))} MB</td><td>{_count(cpu)} s</td><td>{average}</td>"
            f"<td>{_count(info.get('threads'))}</td><td>{_count(info.get('open_fds'))}</td>"
            f"<td>{_uptime(now - started) if isinstance(started, (int, float)) else '—'}</td>"
            "</tr>"
        )
    if not rows:
        rows.append('<tr><td colspan="8" class="text muted">no process information</td></tr>')
    return (
        '<h2 id="workers">Workers</h2><div class="wrap"><table><thead><tr><th>PID</th>'
        "<th>Role</th><th>RSS</th><th>CPU time</th><th>CPU (average)</th><th>Threads</th>"
        "<th>Open files</th><th>Up</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    )


def _system(view: DashboardView) -> str:
    system = view.system
    if not isinstance(system, Mapping) or not system:
        return ""
    cards = []
    for group, figures in system.items():
        if isinstance(figures, Mapping):
            items = "".join(
                f"<dt>{_label(key)}</dt><dd>{_value(value)}</dd>"
                for key, value in figures.items()
                if not isinstance(value, (Mapping, list))
            )
        else:
            items = f"<dt>value</dt><dd>{_value(figures)}</dd>"
        cards.append(f'<div class="card"><h3>{_label(group)}</h3><dl>{items}</dl></div>')
    return '<h2 id="system">System</h2><div class="cards">' + "".join(cards) + "</div>"


def render_dashboard(view: DashboardView) -> bytes:
    """The whole page for ``view``, as UTF-8 bytes."""
    everything = view.documents.get("all") or {}
    uptime = (everything.get("application") or {}).get("uptime_seconds")
    service = _text(view.service)
    refresh = (
        f'<meta http-equiv="refresh" content="{int(view.refresh)}">' if view.refresh > 0 else ""
    )
    refreshes = [(str(s), f"{s}s" if s else "off") for s in REFRESH_CHOICES]
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">',
        refresh,
        f"<title>{service} · wsgi_observe</title>"
        '<link rel="icon" href="data:,">'
        f"<style>{_STYLE}</style></head><body><header>"
        f'<h1 id="service">{service}</h1>'
        f'<span>version <b id="version">{_text(view.version)}</b></span>'
        f'<span>up <b id="uptime">{_uptime(uptime)}</b></span>'
        f'<span class="meta">{_utc(view.generated_at)}</span>'
        f"<nav>Refresh:{_choices(view, 'refresh', refreshes, str(view.refresh))}</nav>"
        "</header><main>",
        _overview(view),
        _endpoints(view),
        _functions(view),
        _readiness(view),
        _workers(view),
        _system(view),
        _kpis(view),
        '</main><p class="meta">wsgi_observe · the same numbers as <code>/metrics</code> '
        "(JSON), exact across workers</p></body></html>",
    ]
    return "".join(parts).encode("utf-8", "replace")
