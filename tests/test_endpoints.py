"""Endpoint names: normalisation, the cap, and bounded memory under a flood of paths."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from wsgi_observe.endpoints import OVERFLOW, UNMATCHED, EndpointNames, normalise_path


@pytest.mark.parametrize(
    ("path", "name"),
    [
        pytest.param("/api/leads/17", "/api/leads/<int>", id="int"),
        pytest.param("/api/leads/17/notes/3", "/api/leads/<int>/notes/<int>", id="nested"),
        pytest.param("/u/0b9a6a8e-7c52-4c9f-9e53-3b7f4a9d2c11", "/u/<uuid>", id="uuid"),
        pytest.param("/u/0b9a6a8e7c524c9f9e533b7f4a9d2c11", "/u/<uuid>", id="uuid-hex"),
        pytest.param("/blob/deadbeefdeadbeefdeadbeef", "/blob/<hex>", id="hex"),
        pytest.param("/t/AbCdEf1234567890GhIjKl", "/t/<token>", id="token"),
        pytest.param("/api/leads", "/api/leads", id="plain"),
        pytest.param("", "/", id="empty"),
        pytest.param("/x/" + "y" * 80, "/x/<long>", id="long-segment"),
    ],
)
def test_normalise_path(path, name):
    """Ids, uuids, hex and tokens collapse into placeholders."""
    assert normalise_path(path) == name


def test_cap_sends_new_names_to_overflow():
    """Past max_endpoints, new names share one bucket; known names keep theirs."""
    names = EndpointNames(2)
    assert names.resolve({"PATH_INFO": "/a"}, "200 OK") == "/a"
    assert names.resolve({"PATH_INFO": "/b"}, "200 OK") == "/b"
    assert names.resolve({"PATH_INFO": "/c"}, "200 OK") == OVERFLOW
    assert names.resolve({"PATH_INFO": "/a"}, "200 OK") == "/a"


def test_unrouted_404_share_one_bucket():
    """A 404 without a route template is the unmatched bucket, whatever its path."""
    names = EndpointNames(10)
    assert names.resolve({"PATH_INFO": "/wp-admin.php"}, "404 Not Found") == UNMATCHED


def test_memory_stays_bounded_under_100k_distinct_paths():
    """100,000 random paths answered 200 grow RSS by a few MB at most (fresh process)."""
    script = textwrap.dedent(
        """
        import gc, os, random, string, psutil
        from wsgi_observe import ObservabilityMiddleware
        from wsgi_observe.metrics import MetricsStore
        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        mw = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
        def hit(path):
            body = mw({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda s, h, e=None: None)
            list(body); body.close()
        rng = random.Random(1)
        for i in range(2000):
            hit("/warm/" + str(i))
        gc.collect()
        before = psutil.Process().memory_info().rss
        for _ in range(100_000):
            hit("/" + "".join(rng.choices(string.ascii_lowercase, k=12)) + "/" + str(rng.random()))
        gc.collect()
        after = psutil.Process().memory_info().rss
        print((after - before) / 1e6, len(mw.names.paths), len(mw.store.endpoints))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    grown_mb, cached_paths, endpoints = out.stdout.split()
    assert float(grown_mb) < 10
    assert int(cached_paths) <= 4096
    assert int(endpoints) <= 501
