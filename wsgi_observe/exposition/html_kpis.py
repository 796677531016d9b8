"""The dashboard page's KPI table, from the ``kpis`` block of the ``/metrics`` document
(the shape :mod:`wsgi_observe.kpis` gives; any other shape is flattened)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from .html_text import _label, _text, _value
from .html_view import DashboardView

_KPI_META = ("type", "kind", "description", "help", "unit", "multiprocess_mode")
_KPI_FIGURES = ("value", "count", "avg", "p50", "p95", "p99", "max")


def _labels_text(labels: Any) -> str:
    if isinstance(labels, Mapping):
        return ", ".join(f"{key}={value}" for key, value in labels.items())
    return "" if labels is None else str(labels)


def _kpi_rows(
    name: str, value: Any, path: tuple[str, ...], rows: list[tuple[str, str, str]]
) -> None:
    """Flatten a KPI of an unknown shape into ``(name, series, figures)`` rows: a mapping
    of plain values is one row; nested mappings and lists give one row each."""
    if isinstance(value, Mapping):
        plain = {
            key: item
            for key, item in value.items()
            if not isinstance(item, (Mapping, list)) and key not in _KPI_META
        }
        series = " / ".join(path)
        labels = value.get("labels")
        if isinstance(labels, Mapping):
            series = ", ".join(filter(None, (series, _labels_text(labels))))
        if plain:
            figures = " · ".join(f"{_label(k)} <b>{_value(v)}</b>" for k, v in plain.items())
            rows.append((name, _text(series), figures))
        for key, item in value.items():
            if isinstance(item, (Mapping, list)) and key != "labels":
                _kpi_rows(name, item, (*path, str(key)), rows)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            where = path if isinstance(item, Mapping) else (*path, str(position))
            _kpi_rows(name, item, where, rows)
    else:
        rows.append((name, _text(" / ".join(path)), f"<b>{_value(value)}</b>"))


def _kpi_cells(figures: Mapping[str, Any]) -> str:
    return "".join(
        f"<td>{_value(figures[key]) if key in figures else ''}</td>" for key in _KPI_FIGURES
    )


def _kpi_title(name: Any, spec: Mapping[str, Any]) -> str:
    kind = spec.get("type") or spec.get("kind")
    unit = spec.get("unit")
    described = spec.get("description") or spec.get("help")
    meta = " ".join(f'<span class="meta">{_text(part)}</span>' for part in (kind, unit) if part)
    if described:
        meta += f'<br><span class="meta">{_text(described)}</span>'
    return f"{_text(name)} {meta}"


def _kpi_known(name: Any, spec: Mapping[str, Any]) -> Optional[list[str]]:
    """The rows of a KPI in the shape :mod:`wsgi_observe.kpis` gives (``series`` of
    ``{"labels": {...}, "value"}`` or ``{"labels": {...}, "count", "p50", ...}``), or None
    for any other shape."""
    series = spec.get("series")
    if not isinstance(series, list) or not all(
        isinstance(item, Mapping) and isinstance(item.get("labels", {}), Mapping) for item in series
    ):
        return None
    title = _kpi_title(name, spec)
    if len(series) == 1 and not series[0].get("labels"):
        return [f'<tr><td class="name">{title}</td><td></td>{_kpi_cells(series[0])}</tr>']
    totals = {key: spec[key] for key in ("total", "count") if key in spec}
    if "total" in totals:
        totals = {"value": totals["total"]}
    rows = [f'<tr><td class="name">{title}</td><td class="meta">all</td>{_kpi_cells(totals)}</tr>']
    for item in series:
        rows.append(
            f'<tr><td></td><td class="name">{_text(_labels_text(item.get("labels")))}</td>'
            f"{_kpi_cells(item)}</tr>"
        )
    return rows


def _kpis(view: DashboardView) -> str:
    kpis = view.kpis
    if not isinstance(kpis, Mapping) or not kpis:
        return (
            '<h2 id="kpis">KPIs</h2><p class="muted">No business KPIs defined '
            "(<code>wsgi_observe.kpis</code>).</p>"
        )
    rows: list[str] = []
    for name, spec in kpis.items():
        known = _kpi_known(name, spec) if isinstance(spec, Mapping) else None
        if known is not None:
            rows.extend(known)
            continue
        found: list[tuple[str, str, str]] = []
        _kpi_rows(str(name), spec, (), found)
        title = _kpi_title(name, spec) if isinstance(spec, Mapping) else _text(name)
        for position, (_kpi, series, figures) in enumerate(found or [(str(name), "", "—")]):
            rows.append(
                f'<tr><td class="name">{title if position == 0 else ""}</td>'
                f'<td class="name">{series}</td><td class="msg" colspan="7">{figures}</td></tr>'
            )
    heads = "".join(
        f"<th>{key.capitalize() if key[0] != 'p' else key}</th>" for key in _KPI_FIGURES
    )
    return (
        '<h2 id="kpis">KPIs</h2><div class="wrap"><table><thead><tr><th>KPI</th>'
        f'<th class="text">Series</th>{heads}</tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></div>"
    )
