"""System and process metrics, read with psutil at scrape time (never on the request path).

CPU percent is measured between two scrapes (``psutil.cpu_percent(interval=None)``), so a
scrape never sleeps; the first reading after start-up compares against the moment the
middleware was built.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import psutil

__all__ = ["SystemMetrics", "process_info"]

_MB = 1024 * 1024
_GB = 1024 * 1024 * 1024


def process_info(pid: int, role: str) -> Optional[dict[str, Any]]:
    """RSS, CPU seconds, threads and open files of process ``pid``, or None if it is gone."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            memory = proc.memory_info()
            cpu = proc.cpu_times()
            info: dict[str, Any] = {
                "pid": pid,
                "role": role,
                "rss_mb": round(memory.rss / _MB, 2),
                "cpu_seconds": round(cpu.user + cpu.system, 3),
                "threads": proc.num_threads(),
                "started_at": proc.create_time(),
            }
            try:
                info["open_fds"] = proc.num_fds()
            except (AttributeError, psutil.Error):
                pass
        return info
    except psutil.Error:
        return None


class SystemMetrics:
    """The guide's ``system`` block: CPU, memory and disk of the machine.

    Example::

        system = SystemMetrics(disk_path="/")
        system.read()["memory"]["percent"]
    """

    def __init__(self, disk_path: str = "/") -> None:
        self.disk_path = disk_path
        self._cpu_count = psutil.cpu_count() or os.cpu_count() or 1
        psutil.cpu_percent(interval=None)  # start the interval the first scrape reads

    def read(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        result: dict[str, Any] = {
            "cpu": {
                "usage_percent": psutil.cpu_percent(interval=None),
                "count": self._cpu_count,
            },
            "memory": {
                "total_mb": round(memory.total / _MB, 1),
                "available_mb": round(memory.available / _MB, 1),
                "used_mb": round((memory.total - memory.available) / _MB, 1),
                "percent": memory.percent,
            },
        }
        try:
            disk = psutil.disk_usage(self.disk_path)
            result["disk"] = {
                "total_gb": round(disk.total / _GB, 2),
                "used_gb": round(disk.used / _GB, 2),
                "free_gb": round(disk.free / _GB, 2),
                "percent": disk.percent,
            }
        except OSError:
            result["disk"] = {"total_gb": 0, "used_gb": 0, "free_gb": 0, "percent": 0.0}
        return result
