"""The metric families ``/metrics`` serves, and the numbers in them, for every format.

The text formats (:mod:`.prometheus`) and the protobuf format (:mod:`.protobuf`) render the
same families from the same data: this module names the families (:data:`FAMILIES`), and
turns a snapshot into their samples, so a family or a label is added in one place.

- :func:`collect` gives the samples of the small families (service, process, readiness,
  system) as ``(labels, value)`` pairs, in output order;
- :data:`SERIES` and :func:`distribution` give the per-endpoint and per-function families:
  counts by label, errors, the latency histogram's cumulative counts at
  :data:`BUCKET_BOUNDS` and the quantiles of :data:`QUANTILES`.

Every name starts with ``wsgi_observe_`` and carries its base unit (seconds, bytes, ratio).
Families are sorted by name, samples by label values, so the same snapshot always gives the
same bytes. A family with no samples is left out, as client_golang does: the request
families appear with the first request, the readiness ones after the first probe.

Latency histogram buckets are computed from the HDR counts at the fixed bounds
:data:`BUCKET_BOUNDS`. The bucket ``le=B`` counts the requests whose HDR bucket lies
wholly below ``B``: no request slower than ``B`` is ever counted in it. HDR keeps two
significant figures, so a request up to 1% faster than ``B`` that shares an HDR bucket
with values above ``B`` appears only from the next bound up (the conservative side).
``_sum`` is exact (kept in nanoseconds); ``_count`` and ``le="+Inf"`` are the number of
recorded durations, so they always agree.

Precomputed quantiles (p50, p95, p99 since start, merged across all workers, the same
numbers as the JSON document) are a separate summary family,
``wsgi_observe_request_duration_quantile_seconds``, never mixed into the histogram. Prefer
``histogram_quantile()`` over the histogram for windows and aggregation.

Readiness families reflect the most recent ``/health/ready`` run (its time is
``wsgi_observe_readiness_last_run_timestamp_seconds``); they are absent until a probe ran.
``wsgi_observe_ready`` is 1 exactly when that probe answered 200 (every required check
healthy; optional checks, ``wsgi_observe_readiness_check_required`` 0, never block).
Per-process families come from the snapshot (gunicorn master and workers) or, in a single
process, from this process itself with ``role="main"``. System families are converted from
the JSON ``system`` block (percent -> ratio, MB and GB -> bytes), so they keep its rounding.
"""

from __future__ import annotations

import math
import os
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from itertools import accumulate, repeat
from typing import Any, NamedTuple, Optional, Union

from ..health import is_ready
from ..histograms import MAX_US, bucket_index, highest_equivalent
from ..metrics import SeriesData, Snapshot
from ..system import process_info

__all__ = [
    "BUCKET_BOUNDS",
    "FAMILIES",
    "QUANTILES",
    "SERIES",
    "Family",
    "Labels",
    "Sample",
    "SeriesFamilies",
    "collect",
    "distribution",
    "series_spaces",
]

#: Upper bounds (seconds) of the latency histogram buckets, ``+Inf`` added.
BUCKET_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Quantiles of the ``*_quantile_seconds`` summaries.
QUANTILES = (0.5, 0.95, 0.99)

_MB = 1024 * 1024
_GB = 1024 * 1024 * 1024
# HDR indexes below _THRESHOLDS[i] hold only values (us) below BUCKET_BOUNDS[i]: the bucket
# holding the bound itself also holds values above it, so it goes to the next bound up.
_THRESHOLDS = (*(bucket_index(round(bound * 1_000_000)) for bound in BUCKET_BOUNDS),)
_SIZE = bucket_index(MAX_US) + 1
# Slices of HDR indexes: every bucket bound starts one, and none is wider than 32 indexes.
# Binning each HDR bucket into its slice is one table lookup (_SLICE); the le counts are
# then sums of whole slices, and a quantile only looks inside the one slice holding it.
_SLICE_START = tuple(sorted({*range(0, _SIZE, 32), *_THRESHOLDS}))
_SLICE_END = (*_SLICE_START[1:], _SIZE)
_SLICE = bytes(bisect_right(_SLICE_START, index) - 1 for index in range(_SIZE))
# The le bucket of bound i holds slices 0 .. _LE_SLICE[i] (the last, +Inf, holds all).
_LE_SLICE = (*(_SLICE_START.index(t) - 1 for t in _THRESHOLDS), len(_SLICE_START) - 1)
_PERCENTS = tuple(q * 100.0 for q in QUANTILES)
_NO_QUANTILES = [math.nan] * len(QUANTILES)
_STATES = ("degraded", "healthy", "unhealthy")
# Below this many HDR buckets a sort is quicker than binning (measured on this machine).
_SORT_BELOW = 300

#: Label pairs of one sample, in output order.
Labels = tuple[tuple[str, str], ...]
#: One sample of a small family: its labels and its value (an int stays an int in text).
Sample = tuple[Labels, Union[int, float]]


class Family:
    """One metric family: its name, type, help text and unit, and both text formats' headers.

    ``name`` is the OpenMetrics family name (a counter's without ``_total``; an info's
    without ``_info``); ``sample`` is the name its samples carry in every format (and the
    family name in the protobuf format, as client_golang names it).
    """

    __slots__ = ("help", "kind", "labels", "name", "om_header", "sample", "text_header", "unit")

    def __init__(self, name: str, kind: str, help: str, unit: str = "", labels: str = "") -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.unit = unit
        self.labels = labels
        self.sample = name + {"counter": "_total", "info": "_info"}.get(kind, "")
        text_help = help.replace("\\", "\\\\").replace("\n", "\\n")
        om_help = text_help.replace('"', '\\"')
        text_kind = "gauge" if kind == "info" else kind
        self.text_header = f"# HELP {self.sample} {text_help}\n# TYPE {self.sample} {text_kind}\n"
        self.om_header = f"# HELP {name} {om_help}\n# TYPE {name} {kind}\n"
        if unit:
            self.om_header += f"# UNIT {name} {unit}\n"


_P = "wsgi_observe_"
INFO = Family("wsgi_observe", "info", "Service name and version.", labels="service, version")
START_TIME = Family(
    _P + "start_time_seconds",
    "gauge",
    "Start time of the service in seconds since the epoch.",
    "seconds",
)
UPTIME = Family(_P + "uptime_seconds", "gauge", "Seconds since the service started.", "seconds")
IN_FLIGHT = Family(_P + "requests_in_flight", "gauge", "Requests being served now.")
REQUESTS = Family(
    _P + "requests",
    "counter",
    "Requests by endpoint, method and status class.",
    labels="endpoint, method, status",
)
ERRORS = Family(
    _P + "request_errors",
    "counter",
    "Failed requests (5xx or exception) by endpoint.",
    labels="endpoint",
)
DURATION = Family(
    _P + "request_duration_seconds",
    "histogram",
    "Request duration, from entry until the response is closed.",
    "seconds",
    labels="endpoint, le",
)
DURATION_Q = Family(
    _P + "request_duration_quantile_seconds",
    "summary",
    "Request duration quantiles since start (HDR, all workers).",
    "seconds",
    labels="endpoint, quantile",
)
CALLS = Family(
    _P + "function_calls",
    "counter",
    "Calls of functions timed by performance_tracking, by result.",
    labels="function, result",
)
CALL_DURATION = Family(
    _P + "function_duration_seconds",
    "histogram",
    "Duration of functions timed by performance_tracking.",
    "seconds",
    labels="function, le",
)
CALL_DURATION_Q = Family(
    _P + "function_duration_quantile_seconds",
    "summary",
    "Duration quantiles since start of functions timed by performance_tracking.",
    "seconds",
    labels="function, quantile",
)
READY = Family(
    _P + "ready",
    "gauge",
    "1 if the last readiness run was ready (every required check healthy), else 0.",
)
READY_AT = Family(
    _P + "readiness_last_run_timestamp_seconds",
    "gauge",
    "End of the last readiness run in seconds since the epoch.",
    "seconds",
)
CHECK_HEALTHY = Family(
    _P + "readiness_check_healthy",
    "gauge",
    "1 if the readiness check was healthy in the last run, else 0.",
    labels="check, group",
)
CHECK_STATUS = Family(
    _P + "readiness_check_status",
    "gauge",
    "1 for the status of the readiness check in the last run, 0 for the others.",
    labels="check, group, status",
)
CHECK_REQUIRED = Family(
    _P + "readiness_check_required",
    "gauge",
    "1 if the readiness check blocks readiness, 0 if it is optional.",
    labels="check, group",
)
CHECK_LATENCY = Family(
    _P + "readiness_check_latency_seconds",
    "gauge",
    "Duration of the readiness check in the last run.",
    "seconds",
    labels="check, group",
)
CPU_USAGE = Family(
    _P + "system_cpu_usage_ratio", "gauge", "Machine CPU usage between scrapes, 0 to 1.", "ratio"
)
CPU_COUNT = Family(_P + "system_cpus", "gauge", "Logical CPUs of the machine.")
MEM_TOTAL = Family(_P + "system_memory_total_bytes", "gauge", "Machine memory in total.", "bytes")
MEM_AVAILABLE = Family(
    _P + "system_memory_available_bytes", "gauge", "Machine memory available.", "bytes"
)
MEM_USED = Family(
    _P + "system_memory_used_bytes", "gauge", "Machine memory used (total - available).", "bytes"
)
DISK_TOTAL = Family(_P + "system_disk_total_bytes", "gauge", "Disk size.", "bytes")
DISK_USED = Family(_P + "system_disk_used_bytes", "gauge", "Disk space used.", "bytes")
DISK_FREE = Family(_P + "system_disk_free_bytes", "gauge", "Disk space free.", "bytes")
PROC_RSS = Family(
    _P + "process_resident_memory_bytes",
    "gauge",
    "Resident memory of each process (gunicorn master and workers).",
    "bytes",
    labels="pid, role",
)
PROC_CPU = Family(
    _P + "process_cpu_seconds",
    "counter",
    "User and system CPU time of each process.",
    "seconds",
    labels="pid, role",
)
PROC_THREADS = Family(
    _P + "process_threads", "gauge", "Threads of each process.", labels="pid, role"
)
PROC_FDS = Family(
    _P + "process_open_fds", "gauge", "Open file descriptors of each process.", labels="pid, role"
)
PROC_START = Family(
    _P + "process_start_time_seconds",
    "gauge",
    "Start time of each process in seconds since the epoch.",
    "seconds",
    labels="pid, role",
)

#: Every family, in output order (sorted by name).
FAMILIES: tuple[Family, ...] = tuple(
    sorted(
        (
            INFO,
            START_TIME,
            UPTIME,
            IN_FLIGHT,
            REQUESTS,
            ERRORS,
            DURATION,
            DURATION_Q,
            CALLS,
            CALL_DURATION,
            CALL_DURATION_Q,
            READY,
            READY_AT,
            CHECK_HEALTHY,
            CHECK_STATUS,
            CHECK_REQUIRED,
            CHECK_LATENCY,
            CPU_USAGE,
            CPU_COUNT,
            MEM_TOTAL,
            MEM_AVAILABLE,
            MEM_USED,
            DISK_TOTAL,
            DISK_USED,
            DISK_FREE,
            PROC_RSS,
            PROC_CPU,
            PROC_THREADS,
            PROC_FDS,
            PROC_START,
        ),
        key=lambda family: family.name,
    )
)


class SeriesFamilies(NamedTuple):
    """The families fed by one kind of series (endpoints or functions) and their labels."""

    label: str  # the series' own label: "endpoint" or "function"
    by: tuple[str, ...]  # labels of the counter's ``by`` keys, in key order
    counts: Family
    duration: Family
    quantiles: Family
    errors: Optional[Family]


#: Endpoints (requests by method and status class, errors) and timed functions (by result).
SERIES = (
    SeriesFamilies("endpoint", ("method", "status"), REQUESTS, DURATION, DURATION_Q, ERRORS),
    SeriesFamilies("function", ("result",), CALLS, CALL_DURATION, CALL_DURATION_Q, None),
)


def series_spaces(
    snapshot: Snapshot,
) -> tuple[tuple[SeriesFamilies, Mapping[str, SeriesData]], ...]:
    """Each kind of series with the snapshot's series of that kind."""
    return ((SERIES[0], snapshot.endpoints), (SERIES[1], snapshot.functions))


def collect(snapshot: Snapshot, extras: Mapping[str, Any]) -> dict[Family, list[Sample]]:
    """The samples of every family that is not per endpoint or function, in output order.

    ``extras``: ``service``, ``version``, ``system`` (the JSON ``system`` block or None) and
    ``readiness`` (the last ``/health/ready`` body or None).
    """
    samples: dict[Family, list[Sample]] = {}
    _application(samples, snapshot, extras)
    readiness = extras.get("readiness")
    if readiness:
        _readiness(samples, readiness)
    system = extras.get("system")
    if system:
        _system(samples, system)
    _processes(samples, snapshot.processes)
    return samples


# Latency distributions ---------------------------------------------------------------------


def distribution(series: SeriesData) -> tuple[list[int], list[float]]:
    """Cumulative counts at each bound (``+Inf`` last) and the quantiles (s) of a series.

    The quantiles are NaN while the series has no observations. A snapshot hands its buckets
    over already in index order, so searching them is all C work (accumulate, bisect). A
    series built from a plain dict is sorted once, or, when it has many buckets, binned in
    one pass; both ways give the same numbers.
    """
    if series._sorted is not None or len(series.hist) < _SORT_BELOW:
        return _sorted_distribution(*series.sorted_hist())
    return _binned_distribution(series.hist)


def _goal(percent: float, total: int) -> int:
    # HdrHistogram's rule, as histograms.percentiles: the first HDR bucket whose running
    # count reaches round(p * total) gives the quantile, reported at its highest value.
    return max(int(percent * total / 100 + 0.5), 1)


def _sorted_distribution(
    keys: Sequence[int], counts: Sequence[int]
) -> tuple[list[int], list[float]]:
    running = list(accumulate(counts))
    total = running[-1] if running else 0
    cumulative = []
    for threshold in _THRESHOLDS:
        below = bisect_left(keys, threshold)
        cumulative.append(running[below - 1] if below else 0)
    cumulative.append(total)
    if total <= 0:
        return cumulative, list(_NO_QUANTILES)  # no observations yet
    values = [
        highest_equivalent(keys[bisect_left(running, _goal(p, total))]) / 1e6 for p in _PERCENTS
    ]
    return cumulative, values


def _binned_distribution(hist: Mapping[int, int]) -> tuple[list[int], list[float]]:
    per_slice = [0] * len(_SLICE_START)
    slices = _SLICE
    try:
        for index, count in hist.items():
            per_slice[slices[index]] += count
    except IndexError:  # an index beyond MAX_US (not from bucket_index): count it as +Inf
        per_slice = [0] * len(_SLICE_START)
        for index, count in hist.items():
            per_slice[slices[index] if 0 <= index < _SIZE else -1] += count
    running = list(accumulate(per_slice))
    cumulative = [running[i] for i in _LE_SLICE]
    total = running[-1]
    if total <= 0:
        return cumulative, list(_NO_QUANTILES)  # no observations yet
    values = []
    get = hist.get
    seen = -1
    start = 0
    inside: list[int] = []
    for percent in _PERCENTS:
        goal = _goal(percent, total)
        at = bisect_left(running, goal)
        if at != seen:  # p95 and p99 often share a slice
            seen = at
            start = _SLICE_START[at]
            inside = list(accumulate(map(get, range(start, _SLICE_END[at]), repeat(0))))
        index = start + bisect_left(inside, goal - (running[at - 1] if at else 0))
        values.append(highest_equivalent(index) / 1e6)
    return cumulative, values


# The small families --------------------------------------------------------------------------


def _application(
    samples: dict[Family, list[Sample]], snapshot: Snapshot, extras: Mapping[str, Any]
) -> None:
    service = str(extras.get("service", ""))
    version = str(extras.get("version", ""))
    samples[INFO] = [((("service", service), ("version", version)), 1)]
    samples[START_TIME] = [((), float(snapshot.started_at))]
    samples[UPTIME] = [((), round(max(snapshot.taken_at - snapshot.started_at, 0.0), 3))]
    samples[IN_FLIGHT] = [((), max(int(snapshot.inflight), 0))]


def _readiness(samples: dict[Family, list[Sample]], readiness: Mapping[str, Any]) -> None:
    # Ready as /health/ready answers it: 1 while every required check is healthy.
    samples[READY] = [((), 1 if is_ready(readiness) else 0)]
    finished = _epoch(readiness.get("timestamp"))
    if finished is not None:
        samples[READY_AT] = [((), finished)]
    checks: list[tuple[str, str, Mapping[str, Any]]] = []
    for name, value in (readiness.get("checks") or {}).items():
        if not isinstance(value, Mapping):
            continue
        if isinstance(value.get("status"), str):
            checks.append((str(name), "", value))
        else:  # a group, like the guide's external_services
            for member, result in value.items():
                if isinstance(result, Mapping) and isinstance(result.get("status"), str):
                    checks.append((str(member), str(name), result))
    if not checks:
        return
    checks.sort(key=lambda item: (item[1], item[0]))
    healthy: list[Sample] = []
    required: list[Sample] = []
    statuses: list[Sample] = []
    latency: list[Sample] = []
    for name, group, result in checks:
        labels: Labels = (("check", name), ("group", group)) if group else (("check", name),)
        status = result["status"]
        healthy.append((labels, 1 if status == "healthy" else 0))
        is_optional = result.get("required", True) is False
        required.append((labels, 0 if is_optional else 1))
        for state in _STATES:
            statuses.append(((*labels, ("status", state)), 1 if state == status else 0))
        latency_ms = result.get("latency_ms")
        if isinstance(latency_ms, (int, float)) and not isinstance(latency_ms, bool):
            latency.append((labels, round(latency_ms / 1000, 6)))
    samples[CHECK_HEALTHY] = healthy
    samples[CHECK_REQUIRED] = required
    samples[CHECK_STATUS] = statuses
    if latency:
        samples[CHECK_LATENCY] = latency


def _epoch(timestamp: Any) -> Optional[float]:
    """``2025-10-06T12:00:00.000Z`` -> seconds since the epoch (None if not that shape)."""
    if not isinstance(timestamp, str):
        return None
    try:
        moment = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc).timestamp()


def _system(samples: dict[Family, list[Sample]], system: Mapping[str, Any]) -> None:
    # The system block keeps the guide's JSON units (percent, MB, GB); convert to base units.
    cpu = system.get("cpu") or {}
    if "usage_percent" in cpu:
        samples[CPU_USAGE] = [((), round(float(cpu["usage_percent"]) / 100.0, 6))]
    if "count" in cpu:
        samples[CPU_COUNT] = [((), int(cpu["count"]))]
    memory = system.get("memory") or {}
    memory_keys = ((MEM_TOTAL, "total_mb"), (MEM_AVAILABLE, "available_mb"), (MEM_USED, "used_mb"))
    for family, key in memory_keys:
        if key in memory:
            samples[family] = [((), round(float(memory[key]) * _MB))]
    disk = system.get("disk") or {}
    for family, key in ((DISK_TOTAL, "total_gb"), (DISK_USED, "used_gb"), (DISK_FREE, "free_gb")):
        if key in disk:
            samples[family] = [((), round(float(disk[key]) * _GB))]


def _processes(samples: dict[Family, list[Sample]], processes: list[dict[str, Any]]) -> None:
    if not processes:
        # A single process: report this one (psutil reads /proc: tens of microseconds).
        own = process_info(os.getpid(), "main")
        processes = [own] if own is not None else []
    rss: list[Sample] = []
    cpu: list[Sample] = []
    threads: list[Sample] = []
    fds: list[Sample] = []
    started: list[Sample] = []
    for process in sorted(processes, key=lambda p: (str(p.get("role")), int(p.get("pid", 0)))):
        labels: Labels = (
            ("pid", str(int(process.get("pid", 0)))),
            ("role", str(process.get("role", ""))),
        )
        if "rss_mb" in process:
            rss.append((labels, round(float(process["rss_mb"]) * _MB)))
        if "cpu_seconds" in process:
            cpu.append((labels, float(process["cpu_seconds"])))
        if "threads" in process:
            threads.append((labels, int(process["threads"])))
        if "open_fds" in process:
            fds.append((labels, int(process["open_fds"])))
        if "started_at" in process:
            started.append((labels, float(process["started_at"])))
    for family, found in (
        (PROC_RSS, rss),
        (PROC_CPU, cpu),
        (PROC_THREADS, threads),
        (PROC_FDS, fds),
        (PROC_START, started),
    ):
        if found:
            samples[family] = found
