"""How long ``/metrics/dashboard`` takes with 200 endpoints and full windows (issue 14).

```sh
.venv/bin/python -m benchmarks.dashboard              # 200 endpoints, 41 rounds
.venv/bin/python -m benchmarks.dashboard --endpoints 500 --rounds 21
```

A middleware is filled like the ``/metrics`` rows of the suite (``benchmarks.filled``:
200 endpoints x 100 requests, realistic buckets and statuses), then two cases are timed:

- ``ring``: the middleware's own ring of recent windows (``wsgi_observe.windows``, in
  memory), filled as 15 minutes of traffic would fill it: a test clock moves on 10 s at a
  time, every endpoint gets 2 more requests per step, and the ring takes its snapshot
  (92 entries). The page reads the 1, 5 and 15 minute windows and 15 one-minute steps
  from it, decoding the entries it needs, as it does under gunicorn (there from files).
- ``worst``: every window and every step holds every endpoint with all its 100 requests'
  buckets (snapshots taken once, up front, so the ring's decoding is not in it): the most
  the page ever draws.

Printed: per case, the first request (nothing reused yet: the ring keeps the steps it has
computed once they are over, and its last decoded entries), then the median, p10 and p90 of
whole requests (``GET /metrics/dashboard`` driven like a server; wall and the process's CPU
time, which the machine's other work moves less), of building the view alone and of
rendering the HTML alone (CPU), in ms, plus the page's size, as one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from time import perf_counter_ns, process_time_ns
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
    """Recent windows made of snapshots taken once (the ``worst`` case)."""

    enabled = True
    interval_s = 10.0
    span_s = 900.0

    def __init__(self, middleware: Any, steps: int = 15) -> None:
        self.window = _plain(middleware.store.snapshot())
        now = time.time()
        self.steps = [
            (now - 60.0 * (steps - i - 1), _plain(middleware.store.snapshot()))
            for i in range(steps)
        ]

    def window_snapshot_for(self, seconds: float, now: Any = None) -> Any:
        return self.window

    def series(self, step_s: float = 60, span_s: float = 900, now: Any = None) -> list[Any]:
        return self.steps

    def tick(self, snapshot: Any = None) -> bool:
        return False


def _ms(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(int(q * len(ordered)), len(ordered) - 1)] / 1e6  # noqa: E731
    return {"median": statistics.median(ordered) / 1e6, "p10": pick(0.1), "p90": pick(0.9)}


def _timed(middleware: Any, endpoints: int, rounds: int) -> dict[str, Any]:
    """Wall and CPU time (the process's: what the page costs, whatever else the machine
    runs) of the first request, then of ``rounds`` requests, views and renders."""
    from wsgi_observe.exposition.html import render_dashboard

    environ = make_environ("/metrics/dashboard")
    wall0, cpu0 = perf_counter_ns(), process_time_ns()
    status, body = drive(middleware, environ)
    first = {  # nothing the ring reuses yet
        "wall": (perf_counter_ns() - wall0) / 1e6,
        "cpu": (process_time_ns() - cpu0) / 1e6,
    }
    if not status.startswith("200") or body.count(b'class="rate"') != endpoints:
        raise RuntimeError(f"the page is not what it should be: {status}, {len(body)} bytes")
    for _ in range(3):  # warm up
        drive(middleware, environ)
    whole: list[int] = []
    whole_cpu: list[int] = []
    build: list[int] = []
    render: list[int] = []
    routes = middleware.routes
    for _ in range(rounds):
        wall0, cpu0 = perf_counter_ns(), process_time_ns()
        drive(middleware, environ)
        whole.append(perf_counter_ns() - wall0)
        whole_cpu.append(process_time_ns() - cpu0)
        cpu0 = process_time_ns()
        view = routes.dashboard_view()
        build.append(process_time_ns() - cpu0)
        cpu0 = process_time_ns()
        render_dashboard(view)
        render.append(process_time_ns() - cpu0)
    return {
        "first_request_ms": first,
        "page_bytes": len(body),
        "request_ms": _ms(whole),
        "request_cpu_ms": _ms(whole_cpu),
        "view_cpu_ms": _ms(build),
        "render_cpu_ms": _ms(render),
    }


def _filled(endpoints: int, clock: Any = None) -> tuple[Any, dict[str, Any]]:
    filled.ENDPOINTS = endpoints
    extra = {"clock": clock} if clock is not None else {}
    middleware = apps.observe(
        apps.status_app,
        checks={"database": lambda: True},
        readiness_cache_ttl=3600.0,
        slow_request_threshold=3600.0,
        max_endpoints=max(1000, endpoints * 2),
        **extra,
    )
    info = filled.populate(middleware)
    drive(middleware, make_environ("/health/ready"))  # a readiness result to show
    return middleware, info


def measure(endpoints: int = filled.ENDPOINTS, rounds: int = 41) -> dict[str, Any]:
    """Build, fill and time both cases; the numbers as a dict (see the module's docstring)."""
    now = [time.time()]
    middleware, info = _filled(endpoints, clock=lambda: now[0])
    windows = middleware.windows
    windows.tick()
    environs = [make_environ(f"/api/v1/resource_{i:03d}/items") for i in range(endpoints)]
    steps = int(windows.span_s / windows.interval_s) + 1
    for _ in range(steps):
        now[0] += windows.interval_s
        for environ in environs:
            drive(middleware, environ)
            drive(middleware, environ)
        windows.tick()
    ring = _timed(middleware, endpoints, rounds)
    ring.update(ring_entries=len(windows._ring().times()), ring_bytes=windows.size_bytes())

    middleware, _ = _filled(endpoints)
    middleware.routes.windows = _Windows(middleware)
    worst = _timed(middleware, endpoints, rounds)
    return {"endpoints": endpoints, "rounds": rounds, "filled": info, "ring": ring, "worst": worst}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=filled.ENDPOINTS)
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.endpoints, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
