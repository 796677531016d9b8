"""Business KPIs under attack: hostile label values, numbers at their limits, hostile and
conflicting definitions in state files (wsgi_observe.kpis, wsgi_observe.kpidata)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.wsgi_client import call
from wsgi_observe import ObservabilityMiddleware, kpis, log_business_event
from wsgi_observe.exposition.json import json_document, render_json
from wsgi_observe.exposition.prometheus import render_prometheus
from wsgi_observe.histograms import MAX_US
from wsgi_observe.kpidata import KpiFamily
from wsgi_observe.metrics import MetricsStore
from wsgi_observe.multiprocess import _adopt, merge
from wsgi_observe.multiprocess.archive import ARCHIVE, read_archive, sweep
from wsgi_observe.multiprocess.reader import parse_key
from wsgi_observe.multiprocess.table import WorkerTable

PROMTOOL = "/usr/bin/promtool"
TOP = 2**63 - 1


def _values(family: KpiFamily) -> dict[tuple[str, ...], Any]:
    return {labels: series.value for labels, series in family.series.items()}


def _app(store: MetricsStore) -> ObservabilityMiddleware:
    return ObservabilityMiddleware(lambda e, s: [], store=store, access_log=False)


def _state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    return state


# Label values ------------------------------------------------------------------------------


def test_a_lone_surrogate_label_value_cannot_break_metrics(store):
    """``json.loads('"\\ud800"')`` gives a lone surrogate, which no UTF-8 output can hold:
    recorded as U+FFFD, every format of ``/metrics`` still answers (it was a 500 forever)."""
    sources = kpis.counter("sources", "Sources.", labels=("source",), store=store)
    sources.labels(source=json.loads('"\\ud800web"')).inc()
    sources.labels(source="\udcff").inc(2)  # surrogateescape's
    log_business_event(json.loads('"\\udfffevent"'))
    app = _app(store)
    for kind in ("json", "prometheus", "openmetrics", "protobuf"):
        response = call(app, "/metrics", query=f"format={kind}")
        assert response.status == "200 OK", (kind, response.body[:200])
    document = json.loads(call(app, "/metrics").body)
    found = {s["labels"]["source"]: s["value"] for s in document["kpis"]["sources"]["series"]}
    assert found == {"\ufffdweb": 1, "\ufffd": 2}


def test_a_lone_surrogate_label_value_reaches_the_state_file(tmp_path):
    """In a shared table the key is written as JSON: the surrogate must not raise from
    ``inc()`` (it did: a TypeError, a 500 for the request that sent it)."""
    state = _state(tmp_path)
    table = WorkerTable(str(state))
    try:
        store = MetricsStore(table)
        kpis.counter("sources", "S.", labels=("source",), store=store).labels(
            source="x\ud800"
        ).inc()
        assert _values(merge.collect_snapshot(str(state)).kpis["sources"]) == {("x\ufffd",): 1}
    finally:
        table.close()


# Numbers at their limits -------------------------------------------------------------------


def test_a_counter_past_int64_stops_at_its_top(store, tmp_path):
    """A counter a state file holds stays at 2**63-1 instead of raising memoryview's
    ValueError from ``inc()``; in memory (a list counts on), JSON shows the top rather than
    failing every ``/metrics`` (orjson refuses larger integers)."""
    big = kpis.counter("big", "Big.", store=store)
    big.inc(2**62)
    big.inc(2**64)
    document = json.loads(call(_app(store), "/metrics").body)
    assert document["kpis"]["big"]["series"][0]["value"] == TOP
    assert document["kpis"]["big"]["total"] == TOP

    state = _state(tmp_path)
    table = WorkerTable(str(state))
    try:
        _adopt(store, table)  # the memory counts move into the file, capped there
        filed = kpis.counter("filed", "Filed.", store=store)
        filed.inc(TOP)
        filed.inc(1)
        filed.inc(2**70)
        big.inc(5)
        found = merge.collect_snapshot(str(state)).kpis
        assert _values(found["filed"]) == {(): TOP}
        assert _values(found["big"]) == {(): TOP}
    finally:
        table.close()


def test_counter_sums_past_int64_across_processes_still_render(tmp_path):
    """Three processes at the top add up past what JSON integers hold: shown as the top."""
    state = _state(tmp_path)
    tables = [WorkerTable(str(state)) for _ in range(3)]
    try:
        for table in tables:
            kpis.counter("many", "M.", store=MetricsStore(table)).inc(TOP)
        snapshot = merge.collect_snapshot(str(state))
        document = json.loads(render_json(json_document(snapshot, service="s", version="1")))
        assert document["kpis"]["many"]["total"] == TOP
    finally:
        for table in tables:
            table.close()


def test_a_huge_observation_counts_at_the_top(store):
    """``observe(1.7e308)`` is finite: it counts as the largest value kept (it raised
    OverflowError turning ``value * 1000`` into an integer)."""
    sizes = kpis.distribution("sizes", "Sizes.", "bytes", store=store)
    sizes.observe(1.7e308)
    sizes.observe(float(2**70))
    series = store.snapshot().kpis["sizes_bytes"].series[()]
    assert series.count == 2
    assert series.sum == 2 * MAX_US


def test_a_gauge_refuses_true_in_dec_as_in_inc(store):
    """``dec(True)`` subtracted 1 while ``inc(True)`` raised."""
    level = kpis.gauge("level", "Level.", store=store)
    for method in (level.inc, level.dec):
        with pytest.raises(ValueError, match="takes a number, got True"):
            method(True)
    level.dec(2)
    assert _values(store.snapshot().kpis["level"]) == {(): -2}


def test_one_overflow_value_among_others_counts_against_the_cap(tmp_path):
    """A client can send ``<overflow>`` itself. With two labels, ``("<overflow>", x)`` was
    taken for the overflow series and never folded: each recycled worker added its own to
    the archive, without bound. Only the all-``<overflow>`` set is exempt."""
    state = _state(tmp_path)
    for generation in range(4):
        table = WorkerTable(str(state))
        try:
            pairs = kpis.counter(
                "pairs", "P.", labels=("a", "b"), max_series=2, store=MetricsStore(table)
            )
            for number in range(2):
                pairs.labels(a="<overflow>", b=f"{generation}-{number}").inc()
        finally:
            table.close()
        sweep(str(state))
    archived = {k[3] for k, _ in read_archive(str(state)).pairs if k[:2] == ("k", "c")}
    assert len(archived) == 3 and ("<overflow>", "<overflow>") in archived
    found = merge.collect_snapshot(str(state)).kpis["pairs"]
    assert len(found.series) == 3
    assert sum(s.value for s in found.series.values()) == 8


# Definitions from other processes -------------------------------------------------------------


def test_two_versions_of_the_code_cannot_make_two_families_of_one_name(tmp_path):
    """Old workers count a counter ``foo`` (``foo_total``), new ones a gauge ``foo_total``
    (a reload between them): both families made Prometheus refuse the whole scrape. The
    answering process's definition is shown; the clashing one is left out."""
    state = _state(tmp_path)
    old, new = WorkerTable(str(state)), WorkerTable(str(state))
    try:
        old_store, new_store = MetricsStore(old), MetricsStore(new)
        kpis.counter("foo", "Foo.", store=old_store).inc()
        kpis.gauge("foo_total", "Foo now.", store=new_store).set(3)
        kpis.distribution("wait", "Wait.", "ms", store=old_store).observe(4)
        kpis.gauge("wait_ms_count", "Clashes with the histogram's count.", store=new_store).set(1)
        snapshot = merge.collect_snapshot(str(state), new_store, own_id=new.id)
        assert sorted(snapshot.kpis) == ["foo_total", "wait_ms_count"]
        body = render_prometheus(snapshot, {})
        result = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60
        )
        assert b"second HELP" not in result.stderr and b"second TYPE" not in result.stderr
        assert body.count(b"# TYPE foo_total ") == 1
        snapshot = merge.collect_snapshot(str(state), old_store, own_id=old.id)
        assert sorted(snapshot.kpis) == ["foo", "wait_ms"]  # the old code's view, alike
    finally:
        old.close()
        new.close()


def test_a_changed_definition_shows_the_new_code_s_series(tmp_path):
    """A label added in a new version: the first definition seen (the old one, kept in
    the archive) won, and the new workers' counts were left out as not fitting it."""
    state = _state(tmp_path)
    old = WorkerTable(str(state))
    kpis.counter("leads", "Leads.", ("source",), store=MetricsStore(old)).labels(source="web").inc(
        2
    )
    old.close()
    assert sweep(str(state)) == 1  # the old worker exited: its numbers are archived
    merge.collect_snapshot(str(state))  # a scrape saw the old definition first
    new = WorkerTable(str(state))
    try:
        store = MetricsStore(new)
        leads = kpis.counter("leads", "Leads by source.", ("source", "campaign"), store=store)
        leads.labels(source="web", campaign="spring").inc(5)
        for own in (None, store):  # another new worker's scrape, and this one's
            found = merge.collect_snapshot(str(state), own, own_id=new.id if own else None)
            family = found.kpis["leads"]
            assert (family.labels, family.help) == (("source", "campaign"), "Leads by source.")
            assert _values(family) == {("web", "spring"): 5}
    finally:
        new.close()


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(
            ["k", "d", "wsgi_observe_requests", "counter", "", "", [], "", [], 9], id="ours"
        ),
        pytest.param(["k", "d", "x", "counter", "", "", ["a", "a"], "", [], 9], id="label-twice"),
        pytest.param(["k", "d", "x", "gauge", "", "", ["__name__"], "sum", [], 9], id="dunder"),
        pytest.param(["k", "d", "x", "distribution", "", "", ["le"], "", [1], 9], id="le"),
        pytest.param(
            ["k", "d", "x", "distribution", "", "", ["quantile"], "", [1], 9], id="quantile"
        ),
    ],
)
def test_definitions_the_api_refuses_are_refused_in_state_files(item):
    """A definition read back gets the API's checks: one naming our own family, or whose
    labels would repeat one in the output (``{a="1",a="2"}``, a second ``le``)."""
    assert parse_key(item) is None


def test_any_label_name_can_be_given_to_labels(store):
    """``self`` is a fine label name: ``labels(self=...)`` raised TypeError (multiple values
    for argument 'self')."""
    owners = kpis.counter("owners", "Owners.", labels=("self", "values"), store=store)
    owners.labels(self="me", values="v").inc()
    assert _values(store.snapshot().kpis["owners"]) == {("me", "v"): 1}


def test_a_mostrecent_value_without_its_time_cannot_stop_the_sweep(tmp_path):
    """A worker killed between making a ``mostrecent`` series' value slot and its time slot
    (or an archive saying so) left a value without a time: the sweep raised KeyError, so
    the dead worker was never absorbed and scrapes failed (or froze at the last merge).
    It is dropped now."""
    state = _state(tmp_path)
    table = WorkerTable(str(state))
    store = MetricsStore(table)
    stock = kpis.gauge("stock", "S.", ("w",), multiprocess_mode="mostrecent", store=store)
    stock.labels(w="a").set(3)
    store.kpi_slot(("k", "m", "stock", ("b",), store.kpi_id), stock.definition)  # then killed
    table.close()
    assert sweep(str(state)) == 1
    assert _values(merge.collect_snapshot(str(state)).kpis["stock"]) == {("a",): 3}
    (state / ARCHIVE).write_bytes(
        json.dumps(
            {
                "merged": [],
                "pairs": [
                    [["k", "d", *stock.definition[2:6], ["w"], "mostrecent", [], 100], 0],
                    [["k", "m", "stock", ["a"], "x" * 32], 5000],
                    [["k", "t", "stock", ["a"], "x" * 32], 10**18],
                    [["k", "m", "stock", ["c"], "y" * 32], 7],  # no time
                ],
            }
        ).encode()
    )
    other = WorkerTable(str(state))
    other.close()
    assert sweep(str(state)) == 1
    assert _values(merge.collect_snapshot(str(state)).kpis["stock"]) == {("a",): 5}


def test_a_sweep_that_fails_unforeseen_still_lets_the_scrape_answer(
    tmp_path, monkeypatch, _raise_guarded_errors
):
    """Only OSError from the sweep was caught: any other error (like the KeyError above)
    failed every scrape. The live numbers answer; the error is reported once in a while."""
    state = _state(tmp_path)
    table = WorkerTable(str(state))
    try:
        kpis.counter("orders", "O.", store=MetricsStore(table)).inc(4)

        def broken(*args: Any, **kwargs: Any) -> int:
            raise KeyError("unforeseen")

        monkeypatch.setattr(merge, "sweep", broken)
        assert _values(merge.collect_snapshot(str(state)).kpis["orders"]) == {(): 4}
        assert [repr(e) for e in _raise_guarded_errors] == ["KeyError('unforeseen')"]
        _raise_guarded_errors.clear()
    finally:
        table.close()


def test_a_mostrecent_gauge_set_to_zero_before_sharing_stays_zero(tmp_path):
    """A process that set a ``mostrecent`` gauge to 0 in memory, then started sharing,
    carried the time of that set but not its value (zeros were left behind): an older
    value of another process was shown instead of the 0."""
    state = _state(tmp_path)
    other, table = WorkerTable(str(state)), None
    try:
        kpis.gauge("stock", "S.", multiprocess_mode="mostrecent", store=MetricsStore(other)).set(5)
        mine = MetricsStore()
        kpis.gauge("stock", "S.", multiprocess_mode="mostrecent", store=mine).set(0)
        table = WorkerTable(str(state))
        _adopt(mine, table)
        found = merge.collect_snapshot(str(state), mine, own_id=table.id).kpis
        assert _values(found["stock"]) == {(): 0}
    finally:
        other.close()
        if table is not None:
            table.close()
