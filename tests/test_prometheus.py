"""Prometheus text 0.0.4 and OpenMetrics 1.0.0 exposition: golden output, validity, negotiation."""

from __future__ import annotations

import math
import os
import random
import re
import subprocess
from collections.abc import Iterable
from typing import Any, Optional
from wsgiref.validate import validator

import pytest
import wsgi_client
from prom_tools import PROMTOOL, backfill_openmetrics

from wsgi_observe.exposition import OPENMETRICS_TYPE, PROMETHEUS_TYPE, families
from wsgi_observe.exposition.prometheus import (
    BUCKET_BOUNDS,
    FAMILIES,
    QUANTILES,
    render_openmetrics,
    render_prometheus,
)
from wsgi_observe.histograms import bucket_index, highest_equivalent, percentiles
from wsgi_observe.metrics import MetricsStore, SeriesData, Snapshot
from wsgi_observe.middleware import ObservabilityMiddleware

needs_promtool = pytest.mark.skipif(
    not os.path.exists(PROMTOOL),
    reason="promtool is not installed (Debian package 'prometheus': apt-get install -y prometheus)",
)
# What Prometheus 2.x sends when it scrapes.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def _hist(values_us: Iterable[int]) -> dict[int, int]:
    hist: dict[int, int] = {}
    for value in values_us:
        index = bucket_index(value)
        hist[index] = hist.get(index, 0) + 1
    return hist


def _pinned() -> tuple[Snapshot, dict[str, Any]]:
    """One endpoint, one function, two processes, system and readiness: all numbers pinned."""
    # 1000 us sits exactly on the 1 ms bound and shares its HDR bucket with 1001..1003 us,
    # so it is counted from le="0.0025" on (the conservative side); 999 us counts at 1 ms.
    leads = SeriesData(
        count=9,
        errors=1,
        sum_ns=23_496_449_123,
        hist=_hist([150, 900, 999, 1000, 2400, 12_000, 480_000, 3_000_000, 20_000_000]),
        by={("POST", "5xx"): 1, ("GET", "2xx"): 8},
    )
    build = SeriesData(
        count=2,
        errors=1,
        sum_ns=5_000_000,
        hist=_hist([2500, 2500]),
        by={("ok", ""): 1, ("error", ""): 1},
    )
    processes = [
        {
            "pid": 4012,
            "role": "worker",
            "rss_mb": 60.0,
            "cpu_seconds": 3.5,
            "threads": 2,
            "open_fds": 12,
            "started_at": 1759752001.25,
        },
        {
            "pid": 4000,
            "role": "master",
            "rss_mb": 50.5,
            "cpu_seconds": 1.25,
            "threads": 1,
            "open_fds": 8,
            "started_at": 1759752000.0,
        },
    ]
    snapshot = Snapshot(
        endpoints={"/api/leads/<int:id>": leads},
        functions={"reports.build": build},
        inflight=3,
        started_at=1759752000.0,
        taken_at=1759838400.5,
        processes=processes,
    )
    extras = {
        "service": "CRM API",
        "version": "1.0.0",
        "system": {
            "cpu": {"usage_percent": 45.2, "count": 4},
            "memory": {"total_mb": 8192, "available_mb": 4096, "used_mb": 4096, "percent": 50.0},
            "disk": {"total_gb": 100, "used_gb": 45, "free_gb": 55, "percent": 45.0},
        },
        "readiness": {
            "status": "degraded",
            "timestamp": "2025-10-06T12:00:00.000Z",
            "checks": {
                "database": {"status": "healthy", "message": "OK", "latency_ms": 15},
                "external_services": {
                    "sendgrid": {
                        "status": "degraded",
                        "available": False,
                        "message": "API key not configured",
                        "latency_ms": 0.5,
                    },
                },
            },
        },
    }
    return snapshot, extras


GOLDEN_PROMETHEUS = """\
# HELP wsgi_observe_info Service name and version.
# TYPE wsgi_observe_info gauge
wsgi_observe_info{service="CRM API",version="1.0.0"} 1
# HELP wsgi_observe_function_calls_total Calls of functions timed by performance_tracking, by result.
# TYPE wsgi_observe_function_calls_total counter
wsgi_observe_function_calls_total{function="reports.build",result="error"} 1
wsgi_observe_function_calls_total{function="reports.build",result="ok"} 1
# HELP wsgi_observe_function_duration_quantile_seconds Duration quantiles since start of functions timed by performance_tracking.
# TYPE wsgi_observe_function_duration_quantile_seconds summary
wsgi_observe_function_duration_quantile_seconds{function="reports.build",quantile="0.5"} 0.002511
wsgi_observe_function_duration_quantile_seconds{function="reports.build",quantile="0.95"} 0.002511
wsgi_observe_function_duration_quantile_seconds{function="reports.build",quantile="0.99"} 0.002511
# HELP wsgi_observe_function_duration_seconds Duration of functions timed by performance_tracking.
# TYPE wsgi_observe_function_duration_seconds histogram
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.001"} 0
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.0025"} 0
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.005"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.01"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.025"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.05"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.1"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.25"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.5"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="1.0"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="2.5"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="5.0"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="10.0"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="+Inf"} 2
wsgi_observe_function_duration_seconds_sum{function="reports.build"} 0.005
wsgi_observe_function_duration_seconds_count{function="reports.build"} 2
# HELP wsgi_observe_process_cpu_seconds_total User and system CPU time of each process.
# TYPE wsgi_observe_process_cpu_seconds_total counter
wsgi_observe_process_cpu_seconds_total{pid="4000",role="master"} 1.25
wsgi_observe_process_cpu_seconds_total{pid="4012",role="worker"} 3.5
# HELP wsgi_observe_process_open_fds Open file descriptors of each process.
# TYPE wsgi_observe_process_open_fds gauge
wsgi_observe_process_open_fds{pid="4000",role="master"} 8
wsgi_observe_process_open_fds{pid="4012",role="worker"} 12
# HELP wsgi_observe_process_resident_memory_bytes Resident memory of each process (gunicorn master and workers).
# TYPE wsgi_observe_process_resident_memory_bytes gauge
wsgi_observe_process_resident_memory_bytes{pid="4000",role="master"} 52953088
wsgi_observe_process_resident_memory_bytes{pid="4012",role="worker"} 62914560
# HELP wsgi_observe_process_start_time_seconds Start time of each process in seconds since the epoch.
# TYPE wsgi_observe_process_start_time_seconds gauge
wsgi_observe_process_start_time_seconds{pid="4000",role="master"} 1759752000.0
wsgi_observe_process_start_time_seconds{pid="4012",role="worker"} 1759752001.25
# HELP wsgi_observe_process_threads Threads of each process.
# TYPE wsgi_observe_process_threads gauge
wsgi_observe_process_threads{pid="4000",role="master"} 1
wsgi_observe_process_threads{pid="4012",role="worker"} 2
# HELP wsgi_observe_readiness_check_healthy 1 if the readiness check was healthy in the last run, else 0.
# TYPE wsgi_observe_readiness_check_healthy gauge
wsgi_observe_readiness_check_healthy{check="database"} 1
wsgi_observe_readiness_check_healthy{check="sendgrid",group="external_services"} 0
# HELP wsgi_observe_readiness_check_latency_seconds Duration of the readiness check in the last run.
# TYPE wsgi_observe_readiness_check_latency_seconds gauge
wsgi_observe_readiness_check_latency_seconds{check="database"} 0.015
wsgi_observe_readiness_check_latency_seconds{check="sendgrid",group="external_services"} 0.0005
# HELP wsgi_observe_readiness_check_required 1 if the readiness check blocks readiness, 0 if it is optional.
# TYPE wsgi_observe_readiness_check_required gauge
wsgi_observe_readiness_check_required{check="database"} 1
wsgi_observe_readiness_check_required{check="sendgrid",group="external_services"} 1
# HELP wsgi_observe_readiness_check_status 1 for the status of the readiness check in the last run, 0 for the others.
# TYPE wsgi_observe_readiness_check_status gauge
wsgi_observe_readiness_check_status{check="database",status="degraded"} 0
wsgi_observe_readiness_check_status{check="database",status="healthy"} 1
wsgi_observe_readiness_check_status{check="database",status="unhealthy"} 0
wsgi_observe_readiness_check_status{check="sendgrid",group="external_services",status="degraded"} 1
wsgi_observe_readiness_check_status{check="sendgrid",group="external_services",status="healthy"} 0
wsgi_observe_readiness_check_status{check="sendgrid",group="external_services",status="unhealthy"} 0
# HELP wsgi_observe_readiness_last_run_timestamp_seconds End of the last readiness run in seconds since the epoch.
# TYPE wsgi_observe_readiness_last_run_timestamp_seconds gauge
wsgi_observe_readiness_last_run_timestamp_seconds 1759752000.0
# HELP wsgi_observe_ready 1 if the last readiness run was ready (every required check healthy), else 0.
# TYPE wsgi_observe_ready gauge
wsgi_observe_ready 0
# HELP wsgi_observe_request_duration_quantile_seconds Request duration quantiles since start (HDR, all workers).
# TYPE wsgi_observe_request_duration_quantile_seconds summary
wsgi_observe_request_duration_quantile_seconds{endpoint="/api/leads/<int:id>",quantile="0.5"} 0.002415
wsgi_observe_request_duration_quantile_seconds{endpoint="/api/leads/<int:id>",quantile="0.95"} 20.054015
wsgi_observe_request_duration_quantile_seconds{endpoint="/api/leads/<int:id>",quantile="0.99"} 20.054015
# HELP wsgi_observe_request_duration_seconds Request duration, from entry until the response is closed.
# TYPE wsgi_observe_request_duration_seconds histogram
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.001"} 3
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.0025"} 5
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.005"} 5
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.01"} 5
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.025"} 6
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.05"} 6
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.1"} 6
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.25"} 6
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.5"} 7
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="1.0"} 7
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="2.5"} 7
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="5.0"} 8
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="10.0"} 8
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="+Inf"} 9
wsgi_observe_request_duration_seconds_sum{endpoint="/api/leads/<int:id>"} 23.496449123
wsgi_observe_request_duration_seconds_count{endpoint="/api/leads/<int:id>"} 9
# HELP wsgi_observe_request_errors_total Failed requests (5xx or exception) by endpoint.
# TYPE wsgi_observe_request_errors_total counter
wsgi_observe_request_errors_total{endpoint="/api/leads/<int:id>"} 1
# HELP wsgi_observe_requests_total Requests by endpoint, method and status class.
# TYPE wsgi_observe_requests_total counter
wsgi_observe_requests_total{endpoint="/api/leads/<int:id>",method="GET",status="2xx"} 8
wsgi_observe_requests_total{endpoint="/api/leads/<int:id>",method="POST",status="5xx"} 1
# HELP wsgi_observe_requests_in_flight Requests being served now.
# TYPE wsgi_observe_requests_in_flight gauge
wsgi_observe_requests_in_flight 3
# HELP wsgi_observe_start_time_seconds Start time of the service in seconds since the epoch.
# TYPE wsgi_observe_start_time_seconds gauge
wsgi_observe_start_time_seconds 1759752000.0
# HELP wsgi_observe_system_cpu_usage_ratio Machine CPU usage between scrapes, 0 to 1.
# TYPE wsgi_observe_system_cpu_usage_ratio gauge
wsgi_observe_system_cpu_usage_ratio 0.452
# HELP wsgi_observe_system_cpus Logical CPUs of the machine.
# TYPE wsgi_observe_system_cpus gauge
wsgi_observe_system_cpus 4
# HELP wsgi_observe_system_disk_free_bytes Disk space free.
# TYPE wsgi_observe_system_disk_free_bytes gauge
wsgi_observe_system_disk_free_bytes 59055800320
# HELP wsgi_observe_system_disk_total_bytes Disk size.
# TYPE wsgi_observe_system_disk_total_bytes gauge
wsgi_observe_system_disk_total_bytes 107374182400
# HELP wsgi_observe_system_disk_used_bytes Disk space used.
# TYPE wsgi_observe_system_disk_used_bytes gauge
wsgi_observe_system_disk_used_bytes 48318382080
# HELP wsgi_observe_system_memory_available_bytes Machine memory available.
# TYPE wsgi_observe_system_memory_available_bytes gauge
wsgi_observe_system_memory_available_bytes 4294967296
# HELP wsgi_observe_system_memory_total_bytes Machine memory in total.
# TYPE wsgi_observe_system_memory_total_bytes gauge
wsgi_observe_system_memory_total_bytes 8589934592
# HELP wsgi_observe_system_memory_used_bytes Machine memory used (total - available).
# TYPE wsgi_observe_system_memory_used_bytes gauge
wsgi_observe_system_memory_used_bytes 4294967296
# HELP wsgi_observe_uptime_seconds Seconds since the service started.
# TYPE wsgi_observe_uptime_seconds gauge
wsgi_observe_uptime_seconds 86400.5
"""  # noqa: E501

GOLDEN_OPENMETRICS = """\
# HELP wsgi_observe Service name and version.
# TYPE wsgi_observe info
wsgi_observe_info{service="CRM API",version="1.0.0"} 1
# HELP wsgi_observe_function_calls Calls of functions timed by performance_tracking, by result.
# TYPE wsgi_observe_function_calls counter
wsgi_observe_function_calls_total{function="reports.build",result="error"} 1
wsgi_observe_function_calls_total{function="reports.build",result="ok"} 1
# HELP wsgi_observe_function_duration_quantile_seconds Duration quantiles since start of functions timed by performance_tracking.
# TYPE wsgi_observe_function_duration_quantile_seconds summary
# UNIT wsgi_observe_function_duration_quantile_seconds seconds
wsgi_observe_function_duration_quantile_seconds{function="reports.build",quantile="0.5"} 0.002511
wsgi_observe_function_duration_quantile_seconds{function="reports.build",quantile="0.95"} 0.002511
wsgi_observe_function_duration_quantile_seconds{function="reports.build",quantile="0.99"} 0.002511
# HELP wsgi_observe_function_duration_seconds Duration of functions timed by performance_tracking.
# TYPE wsgi_observe_function_duration_seconds histogram
# UNIT wsgi_observe_function_duration_seconds seconds
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.001"} 0
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.0025"} 0
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.005"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.01"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.025"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.05"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.1"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.25"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="0.5"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="1.0"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="2.5"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="5.0"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="10.0"} 2
wsgi_observe_function_duration_seconds_bucket{function="reports.build",le="+Inf"} 2
wsgi_observe_function_duration_seconds_sum{function="reports.build"} 0.005
wsgi_observe_function_duration_seconds_count{function="reports.build"} 2
# HELP wsgi_observe_process_cpu_seconds User and system CPU time of each process.
# TYPE wsgi_observe_process_cpu_seconds counter
# UNIT wsgi_observe_process_cpu_seconds seconds
wsgi_observe_process_cpu_seconds_total{pid="4000",role="master"} 1.25
wsgi_observe_process_cpu_seconds_total{pid="4012",role="worker"} 3.5
# HELP wsgi_observe_process_open_fds Open file descriptors of each process.
# TYPE wsgi_observe_process_open_fds gauge
wsgi_observe_process_open_fds{pid="4000",role="master"} 8
wsgi_observe_process_open_fds{pid="4012",role="worker"} 12
# HELP wsgi_observe_process_resident_memory_bytes Resident memory of each process (gunicorn master and workers).
# TYPE wsgi_observe_process_resident_memory_bytes gauge
# UNIT wsgi_observe_process_resident_memory_bytes bytes
wsgi_observe_process_resident_memory_bytes{pid="4000",role="master"} 52953088
wsgi_observe_process_resident_memory_bytes{pid="4012",role="worker"} 62914560
# HELP wsgi_observe_process_start_time_seconds Start time of each process in seconds since the epoch.
# TYPE wsgi_observe_process_start_time_seconds gauge
# UNIT wsgi_observe_process_start_time_seconds seconds
wsgi_observe_process_start_time_seconds{pid="4000",role="master"} 1759752000.0
wsgi_observe_process_start_time_seconds{pid="4012",role="worker"} 1759752001.25
# HELP wsgi_observe_process_threads Threads of each process.
# TYPE wsgi_observe_process_threads gauge
wsgi_observe_process_threads{pid="4000",role="master"} 1
wsgi_observe_process_threads{pid="4012",role="worker"} 2
# HELP wsgi_observe_readiness_check_healthy 1 if the readiness check was healthy in the last run, else 0.
# TYPE wsgi_observe_readiness_check_healthy gauge
wsgi_observe_readiness_check_healthy{check="database"} 1
wsgi_observe_readiness_check_healthy{check="sendgrid",group="external_services"} 0
# HELP wsgi_observe_readiness_check_latency_seconds Duration of the readiness check in the last run.
# TYPE wsgi_observe_readiness_check_latency_seconds gauge
# UNIT wsgi_observe_readiness_check_latency_seconds seconds
wsgi_observe_readiness_check_latency_seconds{check="database"} 0.015
wsgi_observe_readiness_check_latency_seconds{check="sendgrid",group="external_services"} 0.0005
# HELP wsgi_observe_readiness_check_required 1 if the readiness check blocks readiness, 0 if it is optional.
# TYPE wsgi_observe_readiness_check_required gauge
wsgi_observe_readiness_check_required{check="database"} 1
wsgi_observe_readiness_check_required{check="sendgrid",group="external_services"} 1
# HELP wsgi_observe_readiness_check_status 1 for the status of the readiness check in the last run, 0 for the others.
# TYPE wsgi_observe_readiness_check_status gauge
wsgi_observe_readiness_check_status{check="database",status="degraded"} 0
wsgi_observe_readiness_check_status{check="database",status="healthy"} 1
wsgi_observe_readiness_check_status{check="database",status="unhealthy"} 0
wsgi_observe_readiness_check_status{check="sendgrid",group="external_services",status="degraded"} 1
wsgi_observe_readiness_check_status{check="sendgrid",group="external_services",status="healthy"} 0
wsgi_observe_readiness_check_status{check="sendgrid",group="external_services",status="unhealthy"} 0
# HELP wsgi_observe_readiness_last_run_timestamp_seconds End of the last readiness run in seconds since the epoch.
# TYPE wsgi_observe_readiness_last_run_timestamp_seconds gauge
# UNIT wsgi_observe_readiness_last_run_timestamp_seconds seconds
wsgi_observe_readiness_last_run_timestamp_seconds 1759752000.0
# HELP wsgi_observe_ready 1 if the last readiness run was ready (every required check healthy), else 0.
# TYPE wsgi_observe_ready gauge
wsgi_observe_ready 0
# HELP wsgi_observe_request_duration_quantile_seconds Request duration quantiles since start (HDR, all workers).
# TYPE wsgi_observe_request_duration_quantile_seconds summary
# UNIT wsgi_observe_request_duration_quantile_seconds seconds
wsgi_observe_request_duration_quantile_seconds{endpoint="/api/leads/<int:id>",quantile="0.5"} 0.002415
wsgi_observe_request_duration_quantile_seconds{endpoint="/api/leads/<int:id>",quantile="0.95"} 20.054015
wsgi_observe_request_duration_quantile_seconds{endpoint="/api/leads/<int:id>",quantile="0.99"} 20.054015
# HELP wsgi_observe_request_duration_seconds Request duration, from entry until the response is closed.
# TYPE wsgi_observe_request_duration_seconds histogram
# UNIT wsgi_observe_request_duration_seconds seconds
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.001"} 3
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.0025"} 5
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.005"} 5
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.01"} 5
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.025"} 6
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.05"} 6
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.1"} 6
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.25"} 6
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="0.5"} 7
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="1.0"} 7
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="2.5"} 7
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="5.0"} 8
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="10.0"} 8
wsgi_observe_request_duration_seconds_bucket{endpoint="/api/leads/<int:id>",le="+Inf"} 9
wsgi_observe_request_duration_seconds_sum{endpoint="/api/leads/<int:id>"} 23.496449123
wsgi_observe_request_duration_seconds_count{endpoint="/api/leads/<int:id>"} 9
# HELP wsgi_observe_request_errors Failed requests (5xx or exception) by endpoint.
# TYPE wsgi_observe_request_errors counter
wsgi_observe_request_errors_total{endpoint="/api/leads/<int:id>"} 1
# HELP wsgi_observe_requests Requests by endpoint, method and status class.
# TYPE wsgi_observe_requests counter
wsgi_observe_requests_total{endpoint="/api/leads/<int:id>",method="GET",status="2xx"} 8
wsgi_observe_requests_total{endpoint="/api/leads/<int:id>",method="POST",status="5xx"} 1
# HELP wsgi_observe_requests_in_flight Requests being served now.
# TYPE wsgi_observe_requests_in_flight gauge
wsgi_observe_requests_in_flight 3
# HELP wsgi_observe_start_time_seconds Start time of the service in seconds since the epoch.
# TYPE wsgi_observe_start_time_seconds gauge
# UNIT wsgi_observe_start_time_seconds seconds
wsgi_observe_start_time_seconds 1759752000.0
# HELP wsgi_observe_system_cpu_usage_ratio Machine CPU usage between scrapes, 0 to 1.
# TYPE wsgi_observe_system_cpu_usage_ratio gauge
# UNIT wsgi_observe_system_cpu_usage_ratio ratio
wsgi_observe_system_cpu_usage_ratio 0.452
# HELP wsgi_observe_system_cpus Logical CPUs of the machine.
# TYPE wsgi_observe_system_cpus gauge
wsgi_observe_system_cpus 4
# HELP wsgi_observe_system_disk_free_bytes Disk space free.
# TYPE wsgi_observe_system_disk_free_bytes gauge
# UNIT wsgi_observe_system_disk_free_bytes bytes
wsgi_observe_system_disk_free_bytes 59055800320
# HELP wsgi_observe_system_disk_total_bytes Disk size.
# TYPE wsgi_observe_system_disk_total_bytes gauge
# UNIT wsgi_observe_system_disk_total_bytes bytes
wsgi_observe_system_disk_total_bytes 107374182400
# HELP wsgi_observe_system_disk_used_bytes Disk space used.
# TYPE wsgi_observe_system_disk_used_bytes gauge
# UNIT wsgi_observe_system_disk_used_bytes bytes
wsgi_observe_system_disk_used_bytes 48318382080
# HELP wsgi_observe_system_memory_available_bytes Machine memory available.
# TYPE wsgi_observe_system_memory_available_bytes gauge
# UNIT wsgi_observe_system_memory_available_bytes bytes
wsgi_observe_system_memory_available_bytes 4294967296
# HELP wsgi_observe_system_memory_total_bytes Machine memory in total.
# TYPE wsgi_observe_system_memory_total_bytes gauge
# UNIT wsgi_observe_system_memory_total_bytes bytes
wsgi_observe_system_memory_total_bytes 8589934592
# HELP wsgi_observe_system_memory_used_bytes Machine memory used (total - available).
# TYPE wsgi_observe_system_memory_used_bytes gauge
# UNIT wsgi_observe_system_memory_used_bytes bytes
wsgi_observe_system_memory_used_bytes 4294967296
# HELP wsgi_observe_uptime_seconds Seconds since the service started.
# TYPE wsgi_observe_uptime_seconds gauge
# UNIT wsgi_observe_uptime_seconds seconds
wsgi_observe_uptime_seconds 86400.5
# EOF
"""  # noqa: E501


# A small parser for both formats (the OpenMetrics rules follow the spec and client_python) --

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def _labels(block: Optional[str], line: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    block = block or ""
    while position < len(block):
        match = _LABEL.match(block, position)
        assert match, f"bad labels: {line!r}"
        name = match.group(1)
        assert name not in labels, f"duplicate label {name}: {line!r}"
        labels[name] = re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], match.group(2))
        position = match.end()
    return labels


def _value(text: str) -> float:
    assert text in ("+Inf", "-Inf", "NaN") or re.fullmatch(r"-?\d+(\.\d+)?(e[-+]?\d+)?", text), text
    return float(text)


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of either format as ``(name, labels, value)``, in order."""
    samples = []
    for line in text.split("\n")[:-1]:  # not splitlines(): label values may hold \r
        if line.startswith("#"):
            continue
        match = _LINE.match(line)
        assert match, f"bad sample line: {line!r}"
        samples.append((match.group(1), _labels(match.group(2), line), _value(match.group(3))))
    return samples


def check_openmetrics(text: str) -> dict[str, dict[str, Any]]:
    """Assert the OpenMetrics 1.0 structure rules; return the families found."""
    assert text.endswith("# EOF\n"), "OpenMetrics must end with '# EOF'"
    lines = text[: -len("# EOF\n")].split("\n")[:-1]
    families: dict[str, dict[str, Any]] = {}
    owner: dict[str, str] = {}  # sample name -> family
    current: Optional[dict[str, Any]] = None
    for line in lines:
        assert line, "blank line"
        assert line != "# EOF", "# EOF before the end"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            assert len(parts) == 4 and parts[1] in ("HELP", "TYPE", "UNIT"), line
            name = parts[2]
            if current is None or current["name"] != name:
                assert name not in families, f"family {name} interleaved or repeated"
                current = families[name] = {"name": name, "samples": []}
            assert not current["samples"], f"metadata after samples: {line}"
            assert parts[1] not in current, f"second {parts[1]} for {name}"
            current[parts[1]] = parts[3]
            continue
        assert current is not None, f"sample before any metadata: {line}"
        match = _LINE.match(line)
        assert match, f"bad sample line: {line!r}"
        current["samples"].append(
            (match.group(1), _labels(match.group(2), line), _value(match.group(3)))
        )
    for name, family in families.items():
        kind, unit = family.get("TYPE"), family.get("UNIT")
        assert kind in _SUFFIXES, f"{name}: type {kind!r}"
        assert "HELP" in family, f"{name}: no HELP"
        if unit:
            assert name.endswith("_" + unit), f"{name}: unit {unit} is not its suffix"
            assert kind != "info", f"{name}: info with a unit"
        for suffix in _SUFFIXES[kind]:
            assert name + suffix not in owner, (
                f"{name + suffix} clashes with {owner.get(name + suffix)}"
            )
            owner[name + suffix] = name
        _check_family(name, kind, family["samples"])
    return families


def _check_family(name: str, kind: str, samples: list[tuple[str, dict[str, str], float]]) -> None:
    seen_series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    finished_groups: set[tuple[tuple[str, str], ...]] = set()
    group: Optional[tuple[tuple[str, str], ...]] = None
    histogram: dict[str, Any] = {}
    for sample_name, labels, value in samples:
        suffix = sample_name[len(name) :]
        assert sample_name.startswith(name) and suffix in _SUFFIXES[kind], sample_name
        series = (sample_name, tuple(sorted(labels.items())))
        assert series not in seen_series, f"duplicate series {series}"
        seen_series.add(series)
        key = tuple(sorted((k, v) for k, v in labels.items() if k not in ("le", "quantile")))
        if key != group:
            if group is not None:
                finished_groups.add(group)
                _end_histogram(name, kind, histogram)
            assert key not in finished_groups, f"{name}: samples of {key} not contiguous"
            group, histogram = key, {"le": -math.inf, "bucket": 0.0, "count": None, "inf": None}
        if suffix in ("_total", "_bucket", "_count", "_sum"):
            assert value >= 0 and not math.isnan(value), f"{sample_name}: {value}"
        if kind == "info":
            assert value == 1, sample_name
        if kind == "summary" and suffix == "":
            quantile = labels["quantile"]
            assert 0 <= float(quantile) <= 1, quantile
            assert math.isnan(value) or value >= 0
        if kind == "histogram" and suffix == "_bucket":
            le = labels["le"]
            bound = float(le)
            assert bound != math.inf or le == "+Inf", f"uncanonical le {le}"
            assert bound > histogram["le"], f"{name}: buckets out of order"
            assert value >= histogram["bucket"], f"{name}: buckets not cumulative"
            histogram.update(le=bound, bucket=value)
            if bound == math.inf:
                histogram["inf"] = value
        if kind == "histogram" and suffix == "_count":
            histogram["count"] = value
    if group is not None:
        _end_histogram(name, kind, histogram)


def _end_histogram(name: str, kind: str, histogram: dict[str, Any]) -> None:
    if kind != "histogram":
        return
    assert histogram["inf"] is not None, f"{name}: no +Inf bucket"
    assert histogram["count"] == histogram["inf"], f"{name}: _count != +Inf bucket"


def series_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(name, tuple(sorted(labels.items()))): value for name, labels, value in parse(text)}


# Golden output -----------------------------------------------------------------------------


def test_prometheus_text_matches_golden():
    """A pinned snapshot renders to exactly the expected Prometheus text 0.0.4."""
    snapshot, extras = _pinned()
    assert render_prometheus(snapshot, extras).decode() == GOLDEN_PROMETHEUS


def test_openmetrics_matches_golden():
    """A pinned snapshot renders to exactly the expected OpenMetrics 1.0.0 text."""
    snapshot, extras = _pinned()
    assert render_openmetrics(snapshot, extras).decode() == GOLDEN_OPENMETRICS


def test_both_formats_carry_the_same_samples():
    """Only metadata lines differ between the formats; every sample line is the same."""
    snapshot, extras = _pinned()
    text = render_prometheus(snapshot, extras).decode()
    om = render_openmetrics(snapshot, extras).decode()
    assert [x for x in text.split("\n") if not x.startswith("#")] == [
        x for x in om.split("\n") if not x.startswith("#")
    ]


def test_output_is_deterministic_whatever_the_dict_order():
    """Families are sorted by name and samples by labels, so insertion order never shows."""
    snapshot, extras = _nasty()
    first = render_prometheus(snapshot, extras)
    snapshot.endpoints = dict(reversed(list(snapshot.endpoints.items())))
    for series in snapshot.endpoints.values():
        series.hist = dict(reversed(list(series.hist.items())))
        series.by = dict(reversed(list(series.by.items())))
    assert render_prometheus(snapshot, extras) == first
    endpoints = [
        labels["endpoint"]
        for name, labels, _ in parse(first.decode())
        if name == "wsgi_observe_request_errors_total"
    ]
    assert endpoints == sorted(snapshot.endpoints)


def test_every_family_has_help_and_type():
    """Each family in either format has exactly one HELP and one TYPE line before its samples."""
    snapshot, extras = _pinned()
    families = check_openmetrics(render_openmetrics(snapshot, extras).decode())
    assert {f.name for f in FAMILIES} == set(families)
    text = render_prometheus(snapshot, extras).decode()
    for family in FAMILIES:
        assert text.count(f"# HELP {family.sample} ") == 1, family.name
        assert text.count(f"# TYPE {family.sample} ") == 1, family.name


# Validity: promtool and the OpenMetrics rules --------------------------------------------


def _nasty() -> tuple[Snapshot, dict[str, Any]]:
    """Hostile endpoint names, an empty histogram, huge values, a check that never ran."""
    rng = random.Random(7)
    endpoints = {}
    for name in [
        '/q"uote',
        "/back\\slash",
        "/new\nline",
        "/caf\xc3\xa9",
        "/\x00\t\r",
        "",
        "/\u2603",
    ]:
        endpoints[name] = SeriesData(
            count=50,
            errors=3,
            sum_ns=rng.randrange(10**12),
            hist=_hist(rng.randrange(1, 4_000_000_000) for _ in range(50)),
            by={("GET", "2xx"): 40, ("OTHER", "5xx"): 3, ("DELETE", "4xx"): 7},
        )
    endpoints["/never"] = SeriesData(count=0, errors=0, sum_ns=0, hist={}, by={})
    snapshot = Snapshot(
        endpoints,
        {},
        0,
        1759752000.0,
        1759752000.0,
        [
            {
                "pid": 1,
                "role": "master",
                "rss_mb": 0.0,
                "cpu_seconds": 0.0,
                "threads": 1,
                "started_at": 0.0,
            },
        ],
    )
    extras = {
        "service": 'svc "x"\\\n',
        "version": "",
        "system": None,
        "readiness": {
            "status": "unhealthy",
            "timestamp": "not a time",
            "checks": {
                "db": {"status": "unhealthy", "message": "Check timed out"},
                "empty_group": {},
            },
        },
    }
    return snapshot, extras


@needs_promtool
@pytest.mark.parametrize(
    "make", [pytest.param(_pinned, id="pinned"), pytest.param(_nasty, id="nasty")]
)
def test_promtool_finds_no_problem_in_the_text_format(make):
    """``promtool check metrics`` accepts the text format and reports no lint problem."""
    snapshot, extras = make()
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=render_prometheus(snapshot, extras),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


@needs_promtool
@pytest.mark.parametrize(
    "make", [pytest.param(_pinned, id="pinned"), pytest.param(_nasty, id="nasty")]
)
def test_prometheus_openmetrics_parser_accepts_the_output(make, tmp_path):
    """Prometheus's own OpenMetrics parser (promtool's backfill) reads every sample."""
    snapshot, extras = make()
    om = render_openmetrics(snapshot, extras).decode()
    result = backfill_openmetrics(om, tmp_path)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    samples = len(parse(om))
    assert re.search(rf"\s{samples}\s+{samples}\s+{samples}\s", result.stdout.decode()), (
        f"expected {samples} series in one block:\n{result.stdout.decode()}"
    )


@pytest.mark.parametrize(
    "make", [pytest.param(_pinned, id="pinned"), pytest.param(_nasty, id="nasty")]
)
def test_openmetrics_follows_the_structure_rules(make):
    """``# EOF`` last, metadata first, units as suffixes, histogram and summary rules hold."""
    snapshot, extras = make()
    check_openmetrics(render_openmetrics(snapshot, extras).decode())


def test_openmetrics_checker_catches_broken_output():
    """The structure check itself fails on a missing EOF, a bad unit and a broken histogram."""
    snapshot, extras = _pinned()
    good = render_openmetrics(snapshot, extras).decode()
    broken = [
        good[: -len("# EOF\n")],
        good.replace(
            "# UNIT wsgi_observe_uptime_seconds seconds", "# UNIT wsgi_observe_uptime_seconds bytes"
        ),
        re.sub(r'(le="\+Inf"\}) \d+', r"\1 1", good, count=1),
        good.replace('le="0.005"} 5', 'le="0.005"} 4'),
    ]
    for text in broken:
        assert text != good
        with pytest.raises(AssertionError):
            check_openmetrics(text)


# Escaping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        pytest.param('/say"hi"', '/say\\"hi\\"', id="quote"),
        pytest.param("/a\\b", "/a\\\\b", id="backslash"),
        pytest.param("/a\nb", "/a\\nb", id="newline"),
        pytest.param("/\\n", "/\\\\n", id="backslash-n-is-not-a-newline"),
        pytest.param("/caf\xc3\xa9", "/caf\xc3\xa9", id="latin-1-decoded-utf-8"),
        pytest.param("/\t\r{}=,", "/\t\r{}=,", id="other-characters-stay"),
    ],
)
def test_label_values_are_escaped(name, escaped):
    """Backslash, double quote and newline are escaped; everything else is kept as UTF-8."""
    snapshot = Snapshot(
        {name: SeriesData(1, 0, 5000, _hist([5]), {("GET", "2xx"): 1})},
        {},
        0,
        0.0,
        1.0,
        [{"pid": 1, "role": "master"}],
    )
    for render in (render_prometheus, render_openmetrics):
        body = render(snapshot, {"service": "s", "version": "v"})
        line = f'wsgi_observe_request_errors_total{{endpoint="{escaped}"}} 0\n'
        assert line.encode("utf-8") in body
        assert [
            labels["endpoint"]
            for n, labels, _ in parse(body.decode("utf-8"))
            if n == "wsgi_observe_request_errors_total"
        ] == [name]


# Histogram and quantile arithmetic ---------------------------------------------------------


def _random_hists() -> list[dict[int, int]]:
    rng = random.Random(42)
    hists = [{}, _hist([0]), _hist([3_600_000_000] * 3), _hist([1000, 2500, 10_000_000])]
    for _ in range(60):
        sigma = rng.choice([0.2, 0.8, 1.5, 3.0])
        hists.append(
            _hist(
                int(rng.lognormvariate(rng.uniform(4, 14), sigma))
                for _ in range(rng.choice([1, 5, 100, 3000]))
            )
        )
    return hists


def _buckets(text: str) -> list[tuple[str, float]]:
    return [
        (labels["le"], value)
        for name, labels, value in parse(text)
        if name == "wsgi_observe_request_duration_seconds_bucket"
    ]


def _one(hist: dict[int, int], sum_ns: int = 0) -> str:
    series = SeriesData(sum(hist.values()), 0, sum_ns, hist, {("GET", "2xx"): sum(hist.values())})
    snapshot = Snapshot({"/x": series}, {}, 0, 0.0, 1.0, [{"pid": 1, "role": "master"}])
    return render_prometheus(snapshot, {}).decode()


def test_buckets_are_cumulative_and_inf_equals_count():
    """Bucket counts never decrease, the last is +Inf, and +Inf equals _count and all recorded."""
    for hist in _random_hists():
        text = _one(hist)
        buckets = _buckets(text)
        assert [le for le, _ in buckets] == [repr(b) for b in BUCKET_BOUNDS] + ["+Inf"]
        counts = [count for _, count in buckets]
        assert counts == sorted(counts)
        total = series_of(text)[
            ("wsgi_observe_request_duration_seconds_count", (("endpoint", "/x"),))
        ]
        assert counts[-1] == total == sum(hist.values())


def test_bucket_counts_hdr_buckets_wholly_at_or_below_the_bound():
    """le=B counts exactly the HDR buckets whose highest equivalent value is <= B."""
    for hist in _random_hists():
        expected = [
            sum(c for index, c in hist.items() if highest_equivalent(index) <= round(b * 1e6))
            for b in BUCKET_BOUNDS
        ]
        assert [count for _, count in _buckets(_one(hist))][:-1] == expected


def test_a_value_on_a_bound_is_counted_conservatively():
    """999 us counts under le=0.001; 1000 us shares an HDR bucket with 1003 us, so it does not."""
    assert _buckets(_one(_hist([999])))[0] == ("0.001", 1)
    assert _buckets(_one(_hist([1000])))[:2] == [("0.001", 0), ("0.0025", 1)]


def test_quantiles_equal_the_json_percentiles():
    """The summary quantiles are HdrHistogram's, the same numbers as the JSON document."""
    for hist in _random_hists():
        found = {
            float(labels["quantile"]): value
            for name, labels, value in parse(_one(hist))
            if name == "wsgi_observe_request_duration_quantile_seconds"
        }
        assert sorted(found) == list(QUANTILES)
        if not hist:
            assert all(math.isnan(v) for v in found.values())
            continue
        wanted = percentiles(hist, [q * 100 for q in QUANTILES])
        assert found == {q: wanted[q * 100] / 1e6 for q in QUANTILES}


def test_sorting_and_binning_give_the_same_numbers():
    """Both ways of reading the HDR buckets (sort for few, bin for many) agree everywhere."""
    sizes = set()
    for hist in _random_hists():
        sizes.add(len(hist) >= families._SORT_BELOW)
        keys = sorted(hist)
        by_sorting = families._sorted_distribution(keys, [hist[k] for k in keys])
        assert by_sorting == families._binned_distribution(hist)
    assert sizes == {False, True}


def test_sum_is_exact_from_nanoseconds():
    """``_sum`` comes from the exact nanosecond total, not from HDR bucket values."""
    text = _one(_hist([1500]), sum_ns=1_500_123)
    assert (
        series_of(text)[("wsgi_observe_request_duration_seconds_sum", (("endpoint", "/x"),))]
        == 0.001500123
    )


# Other families ------------------------------------------------------------------------------


def test_single_process_reports_itself_by_pid():
    """With no worker processes in the snapshot, this process is reported with role main."""
    snapshot = Snapshot({}, {}, 0, 0.0, 1.0, [])
    series = series_of(render_prometheus(snapshot, {}).decode())
    labels = (("pid", str(os.getpid())), ("role", "main"))
    assert series[("wsgi_observe_process_resident_memory_bytes", labels)] > 1_000_000
    assert series[("wsgi_observe_process_cpu_seconds_total", labels)] > 0
    assert series[("wsgi_observe_process_threads", labels)] >= 1
    assert series[("wsgi_observe_process_open_fds", labels)] >= 3


def test_families_without_data_are_left_out():
    """No requests, no readiness run and no system block: only the always-known families."""
    snapshot = Snapshot({}, {}, 0, 100.0, 160.0, [{"pid": 7, "role": "master"}])
    text = render_prometheus(snapshot, {"service": "s", "version": "1"}).decode()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names == {
        "wsgi_observe_info",
        "wsgi_observe_requests_in_flight",
        "wsgi_observe_start_time_seconds",
        "wsgi_observe_uptime_seconds",
    }
    assert "wsgi_observe_uptime_seconds 60.0\n" in text


def test_readiness_reports_each_check_and_the_overall_state():
    """Every check, grouped ones included, gives healthy 1/0, a status state set and latency."""
    snapshot, extras = _pinned()
    series = series_of(render_prometheus(snapshot, extras).decode())
    sendgrid = (("check", "sendgrid"), ("group", "external_services"))
    assert series[("wsgi_observe_ready", ())] == 0
    assert series[("wsgi_observe_readiness_check_healthy", (("check", "database"),))] == 1
    assert series[("wsgi_observe_readiness_check_healthy", sendgrid)] == 0
    assert series[("wsgi_observe_readiness_check_status", (*sendgrid, ("status", "degraded")))] == 1
    assert series[("wsgi_observe_readiness_check_latency_seconds", sendgrid)] == 0.0005
    assert series[("wsgi_observe_readiness_last_run_timestamp_seconds", ())] == 1759752000.0


def test_system_block_is_converted_to_base_units():
    """CPU percent becomes a ratio, MB and GB become bytes."""
    snapshot, extras = _pinned()
    series = series_of(render_prometheus(snapshot, extras).decode())
    assert series[("wsgi_observe_system_cpu_usage_ratio", ())] == 0.452
    assert series[("wsgi_observe_system_memory_total_bytes", ())] == 8192 * 1024**2
    assert series[("wsgi_observe_system_disk_free_bytes", ())] == 55 * 1024**3


# Through the middleware: negotiation and headers ---------------------------------------------


def _inner(environ, start_response):
    status = "500 Internal Server Error" if environ["PATH_INFO"] == "/boom" else "200 OK"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@pytest.fixture
def middleware():
    """The middleware around a validated app, with a fresh store of its own."""
    return ObservabilityMiddleware(validator(_inner), store=MetricsStore(), access_log=False)


def call(app, path: str, query: str = "", accept: Optional[str] = None, method: str = "GET"):
    """Call ``app`` in-process under ``wsgiref.validate``; return status, headers and body."""
    headers = {"Accept": accept} if accept is not None else None
    response = wsgi_client.call(app, path, method, query=query, headers=headers)
    return response.status, dict(response.headers), response.body


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        pytest.param(PROMETHEUS_ACCEPT, OPENMETRICS_TYPE, id="prometheus-2x-scrape"),
        pytest.param(
            "application/openmetrics-text; version=1.0.0", OPENMETRICS_TYPE, id="openmetrics"
        ),
        pytest.param("text/plain;version=0.0.4", PROMETHEUS_TYPE, id="text-0.0.4"),
        pytest.param("*/*", "application/json", id="curl"),
        pytest.param(None, "application/json", id="no-accept"),
    ],
)
def test_accept_header_chooses_the_format(middleware, accept, content_type):
    """Prometheus's Accept gets OpenMetrics, text/plain gets text 0.0.4, curl gets JSON."""
    call(middleware, "/api/leads")
    status, headers, body = call(middleware, "/metrics", accept=accept)
    assert status == "200 OK"
    assert headers["Content-Type"] == content_type
    assert headers["Content-Length"] == str(len(body))
    if content_type == OPENMETRICS_TYPE:
        assert body.endswith(b"# EOF\n")
        check_openmetrics(body.decode())
    elif content_type == PROMETHEUS_TYPE:
        assert b"# EOF" not in body
        assert (
            b'wsgi_observe_requests_total{endpoint="/api/leads",method="GET",status="2xx"} 1\n'
            in body
        )
    else:
        assert body.startswith(b"{")


@pytest.mark.parametrize(
    ("query", "content_type"),
    [
        pytest.param("format=prometheus", PROMETHEUS_TYPE, id="prometheus"),
        pytest.param("format=openmetrics", OPENMETRICS_TYPE, id="openmetrics"),
        pytest.param("format=json", "application/json", id="json"),
    ],
)
def test_format_parameter_overrides_accept(middleware, query, content_type):
    """``?format=`` wins over the Accept header."""
    _, headers, _ = call(middleware, "/metrics", query=query, accept=PROMETHEUS_ACCEPT)
    assert headers["Content-Type"] == content_type


def test_unknown_format_is_a_400(middleware):
    """An unknown ``?format=`` answers 400 with the formats it accepts."""
    status, headers, body = call(middleware, "/metrics", query="format=xml")
    assert status.startswith("400")
    assert headers["Content-Type"] == "application/json"
    assert b"openmetrics" in body


def test_head_gives_the_headers_without_a_body(middleware):
    """HEAD /metrics in Prometheus format has the GET headers and an empty body."""
    _, get_headers, get_body = call(middleware, "/metrics", query="format=prometheus")
    status, headers, body = call(middleware, "/metrics", query="format=prometheus", method="HEAD")
    assert (status, body) == ("200 OK", b"")
    assert headers["Content-Type"] == PROMETHEUS_TYPE
    assert int(headers["Content-Length"]) > 0
    assert get_body and get_headers["Content-Type"] == PROMETHEUS_TYPE


def test_scrape_counts_requests_errors_and_durations(middleware):
    """Requests made through the middleware show up with exact counts in the text format."""
    for _ in range(3):
        call(middleware, "/api/leads")
    call(middleware, "/boom")
    _, _, body = call(middleware, "/metrics", accept="text/plain;version=0.0.4")
    series = series_of(body.decode())
    assert (
        series[
            (
                "wsgi_observe_requests_total",
                (("endpoint", "/api/leads"), ("method", "GET"), ("status", "2xx")),
            )
        ]
        == 3
    )
    assert series[("wsgi_observe_request_errors_total", (("endpoint", "/boom"),))] == 1
    assert (
        series[("wsgi_observe_request_duration_seconds_count", (("endpoint", "/api/leads"),))] == 3
    )
    assert series[("wsgi_observe_requests_in_flight", ())] == 0
