"""Snapshot -> Prometheus text format 0.0.4 and OpenMetrics 1.0.0 (pure functions).

Both formats carry the same families and the same samples; only the metadata lines differ
(OpenMetrics names a counter family without ``_total``, has ``# UNIT`` and an ``info``
type, and ends with ``# EOF``). Every name starts with ``wsgi_observe_`` and carries its
base unit (seconds, bytes, ratio). Families are sorted by name, samples by label values,
so the same snapshot always gives the same bytes. A family with no samples is left out,
as client_golang does: the request families appear with the first request, the readiness
ones after the first probe.

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
from typing import Any, Optional

from ..health import is_ready
from ..histograms import MAX_US, bucket_index, highest_equivalent
from ..metrics import SeriesData, Snapshot
from ..system import process_info

__all__ = [
    "BUCKET_BOUNDS",
    "FAMILIES",
    "QUANTILES",
    "Family",
    "render_openmetrics",
    "render_prometheus",
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
_LE = (*(repr(bound) for bound in BUCKET_BOUNDS), "+Inf")  # canonical: "0.001", "1.0", "+Inf"
_QUANTILE_TEXT = tuple(repr(q) for q in QUANTILES)
_PERCENTS = tuple(q * 100.0 for q in QUANTILES)
_STATES = ("degraded", "healthy", "unhealthy")
# Below this many HDR buckets a sort is quicker than binning (measured on this machine).
_SORT_BELOW = 300


class Family:
    """One metric family: its name, type, help text and unit, and both formats' headers.

    ``name`` is the OpenMetrics family name (a counter's without ``_total``; an info's
    without ``_info``); ``sample`` is the name its samples carry in both formats.
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


Bodies = dict[Family, list[str]]


def render_prometheus(snapshot: Snapshot, extras: Mapping[str, Any]) -> bytes:
    """The Prometheus text format 0.0.4 (``text/plain; version=0.0.4``) of ``snapshot``.

    ``extras``: ``service``, ``version``, ``system`` (the JSON ``system`` block or None) and
    ``readiness`` (the last ``/health/ready`` body or None).
    """
    return _render(snapshot, extras, openmetrics=False)


def render_openmetrics(snapshot: Snapshot, extras: Mapping[str, Any]) -> bytes:
    """The OpenMetrics 1.0.0 text (``application/openmetrics-text``) of ``snapshot``."""
    return _render(snapshot, extras, openmetrics=True)


def _render(snapshot: Snapshot, extras: Mapping[str, Any], *, openmetrics: bool) -> bytes:
    bodies: Bodies = {}
    _application(bodies, snapshot, extras)
    _series(bodies, snapshot.endpoints, "endpoint", REQUESTS, DURATION, DURATION_Q, ERRORS)
    _series(bodies, snapshot.functions, "function", CALLS, CALL_DURATION, CALL_DURATION_Q, None)
    readiness = extras.get("readiness")
    if readiness:
        _readiness(bodies, readiness)
    system = extras.get("system")
    if system:
        _system(bodies, system)
    _processes(bodies, snapshot.processes)
    out: list[str] = []
    for family in FAMILIES:
        body = bodies.get(family)
        if body is None:
            continue
        out.append(family.om_header if openmetrics else family.text_header)
        out.extend(body)
    if openmetrics:
        out.append("# EOF\n")
    text = "".join(out)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (never from PEP 3333 paths, which are latin-1) cannot be UTF-8.
        return text.encode("utf-8", "replace")


# Values and labels ----------------------------------------------------------------------


def _escape(value: str) -> str:
    """A label value escaped for both formats: backslash, double quote and newline."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _number(value: float) -> str:
    """Go-style float text: ``+Inf``, ``-Inf``, ``NaN``; integers stay integers."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _ratio(percent: Any) -> str:
    return _number(round(float(percent) / 100.0, 6))


def _bytes(value: Any, scale: int) -> str:
    return str(round(float(value) * scale))


# Families ----------------------------------------------------------------------------------


def _application(bodies: Bodies, snapshot: Snapshot, extras: Mapping[str, Any]) -> None:
    service = _escape(str(extras.get("service", "")))
    version = _escape(str(extras.get("version", "")))
    bodies[INFO] = [f'wsgi_observe_info{{service="{service}",version="{version}"}} 1\n']
    bodies[START_TIME] = [f"{START_TIME.name} {_number(float(snapshot.started_at))}\n"]
    uptime = round(max(snapshot.taken_at - snapshot.started_at, 0.0), 3)
    bodies[UPTIME] = [f"{UPTIME.name} {_number(uptime)}\n"]
    bodies[IN_FLIGHT] = [f"{IN_FLIGHT.name} {max(int(snapshot.inflight), 0)}\n"]


def _series(
    bodies: Bodies,
    space: Mapping[str, SeriesData],
    label: str,
    counts: Family,
    duration: Family,
    quantiles: Family,
    errors: Optional[Family],
) -> None:
    if not space:
        return
    count_lines: list[str] = []
    error_lines: list[str] = []
    bucket_lines: list[str] = []
    quantile_lines: list[str] = []
    count_name = counts.sample
    bucket_name = duration.name + "_bucket"
    sum_name = duration.name + "_sum"
    total_name = duration.name + "_count"
    quantile_name = quantiles.name
    is_function = errors is None
    for name in sorted(space):
        series = space[name]
        labels = f'{label}="{_escape(name)}"'
        for (first, second), count in sorted(series.by.items()):
            if is_function:
                extra = f'result="{_escape(first)}"'
            else:
                extra = f'method="{_escape(first)}",status="{_escape(second)}"'
            count_lines.append(f"{count_name}{{{labels},{extra}}} {count}\n")
        if errors is not None:
            error_lines.append(f"{errors.sample}{{{labels}}} {series.errors}\n")
        cumulative, quantile_values = _distribution(series)
        total = cumulative[-1]
        prefix = f'{bucket_name}{{{labels},le="'
        for le, count in zip(_LE, cumulative):
            bucket_lines.append(f'{prefix}{le}"}} {count}\n')
        bucket_lines.append(f"{sum_name}{{{labels}}} {_number(series.sum_ns / 1e9)}\n")
        bucket_lines.append(f"{total_name}{{{labels}}} {total}\n")
        for text, value in zip(_QUANTILE_TEXT, quantile_values):
            quantile_lines.append(f'{quantile_name}{{{labels},quantile="{text}"}} {value}\n')
    bodies[counts] = count_lines
    if errors is not None:
        bodies[errors] = error_lines
    bodies[duration] = bucket_lines
    bodies[quantiles] = quantile_lines


def _distribution(series: SeriesData) -> tuple[list[int], list[str]]:
    """Cumulative counts at each bound (``+Inf`` last) and the quantiles' texts of a series.

    A snapshot hands its buckets over already in index order, so searching them is all C
    work (accumulate, bisect). A series built from a plain dict is sorted once, or, when
    it has many buckets, binned in one pass; both ways give the same numbers.
    """
    if series._sorted is not None or len(series.hist) < _SORT_BELOW:
        return _sorted_distribution(*series.sorted_hist())
    return _binned_distribution(series.hist)


def _goal(percent: float, total: int) -> int:
    # HdrHistogram's rule, as histograms.percentiles: the first HDR bucket whose running
    # count reaches round(p * total) gives the quantile, reported at its highest value.
    return max(int(percent * total / 100 + 0.5), 1)


def _sorted_distribution(keys: Sequence[int], counts: Sequence[int]) -> tuple[list[int], list[str]]:
    running = list(accumulate(counts))
    total = running[-1] if running else 0
    cumulative = []
    for threshold in _THRESHOLDS:
        below = bisect_left(keys, threshold)
        cumulative.append(running[below - 1] if below else 0)
    cumulative.append(total)
    if total <= 0:
        return cumulative, ["NaN"] * len(_PERCENTS)  # no observations yet
    texts = [
        repr(highest_equivalent(keys[bisect_left(running, _goal(p, total))]) / 1e6)
        for p in _PERCENTS
    ]
    return cumulative, texts


def _binned_distribution(hist: Mapping[int, int]) -> tuple[list[int], list[str]]:
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
        return cumulative, ["NaN"] * len(_PERCENTS)  # no observations yet
    texts = []
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
        texts.append(repr(highest_equivalent(index) / 1e6))
    return cumulative, texts


def _readiness(bodies: Bodies, readiness: Mapping[str, Any]) -> None:
    # Ready as /health/ready answers it: 1 while every required check is healthy.
    bodies[READY] = [f"{READY.name} {1 if is_ready(readiness) else 0}\n"]
    finished = _epoch(readiness.get("timestamp"))
    if finished is not None:
        bodies[READY_AT] = [f"{READY_AT.name} {_number(finished)}\n"]
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
    healthy: list[str] = []
    required: list[str] = []
    status_lines: list[str] = []
    latency: list[str] = []
    for name, group, result in checks:
        labels = f'check="{_escape(name)}"'
        if group:
            labels += f',group="{_escape(group)}"'
        status = result["status"]
        healthy.append(f"{CHECK_HEALTHY.name}{{{labels}}} {1 if status == 'healthy' else 0}\n")
        is_optional = result.get("required", True) is False
        required.append(f"{CHECK_REQUIRED.name}{{{labels}}} {0 if is_optional else 1}\n")
        for state in _STATES:
            value = 1 if state == status else 0
            status_lines.append(f'{CHECK_STATUS.name}{{{labels},status="{state}"}} {value}\n')
        latency_ms = result.get("latency_ms")
        if isinstance(latency_ms, (int, float)) and not isinstance(latency_ms, bool):
            seconds = _number(round(latency_ms / 1000, 6))
            latency.append(f"{CHECK_LATENCY.name}{{{labels}}} {seconds}\n")
    bodies[CHECK_HEALTHY] = healthy
    bodies[CHECK_REQUIRED] = required
    bodies[CHECK_STATUS] = status_lines
    if latency:
        bodies[CHECK_LATENCY] = latency


def _epoch(timestamp: Any) -> Optional[float]:
    """``2025-10-06T12:00:00.000Z`` -> seconds since the epoch (None if not that shape)."""
    if not isinstance(timestamp, str):
        return None
    try:
        moment = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc).timestamp()


def _system(bodies: Bodies, system: Mapping[str, Any]) -> None:
    # The system block keeps the guide's JSON units (percent, MB, GB); convert to base units.
    cpu = system.get("cpu") or {}
    if "usage_percent" in cpu:
        bodies[CPU_USAGE] = [f"{CPU_USAGE.name} {_ratio(cpu['usage_percent'])}\n"]
    if "count" in cpu:
        bodies[CPU_COUNT] = [f"{CPU_COUNT.name} {int(cpu['count'])}\n"]
    memory = system.get("memory") or {}
    memory_keys = ((MEM_TOTAL, "total_mb"), (MEM_AVAILABLE, "available_mb"), (MEM_USED, "used_mb"))
    for family, key in memory_keys:
        if key in memory:
            bodies[family] = [f"{family.name} {_bytes(memory[key], _MB)}\n"]
    disk = system.get("disk") or {}
    for family, key in ((DISK_TOTAL, "total_gb"), (DISK_USED, "used_gb"), (DISK_FREE, "free_gb")):
        if key in disk:
            bodies[family] = [f"{family.name} {_bytes(disk[key], _GB)}\n"]


def _processes(bodies: Bodies, processes: list[dict[str, Any]]) -> None:
    if not processes:
        # A single process: report this one (psutil reads /proc: tens of microseconds).
        own = process_info(os.getpid(), "main")
        processes = [own] if own is not None else []
    rss: list[str] = []
    cpu: list[str] = []
    threads: list[str] = []
    fds: list[str] = []
    started: list[str] = []
    for process in sorted(processes, key=lambda p: (str(p.get("role")), int(p.get("pid", 0)))):
        role = _escape(str(process.get("role", "")))
        labels = f'{{pid="{int(process.get("pid", 0))}",role="{role}"}}'
        if "rss_mb" in process:
            rss.append(f"{PROC_RSS.name}{labels} {_bytes(process['rss_mb'], _MB)}\n")
        if "cpu_seconds" in process:
            cpu.append(f"{PROC_CPU.sample}{labels} {_number(float(process['cpu_seconds']))}\n")
        if "threads" in process:
            threads.append(f"{PROC_THREADS.name}{labels} {int(process['threads'])}\n")
        if "open_fds" in process:
            fds.append(f"{PROC_FDS.name}{labels} {int(process['open_fds'])}\n")
        if "started_at" in process:
            started.append(f"{PROC_START.name}{labels} {_number(float(process['started_at']))}\n")
    for family, lines in (
        (PROC_RSS, rss),
        (PROC_CPU, cpu),
        (PROC_THREADS, threads),
        (PROC_FDS, fds),
        (PROC_START, started),
    ):
        if lines:
            bodies[family] = lines
