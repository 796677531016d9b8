"""A real Prometheus server scrapes a wrapped app under gunicorn with the guide's scrape config."""

from __future__ import annotations

import json
import math
import os
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Gunicorn, free_port, http_get, stop_process, wait_until

pytestmark = pytest.mark.slow

PROMETHEUS = "/usr/bin/prometheus"
APP = "tests.apps.prom_app:app"
# Every wait on Prometheus or gunicorn is bounded by this.
DEADLINE_S = 30.0
# Requests in two batches, so the second lands between scrapes and rate() sees it.
FIRST = {"/api/leads": 20, "/api/customers": 10, "/api/boom": 2}
SECOND = {"/api/leads": 20}
TOTALS = {"/api/leads": 40, "/api/customers": 10, "/api/boom": 2}
# Until every worker reports everyone's counts (wsgi_observe.gunicorn), one worker only.
MULTI_WORKER = (ROOT / "wsgi_observe" / "gunicorn.py").exists()

# The guide's scrape config ("Grafana Integration"), with a 1 s interval for the test: no
# format parameter, so Prometheus has to negotiate the format through its Accept header.
SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: 'iswitch-crm'
    metrics_path: '/metrics'
    static_configs:
      - targets: ['{target}']
"""


class Prometheus:
    """A real Prometheus server on 127.0.0.1 with its own config and storage, stopped by pid."""

    def __init__(
        self,
        workdir: Path,
        target: str,
        config_text: str = SCRAPE_CONFIG,
        flags: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(config_text.format(target=target), encoding="utf-8")
        self.logfile = workdir / "prometheus.log"
        self.log = open(self.logfile, "wb")  # a file, not a pipe; closed in stop()
        try:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    *flags,
                ],
                stdout=self.log,
                stderr=self.log,
                cwd=workdir,
            )
        except BaseException:
            self.log.close()
            raise

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, _, body = http_get(f"{self.url}/api/v1/{path}{query}")
        assert status == 200, body
        document = json.loads(body)
        assert document["status"] == "success", document
        return document["data"]

    def query(self, promql: str) -> dict[str, float]:
        """Instant query: the value of each series, keyed by its labels as ``k=v,...``."""
        result = self.api("query", query=promql)["result"]
        return {
            ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k != "__name__"): float(
                r["value"][1]
            )
            for r in result
        }

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.logfile.read_text()[-2000:]}")
            return http_get(f"{self.url}/-/ready", timeout=1.0)[0] == 200

        wait_until(ready, DEADLINE_S)

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


def _send(server: Gunicorn, batch: dict[str, int]) -> None:
    for path, times in batch.items():
        for _ in range(times):
            status = server.get(path)[0]
            assert status == (500 if path == "/api/boom" else 200)


def _by_endpoint(prometheus: Prometheus) -> dict[str, float]:
    found = prometheus.query("sum by (endpoint) (wsgi_observe_requests_total)")
    return {key.removeprefix("endpoint="): value for key, value in found.items()}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, Gunicorn]]:
    """gunicorn serving the wrapped app and Prometheus scraping it, after all requests were seen."""
    if not os.path.exists(PROMETHEUS):
        pytest.skip("prometheus is not installed (Debian package 'prometheus')")
    workdir = tmp_path_factory.mktemp("prometheus")
    started: list[Any] = []
    try:
        if MULTI_WORKER:
            state = workdir / "state"
            state.mkdir()
            server = Gunicorn(APP, "-w", "2", env={"WSGI_OBSERVE_STATE_DIR": str(state)})
        else:
            server = Gunicorn(APP, "-w", "1", config=False)
        started.append(server)
        prometheus = Prometheus(workdir, f"127.0.0.1:{server.port}")
        started.append(prometheus)
        server.wait_ready()
        prometheus.wait_ready()
        _send(server, FIRST)
        wait_until(lambda: _by_endpoint(prometheus) == FIRST, DEADLINE_S)
        _send(server, SECOND)
        wait_until(lambda: _by_endpoint(prometheus) == TOTALS, DEADLINE_S)
        yield prometheus, server
    finally:
        for process in reversed(started):
            process.stop()


def test_target_is_up_with_the_guides_metrics_path(scraped):
    """Prometheus scrapes /metrics exactly as configured (no format parameter) and finds it up."""
    prometheus, server = scraped
    (target,) = prometheus.api("targets")["activeTargets"]
    assert target["health"] == "up"
    assert target["lastError"] == ""
    assert target["scrapeUrl"] == f"{server.url}/metrics"
    assert prometheus.query("up") == {f"instance=127.0.0.1:{server.port},job=iswitch-crm": 1.0}


def test_prometheus_negotiated_openmetrics(scraped):
    """The stored metadata has OpenMetrics family names, units and the info type."""
    prometheus, _ = scraped
    metadata = prometheus.api("metadata")
    assert metadata["wsgi_observe_request_duration_seconds"][0]["unit"] == "seconds"
    assert metadata["wsgi_observe_requests"][0]["type"] == "counter"
    assert metadata["wsgi_observe"][0]["type"] == "info"


def test_request_totals_are_exact_per_endpoint(scraped):
    """Summed over series, the request counter gives exactly the requests sent per endpoint."""
    prometheus, _ = scraped
    assert _by_endpoint(prometheus) == TOTALS
    errors = prometheus.query("sum by (endpoint) (wsgi_observe_request_errors_total)")
    assert errors == {
        "endpoint=/api/boom": 2,
        "endpoint=/api/customers": 0,
        "endpoint=/api/leads": 0,
    }
    calls = prometheus.query("sum by (function, result) (wsgi_observe_function_calls_total)")
    assert calls == {"function=leads.load,result=ok": TOTALS["/api/leads"]}
    counts = prometheus.query("sum by (endpoint) (wsgi_observe_request_duration_seconds_count)")
    assert counts == {f"endpoint={k}": v for k, v in TOTALS.items()}


def test_rate_and_histogram_quantile_work(scraped):
    """rate() of the counter has series, and histogram_quantile() over the buckets is a number."""
    prometheus, _ = scraped
    rates = prometheus.query("rate(wsgi_observe_requests_total[10s])")
    assert {key.split(",")[0] for key in rates} == {f"endpoint={k}" for k in TOTALS}
    buckets = "rate(wsgi_observe_request_duration_seconds_bucket[30s])"
    p99 = prometheus.query(f"histogram_quantile(0.99, sum by (le) ({buckets}))")
    (value,) = p99.values()
    assert math.isfinite(value) and 0 < value <= 10


def test_service_and_process_series_are_scraped(scraped):
    """The info series names the service, and every gunicorn process reports its memory."""
    prometheus, _ = scraped
    info = prometheus.query("wsgi_observe_info")
    assert [key for key in info if "service=prom-test" in key and "version=9.9.9" in key]
    roles = prometheus.query("count by (role) (wsgi_observe_process_resident_memory_bytes > 0)")
    if MULTI_WORKER:
        assert roles == {"role=master": 1, "role=worker": 2}
    else:
        assert roles == {"role=main": 1}


def test_business_kpis_are_scraped_as_their_own_families(scraped):
    """KPIs reach Prometheus exactly: the counter with ``_total``, the distribution as a
    histogram with its unit and as the quantile summary."""
    prometheus, _ = scraped
    leads = TOTALS["/api/leads"]
    assert prometheus.query("sum by (source) (leads_shown_total)") == {"source=web": leads}
    assert prometheus.query("sum(lead_score_points_count)") == {"": leads}
    assert prometheus.query("sum(lead_score_points_sum)") == {"": 42 * leads}
    (p50,) = prometheus.query('max(lead_score_quantile_points{quantile="0.5"})').values()
    assert p50 == 42
    metadata = prometheus.api("metadata")
    assert metadata["lead_score_points"][0] == {
        "type": "histogram",
        "help": "Score of the leads served.",
        "unit": "points",
    }
    assert metadata["leads_shown"][0]["type"] == "counter"
