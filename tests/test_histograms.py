"""HDR arithmetic: identical to the hdrhistogram package, exact merges, percentiles."""

from __future__ import annotations

import random

import pytest
from hdrh.histogram import HdrHistogram

from wsgi_observe import histograms


def _record(values):
    counts: dict[int, int] = {}
    for value in values:
        index = histograms.bucket_index(value)
        counts[index] = counts.get(index, 0) + 1
    return counts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bucket_layout_and_percentiles_match_hdrhistogram(seed):
    """Our inline bucket arithmetic and percentiles equal hdrh's for the same values."""
    rng = random.Random(seed)
    values = [min(int(rng.lognormvariate(8, 2.5)), histograms.MAX_US) for _ in range(5000)]
    reference = HdrHistogram(1, histograms.MAX_US, histograms.SIGNIFICANT_FIGURES)
    for value in values:
        reference.record_value(value)
        assert histograms.bucket_index(value) == reference._counts_index_for(value)
    wanted = [50, 90, 95, 99, 99.9, 100]
    ours = histograms.percentiles(_record(values), wanted)
    assert ours == {p: reference.get_value_at_percentile(p) for p in wanted}


def test_every_value_is_within_one_percent():
    """Two significant figures: a value's bucket never misstates it by more than 1%."""
    for value in [1, 255, 256, 1000, 12_345, 999_999, 3_599_999_999]:
        index = histograms.bucket_index(value)
        low, high = histograms.lowest_equivalent(index), histograms.highest_equivalent(index)
        assert low <= value <= high
        assert high - low <= max(value * 0.01, 1)


def test_merge_is_exact():
    """Merging two workers' counts equals recording everything in one histogram."""
    rng = random.Random(7)
    a = [rng.randint(1, 5_000_000) for _ in range(3000)]
    b = [rng.randint(1, 50_000) for _ in range(2000)]
    merged = histograms.merge(dict(_record(a)), _record(b))
    assert merged == _record(a + b)
    assert histograms.percentiles(merged, [99]) == histograms.percentiles(_record(a + b), [99])


def test_out_of_range_values_are_clamped():
    """Negative values count as 0 and values beyond an hour as an hour."""
    assert histograms.bucket_index(-5) == 0
    assert histograms.bucket_index(10 * histograms.MAX_US) == histograms.bucket_index(
        histograms.MAX_US
    )


def test_empty_counts_give_zero():
    """No data: every percentile is 0."""
    assert histograms.percentiles({}, [50, 99]) == {50: 0, 99: 0}


def test_to_hdr_round_trips_through_the_encoded_form():
    """to_hdr() builds a real HdrHistogram whose encoding decodes to the same percentiles."""
    counts = _record([100, 200, 300, 40_000, 1_000_000])
    hist = histograms.to_hdr(counts)
    decoded = HdrHistogram.decode(hist.encode())
    assert decoded.get_total_count() == 5
    assert decoded.get_value_at_percentile(50) == histograms.percentiles(counts, [50])[50]
