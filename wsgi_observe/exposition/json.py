"""Snapshot -> the guide's ``/metrics`` JSON document (pure functions of plain data)."""

from __future__ import annotations

from typing import Any, Optional

import orjson

from .._time import iso_utc
from ..histograms import merge_all, values_at
from ..metrics import STATUS_CLASSES, SeriesData, Snapshot
from .kpis import kpis_json

__all__ = ["json_document", "render_json"]

_PERCENTILES = (50.0, 95.0, 99.0, 100.0)


def _status_classes(by: dict[tuple[str, str], int]) -> dict[str, int]:
    out = dict.fromkeys(STATUS_CLASSES, 0)
    for (_method, cls), count in by.items():
        out[cls] = out.get(cls, 0) + count
    return out


def _methods(by: dict[tuple[str, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (method, _cls), count in by.items():
        out[method] = out.get(method, 0) + count
    return out


def _series_json(series: SeriesData, *, with_status: bool) -> dict[str, Any]:
    indexes, counts = series.sorted_hist()
    p50, p95, p99, top = values_at(indexes, counts, _PERCENTILES)
    count = series.count
    data: dict[str, Any] = {
        "requests" if with_status else "calls": count,
        "errors": series.errors,
        "error_rate": round(series.errors / count, 6) if count else 0.0,
        "avg_response_time" if with_status else "avg_duration": (
            round(series.sum_ns / count / 1e9, 6) if count else 0.0
        ),
        # us -> s: an HDR value is a whole number of microseconds, exact at 6 decimals
        "p50": p50 / 1e6,
        "p95": p95 / 1e6,
        "p99": p99 / 1e6,
        "max": top / 1e6,
    }
    if with_status:
        data["status"] = _status_classes(series.by)
        data["methods"] = _methods(series.by)
    return data


def json_document(
    snapshot: Snapshot,
    *,
    service: str,
    version: str,
    system: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The guide's ``/metrics`` document (plus per-endpoint percentiles and status classes)."""
    total = errors = sum_ns = 0
    by: dict[tuple[str, str], int] = {}
    endpoints: dict[str, Any] = {}
    for name in sorted(snapshot.endpoints):
        series = snapshot.endpoints[name]
        total += series.count
        errors += series.errors
        sum_ns += series.sum_ns
        for label, count in series.by.items():
            by[label] = by.get(label, 0) + count
        endpoints[name] = _series_json(series, with_status=True)
    merged = snapshot.overall
    if merged is None:
        merged = merge_all(series.sorted_hist() for series in snapshot.endpoints.values())
    p50, p95, p99, top = values_at(*merged, _PERCENTILES)
    document: dict[str, Any] = {
        "timestamp": iso_utc(snapshot.taken_at),
        "service": service,
        "version": version,
    }
    if snapshot.window_s is not None:
        # A recent window (/metrics?window=): the span it covers, and when it began.
        document["window_seconds"] = round(snapshot.window_s, 3)
        document["window_start"] = iso_utc(snapshot.taken_at - snapshot.window_s)
    document.update(
        {
            "application": {
                "requests": {
                    "total": total,
                    "errors": errors,
                    "error_rate": round(errors / total, 6) if total else 0.0,
                    "in_flight": snapshot.inflight,
                    "status": _status_classes(by),
                },
                "response_times": {
                    "average": round(sum_ns / total / 1e9, 6) if total else 0.0,
                    "p50": p50 / 1e6,
                    "p95": p95 / 1e6,
                    "p99": p99 / 1e6,
                    "max": top / 1e6,
                },
                "uptime_seconds": round(max(snapshot.taken_at - snapshot.started_at, 0.0), 3),
            },
            "endpoints": endpoints,
        }
    )
    if snapshot.functions:
        document["functions"] = {
            name: _series_json(snapshot.functions[name], with_status=False)
            for name in sorted(snapshot.functions)
        }
    if snapshot.kpis:
        document["kpis"] = kpis_json(snapshot.kpis)
    if system is not None:
        document["system"] = system
    if snapshot.processes:
        document["processes"] = snapshot.processes
    if snapshot.state.get("shared") or snapshot.state.get("problem"):
        document["multiprocess"] = snapshot.state
    return document


def render_json(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)
