"""How long ``/metrics/dashboard`` takes with 200 endpoints and full windows (issue 14).

```sh
.venv/bin/python -m benchmarks.dashboard              # 200 endpoints, 41 rounds
.venv/bin/python -m benchmarks.dashboard --endpoints 500 --rounds 21
```

A middleware is filled like the ``/metrics`` rows of the suite (``benchmarks.filled``:
200 endpoints x 100 requests, realistic buckets and statuses). The recent windows it would
keep after 15 minutes of such traffic are stood in for by snapshots taken once, up front:
the 1, 5 and 15 minute windows and 15 one-minute steps, each holding every endpoint (the
worst case for the page: every endpoint busy in every step). So the timing is the page's
own work: four JSON documents (since start and three windows), 200 x 15 sparkline points,
the readiness, process and system blocks, and the HTML, not the reading of the ring.

Printed: the median, p10 and p90 of whole requests (``GET /metrics/dashboard`` driven like
a server), of building the view alone and of rendering the HTML alone, in ms, plus the
page's size, as one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from time import perf_counter_ns
from typing import Any, Optional

from benchmarks import apps, filled
from benchmarks.harness import drive, make_environ


def _plain(snapshot: Any) -> Any:
    """A copy of ``snapshot`` without the store's shortcut to the overall histogram, like a
    window computed from the ring (its overall is merged from the endpoints)."""
    from wsgi_observe.metrics import Snapshot

    return Snapshot(
        dict(snapshot.endpoints),
        dict(snapshot.functions),
        snapshot.inflight,
        snapshot.started_at,
        snapshot.taken_at,
    )


class _Windows:
    """Recent windows made of snapshots taken once (see the module's docstring)."""

    def __init__(self, middleware: Any, steps: int = 15) -> None:
        self.window = _plain(middleware.store.snapshot())
        now = time.time()
        self.steps = [
            (now - 60.0 * (steps - i - 1), _plain(middleware.store.snapshot()))
            for i in range(steps)
        ]

    def window_snapshot_for(self, seconds: float) -> Any:
        return self.window

    def series(self, step_s: float = 60, span_s: float = 900) -> list[tuple[float, Any]]:
        return self.steps


def _ms(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(int(q * len(ordered)), len(ordered) - 1)] / 1e6  # noqa: E731
    return {"median": statistics.median(ordered) / 1e6, "p10": pick(0.1), "p90": pick(0.9)}


def measure(endpoints: int = filled.ENDPOINTS, rounds: int = 41) -> dict[str, Any]:
    """Build, fill and time; the numbers as a dict (see the module's docstring)."""
    from wsgi_observe.exposition.html import render_dashboard

    filled.ENDPOINTS = endpoints
    middleware = apps.observe(
        apps.status_app,
        checks={"database": lambda: True},
        readiness_cache_ttl=3600.0,
        slow_request_threshold=3600.0,
        max_endpoints=max(1000, endpoints * 2),
    )
    info = filled.populate(middleware)
    middleware.routes.windows = _Windows(middleware)
    drive(middleware, make_environ("/health/ready"))  # a readiness result to show
    environ = make_environ("/metrics/dashboard")
    status, body = drive(middleware, environ)
    if not status.startswith("200") or body.count(b'class="rate"') != endpoints:
        raise RuntimeError(f"the page is not what it should be: {status}, {len(body)} bytes")
    for _ in range(3):  # warm up
        drive(middleware, environ)
    whole: list[int] = []
    build: list[int] = []
    render: list[int] = []
    routes = middleware.routes
    for _ in range(rounds):
        start = perf_counter_ns()
        drive(middleware, environ)
        whole.append(perf_counter_ns() - start)
        start = perf_counter_ns()
        view = routes.dashboard_view()
        build.append(perf_counter_ns() - start)
        start = perf_counter_ns()
        render_dashboard(view)
        render.append(perf_counter_ns() - start)
    return {
        "endpoints": endpoints,
        "sparkline_steps": len(routes.windows.series()),
        "rounds": rounds,
        "filled": info,
        "page_bytes": len(body),
        "request_ms": _ms(whole),
        "view_ms": _ms(build),
        "render_ms": _ms(render),
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=filled.ENDPOINTS)
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.endpoints, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
