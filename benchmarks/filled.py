"""Subjects that need recorded metrics first: our endpoints and the multi-worker merge.

A middleware is filled with ``ENDPOINTS`` endpoints x ``REQUESTS_PER_ENDPOINT`` requests
(realistic spreads of statuses, methods and HDR buckets, from a fake clock); the merge
reads the state files of ``MERGE_WORKERS`` fill-worker processes.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import traceback
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

from benchmarks import apps
from benchmarks.harness import Subject, check, drive, make_environ

__all__ = [
    "ENDPOINTS",
    "KEEP",
    "MERGE_WORKERS",
    "REQUESTS_PER_ENDPOINT",
    "build_endpoints",
    "build_merge",
    "describe_store",
    "fill_worker",
    "populate",
    "stop_children",
]

ENDPOINTS = 200  # endpoints recorded before timing /metrics
REQUESTS_PER_ENDPOINT = 100
MERGE_WORKERS = 8


class _FakeClock:
    """A perf_counter_ns stand-in that moves on by a lognormal step (median 2 ms) per call.

    Used only while filling the metrics, so the histograms hold a realistic spread of
    buckets rather than the single microsecond bucket a hello app would give.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = perf_counter_ns()

    def __call__(self) -> int:
        self.now += int(self.rng.lognormvariate(math.log(2e6), 1.1))
        return self.now


_STATUS_CYCLE = (
    ("200 OK",) * 14
    + ("201 Created", "304 Not Modified", "400 Bad Request")
    + (
        "200 OK",
        "200 OK",
        "500 Internal Server Error",
    )
)


def populate(middleware: Any, seed: int = 1) -> dict[str, Any]:
    """Record ``ENDPOINTS`` endpoints x ``REQUESTS_PER_ENDPOINT`` requests into ``middleware``."""
    clock = _FakeClock(seed)
    patched = []
    for name in ("wsgi_observe.middleware", "wsgi_observe._wsgi"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "perf_counter_ns"):
            patched.append((module, module.perf_counter_ns))
            module.perf_counter_ns = clock
    try:
        for i in range(ENDPOINTS):
            path = f"/api/v1/resource_{i:03d}/items"
            for j in range(REQUESTS_PER_ENDPOINT):
                environ = make_environ(path, method="POST" if j % 6 == 5 else "GET")
                environ["bench.status"] = _STATUS_CYCLE[(i + j) % len(_STATUS_CYCLE)]
                drive(middleware, environ)
    finally:
        for module, original in patched:
            module.perf_counter_ns = original
    return describe_store(middleware.store)


def describe_store(store: Any) -> dict[str, Any]:
    try:
        snap = store.snapshot()
        endpoints = snap.endpoints
        buckets = sum(len(s.hist) for s in endpoints.values())
        return {
            "endpoints": len(endpoints),
            "recorded": sum(s.count for s in endpoints.values()),
            "buckets_per_endpoint": round(buckets / max(len(endpoints), 1), 1),
        }
    except Exception as error:  # the description is informative only
        return {"describe_error": repr(error)}


def build_endpoints(opts: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """/health, /health/live, /health/ready, /metrics and /metrics/dashboard of a middleware
    holding ``ENDPOINTS`` endpoints: name -> Subject, or name -> ("error", text)."""
    out: dict[str, Any] = {}
    try:
        # A long readiness TTL: every timed call takes the cached path.
        middleware = apps.observe(
            apps.status_app,
            checks={"database": lambda: True},
            readiness_cache_ttl=3600.0,
            slow_request_threshold=3600.0,
            max_endpoints=1000,
        )
        filled = populate(middleware)
    except Exception:
        text = traceback.format_exc(limit=4)
        return {name: ("error", text) for name in names}
    targets = {
        "health": ("/health", ""),
        "live": ("/health/live", ""),
        "ready": ("/health/ready", ""),
        "metrics_json": ("/metrics", ""),
        "metrics_prom": ("/metrics", "format=prometheus"),
        "metrics_proto": ("/metrics", "format=protobuf"),
        "dashboard": ("/metrics/dashboard", ""),
    }
    for name, (path, query) in targets.items():
        try:
            subject = Subject(middleware, make_environ(path, query), info=dict(filled))
            check(subject)
            out[name] = subject
        except Exception:
            out[name] = ("error", traceback.format_exc(limit=4))
    return out


def build_merge(opts: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The merge of ``MERGE_WORKERS`` workers' state files (filled by fill workers that
    stay alive until this process exits), alone and with the JSON render."""
    try:
        from wsgi_observe import exposition
        from wsgi_observe.multiprocess import collect_snapshot
        from wsgi_observe.system import SystemMetrics
    except Exception:
        text = traceback.format_exc(limit=4)
        return {name: ("error", text) for name in names}
    state_dir = os.path.join(opts["tmp"], "merge-state")
    os.makedirs(state_dir, exist_ok=True)
    children: list[subprocess.Popen[str]] = []
    try:
        for index in range(MERGE_WORKERS):
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.inprocess",
                        "fill-worker",
                        state_dir,
                        "--seed",
                        str(index + 1),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for child in children:
            line = _readline(child, 120.0)
            answer = json.loads(line) if line else {"error": "no answer from a fill worker"}
            if "error" in answer:
                raise RuntimeError(answer["error"])
        snapshot = collect_snapshot(state_dir)
        info = {
            "workers": MERGE_WORKERS,
            "endpoints": len(snapshot.endpoints),
            "recorded": sum(s.count for s in snapshot.endpoints.values()),
            "expected": MERGE_WORKERS * ENDPOINTS * REQUESTS_PER_ENDPOINT,
        }

        if info["recorded"] != info["expected"]:
            raise RuntimeError(f"the merge lost counts: {info}")

        def merge() -> Any:
            return collect_snapshot(state_dir)

        # What the middleware adds to a scrape: psutil's process and system figures.
        read_system: Callable[[], Any] = SystemMetrics().read

        def merge_json() -> bytes:
            document = exposition.json_document(
                collect_snapshot(state_dir),
                service="bench",
                version="0",
                system=read_system(),
            )
            return bytes(exposition.render_json(document))

        out: dict[str, Any] = {
            "merge": Subject(call=merge, info=dict(info)),
            "merge_json": Subject(call=merge_json, info=dict(info)),
        }
        # The fill workers stay alive (their state files too) until this worker exits.
        KEEP.extend(children)
        return out
    except Exception:
        stop_children(children)
        text = traceback.format_exc(limit=4)
        return {name: ("error", text) for name in names}


KEEP: list[subprocess.Popen[str]] = []


def stop_children(children: list[subprocess.Popen[str]]) -> None:
    for child in children:
        try:
            if child.stdin:
                child.stdin.close()
            child.wait(timeout=10)
        except Exception:
            child.kill()
            child.wait(timeout=10)


def _readline(child: subprocess.Popen[str], timeout_s: float) -> str:
    import selectors

    assert child.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return ""
    return child.stdout.readline()


def fill_worker(state_dir: str, seed: int) -> None:
    """One gunicorn-like worker: its own state table in ``state_dir``, filled, kept open."""
    try:
        from wsgi_observe.metrics import MetricsStore
        from wsgi_observe.multiprocess import WorkerTable

        store = MetricsStore()
        store.use_table(WorkerTable(state_dir))
        middleware = apps.observe(
            apps.status_app, store=store, slow_request_threshold=3600.0, max_endpoints=1000
        )
        populate(middleware, seed=seed)
        answer: dict[str, Any] = {"ok": True}
    except Exception:
        answer = {"error": traceback.format_exc(limit=4)}
    print(json.dumps(answer), flush=True)
    sys.stdin.read()  # stay alive (state file open) until the parent closes our stdin
