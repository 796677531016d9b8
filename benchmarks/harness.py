"""The timing harness: a realistic environ, one request driven like a server, a Subject.

The timed loop is what a server does: copy the environ, call the app, iterate the body, call
``close()``. GC is disabled during a batch; process CPU time is read after the subject has
drained its background work (Sentry's transport, span processors, log writers), so work
moved off the request thread is still counted.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from resource import RUSAGE_SELF, getrusage
from time import perf_counter_ns, process_time_ns
from typing import Any, Optional
from wsgiref.util import setup_testing_defaults

__all__ = ["MAX_N", "Subject", "check", "drive", "make_environ"]

MAX_N = 5_000_000


def make_environ(path: str, query: str = "", method: str = "GET") -> dict[str, Any]:
    """A realistic environ, as gunicorn would build it for a small GET."""
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(
        {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_USER_AGENT": "wsgi-observe-bench/1.0",
            "HTTP_ACCEPT": "*/*",
        }
    )
    return environ


def _write(data: bytes) -> None:
    return None


def _start_response(status: str, headers: list[Any], exc_info: Any = None) -> Callable[..., Any]:
    return _write


def drive(app: Callable[..., Any], environ: dict[str, Any]) -> tuple[str, bytes]:
    """One request through ``app`` with status and body captured (for checks, not timing)."""
    seen: list[str] = []

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
        seen.append(status)
        return _write

    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (seen[-1] if seen else ""), data


class Subject:
    """Something to time: a WSGI app and an environ, or a plain ``call()``."""

    def __init__(
        self,
        app: Optional[Callable[..., Any]] = None,
        environ: Optional[dict[str, Any]] = None,
        *,
        call: Optional[Callable[[], Any]] = None,
        drain: Optional[Callable[[], Any]] = None,
        info: Optional[dict[str, Any]] = None,
    ) -> None:
        self.app = app
        self.environ = environ
        self.call = call
        self.drain = drain
        self.info: dict[str, Any] = info or {}
        self.info.setdefault("requests", 0)
        self.on_info: Optional[Callable[[dict[str, Any]], None]] = None
        # Called around a timed batch, outside its timing (``after`` gets the batch's n).
        self.before: Optional[Callable[[], None]] = None
        self.after: Optional[Callable[[int], None]] = None

    def loop(self, n: int) -> int:
        """Wall ns for ``n`` iterations, GC off."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            if self.call is not None:
                call = self.call
                start = perf_counter_ns()
                for _ in range(n):
                    call()
                end = perf_counter_ns()
            else:
                app = self.app
                copy = self.environ.copy  # type: ignore[union-attr]
                start_response = _start_response
                start = perf_counter_ns()
                for _ in range(n):
                    body = app(copy(), start_response)  # type: ignore[misc]
                    for _chunk in body:
                        pass
                    close = getattr(body, "close", None)
                    if close is not None:
                        close()
                end = perf_counter_ns()
        finally:
            if enabled:
                gc.enable()
        self.info["requests"] += n
        return end - start

    def run(self, n: int) -> dict[str, int]:
        if self.before is not None:
            self.before()
        kernel0 = getrusage(RUSAGE_SELF).ru_stime
        cpu0 = process_time_ns()
        wall = self.loop(n)
        if self.drain is not None:
            self.drain()
        cpu = process_time_ns() - cpu0
        # The kernel's share of that CPU time (write() into the page cache, pipes): the
        # kernel's tick-sampled split, so it is a rough figure per batch.
        kernel = getrusage(RUSAGE_SELF).ru_stime - kernel0
        gc.collect()
        if self.after is not None:
            self.after(n)
        return {"wall_ns": wall, "cpu_ns": cpu, "kernel_ns": round(kernel * 1e9), "n": n}

    def calibrate(self, target_s: float) -> int:
        """Iterations for a batch of about ``target_s`` seconds (this warms the subject up)."""
        target_ns = target_s * 1e9
        estimate = 1
        # Twice: the first pass absorbs first-call costs (imports, caches, lazy set-up).
        for _ in range(2):
            n = 1
            while True:
                wall = max(self.loop(n), 1)
                if wall >= target_ns / 8 or n >= MAX_N:
                    break
                n *= 4
            estimate = max(1, min(MAX_N, math.ceil(n * target_ns / wall)))
            if self.drain is not None:
                self.drain()
            gc.collect()
        return estimate


def check(subject: Subject, expect: str = "200") -> None:
    """One request before timing: the configuration must answer as expected."""
    if subject.app is None:
        return
    status, body = drive(subject.app, subject.environ.copy())  # type: ignore[union-attr]
    subject.info["requests"] += 1
    if not status.startswith(expect):
        raise RuntimeError(f"answered {status!r}: {body[:200]!r}")
    subject.info["response_bytes"] = len(body)
