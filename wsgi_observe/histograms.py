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

from collections.abc import Iterable, Mapping
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
    "percentiles",
    "to_hdr",
]

SIGNIFICANT_FIGURES = 2
#: 2 * 10**2 values need single-unit resolution: 256 sub-buckets, half of them 128 (2**7).
_SUB_BUCKET_MASK = 255
_HALF_MAGNITUDE = 7
#: Values above one hour are recorded as one hour.
MAX_US = 3_600_000_000


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
    targets = sorted(set(wanted))
    result = dict.fromkeys(targets, 0)
    total = sum(counts.values())
    if total <= 0 or not targets:
        return result
    goals = iter([(p, max(int(min(p, 100.0) * total / 100 + 0.5), 1)) for p in targets])
    percentile, goal = next(goals)
    running = 0
    for index in sorted(counts):
        running += counts[index]
        while running >= goal:
            result[percentile] = highest_equivalent(index)
            following = next(goals, None)
            if following is None:
                return result
            percentile, goal = following
    return result


def to_hdr(counts: Mapping[int, int]) -> HdrHistogram:
    """A real ``hdrh`` HdrHistogram holding ``counts`` (for ``encode()`` and its tools)."""
    from hdrh.histogram import HdrHistogram

    hist = HdrHistogram(1, MAX_US, SIGNIFICANT_FIGURES)
    for index, count in counts.items():
        if count > 0:
            hist.record_value(lowest_equivalent(index), count)
    return hist
