"""Snapshot -> the Prometheus protobuf exposition format, with native histograms.

The answer is a stream of length-delimited ``io.prometheus.client.MetricFamily`` messages
(``metrics.proto`` of prometheus/client_model), what Prometheus asks for first when it runs
with ``--enable-feature=native-histograms`` (2.40 and later) or lists ``PrometheusProto``
in ``scrape_protocols``. It carries the families of the text formats (:mod:`.families`),
named as client_golang names them (a counter with ``_total``, the info family as a gauge
``wsgi_observe_info``), with their help and unit.

The latency histograms carry both forms Prometheus reads: the classic buckets (the same
``le`` counts as the text formats) and a native histogram re-binned from the HDR counts by
:func:`wsgi_observe.histograms.to_native` at schema 5 (32 buckets per power of two, each at
most 2.2 % wide), with the zero bucket, spans and deltas as ``metrics.proto`` defines them.
``sample_count`` and ``sample_sum`` are exact. Prometheus keeps the native form (and the
classic one too with ``scrape_classic_histograms: true``, 2.45 and later). A summary in
this format always has ``_count`` and ``_sum``, so the quantile summaries carry the same
exact count and sum as their histogram.

The messages are written by hand rather than through the ``protobuf`` runtime: the format
is a handful of fixed fields, and building a few thousand message objects per scrape
would cost more than the text answer, so ``protobuf`` is no dependency. The bytes are
canonical (fields in number order, repeated numbers unpacked as proto2 declares them):
the tests decode them with classes generated from ``metrics.proto`` and check that
re-encoding with the official runtime gives the same bytes.

Speed: re-binning and encoding run in C loops (bytes templates filled by slice, tables for
``bytes.translate``), and each series' :class:`~wsgi_observe.histograms.NativeLayout` and
encoded spans are kept between scrapes while its HDR buckets stay the same (:class:`_Layouts`),
so a scrape mostly re-bins counts.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Mapping, Sequence
from functools import lru_cache
from itertools import chain, islice, repeat
from operator import lshift, rshift, sub, xor
from typing import Any

from ..histograms import (
    NATIVE_SCHEMA,
    NATIVE_ZERO_THRESHOLD,
    NativeLayout,
    native_layout,
    spans_of,
)
from ..kpidata import KpiFamily
from ..metrics import SeriesData, Snapshot
from . import PROTOBUF_TYPE
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

__all__ = ["PROTOBUF_TYPE", "render_protobuf"]


_double = struct.Struct("<d").pack
_MASK64 = (1 << 64) - 1
_BYTE = tuple(bytes((i,)) for i in range(256))
# MetricType of each family kind; an info family is a gauge here, as in text 0.0.4.
_TYPES = {"counter": 0, "gauge": 1, "summary": 2, "histogram": 4, "info": 1}


def _varint(value: int) -> bytes:
    """A base-128 varint (a negative number as its 64-bit two's complement)."""
    if 0 <= value < 0x80:
        return _BYTE[value]
    value &= _MASK64
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _zigzag(value: int) -> int:
    """sint32/sint64 encoding: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ..."""
    return (value << 1) ^ (value >> 63)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: Prometheus rejects invalid UTF-8
        return text.encode("utf-8", "replace")


def _pair(name: str, value: str) -> bytes:
    """A ``Metric.label`` field holding ``LabelPair{name, value}``."""
    return _field(b"\x0a", _field(b"\x0a", _utf8(name)) + _field(b"\x12", _utf8(value)))


def _header(family: Family) -> tuple[bytes, bytes]:
    """The fields of ``family`` before its metrics (name, help, type) and after (unit)."""
    head = _field(b"\x0a", _utf8(family.sample)) + _field(b"\x12", _utf8(family.help))
    head += b"\x18" + _BYTE[_TYPES[family.kind]]
    return head, _field(b"\x2a", _utf8(family.unit)) if family.unit else b""


_HEADERS = {family: _header(family) for family in FAMILIES}

# Bucket{cumulative_count, upper_bound} after the count's varint: the bound, pre-encoded.
_BOUND_TAILS = tuple(b"\x11" + _double(bound) for bound in BUCKET_BOUNDS)
# Histogram.bucket fields when every count fits one varint byte: one %-format for all 13.
_SMALL_BUCKETS = b"".join(b"\x1a\x0b\x08%c" + tail.replace(b"%", b"%%") for tail in _BOUND_TAILS)
# schema (sint32), zero_threshold, and the tag of zero_count
_NATIVE_HEAD = b"\x28" + _varint(_zigzag(NATIVE_SCHEMA)) + b"\x31"
_NATIVE_HEAD += _double(NATIVE_ZERO_THRESHOLD) + b"\x38"
# Summary.quantile fields, Quantile{quantile, value}: each one's bytes up to the value
_QUANTILE_HEADS = tuple(b"\x1a\x12\x09" + _double(q) + b"\x11" for q in QUANTILES)
_QUANTILE_BLOCK = struct.Struct("<" + "".join(f"{len(head)}sd" for head in _QUANTILE_HEADS))


def render_protobuf(snapshot: Snapshot, extras: Mapping[str, Any]) -> bytes:
    """Length-delimited ``MetricFamily`` messages of ``snapshot`` (see :data:`PROTOBUF_TYPE`).

    ``extras``: as for :func:`wsgi_observe.exposition.prometheus.render_prometheus`.
    """
    bodies: dict[Family, list[bytes]] = {
        family: _samples(family, samples) for family, samples in collect(snapshot, extras).items()
    }
    for spec, space in series_spaces(snapshot):
        if space:
            _series(bodies, space, spec)
    out: list[bytes] = []
    for family in FAMILIES:
        metrics = bodies.get(family)
        if not metrics:
            continue
        head, tail = _HEADERS[family]
        message = b"".join((head, *metrics, tail))
        out.append(_varint(len(message)))
        out.append(message)
    for family, kpi, role in kpi_families(snapshot.kpis):
        head, tail = _header(family)
        message = b"".join((head, *_kpi_metrics(family, kpi, role), tail))
        out.append(_varint(len(message)))
        out.append(message)
    return b"".join(out)


def _kpi_metrics(family: Family, kpi: KpiFamily, role: str) -> list[bytes]:
    """The ``Metric`` fields of one KPI family: counter or gauge values, or a classic
    histogram (no native buckets: a KPI's unit is not seconds) or the quantile summary."""
    names = kpi.labels
    if role == "value":
        return _samples(
            family,
            [(tuple(zip(names, labels)), series.value) for labels, series in kpi.series.items()],
        )
    tails = [b"\x11" + _double(float(bound)) for bound in kpi.buckets]
    out = []
    for labels, series in kpi.series.items():
        own = b"".join(map(_pair, names, labels))
        cumulative, quantiles = kpi_distribution(series, kpi.buckets)
        head = b"\x08" + _varint(cumulative[-1]) + b"\x11" + _double(float(series.sum))
        if role == "histogram":
            buckets = [
                _field(b"\x1a", b"\x08" + _varint(count) + tail)
                for count, tail in zip(cumulative, tails)
            ]
            out.append(_metric(own, _field(b"\x3a", b"".join((head, *buckets)))))
        else:
            summary = head + _QUANTILE_BLOCK.pack(
                *chain.from_iterable(zip(_QUANTILE_HEADS, quantiles))
            )
            out.append(_metric(own, _field(b"\x22", summary)))
    return out


def _metric(labels: bytes, value: bytes) -> bytes:
    """A ``MetricFamily.metric`` field: the labels, then the value's field."""
    return _field(b"\x22", labels + value)


def _samples(family: Family, samples: list[Sample]) -> list[bytes]:
    # Gauge{value} is field 2 of Metric, Counter{value} field 3.
    value_tag = b"\x1a\x09\x09" if family.kind == "counter" else b"\x12\x09\x09"
    return [
        _metric(b"".join(_pair(key, text) for key, text in labels), value_tag + _double(value))
        for labels, value in samples
    ]


def _series(
    bodies: dict[Family, list[bytes]], space: Mapping[str, SeriesData], spec: SeriesFamilies
) -> None:
    counts: list[bytes] = []
    errors: list[bytes] = []
    histograms: list[bytes] = []
    summaries: list[bytes] = []
    label = spec.label
    by_names = spec.by
    has_errors = spec.errors is not None
    tails: dict[tuple[str, ...], bytes] = {}  # a by key's label fields, then Counter's tag
    for name in sorted(space):
        series = space[name]
        own = _pair(label, name)
        size = len(own) + 8
        for key, count in sorted(series.by.items()):
            # MetricFamily.metric: Metric{label: own, then the key's; counter: {value}}
            tail = tails.get(key)
            if tail is None:
                tail = tails[key] = _by_pairs(by_names, key) + b"\x1a\x09\x09"
            length = size + len(tail)
            counts.append(b"".join((b"\x22", _varint(length), own, tail, _double(count))))
        if has_errors:
            length = size + 3
            errors.append(
                b"".join((b"\x22", _varint(length), own, b"\x1a\x09\x09", _double(series.errors)))
            )
        cumulative, quantiles = distribution(series)
        head = b"\x08" + _varint(cumulative[-1]) + b"\x11" + _double(series.sum_ns / 1e9)
        histogram = b"".join((head, _classic(cumulative), _native((label, name), series)))
        body = b"".join((own, b"\x3a", _varint(len(histogram)), histogram))
        histograms.append(b"\x22" + _varint(len(body)) + body)
        summary = head + _QUANTILE_BLOCK.pack(*chain.from_iterable(zip(_QUANTILE_HEADS, quantiles)))
        body = b"".join((own, b"\x22", _varint(len(summary)), summary))
        summaries.append(b"\x22" + _varint(len(body)) + body)
    bodies[spec.counts] = counts
    if spec.errors is not None:
        bodies[spec.errors] = errors
    bodies[spec.duration] = histograms
    bodies[spec.quantiles] = summaries


@lru_cache(maxsize=1024)
def _by_pairs(names: tuple[str, ...], key: tuple[str, ...]) -> bytes:
    """The label fields of a counter's ``by`` key (method and status, or result)."""
    return b"".join(map(_pair, names, key))


def _classic(cumulative: list[int]) -> bytes:
    """The ``Histogram.bucket`` fields (``+Inf`` left out: it is ``sample_count``)."""
    if 0 <= min(cumulative) and max(cumulative) < 0x80:  # every count fits one byte
        return _SMALL_BUCKETS % tuple(islice(cumulative, len(_BOUND_TAILS)))
    out = []
    for count, tail in zip(cumulative, _BOUND_TAILS):
        encoded = _varint(count)
        out.append(b"\x1a" + _BYTE[10 + len(encoded)] + b"\x08" + encoded + tail)
    return b"".join(out)


def _native(key: tuple[str, str], series: SeriesData) -> bytes:
    """schema, zero bucket, ``positive_span`` and ``positive_delta`` fields of a series."""
    indexes, hdr_counts = series.sorted_hist()
    layout, spans = _LAYOUTS.get(key, indexes)
    native = layout.rebin(hdr_counts)
    counts = native.counts
    if not counts:
        return _NATIVE_HEAD + _varint(native.zero_count)
    if native.steps is not layout.steps:  # empty buckets were left out: other spans
        spans = _spans(native.first, native.steps)
    try:  # every delta's zigzag varint is one byte: fill a template
        zigzags = bytes(map(_SMALL_ZIGZAG.__getitem__, map(sub, counts, chain((0,), counts))))
        encoded = bytearray(_DELTA_TEMPLATE[: 2 * len(zigzags)])
        encoded[1::2] = zigzags
    except (KeyError, ValueError):  # a larger delta, or more deltas than the template holds
        deltas = native.deltas()
        zigzags_any = map(xor, map(lshift, deltas, repeat(1)), map(rshift, deltas, repeat(63)))
        encoded = bytearray(b"\x68" + b"\x68".join(map(_varint, zigzags_any)))
    return b"".join((_NATIVE_HEAD, _varint(native.zero_count), spans, encoded))


class _Layouts:
    """Each series' :class:`NativeLayout` and encoded spans, kept while its HDR buckets stay
    the same.

    Which native buckets a series uses depends only on which HDR buckets it uses, and that
    rarely changes from one scrape to the next even while the counts grow: the layout is
    reused exactly when the HDR indexes are equal, and worked out again otherwise. A few
    bytes per HDR bucket; at most ``limit`` series, then it starts over.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._known: dict[tuple[str, str], tuple[array[int], NativeLayout, bytes]] = {}

    def get(self, key: tuple[str, str], indexes: Sequence[int]) -> tuple[NativeLayout, bytes]:
        try:
            shape = array("H", indexes)
        except (OverflowError, TypeError):  # not HDR indexes (0..3327): nothing to keep
            layout = native_layout(indexes)
            return layout, _spans(layout.first, layout.steps) if layout.ends else b""
        known = self._known.get(key)
        if known is not None and known[0] == shape:
            return known[1], known[2]
        layout = native_layout(indexes)
        spans = _spans(layout.first, layout.steps) if layout.ends else b""
        if len(self._known) >= self.limit:
            self._known.clear()
        self._known[key] = (shape, layout, spans)
        return layout, spans


_LAYOUTS = _Layouts()


def _spans(first: int, steps: Sequence[int]) -> bytes:
    """The ``positive_span`` fields of the buckets in use from ``first`` on, ``steps`` apart:
    each run of neighbouring buckets is a span."""
    if isinstance(steps, bytes):
        breaks = steps.translate(None, b"\x01")  # a step s > 1 starts a span s - 1 further
        try:  # each span's length less one
            short = bytes(map(len, steps.translate(_ONES).split(b"\x00")))
        except ValueError:  # a span of 256 buckets or more
            short = b"\xff"
        lengths = short.translate(_SMALL_LENGTH)
        gaps = breaks.translate(_SMALL_GAP)
        if lengths.isascii() and gaps.isascii():  # every varint of the spans is one byte
            out = _span(first, lengths[0])
            if not breaks:
                return out
            template = bytearray(_SMALL_SPAN * len(breaks))  # BucketSpan{offset, length}
            template[3::6] = gaps
            template[5::6] = lengths[1:]
            return out + template
    offsets, lengths_list = spans_of(first, steps)
    return b"".join(map(_span, offsets, lengths_list))


def _span(offset: int, length: int) -> bytes:
    """A ``Histogram.positive_span`` field: ``BucketSpan{offset, length}``."""
    body = b"\x08" + _varint(_zigzag(offset)) + b"\x10" + _varint(length)
    return b"\x62" + _BYTE[len(body)] + body


# Tables for the bytes methods of _spans: a span's length less one -> its length, and a
# step s between buckets in use -> the zigzag of its gap s - 1, each mapped to 0xff (not
# ASCII) where the varint would take two bytes.
_SMALL_LENGTH = bytes(i + 1 if i + 1 < 0x80 else 0xFF for i in range(256))
_SMALL_GAP = bytes(2 * (i - 1) if 0 < 2 * (i - 1) < 0x80 else 0xFF for i in range(256))
_ONES = bytes(1 if i == 1 else 0 for i in range(256))
_SMALL_SPAN = b"\x62\x04\x08\x00\x10\x00"
# Histogram.positive_delta fields (sint64, unpacked): the zigzag of the deltas that fit
# one byte, and a template of tags to fill with them
_SMALL_ZIGZAG = {delta: _zigzag(delta) for delta in range(-64, 64)}
_DELTA_TEMPLATE = b"\x68\x00" * 2048
