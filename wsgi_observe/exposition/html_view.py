"""What the dashboard page shows, as plain data: the view, the sparklines' points from
a series of short-window snapshots, and the overall figures of a document."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Optional

from ..histograms import highest_equivalent, merge_all, values_at


@dataclass
class Sparkline:
    """One endpoint over the last minutes, step by step: p95 (seconds) and request rate
    (per second); None where there is nothing to show (no request for p95, before the
    server started for both)."""

    p95: list[Optional[float]]
    rate: list[Optional[float]]


@dataclass
class DashboardView:
    """Everything the page shows, as plain data.

    ``documents`` maps ``"1m"``, ``"5m"``, ``"15m"`` and ``"all"`` (since start) to
    ``/metrics`` JSON documents (a period missing: not available); ``period`` picks the
    endpoint table's. ``links`` are query parameters every link of the page keeps (a token
    that came in the query). Example::

        view = DashboardView("CRM API", "1.0.0", {"all": json_document(snapshot, ...)})
        view.sort = "p99"
        html = render_dashboard(view)  # bytes, UTF-8
    """

    service: str
    version: str
    documents: dict[str, dict[str, Any]]
    sort: str = "traffic"
    period: str = "all"
    refresh: int = 0
    sparklines: dict[str, Sparkline] = field(default_factory=dict)
    spark_step_s: float = 60.0
    readiness: Optional[Mapping[str, Any]] = None
    processes: Sequence[Mapping[str, Any]] = ()
    system: Optional[Mapping[str, Any]] = None
    kpis: Optional[Mapping[str, Any]] = None
    links: Sequence[tuple[str, str]] = ()
    generated_at: float = field(default_factory=time.time)


def step_points(snapshot: Any) -> dict[str, tuple[int, Optional[float]]]:
    """Each endpoint's request count and p95 (seconds; None without requests) in one step
    of a series."""
    out: dict[str, tuple[int, Optional[float]]] = {}
    for name, data in snapshot.endpoints.items():
        count = data.count
        p95 = None
        if count > 0:
            # values_at(..., (95.0,)), inlined: this runs steps x endpoints times.
            indexes, counts = data.sorted_hist()
            if indexes:
                running = list(accumulate(counts))
                at = bisect_left(running, int(95.0 * running[-1] / 100 + 0.5) or 1)
                last = len(indexes) - 1
                p95 = highest_equivalent(indexes[at if at < last else last]) / 1e6
        out[name] = (count, p95)
    return out


def sparklines(
    series: Sequence[tuple[float, Any]],
    step_s: float,
    steps: int = 0,
    memo: Optional[dict[int, tuple[Any, dict[str, tuple[int, Optional[float]]]]]] = None,
) -> dict[str, Sparkline]:
    """Per endpoint, p95 and request rate of each step of ``series``: ``(end time,
    Snapshot of that step alone)`` pairs, oldest first; a step's rate is over its
    ``window_s`` when it has one (the newest step is shorter), else ``step_s``. Every
    endpoint gets ``steps`` points (at least one per step; a young server's missing steps
    come first, as None), a step it had no request in: rate 0, no p95.

    ``memo`` (by the step's identity) keeps each step's points between calls: a ring hands
    out the same object for a step that is over, so only the newest step is computed again.
    It is left holding exactly the steps of ``series``."""
    steps = max(steps, len(series))
    first = steps - len(series)
    out: dict[str, Sparkline] = {}
    kept: dict[int, tuple[Any, dict[str, tuple[int, Optional[float]]]]] = {}
    for position, (_at, snapshot) in enumerate(series, start=first):
        seconds = getattr(snapshot, "window_s", None) or step_s
        known = memo.get(id(snapshot)) if memo is not None else None
        if known is not None and known[0] is snapshot:
            points = known[1]
        else:
            points = step_points(snapshot)
        kept[id(snapshot)] = (snapshot, points)  # the snapshot too: its id stays its own
        for name, (count, p95) in points.items():
            line = out.get(name)
            if line is None:
                rate: list[Optional[float]] = [None] * first
                rate.extend([0.0] * (steps - first))
                line = out[name] = Sparkline([None] * steps, rate)
            if count > 0:
                line.rate[position] = count / seconds
                line.p95[position] = p95
    if memo is not None:
        memo.clear()
        memo.update(kept)
    return out


_TARGETS = (50.0, 95.0, 99.0)


def summary(snapshot: Any, *, endpoints: bool = True, seconds: float = 0.0) -> dict[str, Any]:
    """What the page shows of a window's ``Snapshot``, in the ``/metrics`` document's shape
    (requests, errors, error rate and p50/p95/p99, overall and, with ``endpoints``, per
    endpoint), computed without the rest of that document."""
    total = errors = 0
    shown: dict[str, Any] = {}
    for name, series in snapshot.endpoints.items():
        count = series.count
        total += count
        errors += series.errors
        if endpoints and count > 0:
            indexes, counts = series.sorted_hist()
            p50, p95, p99 = values_at(indexes, counts, _TARGETS)
            shown[name] = {
                "requests": count,
                "errors": series.errors,
                "error_rate": round(series.errors / count, 6),
                "p50": p50 / 1e6,
                "p95": p95 / 1e6,
                "p99": p99 / 1e6,
            }
    merged = snapshot.overall
    if merged is None:
        merged = merge_all(series.sorted_hist() for series in snapshot.endpoints.values())
    p50, p95, p99 = values_at(merged[0], merged[1], _TARGETS)
    return {
        "window_seconds": seconds,
        "application": {
            "requests": {
                "total": total,
                "errors": errors,
                "error_rate": round(errors / total, 6) if total else 0.0,
            },
            "response_times": {"p50": p50 / 1e6, "p95": p95 / 1e6, "p99": p99 / 1e6},
        },
        "endpoints": shown,
    }
