"""The ring of recent windows: its memory and disk, and what a windowed answer costs.

``python -m benchmarks.windows [--endpoints 200] [--snapshots 92]`` fills a middleware with
``ENDPOINTS`` endpoints (realistic spreads of statuses, methods and HDR buckets, like
``benchmarks/filled.py``), then takes ``--snapshots`` snapshots 10 s apart on a fake clock
(a full 15-minute ring holds 90 + 2), with more traffic on every endpoint between them, and
prints one JSON line:

- ``memory_ring_bytes``: what the in-memory ring (one process) holds; ``decoded_entry_mb``:
  one entry decoded (tracemalloc), of which a process reading windows keeps the last 3;
- ``disk_ring_bytes``: the same ring as files in a state directory (several processes);
- medians of: taking one snapshot into each ring (encode + write), ``window_snapshot_for(300)``,
  the JSON document of that window, and ``series(60, 900)`` (the dashboard's sparklines).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from statistics import median
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import apps, filled
from benchmarks.harness import drive, make_environ

_MB = 1024 * 1024


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _timed(function: Any, repeat: int) -> float:
    """Median microseconds of ``function()`` over ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        function()
        times.append((time.perf_counter_ns() - started) / 1000)
    return round(median(times), 1)


def _more_traffic(middleware: Any, endpoints: int, round_no: int) -> None:
    """A few requests on every endpoint, statuses and durations as filled.populate makes
    them (its fake clock patched in, so the histograms keep a realistic spread)."""
    clock = filled._FakeClock(1000 + round_no)
    patched = []
    for name in ("wsgi_observe.middleware", "wsgi_observe._wsgi"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "perf_counter_ns"):
            patched.append((module, module.perf_counter_ns))
            module.perf_counter_ns = clock
    try:
        for i in range(endpoints):
            path = f"/api/v1/resource_{i:03d}/items"
            for j in range(3):
                environ = make_environ(path, method="GET")
                environ["bench.status"] = filled._STATUS_CYCLE[(i + j + round_no) % 20]
                drive(middleware, environ)
    finally:
        for module, original in patched:
            module.perf_counter_ns = original


def measure(endpoints: int, snapshots: int, repeat: int) -> dict[str, Any]:
    from wsgi_observe.exposition import json_document
    from wsgi_observe.windows import Windows

    filled.ENDPOINTS = endpoints
    clock = _Clock()
    # The middleware's own ring is off: the two rings measured here are fed explicitly.
    middleware = apps.observe(apps.status_app, max_endpoints=1000, window_span=0)
    described = filled.populate(middleware)
    snapshot = middleware.snapshot
    memory_ring = Windows(snapshot, clock=clock)
    state_dir = tempfile.mkdtemp(prefix="wsgi-observe-ring-")
    disk_ring = Windows(snapshot, clock=clock, directory=lambda: state_dir)
    try:
        for round_no in range(snapshots):
            clock.now += 10
            _more_traffic(middleware, endpoints, round_no)
            now = snapshot()
            memory_ring.tick(now)
            disk_ring.tick(now)
        entries = len(memory_ring._ring().times())
        memory_bytes = memory_ring.size_bytes()
        disk_bytes = disk_ring.size_bytes()
        last = snapshot()
        # Reading: a process that never read the ring (cold), then again (warm: the
        # baseline decoded once, the series' finished steps kept).
        cold = Windows(snapshot, clock=clock, directory=lambda: state_dir)
        started = time.perf_counter_ns()
        cold.window_snapshot_for(300, last)
        window_cold_us = round((time.perf_counter_ns() - started) / 1000, 1)
        started = time.perf_counter_ns()
        cold.series(60, 900, last)
        series_cold_us = round((time.perf_counter_ns() - started) / 1000, 1)
        window_disk_us = _timed(lambda: disk_ring.window_snapshot_for(300, last), repeat)
        window_memory_us = _timed(lambda: memory_ring.window_snapshot_for(300, last), repeat)
        series_disk_us = _timed(lambda: disk_ring.series(60, 900, last), repeat)
        recent = disk_ring.window_snapshot_for(300, last)
        document_us = _timed(lambda: json_document(recent, service="bench", version="0"), repeat)

        def tick_memory() -> None:
            clock.now += 10
            memory_ring.tick(last)

        def tick_disk() -> None:
            clock.now += 10
            disk_ring.tick(last)

        tick_memory_us = _timed(tick_memory, repeat)
        tick_disk_us = _timed(tick_disk, repeat)
        # One decoded entry, as a reading process keeps the last 3.
        import tracemalloc

        from wsgi_observe.windows import decode, encode

        data = encode(last, clock.now)
        gc.collect()
        tracemalloc.start()
        kept = decode(data)
        gc.collect()
        decoded_bytes = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del kept
        buckets = sum(len(s.hist) for s in last.endpoints.values())
        return {
            "endpoints": len(last.endpoints),
            "snapshots": entries,
            "buckets_per_endpoint": round(buckets / max(len(last.endpoints), 1), 1),
            "recorded": described.get("recorded"),
            "window_requests": sum(s.count for s in recent.endpoints.values()),
            "memory_ring_bytes": memory_bytes,
            "memory_ring_mb": round(memory_bytes / _MB, 2),
            "decoded_entry_mb": round(decoded_bytes / _MB, 2),
            "disk_ring_bytes": disk_bytes,
            "disk_ring_mb": round(disk_bytes / _MB, 2),
            "entry_kb": round(disk_bytes / max(entries, 1) / 1024, 1),
            "tick_memory_us": tick_memory_us,
            "tick_disk_us": tick_disk_us,
            "window_memory_us": window_memory_us,
            "window_disk_us": window_disk_us,
            "window_json_us": document_us,
            "window_cold_us": window_cold_us,
            "series_disk_us": series_disk_us,
            "series_cold_us": series_cold_us,
        }
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--snapshots", type=int, default=92)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    try:
        result = measure(args.endpoints, args.snapshots, args.repeat)
    except Exception as error:  # one JSON line whatever happens
        result = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
