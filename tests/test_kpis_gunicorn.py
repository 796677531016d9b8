"""Business KPIs under real gunicorn: exact across workers and across worker recycling."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import wait_until
from hdrh.histogram import HdrHistogram

from wsgi_observe.histograms import MAX_US

pytestmark = pytest.mark.slow

APP = "tests.apps.kpi_app:app"
PROMTOOL = "/usr/bin/promtool"
LEADS = 240
SOURCES = ("website", "referral", "ads")


def _kpis(server) -> dict:
    status, _, body = server.get("/metrics", timeout=10.0)
    assert status == 200, body[:300]
    return json.loads(body).get("kpis", {})


def _leads_total(found: dict) -> int:
    return int(found.get("leads_created", {}).get("total", 0))


@pytest.mark.parametrize(
    "worker_args",
    [
        pytest.param(("-w", "2"), id="sync"),
        pytest.param(("-w", "2", "-k", "gthread", "--threads", "4"), id="gthread"),
    ],
)
def test_kpis_are_exact_across_recycled_workers(gunicorn, worker_args):
    """Counts, percentiles and gauges from 2 workers recycled every 30 requests equal
    what was sent, in JSON and Prometheus; scrapes during the load never go down."""
    server = gunicorn(APP, *worker_args, "--max-requests", "30", "--max-requests-jitter", "0")
    rng = random.Random(11)
    leads = [
        (rng.choice(SOURCES), rng.choice([rng.randint(1, 100), rng.randint(200, 5000)]))
        for _ in range(LEADS)
    ]
    paths = [f"/lead?source={source}&score={score}" for source, score in leads]
    paths += ["/open"] * 40 + ["/close"] * 15
    rng.shuffle(paths)
    pids: set[str] = set()
    seen: list[int] = []
    done = threading.Event()
    lock = threading.Lock()

    def send(path: str) -> None:
        status, _, body = server.get(path, timeout=10.0)
        assert status == 200
        with lock:
            pids.add(body.decode())

    def watch() -> None:
        for _ in range(500):  # bounded: until the load is done, at most 500 scrapes
            seen.append(_leads_total(_kpis(server)))
            if done.is_set():
                return

    with ThreadPoolExecutor(5) as pool:
        watcher = pool.submit(watch)
        list(pool.map(send, paths))  # 4 senders share the pool with the watcher
        done.set()
        watcher.result()
    assert seen == sorted(seen), "a KPI counter went down between scrapes"
    assert len(pids) > 2, "no worker was recycled"
    server.get("/stock?n=42.5")

    found = wait_until(
        lambda: (lambda k: k if _leads_total(k) == LEADS else None)(_kpis(server)), 20
    )
    by_source = {s["labels"]["source"]: s["value"] for s in found["leads_created"]["series"]}
    assert by_source == {
        s: sum(1 for x, _ in leads if x == s) for s in SOURCES if any(x == s for x, _ in leads)
    }
    reference = HdrHistogram(1, MAX_US, 2)
    for _, score in leads:
        reference.record_value(score)
    score = found["lead_score_points"]["series"][0]
    assert score["count"] == LEADS
    assert score["sum"] == sum(s for _, s in leads)
    for key, percent in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert score[key] == reference.get_value_at_percentile(percent), key
    assert found["open_customers"]["series"][0]["value"] == 25
    assert found["stock_level"]["series"][0]["value"] == 42.5
    events = {s["labels"]["event"]: s["value"] for s in found["business_events"]["series"]}
    assert events == {"lead_created": LEADS}

    status, _, text = server.get("/metrics?format=prometheus")
    assert status == 200
    assert f"lead_score_points_count {LEADS}\n".encode() in text
    assert f'business_events_total{{event="lead_created"}} {LEADS}\n'.encode() in text
    if Path(PROMTOOL).exists():
        result = subprocess.run(
            [PROMTOOL, "check", "metrics"],
            input=text,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def _post(server, path: str, payload: dict) -> int:
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code)


def test_the_demo_defines_and_records_its_kpis(gunicorn, tmp_path):
    """The demo counts leads by source, their scores and its customers, in every format."""
    server = gunicorn(
        "wsgi_observe.demo:app", "-w", "2", env={"DEMO_DB": str(tmp_path / "demo.sqlite3")}
    )
    sent = [("website", 80), ("website", 40), ("referral", 95), ("<b>x</b>", 10)]
    for source, score in sent:
        assert _post(server, "/api/leads", {"name": "L", "source": source, "score": score}) == 201
    assert _post(server, "/api/leads", {"score": -3}) == 400
    assert _post(server, "/api/leads", {"score": "high"}) == 400
    assert server.get("/api/customers")[0] == 200
    found = wait_until(
        lambda: (lambda k: k if _leads_total(k) == len(sent) else None)(_kpis(server)), 20
    )
    by_source = {s["labels"]["source"]: s["value"] for s in found["leads_created"]["series"]}
    assert by_source == {"website": 2, "referral": 1, "<b>x</b>": 1}
    score = found["lead_score_points"]["series"][0]
    assert (score["count"], score["sum"], score["p50"], score["max"]) == (4, 225, 40, 95)
    assert found["open_customers"]["series"][0]["value"] == 20
    events = {s["labels"]["event"]: s["value"] for s in found["business_events"]["series"]}
    assert events["lead_created"] == len(sent)
    _, _, text = server.get("/metrics?format=openmetrics")
    assert b'leads_created_total{source="website"} 2\n' in text
    assert b"# UNIT lead_score_points points\n" in text
    assert b"open_customers 20\n" in text
