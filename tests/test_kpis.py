"""Business KPIs (wsgi_observe.kpis): definitions, recording, caps, state files, formats."""

from __future__ import annotations

import json
import logging
import math
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.internal.encoder import _VarintBytes
from hdrh.histogram import HdrHistogram
from prom_tools import PROMTOOL, backfill_openmetrics

from tests.client_model import metrics_pb2
from tests.test_protobuf import as_samples, decode
from wsgi_observe import ObservabilityMiddleware, kpis, log_business_event
from wsgi_observe.exposition.json import json_document
from wsgi_observe.exposition.prometheus import render_openmetrics, render_prometheus
from wsgi_observe.exposition.protobuf import render_protobuf
from wsgi_observe.histograms import MAX_US
from wsgi_observe.kpidata import KpiFamily, KpiSeries, kpis_delta, parse_kpi_key
from wsgi_observe.metrics import MetricsStore, process_store
from wsgi_observe.multiprocess import merge
from wsgi_observe.multiprocess.archive import ARCHIVE, read_archive, sweep
from wsgi_observe.multiprocess.reader import Reader, parse_key
from wsgi_observe.multiprocess.table import WorkerTable


def _kpis(store: MetricsStore) -> dict[str, KpiFamily]:
    return store.snapshot().kpis


def _values(family: KpiFamily) -> dict[tuple[str, ...], Any]:
    return {labels: series.value for labels, series in family.series.items()}


# Definitions ------------------------------------------------------------------------------


def test_a_counter_counts_exactly_by_label(store):
    """Increments add up per label set; ``_total`` in the name is the counter's suffix."""
    leads = kpis.counter("leads_created_total", "Leads.", labels=("source",), store=store)
    assert leads.name == "leads_created"
    for _ in range(3):
        leads.labels(source="web").inc()
    leads.labels(source="ads").inc(5)
    leads.labels(source="web").inc(0)
    assert _values(_kpis(store)["leads_created"]) == {("ads",): 5, ("web",): 3}


def test_defining_the_same_kpi_again_returns_it(store):
    """Same definition: the same object (a module imported twice); another raises."""
    first = kpis.counter("signups", "Signups.", labels=("plan",), store=store)
    assert kpis.counter("signups", "Signups.", labels=("plan",), store=store) is first
    with pytest.raises(ValueError, match="already defined differently"):
        kpis.counter("signups", "Signups.", labels=("tier",), store=store)
    with pytest.raises(ValueError, match="already defined differently"):
        kpis.gauge("signups", "Signups.", store=store)


def test_series_names_of_two_kpis_cannot_clash(store):
    """A gauge named like a counter's samples would make two families of one name."""
    kpis.counter("orders", "Orders.", store=store)
    with pytest.raises(ValueError, match="clashes with KPI orders"):
        kpis.gauge("orders_total", "Orders too.", store=store)
    kpis.distribution("basket", "Basket size.", "items", store=store)
    with pytest.raises(ValueError, match="clashes"):
        kpis.gauge("basket_items_count", "Count.", store=store)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("9lives", id="digit-first"),
        pytest.param("leads-created", id="dash"),
        pytest.param("leads created", id="space"),
        pytest.param("rule:recorded", id="colon"),
        pytest.param("", id="empty"),
        pytest.param("wsgi_observe_leads", id="reserved-prefix"),
        pytest.param("x" * 300, id="too-long"),
        pytest.param(7, id="not-text"),
    ],
)
def test_bad_names_are_refused_at_definition(store, name):
    """A name Prometheus would refuse raises a ValueError naming it, at definition."""
    with pytest.raises(ValueError, match="KPI name"):
        kpis.counter(name, "x", store=store)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        pytest.param(("__reserved",), "reserved", id="double-underscore"),
        pytest.param(("le",), "reserved", id="le"),
        pytest.param(("quantile",), "reserved", id="quantile"),
        pytest.param(("a-b",), "label name", id="dash"),
        pytest.param(("1a",), "label name", id="digit-first"),
        pytest.param(("a", "a"), "repeat", id="repeated"),
        pytest.param("source", "not the string", id="a-string"),
    ],
)
def test_bad_label_names_are_refused_at_definition(store, labels, message):
    """Label names follow Prometheus's rules; a distribution keeps le and quantile."""
    with pytest.raises(ValueError, match=message):
        kpis.distribution("score", "x", "points", labels=labels, store=store)


def test_other_bad_definitions_are_refused(store):
    """Unit, buckets, mode and max_series are checked too."""
    with pytest.raises(ValueError, match="unit"):
        kpis.distribution("score", "x", "per cent", store=store)
    with pytest.raises(ValueError, match="buckets"):
        kpis.distribution("score", "x", "points", buckets=(5, 1), store=store)
    with pytest.raises(ValueError, match="multiprocess_mode"):
        kpis.gauge("queue", "x", multiprocess_mode="max", store=store)
    with pytest.raises(ValueError, match="max_series"):
        kpis.counter("orders", "x", max_series=0, store=store)
    with pytest.raises(ValueError, match="description"):
        kpis.counter("orders", None, store=store)  # type: ignore[arg-type]


def test_labels_not_declared_are_refused_at_use(store):
    """``labels()`` takes exactly the declared names; a labelled KPI needs them."""
    leads = kpis.counter("leads", "Leads.", labels=("source",), store=store)
    with pytest.raises(ValueError, match=r"takes exactly \('source',\)"):
        leads.labels(src="web")
    with pytest.raises(ValueError, match="takes exactly"):
        leads.labels(source="web", extra="x")
    with pytest.raises(ValueError, match="takes exactly"):
        leads.labels()
    with pytest.raises(ValueError, match=r"record through \.labels\(source=\.\.\.\)"):
        leads.inc()
    plain = kpis.counter("visits", "Visits.", store=store)
    with pytest.raises(ValueError, match="takes exactly"):
        plain.labels(source="web")


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        pytest.param("counter", -1, id="counter-negative"),
        pytest.param("counter", 1.5, id="counter-fraction"),
        pytest.param("counter", "1", id="counter-text"),
        pytest.param("counter", True, id="counter-bool"),
        pytest.param("gauge", math.nan, id="gauge-nan"),
        pytest.param("gauge", math.inf, id="gauge-inf"),
        pytest.param("gauge", 1e30, id="gauge-huge"),
        pytest.param("gauge", "3", id="gauge-text"),
        pytest.param("distribution", -0.5, id="observe-negative"),
        pytest.param("distribution", math.nan, id="observe-nan"),
        pytest.param("distribution", None, id="observe-none"),
    ],
)
def test_bad_values_raise_and_count_nothing(store, kind, bad):
    """A value a KPI cannot hold raises a ValueError and leaves the numbers alone."""
    if kind == "counter":
        kpi: Any = kpis.counter("things", "x", store=store)
        record = kpi.inc
    elif kind == "gauge":
        kpi = kpis.gauge("things", "x", store=store)
        record = kpi.set
    else:
        kpi = kpis.distribution("things", "x", "", store=store)
        record = kpi.observe
    with pytest.raises(ValueError, match="KPI things"):
        record(bad)
    family = _kpis(store).get(kpi.name)
    assert family is None or all(
        s.value == 0 and not s.hist and s.sum == 0 for s in family.series.values()
    )


def test_label_values_past_the_cap_share_overflow(store):
    """Past ``max_series`` distinct label sets, and for values too long, one series holds
    them all: memory stays bounded whatever values clients send."""
    hits = kpis.counter("hits", "Hits.", labels=("page", "kind"), max_series=3, store=store)
    for number in range(50):
        hits.labels(page=f"/p/{number}", kind="a").inc()
    hits.labels(page="x" * 500, kind="a").inc()
    hits.labels(page=0, kind="a").inc()  # str() of the value: "0"
    hits.labels(page="/p/0", kind="a").inc()
    assert _values(_kpis(store)["hits"]) == {
        ("/p/0", "a"): 2,
        ("/p/1", "a"): 1,
        ("/p/2", "a"): 1,
        ("<overflow>", "<overflow>"): 49,
    }
    assert len(hits._children) <= 2 * 3


def test_gauge_modes_in_one_process(store):
    """In one process every mode is the plain gauge: set, inc, dec, fractions."""
    for mode in ("sum", "livesum", "mostrecent"):
        gauge = kpis.gauge(f"g_{mode}", "x", multiprocess_mode=mode, store=store)
        gauge.set(10)
        gauge.inc()
        gauge.dec(0.25)
        gauge.inc(2)
    assert {name: _values(f)[()] for name, f in _kpis(store).items()} == {
        "g_livesum": 12.75,
        "g_mostrecent": 12.75,
        "g_sum": 12.75,
    }


def test_distribution_percentiles_are_hdrs(store):
    """p50/p95/p99/max equal HdrHistogram's own for the same values; the sum is exact."""
    rng = random.Random(7)
    values = [rng.choice([rng.randint(0, 300), rng.randint(1000, 2_000_000)]) for _ in range(3000)]
    amounts = kpis.distribution("order_value", "Orders.", "cents", store=store)
    reference = HdrHistogram(1, MAX_US, 2)
    for value in values:
        amounts.observe(value)
        reference.record_value(value)
    amounts.observe(12.345)
    reference.record_value(12)
    document = json_document(store.snapshot(), service="s", version="1")["kpis"]
    series = document["order_value_cents"]["series"][0]
    assert series["count"] == len(values) + 1
    assert series["sum"] == pytest.approx(sum(values) + 12.345, abs=1e-9)
    for key, percent in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert series[key] == reference.get_value_at_percentile(percent), key
    assert series["max"] == reference.get_max_value()


def test_log_business_event_counts_events_by_name(store, caplog):
    """The guide's ``lead_created`` events are countable without new code."""
    shared = process_store()
    before = _values(shared.snapshot().kpis.get("business_events") or KpiFamily("", "", ""))
    with caplog.at_level(logging.INFO):
        log_business_event("lead_created", entity_id=1, data={"source": "web"})
        log_business_event("lead_created", entity_id=2)
        log_business_event("lead_converted", entity_id=1)
    after = _values(shared.snapshot().kpis["business_events"])
    assert after[("lead_created",)] - before.get(("lead_created",), 0) == 2
    assert after[("lead_converted",)] - before.get(("lead_converted",), 0) == 1
    assert any(r.getMessage() == "Business event: lead_created" for r in caplog.records)


def test_a_snapshot_difference_gives_what_happened_between(store):
    """Counters and distributions subtract; gauges are the newer value."""
    done = kpis.counter("done", "x", store=store)
    size = kpis.distribution("size", "x", "bytes", store=store)
    level = kpis.gauge("level", "x", store=store)
    done.inc(4)
    size.observe(10)
    level.set(3)
    older = store.snapshot().kpis
    done.inc(2)
    size.observe(200)
    size.observe(200)
    level.set(1)
    delta = kpis_delta(store.snapshot().kpis, older)
    assert delta["done"].series[()].value == 2
    assert delta["size_bytes"].series[()].hist == {200: 2}
    assert delta["size_bytes"].series[()].sum == 400
    assert delta["level"].series[()].value == 1


# Formats ----------------------------------------------------------------------------------


def _filled(store: MetricsStore) -> MetricsStore:
    leads = kpis.counter("leads_created", "Leads created, by source.", ("source",), store=store)
    leads.labels(source="website").inc(3)
    leads.labels(source='we"ird\\\n<script>').inc()
    score = kpis.distribution("lead_score", "Score of new leads.", "points", store=store)
    for value in (10, 50, 50, 90, 99):
        score.observe(value)
    kpis.distribution("empty", "Nothing yet.", "", ("kind",), store=store)
    open_customers = kpis.gauge(
        "open_customers",
        "Customers with an open deal.",
        multiprocess_mode="mostrecent",
        store=store,
    )
    open_customers.set(20.5)
    return store


def test_json_document_has_a_kpis_block(store):
    """``/metrics`` JSON: each KPI with its type, help, labels and series."""
    document = json_document(_filled(store).snapshot(), service="s", version="1")
    found = document["kpis"]
    assert found["leads_created"]["total"] == 4
    assert found["leads_created"]["series"][1] == {"labels": {"source": "website"}, "value": 3}
    assert found["open_customers"] == {
        "type": "gauge",
        "help": "Customers with an open deal.",
        "multiprocess_mode": "mostrecent",
        "labels": [],
        "series": [{"labels": {}, "value": 20.5}],
    }
    score = found["lead_score_points"]
    assert score["unit"] == "points"
    assert score["series"][0] == {
        "labels": {},
        "count": 5,
        "sum": 299,
        "avg": 59.8,
        "p50": 50,
        "p95": 99,
        "p99": 99,
        "max": 99,
    }
    json.dumps(document)


def test_prometheus_text_has_kpi_families(store):
    """Counters with ``_total``, gauges, histograms with le counts <= B, quantile summaries."""
    text = render_prometheus(_filled(store).snapshot(), {}).decode()
    assert "# TYPE leads_created_total counter\n" in text
    assert 'leads_created_total{source="website"} 3\n' in text
    assert 'leads_created_total{source="we\\"ird\\\\\\n<script>"} 1\n' in text
    assert "# TYPE open_customers gauge\nopen_customers 20.5\n" in text
    assert 'lead_score_points_bucket{le="10.0"} 1\n' in text  # 10 <= 10
    assert 'lead_score_points_bucket{le="50.0"} 3\n' in text
    assert 'lead_score_points_bucket{le="+Inf"} 5\n' in text
    assert "lead_score_points_sum 299.0\nlead_score_points_count 5\n" in text
    assert 'lead_score_quantile_points{quantile="0.95"} 99.0\n' in text
    assert "empty" not in text  # no series yet: no family, as client_golang does


@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool (Debian 'prometheus')")
def test_promtool_accepts_the_kpi_families(store):
    """``promtool check metrics`` finds nothing to say about the text with KPIs."""
    body = render_prometheus(_filled(store).snapshot(), {"service": "s", "version": "1"})
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool (Debian 'prometheus')")
def test_openmetrics_with_kpis_is_read_by_prometheus(store, tmp_path):
    """Prometheus's OpenMetrics parser (promtool's backfill) reads every KPI sample."""
    om = render_openmetrics(_filled(store).snapshot(), {}).decode()
    assert "# UNIT lead_score_points points\n" in om
    assert "# TYPE leads_created counter\n" in om
    result = backfill_openmetrics(om, tmp_path)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()


def test_protobuf_carries_the_same_kpi_samples(store):
    """The protobuf answer decodes (official runtime) to the text format's KPI samples."""
    snapshot = _filled(store).snapshot()
    data = render_protobuf(snapshot, {})
    again = b"".join(_VarintBytes(m.ByteSize()) + m.SerializeToString() for m in decode(data))
    assert again == data  # canonical: the official runtime writes the same bytes
    found = {f.name: f for f in decode(data)}
    assert found["leads_created_total"].type == metrics_pb2.COUNTER
    assert found["lead_score_points"].type == metrics_pb2.HISTOGRAM
    assert found["lead_score_points"].unit == "points"
    assert found["lead_score_quantile_points"].type == metrics_pb2.SUMMARY
    samples = as_samples(list(found.values()))
    assert samples[("leads_created_total", (("source", "website"),))] == 3
    assert samples[("open_customers", ())] == 20.5
    assert samples[("lead_score_points_bucket", (("le", "50.0"),))] == 3
    assert samples[("lead_score_points_count", ())] == 5
    assert samples[("lead_score_quantile_points", (("quantile", "0.5"),))] == 50
    summary = found["lead_score_quantile_points"].metric[0].summary
    assert (summary.sample_count, summary.sample_sum) == (5, 299)


def test_the_middleware_shows_process_kpis(monkeypatch):
    """A middleware with its own store still shows the process-wide KPIs (one process)."""
    from tests.wsgi_client import call

    name = f"visits_{random.randrange(10**9)}"
    kpis.counter(name, "Visits.").inc(2)
    app = ObservabilityMiddleware(lambda e, s: [], store=MetricsStore())
    response = call(app, "/metrics")
    assert json.loads(response.body)["kpis"][name]["total"] == 2


# State files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(["k", "c", "leads", ["web"], "extra"], id="counter-extra-item"),
        pytest.param(["k", "c", "bad name", ["web"]], id="bad-name"),
        pytest.param(["k", "c", "leads", "web"], id="labels-not-a-list"),
        pytest.param(["k", "c", "leads", [1]], id="label-not-text"),
        pytest.param(["k", "c", "leads", ["x" * 129]], id="label-too-long"),
        pytest.param(["k", "c", "leads", ["a"] * 17], id="too-many-labels"),
        pytest.param(["k", "h", "leads", [], 99999], id="bucket-out-of-range"),
        pytest.param(["k", "h", "leads", [], -1], id="bucket-negative"),
        pytest.param(["k", "h", "leads", [], "1"], id="bucket-text"),
        pytest.param(["k", "m", "leads", [], ""], id="empty-id"),
        pytest.param(["k", "t", "leads", [], "x" * 33], id="long-id"),
        pytest.param(["k", "z", "leads", []], id="unknown-kind"),
        pytest.param(["k", "d", "leads", "counter", "", "", [], "", []], id="definition-short"),
        pytest.param(["k", "d", "leads", "summary", "", "", [], "", [], 9], id="definition-kind"),
        pytest.param(["k", "d", "leads", "gauge", "", "", [], "max", [], 9], id="definition-mode"),
        pytest.param(["k", "d", "leads", "counter", "", "", ["le-x"], "", [], 9], id="def-label"),
        pytest.param(
            ["k", "d", "s", "distribution", "", "", [], "", [5, 1], 9], id="definition-buckets"
        ),
        pytest.param(["k", "d", "s", "counter", "", "h" * 2000, [], "", [], 9], id="def-help"),
        pytest.param(["k", "d", "s", "counter", "", "", [], "", [], 0], id="def-max-series"),
        pytest.param(["k", "d", "s", "counter", "", "", [], "", [], "9"], id="def-max-text"),
    ],
)
def test_malformed_kpi_keys_are_rejected(item):
    """A state file's KPI key of any other shape is not ours: the reader refuses it."""
    assert parse_kpi_key(item) is None
    assert parse_key(item) is None


def test_well_formed_kpi_keys_are_read_back():
    """Every key the recorder writes reads back as the same tuple."""
    store = _filled(MetricsStore())
    kpis.gauge("live", "x", multiprocess_mode="livesum", store=store).inc()
    keys = [k for k in store.table.keys if k[0] == "k"]
    assert {k[1] for k in keys} == set("dchsmtl")
    for key in keys:
        assert parse_key(json.loads(json.dumps(list(key)))) == key


def _table(state: Path) -> tuple[WorkerTable, MetricsStore]:
    table = WorkerTable(str(state))
    return table, MetricsStore(table)


def _define(store: MetricsStore) -> tuple[Any, Any, Any, Any, Any]:
    return (
        kpis.counter("orders", "Orders.", ("channel",), store=store),
        kpis.distribution("order_value", "Order value.", "cents", store=store),
        kpis.gauge("open_carts", "Open carts.", store=store),
        kpis.gauge("busy", "Busy now.", multiprocess_mode="livesum", store=store),
        kpis.gauge("stock", "Stock.", multiprocess_mode="mostrecent", store=store),
    )


def test_kpis_merge_across_processes_and_survive_their_exit(tmp_path):
    """Two processes' tables merge exactly; when one exits, its counts stay (archive),
    its live-only gauge goes, and the most recent set value is still the latest."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    first, first_store = _table(state)
    second, second_store = _table(state)
    try:
        orders, value, carts, busy, stock = _define(first_store)
        orders2, value2, carts2, busy2, stock2 = _define(second_store)
        orders.labels(channel="web").inc(3)
        orders2.labels(channel="web").inc(4)
        orders2.labels(channel="app").inc()
        for amount in (100, 200, 300):
            value.observe(amount)
        value2.observe(5000)
        carts.inc(5)
        carts2.dec(2)  # balances across processes
        busy.inc(1)
        busy2.inc(2)
        stock.set(10)
        stock2.set(7)  # the later set wins
        found = merge.collect_snapshot(str(state)).kpis
        assert _values(found["orders"]) == {("app",): 1, ("web",): 7}
        assert found["order_value_cents"].series[()].count == 4
        assert found["order_value_cents"].series[()].sum == 5600
        assert _values(found["open_carts"]) == {(): 3}
        assert _values(found["busy"]) == {(): 3}
        assert _values(found["stock"]) == {(): 7}
        second.close()  # the process exits: its lock goes, a sweep absorbs it
        assert sweep(str(state), own_id=first.id) == 1
        found = merge.collect_snapshot(str(state), first_store, own_id=first.id).kpis
        assert _values(found["orders"]) == {("app",): 1, ("web",): 7}
        assert found["order_value_cents"].series[()].count == 4
        assert _values(found["open_carts"]) == {(): 3}  # dead parts of "sum" gauges stay
        assert _values(found["busy"]) == {(): 1}  # "livesum": only the living
        assert _values(found["stock"]) == {(): 7}
        stock.set(11)
        found = merge.collect_snapshot(str(state), first_store, own_id=first.id).kpis
        assert _values(found["stock"]) == {(): 11}
        archive = json.loads((state / ARCHIVE).read_bytes())
        assert not any(k[:2] == ["k", "l"] for k, _ in archive["pairs"])
    finally:
        first.close()
        second.close()


def test_hostile_kpi_records_in_the_archive_are_skipped(tmp_path, caplog):
    """Archive records of the wrong shape or sign are skipped; good ones are kept."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    good = ["k", "c", "orders", ["web"]]
    (state / ARCHIVE).write_bytes(
        json.dumps(
            {
                "merged": [],
                "pairs": [
                    [good, 5],
                    [["k", "c", "orders", ["app"]], -3],  # a counter never goes negative
                    [["k", "g", "carts", []], -3],  # a summed gauge may
                    [["k", "c", "orders", [["nested"]]], 1],
                    [["k", "h", "x", [], 10**9], 1],
                    [["k", "c", "orders", ["web"]], 2**63],
                ],
            }
        ).encode()
    )
    with caplog.at_level(logging.WARNING):
        archive = read_archive(str(state))
    assert archive.pairs == [
        (("k", "c", "orders", ("web",)), 5),
        (("k", "g", "carts", ()), -3),
    ]
    assert "skipped 4 malformed records" in caplog.text


def test_hostile_kpi_key_lines_in_a_state_file_stop_the_reader(tmp_path, caplog):
    """A key line out of shape in a live process's file: nothing after it is trusted."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    table, store = _table(state)
    try:
        kpis.counter("orders", "Orders.", store=store).inc(2)
        with open(table.keys_path, "ab") as keys:
            keys.write(json.dumps([len(table.keys), "k", "c", "orders", [1, 2]]).encode() + b"\n")
        reader = Reader(str(state), table.id)
        with caplog.at_level(logging.WARNING):
            reader.refresh()
        assert reader.broken
        assert len(reader.slots) == len(table.keys)
        reader.close()
    finally:
        table.close()


def test_a_kpi_series_without_its_definition_is_left_out():
    """Numbers under a name no process defined cannot be labelled: they are not shown."""
    from wsgi_observe.kpidata import KpiLayout

    layout = KpiLayout()
    layout.add(("k", "c", "ghost", ("a",)), 0)
    layout.add(("k", "d", "known", "counter", "", "", ("x",), "", (), 9), 1)
    layout.add(("k", "c", "known", ("a", "b")), 2)  # two values for one label name
    layout.add(("k", "h", "known", ("a",), 3), 3)  # a bucket for a counter
    assert {n: f.series for n, f in layout.build([5, 0, 7, 1]).items()} == {"known": {}}


def test_kpi_series_plain_data():
    """KpiSeries.count adds up the HDR buckets."""
    assert KpiSeries(hist={1: 2, 300: 3}).count == 5


def test_label_values_of_any_type_are_their_text(store):
    """Values are str() of what is given, unhashable ones too; names in any order."""
    hits = kpis.counter("hits", "Hits.", labels=("a", "b"), store=store)
    hits.labels(a=1, b=["x"]).inc()
    hits.labels(b="['x']", a="1").inc()
    assert _values(_kpis(store)["hits"]) == {("1", "['x']"): 2}


def test_the_label_cap_holds_across_processes_and_in_the_archive(tmp_path):
    """Each process admits its own max_series label sets; the merged view and the archive
    keep max_series too (the rest add into ``<overflow>``), and the total stays exact."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    tables = [_table(state) for _ in range(3)]
    try:
        for number, (_, store) in enumerate(tables):
            pages = kpis.counter("pages", "Pages.", ("page",), max_series=2, store=store)
            for page in range(5):
                pages.labels(page=f"/p{number}-{page}").inc(page + 1)  # 15 per process
        found = merge.collect_snapshot(str(state)).kpis["pages"]
        assert len(found.series) == 3
        assert ("<overflow>",) in found.series
        assert sum(s.value for s in found.series.values()) == 45
        for table, _ in tables:
            table.close()
        assert sweep(str(state)) == 3
        archived = {k[3] for k, _ in read_archive(str(state)).pairs if k[:2] == ("k", "c")}
        assert len(archived) == 3 and ("<overflow>",) in archived
        found = merge.collect_snapshot(str(state)).kpis["pages"]
        assert sum(s.value for s in found.series.values()) == 45
    finally:
        for table, _ in tables:
            table.close()
