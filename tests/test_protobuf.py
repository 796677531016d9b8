"""The protobuf exposition format, decoded with classes generated from metrics.proto."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from google.protobuf.internal.decoder import _DecodeVarint32
from google.protobuf.internal.encoder import _VarintBytes
from test_prometheus import _hist, _nasty, _pinned, call, parse

from tests.client_model import metrics_pb2
from wsgi_observe.exposition import (
    OPENMETRICS_TYPE,
    PROMETHEUS_TYPE,
    PROTOBUF_TYPE,
    families,
    negotiate,
)
from wsgi_observe.exposition.prometheus import FAMILIES, render_prometheus
from wsgi_observe.exposition.protobuf import render_protobuf
from wsgi_observe.histograms import (
    NATIVE_SCHEMA,
    NATIVE_ZERO_THRESHOLD,
    highest_equivalent,
    native_index,
)
from wsgi_observe.metrics import MetricsStore, SeriesData, Snapshot
from wsgi_observe.middleware import ObservabilityMiddleware

MetricFamily = metrics_pb2.MetricFamily
# What Prometheus 2.42 sends with --enable-feature=native-histograms (scrape/scrape.go).
PROMETHEUS_PROTOBUF_ACCEPT = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,"
    "application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
# What Prometheus 3 sends with scrape_protocols: [PrometheusProto, OpenMetricsText1.0.0, ...]
PROMETHEUS_3_ACCEPT = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;"
    "q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "text/plain;version=0.0.4;q=0.4,*/*;q=0.3"
)
PROTO = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily"


def decode(data: bytes) -> list[Any]:
    """Length-delimited MetricFamily messages, as Prometheus's protobuf parser reads them."""
    found = []
    position = 0
    while position < len(data):
        size, position = _DecodeVarint32(data, position)
        family = MetricFamily()
        family.ParseFromString(data[position : position + size])
        position += size
        found.append(family)
    assert position == len(data)
    return found


def as_samples(found: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The float samples Prometheus makes of the messages (classic buckets for histograms)."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def add(name: str, labels: dict[str, str], value: float) -> None:
        samples[(name, tuple(sorted(labels.items())))] = value

    for family in found:
        for metric in family.metric:
            labels = {pair.name: pair.value for pair in metric.label}
            kind = family.type
            if kind == metrics_pb2.COUNTER:
                add(family.name, labels, metric.counter.value)
            elif kind == metrics_pb2.GAUGE:
                add(family.name, labels, metric.gauge.value)
            elif kind == metrics_pb2.SUMMARY:
                for quantile in metric.summary.quantile:
                    add(
                        family.name, {**labels, "quantile": repr(quantile.quantile)}, quantile.value
                    )
            else:
                histogram = metric.histogram
                for bucket in histogram.bucket:
                    le = {**labels, "le": repr(bucket.upper_bound)}
                    add(family.name + "_bucket", le, bucket.cumulative_count)
                add(family.name + "_bucket", {**labels, "le": "+Inf"}, histogram.sample_count)
                add(family.name + "_sum", labels, histogram.sample_sum)
                add(family.name + "_count", labels, histogram.sample_count)
    return samples


def native_buckets(histogram: Any) -> tuple[int, dict[int, int]]:
    """The zero count and ``index -> count`` of a decoded native histogram."""
    assert len(histogram.positive_delta) == sum(span.length for span in histogram.positive_span)
    buckets: dict[int, int] = {}
    index = 0
    count = 0
    deltas = iter(histogram.positive_delta)
    for number, span in enumerate(histogram.positive_span):
        assert number == 0 or span.offset > 0, "spans must not overlap"
        index += span.offset
        for _ in range(span.length):
            count += next(deltas)
            assert count > 0, "a bucket in a span without observations"
            buckets[index] = count
            index += 1
    return histogram.zero_count, buckets


def _text_samples(snapshot: Snapshot, extras: dict[str, Any]) -> dict[Any, float]:
    return {
        (name, tuple(sorted(labels.items()))): value
        for name, labels, value in parse(render_prometheus(snapshot, extras).decode())
    }


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# The families and their samples ---------------------------------------------------------


@pytest.mark.parametrize("make", [_pinned, _nasty], ids=["pinned", "hostile"])
def test_every_family_of_the_text_format_is_there(make):
    """The protobuf answer has the text format's families, types, help and units."""
    snapshot, extras = make()
    found = {family.name: family for family in decode(render_protobuf(snapshot, extras))}
    text = render_prometheus(snapshot, extras).decode()
    expected = {family.sample for family in FAMILIES if f"# TYPE {family.sample} " in text}
    assert set(found) == expected
    types = {
        "counter": metrics_pb2.COUNTER,
        "gauge": metrics_pb2.GAUGE,
        "info": metrics_pb2.GAUGE,
        "summary": metrics_pb2.SUMMARY,
        "histogram": metrics_pb2.HISTOGRAM,
    }
    for family in FAMILIES:
        if family.sample in found:
            message = found[family.sample]
            assert (message.type, message.help, message.unit) == (
                types[family.kind],
                family.help,
                family.unit,
            )


@pytest.mark.parametrize("make", [_pinned, _nasty], ids=["pinned", "hostile"])
def test_samples_equal_the_text_format(make):
    """Every sample Prometheus makes of the protobuf answer equals the text format's."""
    snapshot, extras = make()
    found = as_samples(decode(render_protobuf(snapshot, extras)))
    text = _text_samples(snapshot, extras)
    assert set(found) == set(text)
    for key, value in text.items():
        assert _same(found[key], value), key


@pytest.mark.parametrize("make", [_pinned, _nasty], ids=["pinned", "hostile"])
def test_bytes_are_what_the_protobuf_runtime_writes(make):
    """Re-encoding the decoded messages with the official runtime gives the same bytes."""
    snapshot, extras = make()
    data = render_protobuf(snapshot, extras)
    again = b"".join(_VarintBytes(m.ByteSize()) + m.SerializeToString() for m in decode(data))
    assert again == data


def test_summaries_carry_the_exact_count_and_sum():
    """The quantile summaries have their histogram's count and sum, never a made-up zero."""
    snapshot, extras = _pinned()
    found = {family.name: family for family in decode(render_protobuf(snapshot, extras))}
    (summary,) = found["wsgi_observe_request_duration_quantile_seconds"].metric
    (histogram,) = found["wsgi_observe_request_duration_seconds"].metric
    assert summary.summary.sample_count == histogram.histogram.sample_count == 9
    assert summary.summary.sample_sum == histogram.histogram.sample_sum == 23.496449123


# Native histograms ------------------------------------------------------------------------


def _snapshot(hists: dict[str, dict[int, int]]) -> Snapshot:
    endpoints = {
        name: SeriesData(
            count=sum(hist.values()),
            sum_ns=7 * sum(hist.values()),
            hist=hist,
            by={("GET", "2xx"): sum(hist.values())},
        )
        for name, hist in hists.items()
    }
    functions = {"job": SeriesData(count=2, sum_ns=5, hist=_hist([40, 9000]), by={("ok", ""): 2})}
    return Snapshot(endpoints, functions, 0, 1.0, 2.0, [{"pid": 1, "role": "main"}])


def _histograms(snapshot: Snapshot) -> dict[tuple[str, str], Any]:
    out = {}
    for family in decode(render_protobuf(snapshot, {"service": "s", "version": "v"})):
        if family.type == metrics_pb2.HISTOGRAM:
            for metric in family.metric:
                out[(family.name, metric.label[0].value)] = metric.histogram
    return out


def _rebinned(hist: dict[int, int]) -> tuple[int, dict[int, int]]:
    zero = 0
    buckets: dict[int, int] = {}
    for index, count in hist.items():
        if index == 0:
            zero += count
        elif count:
            native = native_index(highest_equivalent(index) / 1e6)
            buckets[native] = buckets.get(native, 0) + count
    return zero, buckets


def test_histograms_carry_classic_and_native_buckets():
    """Each latency histogram has the 13 classic bounds and native buckets at schema 5."""
    rng = random.Random(11)
    hists = {
        f"/e{i}": _hist(int(rng.lognormvariate(rng.uniform(6, 12), 1.2)) for _ in range(300))
        for i in range(5)
    }
    hists["/zero"] = _hist([0, 0, 5])
    hists["/far"] = _hist([1, 3_600_000_000])  # a gap of hundreds of native buckets
    hists["/dense"] = _hist(range(200, 3_000_000, 53))  # one span of hundreds of buckets
    hists["/big"] = _hist([4000] * 5000 + [4100] * 7)  # deltas of more than one varint byte
    hists["/holes"] = {500: 3, 900: 0, 1000: 0, 1200: 1}  # HDR buckets without a count
    snapshot = _snapshot(hists)
    found = _histograms(snapshot)
    for name, hist in hists.items():
        histogram = found[("wsgi_observe_request_duration_seconds", name)]
        assert [b.upper_bound for b in histogram.bucket] == list(families.BUCKET_BOUNDS)
        assert histogram.schema == NATIVE_SCHEMA
        assert histogram.zero_threshold == NATIVE_ZERO_THRESHOLD
        assert histogram.sample_count == sum(hist.values())
        assert native_buckets(histogram) == _rebinned(hist), name
    job = found[("wsgi_observe_function_duration_seconds", "job")]
    assert native_buckets(job) == _rebinned(_hist([40, 9000]))


def test_a_series_without_observations_is_still_a_native_histogram():
    """No observations: no spans, but a zero threshold, so Prometheus reads it as native."""
    found = _histograms(_snapshot({"/idle": {}}))
    histogram = found[("wsgi_observe_request_duration_seconds", "/idle")]
    assert histogram.sample_count == 0
    assert histogram.zero_threshold > 0
    assert not histogram.positive_span and not histogram.positive_delta


def test_native_buckets_follow_new_buckets_between_scrapes():
    """A series that gains HDR buckets gets them in its next answer (the layout is not stale)."""
    hist = _hist([1000, 2000, 3000])
    snapshot = _snapshot({"/a": hist})
    first = _histograms(snapshot)[("wsgi_observe_request_duration_seconds", "/a")]
    assert native_buckets(first) == _rebinned(hist)
    grown = _hist([1000, 2000, 3000, 2000, 50_000, 0])
    snapshot.endpoints["/a"] = SeriesData(count=6, sum_ns=1, hist=grown, by={})
    second = _histograms(snapshot)[("wsgi_observe_request_duration_seconds", "/a")]
    assert native_buckets(second) == _rebinned(grown)
    more = {index: count * 3 for index, count in grown.items()}  # same buckets, new counts
    snapshot.endpoints["/a"] = SeriesData(count=18, sum_ns=1, hist=more, by={})
    third = _histograms(snapshot)[("wsgi_observe_request_duration_seconds", "/a")]
    assert native_buckets(third) == _rebinned(more)


def test_lone_surrogates_never_make_invalid_utf8():
    """Prometheus rejects a scrape with invalid UTF-8, so unencodable names are replaced."""
    snapshot = _snapshot({"/bad\udcff": _hist([10])})
    names = [name for family, name in _histograms(snapshot) if "request" in family]
    assert names == ["/bad?"]


# Negotiation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        pytest.param(PROMETHEUS_PROTOBUF_ACCEPT, "protobuf", id="prometheus-2.42-native"),
        pytest.param(PROMETHEUS_3_ACCEPT, "protobuf", id="prometheus-3-proto-first"),
        pytest.param(f"{PROTO};encoding=delimited", "protobuf", id="bare"),
        pytest.param(
            "Application/Vnd.Google.Protobuf; Proto=io.prometheus.client.MetricFamily; "
            "ENCODING=Delimited",
            "protobuf",
            id="case-of-type-and-parameter-names",
        ),
        pytest.param(
            'application/vnd.google.protobuf;proto="io.prometheus.client.MetricFamily";'
            'encoding="delimited"',
            "protobuf",
            id="quoted-values",
        ),
        pytest.param(
            f"{PROTO};encoding=delimited;escaping=allow-utf-8", "protobuf", id="extra-parameter"
        ),
        pytest.param(f"{PROTO};encoding=text", "prometheus", id="proto-text-encoding"),
        pytest.param(f"{PROTO};encoding=compact-text", "prometheus", id="compact-text"),
        pytest.param(
            "application/vnd.google.protobuf;encoding=delimited", "prometheus", id="no-proto"
        ),
        pytest.param(PROTO, "prometheus", id="no-encoding"),
        pytest.param(
            "application/vnd.google.protobuf;proto=io.prometheus.client.metricfamily;"
            "encoding=delimited",
            "prometheus",
            id="message-name-is-case-sensitive",
        ),
        pytest.param(f"{PROTO};encoding=delimited;q=0", "prometheus", id="q-zero-alone"),
        pytest.param(
            f"{PROTO};encoding=delimited;q=0,application/openmetrics-text;q=0.5",
            "openmetrics",
            id="q-zero-then-openmetrics",
        ),
        pytest.param(
            f"{PROTO};encoding=text,application/openmetrics-text;version=1.0.0;q=0.8,"
            "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            "openmetrics",
            id="other-encoding-falls-back-like-prometheus",
        ),
        pytest.param(f"{PROTO};encoding=delimited;q=oops", "prometheus", id="bad-q"),
        pytest.param("application/vnd.google.protobuf;;;=;proto", "prometheus", id="garbage"),
        pytest.param(f"{PROTO};encoding=delimited;q=0.2,*/*;q=0.5", "json", id="lower-q"),
        pytest.param("application/*", "json", id="wildcard-is-never-protobuf"),
        pytest.param("*/*", "json", id="curl"),
        pytest.param(",;,=;", "json", id="plain-garbage-keeps-json"),
    ],
)
def test_accept_negotiates_protobuf_like_prometheus(accept, kind):
    """Only the full protobuf type selects it; other protobuf asks fall back to text."""
    assert negotiate(None, accept) == kind


def test_protobuf_wins_a_tie_with_openmetrics():
    """A client naming both at the same quality gets native histograms."""
    accept = f"{PROTO};encoding=delimited,application/openmetrics-text;version=1.0.0"
    assert negotiate(None, accept) == "protobuf"


@pytest.fixture
def middleware():
    """The middleware around a small app, with a fresh store of its own."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)


@pytest.mark.parametrize(
    ("query", "accept", "content_type"),
    [
        pytest.param("", PROMETHEUS_PROTOBUF_ACCEPT, PROTOBUF_TYPE, id="accept"),
        pytest.param("format=protobuf", None, PROTOBUF_TYPE, id="format-parameter"),
        pytest.param("format=openmetrics", PROMETHEUS_PROTOBUF_ACCEPT, OPENMETRICS_TYPE, id="om"),
        pytest.param("", f"{PROTO};encoding=text", PROMETHEUS_TYPE, id="unknown-encoding"),
    ],
)
def test_metrics_answers_protobuf_when_asked(middleware, query, accept, content_type):
    """GET /metrics gives decodable protobuf with client_golang's Content-Type when asked."""
    for _ in range(3):
        call(middleware, "/api/leads")
    status, headers, body = call(middleware, "/metrics", query=query, accept=accept)
    assert status == "200 OK"
    assert headers["Content-Type"] == content_type
    assert headers["Content-Length"] == str(len(body))
    if content_type == PROTOBUF_TYPE:
        found = as_samples(decode(body))
        labels = (("endpoint", "/api/leads"), ("method", "GET"), ("status", "2xx"))
        assert found[("wsgi_observe_requests_total", labels)] == 3


def test_head_gives_the_protobuf_headers_without_a_body(middleware):
    """HEAD /metrics in protobuf has the GET headers and an empty body."""
    call(middleware, "/api/leads")
    _, get_headers, get_body = call(middleware, "/metrics", accept=PROMETHEUS_PROTOBUF_ACCEPT)
    status, headers, body = call(
        middleware, "/metrics", accept=PROMETHEUS_PROTOBUF_ACCEPT, method="HEAD"
    )
    assert (status, body) == ("200 OK", b"")
    assert headers["Content-Type"] == get_headers["Content-Type"] == PROTOBUF_TYPE
    assert get_body
