"""Differences of cumulative snapshots: what happened between two of them."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Sequence
from operator import itemgetter, sub
from typing import Optional

from ..endpoints import OVERFLOW
from ..histograms import COUNTS_LEN
from ..kpidata import (
    kpis_delta,
)
from ..metrics import SeriesData, Snapshot

#: The Snapshot fields holding cumulative series (name -> SeriesData) that the ring keeps.
_SPACES = ("endpoints", "functions")


# Differences ------------------------------------------------------------------------------


# One dense row of HDR counts per thread, zero between uses (subtraction aligns buckets in C).
_dense = threading.local()


def _hist_minus(
    now: tuple[list[int], Sequence[int]], before: tuple[list[int], Sequence[int]]
) -> Optional[tuple[list[int], list[int]]]:
    """``now - before`` of two histograms in index order, the empty buckets left out; None
    when ``before`` has a bucket ``now`` lacks or a count went down (a reset)."""
    now_idx, now_counts = now
    old_idx, old_counts = before
    if not old_idx:
        return list(now_idx), list(now_counts)
    if now_idx == old_idx:
        aligned: Sequence[int] = old_counts
    else:
        row = getattr(_dense, "row", None)
        if row is None:
            row = _dense.row = [0] * COUNTS_LEN
        deque(map(row.__setitem__, old_idx, old_counts), maxlen=0)
        aligned = [row[i] for i in now_idx] if len(now_idx) < 2 else itemgetter(*now_idx)(row)
        deque(map(row.__setitem__, old_idx, itertools.repeat(0)), maxlen=0)
        if sum(aligned) != sum(old_counts):
            return None  # a bucket of before is not in now
    diffs = list(map(sub, now_counts, aligned))
    if diffs and min(diffs) < 0:
        return None
    return list(itertools.compress(now_idx, diffs)), [d for d in diffs if d]


def _minus(now: SeriesData, before: Optional[SeriesData]) -> SeriesData:
    """``now - before`` for one series; ``now`` itself when a counter went down (the series
    was reset: counted from zero again)."""
    if before is None:
        return now
    hist = _hist_minus(now.sorted_hist(), before.sorted_hist())
    old_by = before.by
    by = {k: v - old_by.get(k, 0) for k, v in now.by.items()}
    count, errors = now.count - before.count, now.errors - before.errors
    sum_ns = now.sum_ns - before.sum_ns
    if (
        hist is None
        or count < 0
        or errors < 0
        or sum_ns < 0
        or any(v < 0 for v in by.values())
        or any(k not in now.by for k in old_by)
    ):
        return now
    return SeriesData(
        count, errors, sum_ns, by={k: v for k, v in by.items() if v}, sorted_hist=hist
    )


def _added(parts: Sequence[SeriesData]) -> SeriesData:
    """The sum of ``parts`` (counts, labels and every HDR bucket)."""
    hist: dict[int, int] = {}
    by: dict[tuple[str, str], int] = {}
    for part in parts:
        for index, count in part.hist.items():
            hist[index] = hist.get(index, 0) + count
        for label, count in part.by.items():
            by[label] = by.get(label, 0) + count
    return SeriesData(
        count=sum(p.count for p in parts),
        errors=sum(p.errors for p in parts),
        sum_ns=sum(p.sum_ns for p in parts),
        hist=hist,
        by=by,
    )


def subtract_space(
    now: dict[str, SeriesData], before: dict[str, SeriesData]
) -> dict[str, SeriesData]:
    """Each series of ``now`` minus the same one of ``before``; series without any change
    are left out (an endpoint idle during the window does not show).

    With ``<overflow>`` in either: past ``max_endpoints`` the merged view of a server's
    processes keeps the busiest names and adds the rest into ``<overflow>`` (and the archive
    of exited workers folds its own), and which ones can change between snapshots. A name
    moved into ``<overflow>``, wholly or in part, would look reset (its whole history
    counted as the window's), one moved out would count its whole history under its name.
    So the names not in both, and those that went down, count as ``<overflow>`` on both
    sides: the window's totals and percentiles stay exact."""
    out = {}
    went_down = []
    for name, series in now.items():
        old = before.get(name)
        delta = _minus(series, old)
        if delta is series and old is not None:
            went_down.append(name)
        if delta.count:
            out[name] = delta
    if OVERFLOW not in now and OVERFLOW not in before:
        return out
    moved = (now.keys() ^ before.keys()).union(went_down)
    moved.discard(OVERFLOW)
    if not moved:
        return out
    for name in (*moved, OVERFLOW):
        out.pop(name, None)
    folded = [
        [space[name] for name in (*moved, OVERFLOW) if name in space] for space in (now, before)
    ]
    delta = _minus(_added(folded[0]), _added(folded[1]) if folded[1] else None)
    if delta.count:
        out[OVERFLOW] = delta
    return out


def window_snapshot(
    now: Snapshot, before: Optional[Snapshot], window_s: Optional[float] = None
) -> Snapshot:
    """What happened between ``before`` and ``now`` (everything, when ``before`` is None).

    Counters and histograms subtract; gauges (in-flight requests), the processes and the
    sharing state are ``now``'s; ``started_at`` stays the server's start (the uptime).
    ``window_s`` is the span covered (default: between the two snapshots' ``taken_at``).
    """
    if window_s is None:
        start = before.taken_at if before is not None else now.started_at
        window_s = max(now.taken_at - start, 0.0)
    if before is None:
        endpoints = {k: v for k, v in now.endpoints.items() if v.count}
        functions = {k: v for k, v in now.functions.items() if v.count}
    else:
        endpoints = subtract_space(now.endpoints, before.endpoints)
        functions = subtract_space(now.functions, before.functions)
    return Snapshot(
        endpoints=endpoints,
        functions=functions,
        inflight=now.inflight,
        started_at=now.started_at,
        taken_at=now.taken_at,
        processes=now.processes,
        state=now.state,
        # KPIs: counters and distributions subtract, gauges are now's.
        kpis=now.kpis if before is None else kpis_delta(now.kpis, before.kpis),
        window_s=window_s,
    )


