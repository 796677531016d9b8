"""Memory under a flood of distinct paths, in a fresh process.

``python -m benchmarks.memory [--paths 100000] [--bare]`` sends that many distinct random
paths (letters only, so none collapse into ``<int>``/``<hex>``) through the middleware
around an app that answers 200 to everything, and prints one JSON line: RSS before and
after (psutil, after ``gc.collect()``), the growth in MB, and the endpoint count kept.
``--bare`` does the same without the middleware, to show what the harness itself costs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import string
import sys
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import apps
from benchmarks.filled import describe_store
from benchmarks.harness import make_environ

_MB = 1024 * 1024


def _rss() -> int:
    import psutil

    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _random_path(rng: random.Random) -> str:
    letters = string.ascii_lowercase
    segments = rng.randint(1, 4)
    return "/" + "/".join(
        "".join(rng.choices(letters, k=rng.randint(3, 12))) for _ in range(segments)
    )


def flood(paths: int, bare: bool) -> dict[str, Any]:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return {"na": "psutil not installed"}
    app: Any = apps.hello_app if bare else apps.observe(apps.hello_app)
    template = make_environ("/")

    def one(path: str) -> None:
        environ = template.copy()
        environ["PATH_INFO"] = path
        body = app(environ, lambda status, headers, exc_info=None: None)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    # Warm up on a fixed path set, so imports and first-use caches are in the baseline.
    warm = random.Random(7)
    for _ in range(2000):
        one(_random_path(warm))
    before = _rss()
    rng = random.Random(42)
    started = time.perf_counter()
    for _ in range(paths):
        one(_random_path(rng))
    seconds = time.perf_counter() - started
    after = _rss()
    result: dict[str, Any] = {
        "paths": paths,
        "rss_before_mb": round(before / _MB, 2),
        "rss_after_mb": round(after / _MB, 2),
        "growth_mb": round((after - before) / _MB, 3),
        "seconds": round(seconds, 2),
    }
    if not bare:
        result.update(describe_store(app.store))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--paths", type=int, default=100_000)
    parser.add_argument("--bare", action="store_true")
    args = parser.parse_args()
    try:
        result = flood(args.paths, args.bare)
    except apps.Unavailable as why:
        result = {"na": str(why)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
