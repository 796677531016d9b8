"""HDR histogram arithmetic for latencies, in microseconds, kept as sparse bucket counts.

The bucket layout is exactly HdrHistogram's (``hdrh.histogram.HdrHistogram(1, MAX_US, 2)``):
lowest discernible value 1 us, two significant figures (every value within 1%). Recording
on the request path is the inline form of ``bucket_index`` below (a ``bit_length`` and two
shifts) into a plain dict, because ``HdrHistogram.record_value`` costs several times more
per call. Counts merge exactly by adding them bucket by bucket, which is what makes
percentiles across gunicorn workers true. :func:`to_hdr` rebuilds a real ``HdrHistogram``
for its encoded form and for tools that read it.

:func:`to_native` re-bins the counts into a Prometheus native histogram (exponential
buckets: schema ``s`` splits every power of two into ``2**s`` buckets, bucket ``i`` holding
the values in ``(2**((i-1)/2**s), 2**(i/2**s)]`` seconds). Each HDR bucket goes whole into
the native bucket holding its highest value, the value HDR reports for a percentile, so a
quantile Prometheus estimates lies in the same native bucket as the exact HDR answer: at
:data:`NATIVE_SCHEMA` 5 the two differ by at most one bucket width, 2**(1/32) - 1 = 2.2 %.

Nothing here knows about WSGI.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from itertools import accumulate, compress, islice
from operator import add, itemgetter, sub
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

__all__ = [
    "MAX_US",
    "NATIVE_SCHEMA",
    "NATIVE_ZERO_THRESHOLD",
    "SIGNIFICANT_FIGURES",
    "NativeBuckets",
    "NativeLayout",
    "bucket_index",
    "highest_equivalent",
    "lowest_equivalent",
    "merge",
    "merge_all",
    "native_bound",
    "native_index",
    "native_layout",
    "spans_of",
    "percentiles",
    "percentiles_sorted",
    "values_at",
    "to_hdr",
    "to_native",
]

SIGNIFICANT_FIGURES = 2
#: 2 * 10**2 values need single-unit resolution: 256 sub-buckets, half of them 128 (2**7).
_SUB_BUCKET_MASK = 255
_HALF_MAGNITUDE = 7
#: Values above one hour are recorded as one hour.
MAX_US = 3_600_000_000
#: Number of buckets HdrHistogram(1, MAX_US, 2) has (the highest index is below this).
COUNTS_LEN = 3328
#: Native histogram schema: 2**5 = 32 buckets per power of two, each at most 2.2 % wide.
NATIVE_SCHEMA = 5
#: Width of the native zero bucket (client_golang's default, 2**-128): it holds only the
#: durations recorded as 0 us (under one microsecond).
NATIVE_ZERO_THRESHOLD = 2.0**-128


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


def native_bound(index: int, schema: int = NATIVE_SCHEMA) -> float:
    """The upper bound (inclusive) of native bucket ``index``: ``2 ** (index / 2**schema)``."""
    return math.ldexp(2.0 ** ((index % (1 << schema)) / (1 << schema)), index >> schema)


def native_index(value: float, schema: int = NATIVE_SCHEMA) -> int:
    """The native bucket holding ``value`` > 0: ``i`` with ``bound(i-1) < value <= bound(i)``."""
    index = math.ceil(math.log2(value) * (1 << schema))
    # log2 may be off by an ulp next to a bound: settle against the bounds themselves
    while native_bound(index - 1, schema) >= value:
        index -= 1
    while native_bound(index, schema) < value:
        index += 1
    return index


@cache
def _native_table(schema: int) -> tuple[int, ...]:
    """HDR index -> native bucket index of its highest value (index 0, 0 us, is the zero bucket)."""
    return (0, *(native_index(highest_equivalent(i) / 1e6, schema) for i in range(1, COUNTS_LEN)))


class NativeBuckets:
    """A native histogram's buckets: the zero bucket's count and the positive buckets in use.

    ``first`` is the index of the lowest bucket in use, ``steps[k]`` the distance from the
    k-th bucket in use to the next (a ``bytes`` when every step fits one, which lets the
    protobuf encoder work on it with bytes methods), ``counts`` the count of each.
    :meth:`spans` and :meth:`deltas` give them the way ``metrics.proto`` carries them::

        native = to_native([bucket_index(1450), bucket_index(1460)], [2, 1])  # 1.45 ms
        native.buckets()  # {-301: 3}: both HDR buckets fall in one native bucket
        native.spans(), native.deltas()  # ([-301], [1]), [3]
    """

    __slots__ = ("counts", "first", "steps", "zero_count")

    def __init__(
        self, zero_count: int, first: int, steps: Sequence[int], counts: list[int]
    ) -> None:
        self.zero_count = zero_count
        self.first = first
        self.steps = steps
        self.counts = counts

    def indexes(self) -> list[int]:
        """The index of every bucket in use, ascending."""
        return list(accumulate(self.steps, initial=self.first)) if self.counts else []

    def spans(self) -> tuple[list[int], list[int]]:
        """``(offsets, lengths)``: runs of neighbouring buckets in use. The first offset is
        the index of the first bucket, every later one the gap since the previous span."""
        return spans_of(self.first, self.steps) if self.counts else ([], [])

    def deltas(self) -> list[int]:
        """Each bucket's count minus the previous bucket's (the first minus 0)."""
        counts = self.counts
        return [*counts[:1], *map(sub, islice(counts, 1, None), counts)]

    def buckets(self) -> dict[int, int]:
        """Native index -> count of every bucket in use."""
        return dict(zip(self.indexes(), self.counts))


def spans_of(first: int, steps: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(offsets, lengths)`` of the buckets in use from ``first`` on, ``steps`` apart."""
    offsets = [first]
    lengths = [1]
    for step in steps:
        if step == 1:
            lengths[-1] += 1
        else:
            offsets.append(step - 1)
            lengths.append(1)
    return offsets, lengths


class NativeLayout:
    """Which native bucket each HDR bucket of a histogram goes to: a function of the HDR
    indexes alone, so a histogram whose buckets in use did not change keeps its layout
    while its counts grow (:meth:`rebin` applies it to the counts).

    ``zeros`` leading HDR buckets are the zero bucket; ``ends`` has a true byte for each
    other HDR bucket that is the last of its native bucket; ``first`` and ``steps`` are
    those of :class:`NativeBuckets`::

        layout = native_layout(indexes)  # once, while the HDR buckets in use stay the same
        layout.rebin(counts_now)  # then for every new set of counts
        layout.rebin(counts_later)
    """

    __slots__ = ("ends", "first", "steps", "zeros")

    def __init__(self, zeros: int, first: int, steps: Sequence[int], ends: bytes) -> None:
        self.zeros = zeros
        self.first = first
        self.steps = steps
        self.ends = ends

    def spans(self) -> tuple[list[int], list[int]]:
        """As :meth:`NativeBuckets.spans`."""
        return spans_of(self.first, self.steps) if self.ends else ([], [])

    def rebin(self, counts: Sequence[int]) -> NativeBuckets:
        """The native buckets of ``counts``, the counts of the HDR indexes of this layout."""
        zeros = self.zeros
        zero = sum(counts[:zeros]) if zeros else 0
        if not self.ends:
            return NativeBuckets(zero, 0, b"", [])
        if zeros:
            counts = counts[zeros:]
        # each native bucket's running count is the one at its last HDR bucket
        cumulative = list(compress(accumulate(counts), self.ends))
        bucket_counts = [cumulative[0], *map(sub, islice(cumulative, 1, None), cumulative)]
        if 0 in bucket_counts:  # HDR buckets with no count (not from a store): leave them out
            used = [
                (index, count)
                for index, count in zip(accumulate(self.steps, initial=self.first), bucket_counts)
                if count
            ]
            if not used:
                return NativeBuckets(zero, 0, b"", [])
            indexes = [index for index, _ in used]
            steps = list(map(sub, islice(indexes, 1, None), indexes))
            return NativeBuckets(zero, indexes[0], steps, [count for _, count in used])
        return NativeBuckets(zero, self.first, self.steps, bucket_counts)


def native_layout(indexes: Sequence[int], schema: int = NATIVE_SCHEMA) -> NativeLayout:
    """The :class:`NativeLayout` of the HDR buckets ``indexes`` (ascending) at ``schema``.

    /metrics re-bins every series on each scrape, so the work runs in C loops (itemgetter,
    map, bytes.translate), not per bucket.
    """
    table = _native_table(schema)
    zeros = 0
    size = len(indexes)
    while zeros < size and indexes[zeros] <= 0:  # 0 us: the zero bucket
        zeros += 1
    if zeros == size:
        return NativeLayout(zeros, 0, b"", b"")
    if zeros:
        indexes = indexes[zeros:]
    if indexes[-1] >= COUNTS_LEN:  # beyond MAX_US (never from bucket_index): the top bucket
        indexes = [min(index, COUNTS_LEN - 1) for index in indexes]
    if len(indexes) == 1:
        return NativeLayout(zeros, table[indexes[0]], b"", b"\x01")
    natives: tuple[int, ...] = itemgetter(*indexes)(table)
    # The native index of neighbouring HDR buckets grows by 0 (same native bucket) or more.
    try:
        hdr_steps = bytes(map(sub, islice(natives, 1, None), natives))
    except ValueError:  # a step over 255 buckets (8 powers of two): the general way
        changes = list(map(sub, islice(natives, 1, None), natives))
        ends = bytes(map(bool, changes)) + b"\x01"
        return NativeLayout(zeros, natives[0], [step for step in changes if step], ends)
    return NativeLayout(zeros, natives[0], hdr_steps.translate(None, b"\x00"), hdr_steps + b"\x01")


def to_native(
    indexes: Sequence[int], counts: Sequence[int], schema: int = NATIVE_SCHEMA
) -> NativeBuckets:
    """The HDR buckets ``indexes`` (ascending) with ``counts``, re-binned at ``schema``.

    The counts stay exact integers (an HDR bucket is never split), so the native histogram
    has the same total as the HDR one.
    """
    return native_layout(indexes, schema).rebin(counts)
