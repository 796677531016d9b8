"""What recording a business KPI costs, side by side with prometheus_client, in one run.

    .venv-bench/bin/python benchmarks/kpis.py            # 9 interleaved rounds
    .venv/bin/python benchmarks/kpis.py --quick          # CI smoke: 1 short round

Each subject is one call, timed in batches of about ``--target-s`` seconds with GC off; the
subjects take turns in every round (so a noisy neighbour hits them all alike), and the table
gives each one's median ns per call over the rounds, less the cost of an empty call (the
loop's own). Ratios are wsgi_observe's over prometheus_client's for the same kind of record,
computed per round and then the median. Rows:

- ``counter.inc()``, ``counter.labels(source=...).inc()`` (the lookup each time, as code
  usually calls it), and ``distribution.observe(v)`` (values drawn from 1..100000);
- the same on prometheus_client (``Counter``, ``Histogram`` with its default buckets), in a
  fresh registry, single-process mode;
- the same wsgi_observe KPIs recording into a gunicorn worker's memory-mapped state table
  (``WorkerTable``), what they do under gunicorn;
- ``MetricsStore.record_request`` of one finished request, the request path's own record.

Results go to ``benchmarks/results/kpis.md`` and ``kpis.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, Optional

if __package__ in (None, ""):  # run as a file: make "benchmarks" importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.harness import Subject

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PAIRS = (
    ("counter.inc()", "wo_inc", "pc_inc"),
    ("counter.labels(source=...).inc()", "wo_labels", "pc_labels"),
    ("distribution.observe(v) / Histogram.observe(v)", "wo_observe", "pc_observe"),
)


def _values(n: int = 4096) -> Callable[[], int]:
    """A cycling source of values 1..100000 (log-uniform), cheap to draw."""
    rng = random.Random(5)
    pool = [int(10 ** rng.uniform(0, 5)) for _ in range(n)]
    state = [0]
    mask = n - 1

    def draw() -> int:
        state[0] = (state[0] + 1) & mask
        return pool[state[0]]

    return draw


def _wsgi_observe(prefix: str, table: Any = None) -> dict[str, Callable[[], Any]]:
    from wsgi_observe import kpis
    from wsgi_observe.metrics import MetricsStore

    store = MetricsStore(table)
    plain = kpis.counter("leads", "Leads.", store=store)
    labelled = kpis.counter("leads_by_source", "Leads.", labels=("source",), store=store)
    score = kpis.distribution("order_value", "Orders.", "cents", store=store)
    draw = _values()
    observe = score.observe
    return {
        f"{prefix}_inc": plain.inc,
        f"{prefix}_labels": lambda: labelled.labels(source="website").inc(),
        f"{prefix}_observe": lambda: observe(draw()),
    }


def _prometheus_client() -> dict[str, Callable[[], Any]]:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    plain = Counter("leads", "Leads.", registry=registry)
    labelled = Counter("leads_by_source", "Leads.", ["source"], registry=registry)
    histogram = Histogram("order_value_cents", "Orders.", registry=registry)
    draw = _values()
    observe = histogram.observe
    return {
        "pc_inc": plain.inc,
        "pc_labels": lambda: labelled.labels(source="website").inc(),
        "pc_observe": lambda: observe(draw()),
    }


def _record_request() -> Callable[[], Any]:
    from benchmarks.harness import make_environ
    from wsgi_observe._wsgi import Exchange
    from wsgi_observe.endpoints import EndpointNames
    from wsgi_observe.metrics import MetricsStore

    store = MetricsStore()
    names = EndpointNames(500)
    exchange = Exchange()
    exchange.environ = make_environ("/api/leads")
    exchange.status = "200 OK"
    exchange.failed = False
    draw = _values()
    record = store.record_request
    return lambda: record(exchange, draw() * 1000, names)


def subjects(tmp: str) -> dict[str, Subject]:
    from wsgi_observe.multiprocess.table import WorkerTable

    calls: dict[str, Callable[[], Any]] = {"empty": lambda: None}
    calls.update(_wsgi_observe("wo"))
    calls.update(_wsgi_observe("mm", WorkerTable(tmp)))
    try:
        calls.update(_prometheus_client())
    except ImportError:
        pass  # shown as n/a
    calls["request"] = _record_request()
    return {name: Subject(call=call) for name, call in calls.items()}


def measure(rounds: int, target_s: float) -> dict[str, list[float]]:
    """ns per call of each subject, one number per round (the empty call's subtracted)."""
    with tempfile.TemporaryDirectory(prefix="wsgi_observe-bench-kpis-") as tmp:
        os.chmod(tmp, 0o700)
        found = subjects(tmp)
        sizes = {name: subject.calibrate(target_s) for name, subject in found.items()}
        per_round: dict[str, list[float]] = {name: [] for name in found}
        order = list(found)
        for number in range(rounds):
            random.Random(number).shuffle(order)
            raw = {}
            for name in order:
                result = found[name].run(sizes[name])
                raw[name] = result["wall_ns"] / result["n"]
            for name, value in raw.items():
                per_round[name].append(value if name == "empty" else max(value - raw["empty"], 0))
    return per_round


def report(per_round: dict[str, list[float]]) -> dict[str, Any]:
    medians = {name: statistics.median(values) for name, values in per_round.items()}
    ratios = {}
    for _, ours, theirs in PAIRS:
        if theirs in per_round:
            each = [a / b for a, b in zip(per_round[ours], per_round[theirs]) if b > 0]
            ratios[ours] = statistics.median(each) if each else None
    request = per_round["request"]
    vs_request = {}
    for _, ours, _theirs in PAIRS:
        each = [a / b for a, b in zip(per_round[ours], request) if b > 0]
        vs_request[ours] = statistics.median(each) if each else None
    return {
        "medians_ns": medians,
        "ratios_vs_prometheus_client": ratios,
        "ratios_vs_record_request": vs_request,
        "rounds": len(request),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def markdown(data: dict[str, Any]) -> str:
    medians = data["medians_ns"]

    def ns(name: str) -> str:
        return f"{medians[name]:.0f}" if name in medians else "n/a"

    def ratio(value: Optional[float]) -> str:
        return f"{value:.2f}" if value is not None else "n/a"

    lines = [
        "# Recording a business KPI",
        "",
        f"Median ns per call over {data['rounds']} interleaved rounds, the loop's own cost "
        f"({medians['empty']:.0f} ns) subtracted; Python {data['machine']['python']}, "
        f"{data['machine']['cpus']} CPUs, {data['taken_at']}.",
        "",
        "| Record | wsgi_observe | wsgi_observe (gunicorn state file) | prometheus_client "
        "| ratio to prometheus_client | ratio to recording a request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, ours, theirs in PAIRS:
        mapped = "mm" + ours[2:]
        lines.append(
            f"| {label} | {ns(ours)} | {ns(mapped)} | {ns(theirs)} "
            f"| {ratio(data['ratios_vs_prometheus_client'].get(ours))} "
            f"| {ratio(data['ratios_vs_record_request'].get(ours))} |"
        )
    lines += [
        "",
        f"Recording one finished request (`MetricsStore.record_request`): {ns('request')} ns.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 short round (CI smoke)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (9; quick 1)")
    parser.add_argument("--target-s", type=float, help="seconds per batch (0.2; quick 0.01)")
    parser.add_argument("--out", default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 9)
    target_s = args.target_s or (0.01 if args.quick else 0.2)
    data = report(measure(rounds, target_s))
    text = markdown(data)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "kpis.json"), "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2, sort_keys=True)
    with open(os.path.join(args.out, "kpis.md"), "w", encoding="utf-8") as out:
        out.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
