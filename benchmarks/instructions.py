"""Instructions per request, counted by valgrind's callgrind: stable on a shared machine.

CPU and wall times on a VM shared with other tenants move by 10 to 30% from one run to the
next; the number of instructions a request executes does not. For each configuration,
``python -m benchmarks.inprocess count`` builds it, warms it up and serves N requests, run
twice under callgrind (``--n`` small and large); the difference of the two totals divided by
the difference in requests is the instructions per request, start-up and warm-up cancelled
out. Only the request subjects that do no network I/O are counted (Sentry's would time its
sink, not itself).

    python -m benchmarks.instructions [--subjects bare,prometheus,...] [--n 2000 --n2 12000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Optional

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = ["COUNTED", "FRAMEWORK_COUNTED", "available", "count_all", "count_one"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The configurations counted, in the table's order.
COUNTED = ("bare", "prometheus", "wo_excluded", "wo_metrics", "wo_context", "wo_default")
#: The framework rows (issue 18), counted with fewer requests (each costs ~100x more).
FRAMEWORK_COUNTED = (
    "flask_bare",
    "flask_exporter",
    "flask_wo_metrics",
    "flask_wo_console",
    "flask_wo_default",
    "django_bare",
    "django_prometheus",
    "django_wo_metrics",
)
_TOTAL = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def available() -> Optional[str]:
    """None when callgrind can run, else why not."""
    if shutil.which("valgrind") is None:
        return "valgrind not installed (Debian: apt-get install valgrind)"
    return None


def _callgrind(subject: str, n: int, warmup: int, env: dict[str, str], tmp: str) -> int:
    """Total instructions (Ir) of one process serving ``warmup + n`` requests."""
    out = os.path.join(tmp, f"callgrind.{subject}.{n}.out")
    run_tmp = tempfile.mkdtemp(prefix=f"{subject}-{n}-", dir=tmp)
    run_env = dict(env)
    run_env["LOG_DIR"] = os.path.join(run_tmp, "logs-default")
    os.makedirs(run_env["LOG_DIR"], exist_ok=True)
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "benchmarks.inprocess",
        "count",
        subject,
        "--n",
        str(n),
        "--warmup",
        str(warmup),
        "--opts",
        json.dumps({"tmp": run_tmp, "dsn": None}),
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=run_env, capture_output=True, timeout=900, check=False
    )
    if done.returncode != 0 or b'"ok"' not in done.stdout:
        tail = (done.stderr or b"")[-1200:].decode(errors="replace")
        raise RuntimeError(f"{subject} under callgrind failed (rc={done.returncode}): {tail}")
    with open(out, "rb") as handle:
        found = _TOTAL.findall(handle.read())
    if not found:
        raise RuntimeError(f"no instruction total in {out}")
    return int(found[-1])


def count_one(
    subject: str, n1: int, n2: int, warmup: int, env: dict[str, str], tmp: str
) -> dict[str, Any]:
    small = _callgrind(subject, n1, warmup, env, tmp)
    large = _callgrind(subject, n2, warmup, env, tmp)
    return {"per_request": (large - small) / (n2 - n1), "totals": [small, large], "n": [n1, n2]}


def count_all(
    subjects: tuple[str, ...], n1: int, n2: int, warmup: int, env: dict[str, str], log: Any
) -> dict[str, Any]:
    """Instructions per request of each subject: ``{name: {...}}`` or ``{"na": why}``."""
    why = available()
    if why:
        return {"na": why}
    out: dict[str, Any] = {}
    tmp = tempfile.mkdtemp(prefix="wsgi-observe-callgrind-")
    try:
        for subject in subjects:
            try:
                out[subject] = count_one(subject, n1, n2, warmup, env, tmp)
                log(f"instructions: {subject} {out[subject]['per_request']:,.0f} per request")
            except Exception as error:
                out[subject] = {"error": str(error)}
                log(f"instructions: {subject}: error - {error}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", default=",".join(COUNTED))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--n2", type=int, default=12000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument(
        "--fixed-millisecond",
        action="store_true",
        help="hold the access line's millisecond fixed after warm-up (a stable count: see "
        "benchmarks.inprocess._hold_the_millisecond)",
    )
    args = parser.parse_args()
    from benchmarks.inprocess import FIXED_MILLISECOND
    from benchmarks.run import clean_env

    tmp = tempfile.mkdtemp(prefix="wsgi-observe-callgrind-env-")
    try:
        env = clean_env(tmp)
        if args.fixed_millisecond:
            env[FIXED_MILLISECOND] = "1"
        result = count_all(
            tuple(args.subjects.split(",")),
            args.n,
            args.n2,
            args.warmup,
            env,
            lambda message: print(message, file=sys.stderr, flush=True),
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
