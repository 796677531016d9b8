"""Real Prometheus adds two deployments' native histograms: percentiles true across machines.

Two gunicorn masters (2 workers each, like two pods) serve different latency mixes. One
Prometheus runs with ``--enable-feature=native-histograms`` and scrapes both through the
protobuf format; another, the same binary without the flag, scrapes the same targets
through text. ``histogram_quantile`` over the sum of the native histograms must land
within 3 % of the exact percentile of the union of both deployments' HDR counts; the
classic-bucket answer from the text scrape is reported beside it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import Gunicorn, wait_until
from test_prometheus_server import DEADLINE_S, PROMETHEUS, Prometheus

from wsgi_observe.histograms import merge, percentiles
from wsgi_observe.multiprocess.merge import collect_snapshot

pytestmark = pytest.mark.slow

APP = "tests.apps.basic:app"
HISTOGRAM = "wsgi_observe_request_duration_seconds"
QUANTILES = (0.5, 0.95, 0.99)
TOLERANCE = 0.03
# /slow?ms=N requests per deployment: a warm-up that makes the series exist before the
# rate() window opens, then the measured mixes. Totals of 300 and 200 make every q * total
# a whole rank, where HDR and Prometheus agree on which observation holds the quantile.
WARM_UP = ({1: 50}, {3: 50})
MIXES = ({2: 60, 5: 30, 12: 10}, {8: 40, 30: 40, 80: 20})


SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: 'wsgi_observe'
    metrics_path: '/metrics'
    static_configs:
      - targets: [{target}]
"""


def scraper(workdir: Path, targets: list[str], flags: tuple[str, ...] = ()) -> Prometheus:
    """test_prometheus_server's Prometheus, scraping several targets, with extra flags."""
    listed = ", ".join(f"'{target}'" for target in targets)
    return Prometheus(workdir, listed, SCRAPE_CONFIG, flags)


class Deployment:
    """One gunicorn master with 2 workers and a state directory of its own, like a pod."""

    def __init__(self, workdir: Path) -> None:
        self.state = workdir / "state"
        self.state.mkdir(mode=0o700)
        self.server = Gunicorn(APP, "-w", "2", env={"WSGI_OBSERVE_STATE_DIR": str(self.state)})
        self.target = f"127.0.0.1:{self.server.port}"

    def send(self, mix: dict[int, int]) -> int:
        """Send the mix over two connections at a time (one per worker); return the count."""
        paths = [f"/slow?ms={ms}" for ms, times in mix.items() for _ in range(times)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            statuses = list(pool.map(lambda path: self.server.get(path)[0], paths))
        assert statuses == [200] * len(paths)
        return len(paths)

    def hdr(self) -> dict[int, int]:
        """Every worker's HDR counts of the /slow endpoint, merged exactly (as /metrics does)."""
        return dict(collect_snapshot(str(self.state)).endpoints["/slow"].hist)


def _exact(hist: dict[int, int]) -> dict[float, float]:
    found = percentiles(hist, [q * 100 for q in QUANTILES])
    return {q: found[q * 100] / 1e6 for q in QUANTILES}


def _query(prometheus: Prometheus, promql: str, at: float) -> dict[str, float]:
    """Instant query at ``at``: each series' value, keyed by its labels as ``k=v,...``."""
    result = prometheus.api("query", query=promql, time=f"{at:.3f}")["result"]
    return {
        ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k != "__name__"): float(
            r["value"][1]
        )
        for r in result
    }


def _one(prometheus: Prometheus, promql: str, at: float) -> float:
    (value,) = _query(prometheus, promql, at).values()
    return value


def _scraped_after(prometheus: Prometheus, moment: float, count: int) -> bool:
    """Every target was scraped after ``moment``, and the sum of counts is ``count``."""
    latest = prometheus.query("timestamp(up)")
    if len(latest) != 2 or min(latest.values()) <= moment:
        return False
    found = prometheus.query(f"sum({HISTOGRAM}_count)") or prometheus.query(
        f"histogram_count(sum({HISTOGRAM}))"
    )
    return list(found.values()) == [count]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both deployments after the warm-up and the mixes, seen by both Prometheus servers."""
    if not os.path.exists(PROMETHEUS):
        pytest.skip("prometheus is not installed (Debian package 'prometheus')")
    started: list[Any] = []
    try:
        deployments = []
        for name in ("a", "b"):
            deployment = Deployment(tmp_path_factory.mktemp(f"pod-{name}"))
            started.append(deployment.server)
            deployments.append(deployment)
        targets = [deployment.target for deployment in deployments]
        native = scraper(
            tmp_path_factory.mktemp("native"), targets, ("--enable-feature=native-histograms",)
        )
        started.append(native)
        text = scraper(tmp_path_factory.mktemp("text"), targets)
        started.append(text)
        for deployment in deployments:
            deployment.server.wait_ready()
        native.wait_ready()
        text.wait_ready()

        warm = sum(d.send(mix) for d, mix in zip(deployments, WARM_UP))
        warm_sent = time.time()
        for prometheus in (native, text):
            wait_until(lambda p=prometheus: _scraped_after(p, warm_sent, warm), DEADLINE_S)
        warm_hdr = merge(deployments[0].hdr(), deployments[1].hdr())

        measured = sum(d.send(mix) for d, mix in zip(deployments, MIXES))
        measured_sent = time.time()
        for prometheus in (native, text):
            wait_until(
                lambda p=prometheus: _scraped_after(p, measured_sent, warm + measured), DEADLINE_S
            )
        all_hdr = merge(deployments[0].hdr(), deployments[1].hdr())
        window_hdr = {
            i: c - warm_hdr.get(i, 0) for i, c in all_hdr.items() if c > warm_hdr.get(i, 0)
        }
        # The rate() window opens just after the warm-up was sent: its first sample of each
        # target holds the warm-up only, its last one everything, so rate() sees the mixes.
        # It lasts whole seconds, so each target (scraped every second) has as many samples
        # in it as the other, and rate() extrapolates both by the same factor: otherwise
        # the sum would weigh one deployment's mix more than the other's.
        opens = math.ceil(warm_sent * 1000) / 1000  # Prometheus keeps milliseconds
        seconds = math.ceil(time.time() - opens) + 1
        at = opens + seconds
        time.sleep(max(at + 0.2 - time.time(), 0.0))  # at most ~2 s: the window has ended
        window = f"{seconds}s"
        yield {
            "native": native,
            "text": text,
            "at": at,
            "window": window,
            "total": warm + measured,
            "measured": measured,
            "exact": _exact(all_hdr),
            "exact_window": _exact(window_hdr),
            "deployments": deployments,
        }
    finally:
        for process in reversed(started):
            process.stop()


def test_both_servers_scrape_both_deployments(scraped):
    """Every target is up for the native and the text Prometheus alike."""
    for prometheus in (scraped["native"], scraped["text"]):
        targets = prometheus.api("targets")["activeTargets"]
        assert [target["health"] for target in targets] == ["up", "up"]
        assert [target["lastError"] for target in targets] == ["", ""]


def test_the_flagged_server_stores_native_histograms(scraped):
    """With the flag, Prometheus negotiated protobuf: the series holds native histograms."""
    native = scraped["native"]
    result = native.api("query", query=HISTOGRAM, time=f"{scraped['at']:.3f}")["result"]
    assert len(result) == 2  # one per deployment (endpoint /slow)
    assert all("histogram" in series for series in result)


def test_histogram_count_equals_the_requests_served(scraped):
    """histogram_count of the summed native histograms is every request both deployments served."""
    native, at = scraped["native"], scraped["at"]
    assert _one(native, f"histogram_count(sum({HISTOGRAM}))", at) == scraped["total"]
    per_pod = _query(native, f"histogram_count({HISTOGRAM})", at)
    assert sorted(per_pod.values()) == [150, 150]
    increase = _one(native, f"histogram_count(sum(increase({HISTOGRAM}[{scraped['window']}])))", at)
    assert increase > 0


@pytest.mark.parametrize("q", QUANTILES)
def test_cross_instance_percentiles_are_within_3_percent(scraped, q, capsys):
    """histogram_quantile over sum() and over sum(rate()) matches the exact union's HDR value."""
    native, text, at, window = scraped["native"], scraped["text"], scraped["at"], scraped["window"]
    answers = {
        "since start": (
            _one(native, f"histogram_quantile({q}, sum({HISTOGRAM}))", at),
            _one(text, f"histogram_quantile({q}, sum by (le) ({HISTOGRAM}_bucket))", at),
            scraped["exact"][q],
        ),
        f"rate [{window}]": (
            _one(native, f"histogram_quantile({q}, sum(rate({HISTOGRAM}[{window}])))", at),
            _one(
                text,
                f"histogram_quantile({q}, sum by (le) (rate({HISTOGRAM}_bucket[{window}])))",
                at,
            ),
            scraped["exact_window"][q],
        ),
    }
    with capsys.disabled():
        for form, (from_native, from_classic, exact) in answers.items():
            print(
                f"\np{q * 100:g} {form}: exact {exact * 1000:.3f} ms, native"
                f" {from_native * 1000:.3f} ms ({(from_native / exact - 1) * 100:+.2f} %),"
                f" classic {from_classic * 1000:.3f} ms ({(from_classic / exact - 1) * 100:+.2f} %)"
            )
    for form, (from_native, from_classic, exact) in answers.items():
        assert abs(from_native - exact) <= TOLERANCE * exact, (
            form,
            exact,
            from_native,
            from_classic,
            _counts_in_window(native, window, at),
        )


def test_the_text_server_still_scrapes_text(scraped):
    """Without the flag the same targets are scraped through text: classic buckets, OpenMetrics."""
    text, at = scraped["text"], scraped["at"]
    assert _one(text, f"sum({HISTOGRAM}_count)", at) == scraped["total"]
    (metadata,) = text.api("metadata")[HISTOGRAM]
    assert (metadata["type"], metadata["unit"]) == ("histogram", "seconds")  # OpenMetrics
    buckets = _query(text, f"sum by (le) ({HISTOGRAM}_bucket)", at)
    assert buckets["le=+Inf"] == scraped["total"]
    assert len(buckets) == 14


def _counts_in_window(prometheus: Prometheus, window: str, at: float) -> dict[str, list[Any]]:
    """Each target's samples in the window as ``(time, count, buckets that went down)``:
    what rate() worked from (a bucket going down reads as a counter reset)."""
    result = prometheus.api("query", query=f"{HISTOGRAM}[{window}]", time=f"{at:.3f}")["result"]
    found = {}
    for series in result:
        samples = []
        previous: dict[str, float] = {}
        for moment, histogram in series.get("histograms", []):
            buckets = {f"{b[1]}..{b[2]}": float(b[3]) for b in histogram.get("buckets", [])}
            down = {
                k: (v, buckets.get(k, 0.0)) for k, v in previous.items() if buckets.get(k, 0.0) < v
            }
            samples.append((moment, histogram["count"], down))
            previous = buckets
        found[series["metric"]["instance"]] = samples
    return found
