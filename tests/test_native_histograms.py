"""HDR counts re-binned into Prometheus native buckets (schema 5): exact counts, bounded error."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import pytest

from wsgi_observe.histograms import (
    COUNTS_LEN,
    MAX_US,
    NATIVE_SCHEMA,
    bucket_index,
    highest_equivalent,
    native_bound,
    native_index,
    native_layout,
    percentiles,
    to_native,
)

# One bucket of schema 5 is 2**(1/32) wide: the most a quantile can move by re-binning.
BUCKET_WIDTH = 2 ** (1 / 32) - 1


def _hist(values_us: Iterable[int]) -> dict[int, int]:
    hist: dict[int, int] = {}
    for value in values_us:
        index = bucket_index(value)
        hist[index] = hist.get(index, 0) + 1
    return hist


def _expected(hist: dict[int, int]) -> tuple[int, dict[int, int]]:
    """The zero count and native buckets, one HDR bucket at a time (the slow, obvious way)."""
    zero = 0
    buckets: dict[int, int] = {}
    for index, count in hist.items():
        if index <= 0:
            zero += count
            continue
        if count:
            native = native_index(highest_equivalent(min(index, COUNTS_LEN - 1)) / 1e6)
            buckets[native] = buckets.get(native, 0) + count
    return zero, buckets


def _random_hists(seed: int = 5) -> list[dict[int, int]]:
    rng = random.Random(seed)
    hists = [
        _hist([0, 0, 7]),
        _hist([1, MAX_US]),  # a step of far more than 255 native buckets
        _hist(range(200, 2_000_000, 97)),  # a run of more than 255 neighbouring buckets
        _hist([5_000] * 1000 + [5_200]),  # deltas beyond one varint byte
    ]
    for _ in range(80):
        sigma = rng.choice([0.1, 0.5, 1.1, 2.5])
        hists.append(
            _hist(
                int(rng.lognormvariate(rng.uniform(5, 14), sigma))
                for _ in range(rng.choice([1, 3, 100, 5000]))
            )
        )
    return hists


def _quantile(zero: int, buckets: dict[int, int], q: float) -> float:
    """Prometheus 2.42's histogram_quantile over native buckets (promql/quantile.go)."""
    total = zero + sum(buckets.values())
    rank = q * total
    count = zero
    if count >= rank:
        return 0.0
    for index in sorted(buckets):
        count += buckets[index]
        if count >= rank:
            lower, upper = native_bound(index - 1), native_bound(index)
            inside = rank - (count - buckets[index])
            return lower + (upper - lower) * inside / buckets[index]
    raise AssertionError("rank beyond the total")


def test_bounds_follow_the_schema():
    """Bucket i of schema 5 ends at 2**(i/32), and 1 (index 0) is a bound."""
    assert native_bound(0) == 1.0
    assert native_bound(32) == 2.0
    assert native_bound(-32) == 0.5
    assert native_bound(1) == pytest.approx(2 ** (1 / 32), rel=1e-15)
    assert native_bound(-319) == pytest.approx(2 ** (-319 / 32), rel=1e-15)


@pytest.mark.parametrize("value", [1e-6, 0.001, 0.0123, 0.5, 1.0, 1.7, 2.0, 3599.9])
def test_native_index_puts_a_value_in_its_bucket(value):
    """The bucket of a value has its lower bound below it and its upper bound at or above it."""
    index = native_index(value)
    assert native_bound(index - 1) < value <= native_bound(index)


def test_a_bound_belongs_to_the_bucket_it_closes():
    """A value exactly on a bound is counted in the bucket below (upper bounds are inclusive)."""
    assert native_index(1.0) == 0
    assert native_index(0.5) == -32
    assert native_index(math.nextafter(1.0, 2.0)) == 1


@pytest.mark.parametrize("hist", _random_hists(), ids=lambda h: f"{len(h)}-buckets")
def test_rebinning_keeps_every_count(hist):
    """Each HDR bucket lands whole in the native bucket of its highest value; none is lost."""
    indexes = sorted(hist)
    native = to_native(indexes, [hist[i] for i in indexes])
    zero, buckets = _expected(hist)
    assert native.zero_count == zero
    assert native.buckets() == buckets
    assert native.zero_count + sum(native.counts) == sum(hist.values())
    offsets, lengths = native.spans()
    assert sum(lengths) == len(native.counts) == len(native.deltas())
    assert all(offset > 0 for offset in offsets[1:])  # spans never touch or overlap
    assert list(native.indexes()) == sorted(buckets)


def test_the_layout_depends_on_the_indexes_only():
    """One layout re-bins any counts of the same HDR buckets the way to_native does."""
    hist = _hist(int(random.Random(3).lognormvariate(8, 1)) for _ in range(500))
    indexes = sorted(hist)
    layout = native_layout(indexes)
    for scale in (1, 7, 1000):
        counts = [hist[i] * scale for i in indexes]
        assert layout.rebin(counts).buckets() == to_native(indexes, counts).buckets()


def test_buckets_without_a_count_are_left_out():
    """HDR buckets holding 0 make no native bucket (an empty bucket is never exposed)."""
    indexes = [500, 900, 1000, 1200, 2000]
    native = to_native(indexes, [3, 0, 0, 1, 0])
    assert native.buckets() == _expected(dict(zip(indexes, [3, 0, 0, 1, 0])))[1]
    assert 0 not in native.counts
    low, high = (native_index(highest_equivalent(i) / 1e6) for i in (500, 1200))
    assert native.spans() == ([low, high - low - 1], [1, 1])
    assert to_native([700], [0]).counts == []


def test_no_observations_give_no_buckets():
    """An empty histogram has no zero count and no buckets."""
    native = to_native([], [])
    assert (native.zero_count, native.counts, native.spans()) == (0, [], ([], []))


def test_out_of_range_indexes_are_clamped():
    """An index past the last HDR bucket counts in the top bucket; a negative one as zero."""
    native = to_native([-5, 10, COUNTS_LEN + 100], [1, 2, 3])
    assert native.zero_count == 1
    top = native_index(highest_equivalent(COUNTS_LEN - 1) / 1e6)
    assert native.buckets() == {native_index(10e-6): 2, top: 3}


@pytest.mark.parametrize("hist", _random_hists(seed=9)[4:], ids=lambda h: f"{len(h)}-buckets")
def test_quantiles_stay_within_one_native_bucket_of_hdr(hist):
    """Prometheus's estimate from the native buckets is within 2.2 % of the HDR percentile."""
    total = sum(hist.values())
    indexes = sorted(hist)
    native = to_native(indexes, [hist[i] for i in indexes])
    for q in (0.5, 0.9, 0.95, 0.99):
        if (q * total) % 1:
            continue  # HDR rounds the rank to a whole observation; Prometheus does not
        exact = percentiles(hist, [q * 100])[q * 100] / 1e6
        estimate = _quantile(native.zero_count, native.buckets(), q)
        assert abs(estimate - exact) <= exact * BUCKET_WIDTH, (q, exact, estimate)


def test_schema_is_fine_enough():
    """Schema 5 or finer: every bucket is at most about 2 % wide."""
    assert NATIVE_SCHEMA >= 5
    assert BUCKET_WIDTH < 0.022
