"""Snapshot -> Prometheus text format 0.0.4 and OpenMetrics 1.0.0 (pure functions).

Both formats carry the same families and the same samples (:mod:`.families` says which
and what they mean); only the metadata lines differ (OpenMetrics names a counter family
without ``_total``, has ``# UNIT`` and an ``info`` type, and ends with ``# EOF``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..kpidata import KpiFamily
from ..metrics import SeriesData, Snapshot
from .families import (
    BUCKET_BOUNDS,
    FAMILIES,
    QUANTILES,
    Family,
    Sample,
    SeriesFamilies,
    collect,
    distribution,
    series_spaces,
)
from .kpis import kpi_distribution, kpi_families

__all__ = [
    "BUCKET_BOUNDS",
    "FAMILIES",
    "QUANTILES",
    "Family",
    "render_openmetrics",
    "render_prometheus",
]

_LE = (*(repr(bound) for bound in BUCKET_BOUNDS), "+Inf")  # canonical: "0.001", "1.0", "+Inf"
_QUANTILE_TEXT = tuple(repr(q) for q in QUANTILES)

Bodies = dict[Family, list[str]]


def render_prometheus(snapshot: Snapshot, extras: Mapping[str, Any]) -> bytes:
    """The Prometheus text format 0.0.4 (``text/plain; version=0.0.4``) of ``snapshot``.

    ``extras``: ``service``, ``version``, ``system`` (the JSON ``system`` block or None) and
    ``readiness`` (the last ``/health/ready`` body or None).
    """
    return _render(snapshot, extras, openmetrics=False)


def render_openmetrics(snapshot: Snapshot, extras: Mapping[str, Any]) -> bytes:
    """The OpenMetrics 1.0.0 text (``application/openmetrics-text``) of ``snapshot``."""
    return _render(snapshot, extras, openmetrics=True)


def _render(snapshot: Snapshot, extras: Mapping[str, Any], *, openmetrics: bool) -> bytes:
    bodies: Bodies = {
        family: _lines(family, samples) for family, samples in collect(snapshot, extras).items()
    }
    for spec, space in series_spaces(snapshot):
        if space:
            _series(bodies, space, spec)
    out: list[str] = []
    for family in FAMILIES:
        body = bodies.get(family)
        if body is None:
            continue
        out.append(family.om_header if openmetrics else family.text_header)
        out.extend(body)
    for family, kpi, role in kpi_families(snapshot.kpis):
        out.append(family.om_header if openmetrics else family.text_header)
        out.extend(_kpi_lines(family, kpi, role))
    if openmetrics:
        out.append("# EOF\n")
    text = "".join(out)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (never from PEP 3333 paths, which are latin-1) cannot be UTF-8.
        return text.encode("utf-8", "replace")


# Values and labels ----------------------------------------------------------------------


def _escape(value: str) -> str:
    """A label value escaped for both formats: backslash, double quote and newline."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _number(value: float) -> str:
    """Go-style float text: ``+Inf``, ``-Inf``, ``NaN``; integers stay integers."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _lines(family: Family, samples: list[Sample]) -> list[str]:
    name = family.sample
    out = []
    for labels, value in samples:
        if labels:
            inner = ",".join(f'{key}="{_escape(text)}"' for key, text in labels)
            out.append(f"{name}{{{inner}}} {_number(value)}\n")
        else:
            out.append(f"{name} {_number(value)}\n")
    return out


# Per-endpoint and per-function families ----------------------------------------------------


def _series(bodies: Bodies, space: Mapping[str, SeriesData], spec: SeriesFamilies) -> None:
    label, counts, duration, quantiles, errors = (
        spec.label,
        spec.counts,
        spec.duration,
        spec.quantiles,
        spec.errors,
    )
    count_lines: list[str] = []
    error_lines: list[str] = []
    bucket_lines: list[str] = []
    quantile_lines: list[str] = []
    count_name = counts.sample
    bucket_name = duration.name + "_bucket"
    sum_name = duration.name + "_sum"
    total_name = duration.name + "_count"
    quantile_name = quantiles.name
    is_function = errors is None
    for name in sorted(space):
        series = space[name]
        labels = f'{label}="{_escape(name)}"'
        for (first, second), count in sorted(series.by.items()):
            if is_function:
                extra = f'result="{_escape(first)}"'
            else:
                extra = f'method="{_escape(first)}",status="{_escape(second)}"'
            count_lines.append(f"{count_name}{{{labels},{extra}}} {count}\n")
        if errors is not None:
            error_lines.append(f"{errors.sample}{{{labels}}} {series.errors}\n")
        cumulative, quantile_values = distribution(series)
        total = cumulative[-1]
        prefix = f'{bucket_name}{{{labels},le="'
        for le, count in zip(_LE, cumulative):
            bucket_lines.append(f'{prefix}{le}"}} {count}\n')
        bucket_lines.append(f"{sum_name}{{{labels}}} {_number(series.sum_ns / 1e9)}\n")
        bucket_lines.append(f"{total_name}{{{labels}}} {total}\n")
        for text, value in zip(_QUANTILE_TEXT, quantile_values):
            shown = repr(value) if value == value else "NaN"  # NaN: no observations yet
            quantile_lines.append(f'{quantile_name}{{{labels},quantile="{text}"}} {shown}\n')
    bodies[counts] = count_lines
    if errors is not None:
        bodies[errors] = error_lines
    bodies[duration] = bucket_lines
    bodies[quantiles] = quantile_lines


# Business KPIs ---------------------------------------------------------------------------------


def _kpi_lines(family: Family, kpi: KpiFamily, role: str) -> list[str]:
    """The samples of one KPI family (see :mod:`.kpis`)."""
    out: list[str] = []
    names = kpi.labels
    name = family.sample
    les = (*(_number(float(bound)) for bound in kpi.buckets), "+Inf")
    for values, series in kpi.series.items():
        inner = ",".join(f'{key}="{_escape(text)}"' for key, text in zip(names, values))
        if role == "value":
            labels = f"{{{inner}}}" if inner else ""
            out.append(f"{name}{labels} {_number(series.value)}\n")
            continue
        cumulative, quantiles = kpi_distribution(series, kpi.buckets)
        labels = f"{{{inner}}}" if inner else ""
        if role == "histogram":
            prefix = f"{name}_bucket{{{inner}," if inner else f"{name}_bucket{{"
            for le, count in zip(les, cumulative):
                out.append(f'{prefix}le="{le}"}} {count}\n')
        else:
            prefix = f"{name}{{{inner}," if inner else f"{name}{{"
            for q, value in zip(_QUANTILE_TEXT, quantiles):
                out.append(f'{prefix}quantile="{q}"}} {_number(value)}\n')
        out.append(f"{name}_sum{labels} {_number(float(series.sum))}\n")
        out.append(f"{name}_count{labels} {cumulative[-1]}\n")
    return out
