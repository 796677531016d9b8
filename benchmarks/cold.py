"""The same overhead, warm and cold: metrics only on the hello app and on a busy plain app.

Both apps answer with a list body, so wsgi_observe runs exactly the same code (and the same
instructions) for both; the busy one first spends about 80 µs in Python (walking a list of
dicts, serialising part of it), as a framework would, which evicts our data and branch
history between two requests. The difference between the two overheads is what running
cold costs: why the framework rows cost more time than their instructions say.

    python -m benchmarks.cold [--rounds 25] [--n 1500]

All four configurations live in this one process and are timed in interleaved rounds of
``n`` requests, GC off, in process CPU time; medians of the per-round differences.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from statistics import median
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import apps
from benchmarks.harness import Subject, check, make_environ

_DATA = [{f"k{i}": i, "s": "x" * (i % 17)} for i in range(300)]


def busy_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """About 80 µs of Python, then a list body (like the hello app's)."""
    total = 0
    for item in _DATA:
        for key in item:
            total += len(key)
    body = json.dumps(_DATA[:60]).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--n", type=int, default=1500)
    args = parser.parse_args()
    subjects = {
        "hello": apps.hello_app,
        "hello + metrics only": apps.observe(apps.hello_app),
        "busy": busy_app,
        "busy + metrics only": apps.observe(busy_app),
    }
    built = {}
    for name, app in subjects.items():
        subject = Subject(app, make_environ("/api/hello"))
        check(subject)
        subject.loop(3000)
        built[name] = subject
    times: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(args.rounds):
        for name, subject in built.items():
            gc.collect()
            start = time.process_time_ns()
            subject.loop(args.n)
            times[name].append((time.process_time_ns() - start) / args.n / 1000)
    result = {}
    for base in ("hello", "busy"):
        ours = times[f"{base} + metrics only"]
        overhead = median(o - b for o, b in zip(ours, times[base]))
        result[base] = {"bare_us": round(median(times[base]), 2), "overhead_us": round(overhead, 2)}
        print(
            f"{base:6} bare {median(times[base]):7.2f} µs, metrics only {median(ours):7.2f} µs:"
            f" overhead {overhead:+.2f} µs"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
