"""Business KPIs in every format: the JSON ``kpis`` block and their own metric families.

A counter is the family ``<name>`` (samples ``<name>_total``), a gauge ``<name>``, and a
distribution the histogram ``<name>_<unit>`` (cumulative counts at its bounds, exact
``_sum`` and ``_count``) plus the summary ``<name>_quantile_<unit>`` of its exact p50, p95
and p99 since start across all workers, like the request latencies. A histogram bucket
``le=B`` counts the values whose HDR bucket lies wholly at or below ``B``; whole units up to
255 are their own HDR bucket, so there it is exactly the values ``<= B``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from itertools import accumulate
from typing import Any, Union

from ..histograms import bucket_index, highest_equivalent, values_at
from ..kpidata import KIND_COUNTER, KIND_DISTRIBUTION, KpiFamily, KpiSeries
from .families import QUANTILES, Family

__all__ = ["kpi_distribution", "kpi_families", "kpis_json"]

_PERCENTS = tuple(q * 100.0 for q in QUANTILES)
_NAN = float("nan")


def _threshold(bound: float) -> int:
    """The first HDR index holding a value above ``bound``."""
    whole = int(bound)
    index = bucket_index(whole)
    return index + 1 if highest_equivalent(index) <= bound else index


def kpi_distribution(series: KpiSeries, bounds: tuple[float, ...]) -> tuple[list[int], list[float]]:
    """Cumulative counts at each bound (``+Inf`` last) and the quantiles (NaN when empty)."""
    indexes = sorted(series.hist)
    running = list(accumulate(series.hist[i] for i in indexes))
    total = running[-1] if running else 0
    cumulative = []
    for bound in bounds:
        below = bisect_left(indexes, _threshold(bound))
        cumulative.append(running[below - 1] if below else 0)
    cumulative.append(total)
    if total <= 0:
        return cumulative, [_NAN] * len(_PERCENTS)
    quantiles = []
    for percent in _PERCENTS:
        goal = max(int(percent * total / 100 + 0.5), 1)
        quantiles.append(float(highest_equivalent(indexes[bisect_left(running, goal)])))
    return cumulative, quantiles


def _number(value: Union[int, float]) -> Union[int, float]:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def kpis_json(kpis: Mapping[str, KpiFamily]) -> dict[str, Any]:
    """The ``kpis`` block of the JSON document: each KPI with its series."""
    out: dict[str, Any] = {}
    for name in sorted(kpis):
        family = kpis[name]
        entry: dict[str, Any] = {"type": family.kind, "help": family.help}
        if family.unit:
            entry["unit"] = family.unit
        if family.mode:
            entry["multiprocess_mode"] = family.mode
        entry["labels"] = list(family.labels)
        series_out = []
        total: Union[int, float] = 0
        for labels, series in family.series.items():
            item: dict[str, Any] = {"labels": dict(zip(family.labels, labels))}
            if family.kind == KIND_DISTRIBUTION:
                indexes = sorted(series.hist)
                counts = [series.hist[i] for i in indexes]
                count = sum(counts)
                p50, p95, p99, top = values_at(indexes, counts, (50.0, 95.0, 99.0, 100.0))
                item.update(
                    count=count,
                    sum=_number(round(series.sum, 3)),
                    avg=round(series.sum / count, 6) if count else 0.0,
                    p50=p50,
                    p95=p95,
                    p99=p99,
                    max=top,
                )
                total += count
            else:
                item["value"] = series.value
                total += series.value
            series_out.append(item)
        if family.kind == KIND_COUNTER:
            entry["total"] = total
        elif family.kind == KIND_DISTRIBUTION:
            entry["count"] = total
        entry["series"] = series_out
        out[name] = entry
    return out


def kpi_families(
    kpis: Mapping[str, KpiFamily],
) -> list[tuple[Family, KpiFamily, str]]:
    """The metric families of ``kpis``, in output order: ``(family, kpi, role)`` with
    ``role`` ``"value"`` (counter, gauge), ``"histogram"`` or ``"quantiles"``."""
    out: list[tuple[Family, KpiFamily, str]] = []
    for name in sorted(kpis):
        kpi = kpis[name]
        if not kpi.series:
            continue
        if kpi.kind == KIND_DISTRIBUTION:
            out.append((Family(name, "histogram", kpi.help, kpi.unit), kpi, "histogram"))
            quantile_name = _quantile_name(kpi)
            help_text = f"{kpi.help} (quantiles since start, all workers)".strip()
            out.append((Family(quantile_name, "summary", help_text, kpi.unit), kpi, "quantiles"))
        else:
            out.append((Family(name, kpi.kind, kpi.help), kpi, "value"))
    out.sort(key=lambda item: item[0].name)
    return out


def _quantile_name(kpi: KpiFamily) -> str:
    if kpi.unit and kpi.name.endswith("_" + kpi.unit):
        return f"{kpi.name[: -len(kpi.unit) - 1]}_quantile_{kpi.unit}"
    return f"{kpi.name}_quantile"
