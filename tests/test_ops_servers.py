"""The exported files with real parts: Prometheus scraping the demo under gunicorn (2
workers) answers every recording rule, alert expression and dashboard query; Alertmanager
with the generated config delivers a firing alert, then its end, to a PagerDuty stand-in.

Both forms of the rules and the dashboard are checked, each against the Prometheus it is
for, scraping the same demo at the same time: ``classic`` against a Prometheus scraping
text, ``native`` (``--histograms native``) against Prometheus 2.42 started with
``--enable-feature=native-histograms``, which scrapes the protobuf format and stores the
latency histograms only in their native form (no ``_bucket`` series). promtool 2.42's
rule unit tests cannot take native histograms as input series (their notation came in
later releases), so this is where the native latency rules are proven.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Gunicorn, free_port, http_get, wait_until
from fake_pagerduty import ROUTING_KEY, FakePagerDuty
from test_prometheus_server import Prometheus

from wsgi_observe.ops.alertmanager import AlertmanagerOptions, render_alertmanager_config
from wsgi_observe.ops.dashboard import grafana_dashboard, panels_with_data
from wsgi_observe.ops.promql import HISTOGRAMS
from wsgi_observe.ops.rules import (
    ALERT_NAMES,
    RuleOptions,
    prometheus_rules,
    render_prometheus_rules,
)

pytestmark = pytest.mark.slow

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
# Every wait on a server is bounded by this.
DEADLINE_S = 60.0
TRAFFIC = {
    "/api/leads": 30,
    "/api/leads/3": 10,
    "/api/customers": 10,
    "/api/leads/statistics": 4,
    "/api/boom": 10,
}
CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - rules.yml
scrape_configs:
  - job_name: 'wsgi_observe'
    metrics_path: '/metrics'
    static_configs:
      - targets: ['{target}']
"""
ALERTING = """\
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{port}']
"""
# Prometheus's flags for each form of the exported files.
FLAGS = {"classic": (), "native": ("--enable-feature=native-histograms",)}


def _send(server: Gunicorn, batch: dict[str, int]) -> None:
    for path, times in batch.items():
        for _ in range(times):
            status = server.get(path)[0]
            assert status == (500 if path == "/api/boom" else 200), path


def _probe_every_worker(server: Gunicorn) -> None:
    """Run /health/ready until every scrape shows readiness series: each gunicorn worker
    reports the last probe it answered itself, so each must have answered one."""

    def probed_everywhere() -> bool:
        barrier = threading.Barrier(4)

        def probe() -> None:
            barrier.wait(timeout=10)
            server.get("/health/ready")

        threads = [threading.Thread(target=probe) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        scrapes = [server.get("/metrics?format=prometheus")[2] for _ in range(8)]
        return all(b"\nwsgi_observe_ready " in scrape for scrape in scrapes)

    wait_until(probed_everywhere, DEADLINE_S, interval=0.2)


def _start_demo(workdir: Path) -> Gunicorn:
    state = workdir / "state"
    state.mkdir(mode=0o700)
    server = Gunicorn(
        "wsgi_observe.demo:app",
        "-w",
        "2",
        env={
            "WSGI_OBSERVE_STATE_DIR": str(state),
            "DEMO_DB": str(workdir / "demo.sqlite3"),
            "SENDGRID_API_KEY": "",  # the guide's degraded external service, whatever
            "TWILIO_AUTH_TOKEN": "",  # the shell running the tests has set
        },
    )
    return server


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """The demo CRM API under gunicorn with 2 workers sharing their numbers."""
    if not os.path.exists(PROMETHEUS):
        pytest.skip("prometheus is not installed (Debian package 'prometheus')")
    server = _start_demo(tmp_path_factory.mktemp("demo"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def scraped(
    demo: Gunicorn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Prometheus]]:
    """One Prometheus per form of the files (``classic``: text and the default rules;
    ``native``: the feature flag and the rules exported with --histograms native), both
    scraping the demo, after its traffic and readiness probes."""
    started: list[Prometheus] = []
    try:
        for form in HISTOGRAMS:
            workdir = tmp_path_factory.mktemp(f"prometheus-{form}")
            rules = render_prometheus_rules(RuleOptions(histograms=form))
            (workdir / "rules.yml").write_text(rules, encoding="utf-8")
            started.append(
                Prometheus(workdir, f"127.0.0.1:{demo.port}", CONFIG, FLAGS[form])
            )
        for prometheus in started:
            prometheus.wait_ready()
        # One request per endpoint first, seen by two scrapes: rate() counts only what a
        # series gained, so each series must exist before the traffic that is measured.
        _send(demo, dict.fromkeys(TRAFFIC, 1))
        boom = 'wsgi_observe_request_errors_total{endpoint="/api/boom"}'
        for prometheus in started:
            wait_until(
                lambda p=prometheus: p.query(f"count_over_time({boom}[1m]) >= 2"), DEADLINE_S
            )
        _send(demo, TRAFFIC)
        _probe_every_worker(demo)
        for prometheus in started:
            # Until the rules have seen the traffic and the readiness series.
            wait_until(
                lambda p=prometheus: p.query("job:wsgi_observe_request_error_ratio:rate5m > 0"),
                DEADLINE_S,
            )
            wait_until(
                lambda p=prometheus: p.query("wsgi_observe_readiness_check_status"), DEADLINE_S
            )
            wait_until(lambda p=prometheus: _rules_evaluated(p), DEADLINE_S)
        yield dict(zip(HISTOGRAMS, started))
    finally:
        for prometheus in reversed(started):
            prometheus.stop()


def _rules_evaluated(prometheus: Prometheus) -> bool:
    groups = prometheus.api("rules")["groups"]
    return bool(groups) and all(
        rule["health"] == "ok" and rule["evaluationTime"] > 0
        for group in groups
        for rule in group["rules"]
    )


def _query(prometheus: Prometheus, promql: str) -> list[dict[str, Any]]:
    """Instant query; the answer must be a success without warnings."""
    status, _, body = http_get(
        f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    )
    document = json.loads(body)
    assert status == 200 and document["status"] == "success", (promql, document)
    assert not document.get("warnings"), (promql, document["warnings"])
    return list(document["data"]["result"])


@pytest.mark.parametrize("form", HISTOGRAMS)
def test_every_rule_evaluates_without_error(scraped: dict[str, Prometheus], form: str) -> None:
    """Prometheus loaded all the rules (19; 17 in the native form, without the per-bucket
    ones) and evaluates each one without an error."""
    (group,) = scraped[form].api("rules")["groups"]
    exported = prometheus_rules(RuleOptions(histograms=form))["groups"][0]["rules"]
    assert len(group["rules"]) == len(exported) == {"classic": 19, "native": 17}[form]
    assert [
        (r["name"], r["health"], r["lastError"]) for r in group["rules"] if r["health"] != "ok"
    ] == []


@pytest.mark.parametrize("form", HISTOGRAMS)
def test_every_recording_rule_has_data(scraped: dict[str, Prometheus], form: str) -> None:
    """Each recorded series exists, per job and per endpoint; the quantiles are numbers."""
    prometheus = scraped[form]
    rules = prometheus_rules(RuleOptions(histograms=form))["groups"][0]["rules"]
    records = [r["record"] for r in rules if "record" in r]
    assert len(records) == {"classic": 14, "native": 12}[form]
    for record in set(records):
        result = _query(prometheus, record)
        assert result, record
        assert {r["metric"]["job"] for r in result} == {"wsgi_observe"}
        if record.startswith("job_endpoint"):
            assert "/api/boom" in {r["metric"]["endpoint"] for r in result}
    # p50 <= p95 <= p99, numbers, for the job and for each endpoint the traffic went to.
    sent = (set(TRAFFIC) - {"/api/leads/3"}) | {"/api/leads/<int:lead_id>"}
    for level in ("job", "job_endpoint"):
        name = f"{level}:wsgi_observe_request_duration_seconds:quantile_rate5m"
        found: dict[str, dict[str, float]] = {}
        for r in _query(prometheus, name):
            endpoint = r["metric"].get("endpoint", "")
            if level == "job" or endpoint in sent:
                found.setdefault(endpoint, {})[r["metric"]["quantile"]] = float(r["value"][1])
        assert len(found) == (1 if level == "job" else len(sent)), found
        for values in found.values():
            assert set(values) == {"0.5", "0.95", "0.99"}
            assert all(math.isfinite(v) and v > 0 for v in values.values())
            assert values["0.5"] <= values["0.95"] <= values["0.99"]
    (ratio,) = _query(prometheus, "job:wsgi_observe_request_error_ratio:rate5m")
    assert float(ratio["value"][1]) == pytest.approx(10 / 64, rel=0.25)


def test_each_form_needs_its_prometheus(scraped: dict[str, Prometheus]) -> None:
    """With the feature flag, Prometheus 2.42 stores the latency histograms only in native
    form: the classic quantile rules find nothing there, the native ones a number; without
    the flag it is the other way round."""
    quantile = "histogram_quantile(0.95, {})"
    classic = "sum by (le) (rate(wsgi_observe_request_duration_seconds_bucket[5m]))"
    native = "sum(rate(wsgi_observe_request_duration_seconds[5m]))"
    on_native, on_classic = scraped["native"], scraped["classic"]
    assert _query(on_native, "wsgi_observe_request_duration_seconds_bucket") == []
    series = _query(on_native, "wsgi_observe_request_duration_seconds")
    assert series and all("histogram" in r and "value" not in r for r in series)
    assert _query(on_native, quantile.format(classic)) == []
    (p95,) = _query(on_native, quantile.format(native))
    assert math.isfinite(float(p95["value"][1]))
    assert _query(on_classic, quantile.format(native)) == []
    (p95,) = _query(on_classic, quantile.format(classic))
    assert math.isfinite(float(p95["value"][1]))


@pytest.mark.parametrize("form", HISTOGRAMS)
def test_every_alert_expression_answers_and_the_right_ones_have_data(
    scraped: dict[str, Prometheus], form: str
) -> None:
    """Every alert expression is a valid query; the demo's traffic (16 % errors) and its
    degraded external services give the error-rate and not-ready expressions data, the
    others none."""
    rules = prometheus_rules(RuleOptions(histograms=form))["groups"][0]["rules"]
    alerts = {r["alert"]: r["expr"] for r in rules if "alert" in r}
    assert tuple(alerts) == ALERT_NAMES
    found = {name: _query(scraped[form], expr) for name, expr in alerts.items()}
    assert {name for name, result in found.items() if result} == {
        "WsgiObserveErrorRateHigh",
        "WsgiObserveNotReady",
    }
    not_ready = {
        (r["metric"]["check"], r["metric"].get("group"), r["metric"]["status"])
        for r in found["WsgiObserveNotReady"]
    }
    assert not_ready == {
        ("sendgrid", "external_services", "degraded"),
        ("twilio", "external_services", "degraded"),
    }
    # The latency alert's condition without its threshold: the demo's p95 is a number.
    latency = alerts["WsgiObserveLatencyP95High"].replace(" > 2\n", " >= 0\n")
    (p95,) = _query(scraped[form], latency)
    assert p95["metric"]["quantile"] == "0.95" and float(p95["value"][1]) > 0


def _substitute(expr: str, job: str = "wsgi_observe") -> str:
    """A panel query as Grafana sends it: variables replaced (All = ".*")."""
    return (
        expr.replace("$job", job)
        .replace("$instance", ".*")
        .replace("$endpoint", ".*")
        .replace("$__rate_interval", "5m")
    )


@pytest.mark.parametrize("form", HISTOGRAMS)
def test_every_dashboard_query_answers_and_panels_have_data(
    scraped: dict[str, Prometheus], form: str
) -> None:
    """Each panel's queries are valid, and every panel that should show the demo's data
    has some (the native heatmap: native histograms); the variables' queries find the
    job, the instance and the endpoints."""
    prometheus = scraped[form]
    dashboard = grafana_dashboard(histograms=form)
    expected = panels_with_data(form)
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert [p["title"] for p in panels] == list(expected)
    empty = []
    for panel in panels:
        results = [_query(prometheus, _substitute(t["expr"])) for t in panel["targets"]]
        if expected[panel["title"]] and not all(results):
            empty.append(panel["title"])
        if not expected[panel["title"]]:
            assert not any(results), panel["title"]
        if panel["type"] == "heatmap":
            kind = "histogram" if form == "native" else "value"
            assert all(kind in r for r in results[0]), results
    assert empty == []
    jobs = prometheus.api("label/job/values", **{"match[]": "wsgi_observe_info"})
    assert jobs == ["wsgi_observe"]
    endpoints = prometheus.api(
        "label/endpoint/values", **{"match[]": 'wsgi_observe_requests_total{job="wsgi_observe"}'}
    )
    assert set(TRAFFIC) - {"/api/leads/3"} < set(endpoints)
    assert "/api/leads/<int:lead_id>" in endpoints


class Alertmanager:
    """A real Alertmanager on 127.0.0.1 (no cluster port), stopped by pid."""

    def __init__(self, workdir: Path, config: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logfile = workdir / "alertmanager.log"
        self.log = open(self.logfile, "wb")  # closed in stop()
        try:
            self.process = subprocess.Popen(
                [
                    ALERTMANAGER,
                    f"--config.file={config}",
                    f"--storage.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                ],
                stdout=self.log,
                stderr=self.log,
                cwd=workdir,
            )
        except BaseException:
            self.log.close()
            raise

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"alertmanager exited: {self.logfile.read_text()[-2000:]}")
            return http_get(f"{self.url}/-/ready", timeout=1.0)[0] == 200

        wait_until(ready, DEADLINE_S)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.log.close()


def test_alertmanager_pages_pagerduty_and_resolves_with_the_same_dedup_key(
    demo: Gunicorn, tmp_path: Path
) -> None:
    """Errors on the demo fire WsgiObserveErrorRateHigh in Prometheus; Alertmanager with
    the generated config sends PagerDuty a trigger, and when the errors stop, a resolve
    with the same dedup_key. The routing key comes from a file, never from the config."""
    if not os.path.exists(ALERTMANAGER):
        pytest.skip("alertmanager is not installed (Debian package 'prometheus-alertmanager')")
    key_file = tmp_path / "pagerduty_routing_key"
    key_file.write_text(ROUTING_KEY, encoding="utf-8")
    key_file.chmod(0o600)
    started: list[Any] = []
    with FakePagerDuty() as pagerduty:
        try:
            config = tmp_path / "alertmanager.yml"
            config.write_text(
                render_alertmanager_config(
                    AlertmanagerOptions(
                        routing_key_file=str(key_file),
                        pagerduty_url=pagerduty.url,
                        group_wait="1s",
                        group_interval="1s",
                        repeat_interval="1h",
                    )
                ),
                encoding="utf-8",
            )
            assert ROUTING_KEY not in config.read_text()
            alertmanager = Alertmanager(tmp_path, config)
            started.append(alertmanager)
            # Short windows so that the alert fires and ends within seconds; readiness and
            # spikes kept out of it (the demo's external services are always degraded).
            rules = RuleOptions(window="10s", pending="0s", min_requests=5, not_ready_for="1h")
            (tmp_path / "rules.yml").write_text(render_prometheus_rules(rules), encoding="utf-8")
            prometheus = Prometheus(
                tmp_path,
                f"127.0.0.1:{demo.port}",
                CONFIG + ALERTING.format(port=alertmanager.port),
            )
            started.append(prometheus)
            alertmanager.wait_ready()
            prometheus.wait_ready()
            # One error and one answer (too few requests to judge), so that both series
            # exist before the errors come: rate() counts only what a series gained.
            _send(demo, {"/api/boom": 1, "/api/customers": 1})
            boom = 'wsgi_observe_request_errors_total{endpoint="/api/boom"}'
            wait_until(lambda: prometheus.query(f"count_over_time({boom}[1m]) >= 2"), DEADLINE_S)
            _send(demo, {"/api/boom": 10, "/api/customers": 10})
            (trigger,) = pagerduty.wait_for(1, DEADLINE_S)
            trigger, resolve = pagerduty.wait_for(2, DEADLINE_S)  # errors out of the window
        finally:
            for process in reversed(started):
                process.stop()
    assert trigger["event_action"] == "trigger"
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["payload"]["severity"] == "critical"
    details = trigger["payload"]["custom_details"]
    assert details["runbook_url"].endswith("#wsgiobserveerrorratehigh")
    assert "failed over 10s" in details["summary"]
    assert "WsgiObserveErrorRateHigh" in trigger["payload"]["summary"]
    assert resolve["event_action"] == "resolve"
    assert resolve["dedup_key"] == trigger["dedup_key"]
    assert [e["event_action"] for e in pagerduty.events()] == ["trigger", "resolve"]
    assert pagerduty.incidents == {}
