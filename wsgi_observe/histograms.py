"""HDR histogram arithmetic for latencies, in microseconds, kept as sparse bucket counts.

The bucket layout is exactly HdrHistogram's (``hdrh.histogram.HdrHistogram(1, MAX_US, 2)``):
lowest discernible value 1 us, two significant figures (every value within 1%). Recording
on the request path is the inline form of ``bucket_index`` below (a ``bit_length`` and two
shifts) into a plain dict, because ``HdrHistogram.record_value`` costs several times more
per call. Counts merge exactly by adding them bucket by bucket, which is what makes
percentiles across gunicorn workers true. :func:`to_hdr` rebuilds a real ``HdrHistogram``
for its encoded form and for tools that read it.

Nothing here knows about WSGI.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
from operator import add, itemgetter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

__all__ = [
    "MAX_US",
    "SIGNIFICANT_FIGURES",
    "bucket_index",
    "highest_equivalent",
    "lowest_equivalent",
    "merge",
    "merge_all",
    "percentiles",
    "percentiles_sorted",
    "values_at",
    "to_hdr",
]

SIGNIFICANT_FIGURES = 2
#: 2 * 10**2 values need single-unit resolution: 256 sub-buckets, half of them 128 (2**7).
_SUB_BUCKET_MASK = 255
_HALF_MAGNITUDE = 7
#: Values above one hour are recorded as one hour.
MAX_US = 3_600_000_000
#: Number of buckets HdrHistogram(1, MAX_US, 2) has (the highest index is below this).
COUNTS_LEN = 3328


def bucket_index(value_us: int) -> int:
    """The HdrHistogram counts index of ``value_us`` (clamped to ``0..MAX_US``)."""
    if value_us < 0:
        value_us = 0
    elif value_us > MAX_US:
        value_us = MAX_US
    shift = (value_us | _SUB_BUCKET_MASK).bit_length() - 8
    return (shift << _HALF_MAGNITUDE) + (value_us >> shift)


def lowest_equivalent(index: int) -> int:
    """The smallest value (us) that lands in bucket ``index``."""
    if index < 256:
        return index
    shift = (index >> _HALF_MAGNITUDE) - 1
    return (index - (shift << _HALF_MAGNITUDE)) << shift


def highest_equivalent(index: int) -> int:
    """The largest value (us) that lands in bucket ``index`` (HdrHistogram reports this)."""
    if index < 256:
        return index
    shift = (index >> _HALF_MAGNITUDE) - 1
    return ((index - (shift << _HALF_MAGNITUDE)) << shift) + (1 << shift) - 1


def merge(into: dict[int, int], counts: Mapping[int, int]) -> dict[int, int]:
    """Add ``counts`` into ``into`` bucket by bucket (exact) and return ``into``."""
    for index, count in counts.items():
        into[index] = into.get(index, 0) + count
    return into


def percentiles(counts: Mapping[int, int], wanted: Iterable[float]) -> dict[float, int]:
    """Values (us) at the ``wanted`` percentiles (0-100), as HdrHistogram computes them.

    The answer for each percentile is the highest value equivalent to the bucket where
    the cumulative count first reaches ``round(p * total / 100)`` (at least 1), exactly
    ``HdrHistogram.get_value_at_percentile``. Also gives ``100`` (the maximum). Empty
    counts give 0 for everything.
    """
    indexes = sorted(counts)
    return percentiles_sorted(indexes, [counts[i] for i in indexes], wanted)


def percentiles_sorted(
    indexes: Sequence[int], counts: Sequence[int], wanted: Iterable[float]
) -> dict[float, int]:
    """:func:`percentiles` for buckets already in ascending index order."""
    targets = sorted(set(wanted))
    return dict(zip(targets, values_at(indexes, counts, targets)))


def values_at(indexes: Sequence[int], counts: Sequence[int], targets: Sequence[float]) -> list[int]:
    """Values (us) at the ascending percentiles ``targets``, for buckets in index order.

    The inner loop of /metrics: cumulative counts and the searches run in C (accumulate,
    bisect); a target above 100 counts as 100.
    """
    if not indexes:
        return [0] * len(targets)
    running = list(accumulate(counts))
    total = running[-1]
    if total <= 0:
        return [0] * len(targets)
    last = len(indexes) - 1
    out = []
    for p in targets:
        goal = int((p if p < 100.0 else 100.0) * total / 100 + 0.5) or 1
        position = bisect_left(running, goal)
        out.append(highest_equivalent(indexes[position if position < last else last]))
    return out


def merge_all(
    histograms: Iterable[tuple[Sequence[int], Sequence[int]]],
) -> tuple[list[int], list[int]]:
    """The exact sum of many ``(indexes, counts)`` histograms, in index order (C loops)."""
    dense = [0] * COUNTS_LEN
    for indexes, counts in histograms:
        if not indexes:
            continue
        current = [dense[i] for i in indexes] if len(indexes) < 4 else itemgetter(*indexes)(dense)
        deque(map(dense.__setitem__, indexes, map(add, current, counts)), maxlen=0)
    used = [i for i, c in enumerate(dense) if c]
    return used, [dense[i] for i in used]


def to_hdr(counts: Mapping[int, int]) -> HdrHistogram:
    """A real ``hdrh`` HdrHistogram holding ``counts`` (for ``encode()`` and its tools)."""
    from hdrh.histogram import HdrHistogram

    hist = HdrHistogram(1, MAX_US, SIGNIFICANT_FIGURES)
    for index, count in counts.items():
        if count > 0:
            hist.record_value(lowest_equivalent(index), count)
    return hist
