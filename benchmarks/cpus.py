"""Which CPU the timed in-process workers run on: one, the same for all of them.

On a shared VM the CPUs need not be alike. On this suite's 2-vCPU machine a pure-Python loop
ran about 45% slower on one CPU than on the other, for minutes at a time, and later the other
way round (why, the guest cannot see). Workers left to the scheduler ran each batch on
either: a round's ratio then compared one configuration on the fast CPU with another on the
slow one (per-round ratios from 0.83 to 1.76 around a median of 0.98), and the bare app's
time flipped between two levels. Pinned to one CPU, every configuration meets the same one;
the rounds still interleave, so a CPU that slows down for a while slows all of them.

``--cpu fastest`` (the default) times a short loop on each CPU the suite may use and takes
the fastest; ``--cpu N`` takes CPU N; ``--cpu none`` leaves the workers unpinned. The
choice and the loop times are in the results (``machine.cpu_pinning``).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Optional

__all__ = ["check", "choose", "pin", "speeds"]

_LOOP = 300_000  # ~10-20 ms of bytecode on a 2020s CPU
_TRIES = 5


def _allowed() -> Optional[set[int]]:
    getter = getattr(os, "sched_getaffinity", None)
    return set(getter(0)) if getter is not None else None


def _spin_ms() -> float:
    start = time.process_time_ns()
    total = 0
    for i in range(_LOOP):
        total += i
    return (time.process_time_ns() - start) / 1e6


def speeds() -> dict[int, float]:
    """Median ms of a fixed Python loop on each allowed CPU (tried in turns, so a CPU that
    is slow for a moment does not decide alone); {} where affinity is not supported."""
    allowed = _allowed()
    if not allowed:
        return {}
    times: dict[int, list[float]] = {cpu: [] for cpu in sorted(allowed)}
    try:
        for _ in range(_TRIES):
            for cpu in times:
                os.sched_setaffinity(0, {cpu})
                times[cpu].append(_spin_ms())
    finally:
        os.sched_setaffinity(0, allowed)
    return {cpu: round(statistics.median(values), 2) for cpu, values in times.items()}


def check(spec: str) -> None:
    """Raise ValueError (one line) unless ``spec`` is a valid ``--cpu`` here."""
    if spec in ("fastest", "none"):
        return
    if not spec.isdigit():
        raise ValueError(f"--cpu {spec!r}: expected 'fastest', 'none' or a CPU number")
    allowed = _allowed()
    if allowed is None:
        raise ValueError(f"--cpu {spec}: this system cannot pin a process to a CPU")
    if int(spec) not in allowed:
        raise ValueError(f"--cpu {spec}: not one of the CPUs allowed here {sorted(allowed)}")


def choose(spec: str) -> dict[str, Any]:
    """``{"cpu": N or None, "speeds_ms": {...}, "why": text}`` for ``--cpu spec``."""
    check(spec)
    allowed = _allowed()
    if spec == "none":
        return {"cpu": None, "speeds_ms": {}, "why": "not pinned (--cpu none)"}
    if not allowed:
        return {"cpu": None, "speeds_ms": {}, "why": "not pinned: no CPU affinity here"}
    measured = speeds()
    if spec == "fastest":
        cpu = min(measured, key=lambda c: (measured[c], c))
        why = f"pinned to CPU {cpu}, the fastest of {len(measured)} at the start"
    else:
        cpu = int(spec)
        why = f"pinned to CPU {cpu} (--cpu {cpu})"
    return {"cpu": cpu, "speeds_ms": {str(k): v for k, v in measured.items()}, "why": why}


def pin(cpu: Optional[int]) -> None:
    """Run this process (and every thread it starts afterwards) on ``cpu`` only."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
