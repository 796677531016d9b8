"""HTTP load on 127.0.0.1: gunicorn servers, wrk (or our own bounded loader), latencies.

Every load run is bounded in time (and our own loader in count too). Latencies end up in an
``hdrh`` HdrHistogram in microseconds: from wrk via a Lua ``done()`` that prints a dense
percentile grid of wrk's own latency record (which is reconstructed bucket by bucket), or
recorded per request by our loader.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["Gunicorn", "LoadResult", "free_port", "have_wrk", "load", "new_histogram"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIGHEST_US = 60_000_000


def new_histogram() -> Any:
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(1, HIGHEST_US, 3)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def have_wrk() -> bool:
    """wrk is on PATH (BENCH_LOADER=python forces our own loader)."""
    if os.environ.get("BENCH_LOADER") == "python":
        return False
    return shutil.which("wrk") is not None


def _percentile_grid() -> list[float]:
    """0..99 by 1, then HdrHistogram-style ticks (10 per halving) up to 99.9999."""
    grid = {float(p) for p in range(100)}
    k = 0
    while True:
        p = 100.0 * (1.0 - 0.5 ** (k / 10.0))
        if p > 99.9999:
            break
        grid.add(round(p, 6))
        k += 1
    grid.add(100.0)
    return sorted(grid)


_LUA = """
local grid = {%s}
done = function(summary, latency, requests)
  local e = summary.errors
  local parts = {}
  for i, p in ipairs(grid) do
    parts[#parts + 1] = string.format("[%%.6f,%%d]", p, latency:percentile(p))
  end
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,'
    .. '"status":%%d,"timeout":%%d,"min":%%d,"max":%%d,"percentiles":[%%s]}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, table.concat(parts, ",")))
end
"""


@dataclass
class LoadResult:
    """One bounded load run against one URL."""

    tool: str
    requests: int
    seconds: float
    errors: int
    histogram: Any = field(repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        return float(self.histogram.get_value_at_percentile(p)) / 1000.0


def _lua_file(directory: str) -> str:
    path = os.path.join(directory, "percentiles.lua")
    if not os.path.exists(path):
        grid = ",".join(f"{p:.6f}" for p in _percentile_grid())
        with open(path, "w") as handle:
            handle.write(_LUA % grid)
    return path


def _wrk(url: str, seconds: int, connections: int, threads: int, tmp: str) -> LoadResult:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        _lua_file(tmp),
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary (rc={done.returncode}): {done.stderr[-500:]}")
    data = json.loads(line[len("WRKJSON ") :])
    histogram = new_histogram()
    total = data["requests"]
    previous = 0
    for p, value_us in data["percentiles"]:
        upto = round(total * p / 100.0)
        if upto > previous:
            histogram.record_value(max(1, min(int(value_us), HIGHEST_US)), upto - previous)
            previous = upto
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult("wrk", total, data["duration_us"] / 1e6, errors, histogram)


def _own(url: str, seconds: float, connections: int, max_requests: int) -> LoadResult:
    """A bounded closed-loop loader: ``connections`` threads, one request per connection."""
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    request = (
        f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: wsgi-observe-bench\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    histogram = new_histogram()
    lock = threading.Lock()
    counts = {"requests": 0, "errors": 0}
    deadline = time.monotonic() + seconds

    def worker() -> None:
        local: list[int] = []
        errors = 0
        while time.monotonic() < deadline:
            with lock:
                if counts["requests"] >= max_requests:
                    break
                counts["requests"] += 1
            started = time.perf_counter_ns()
            try:
                with socket.create_connection((host, int(port)), timeout=5) as sock:
                    sock.sendall(request)
                    chunks = []
                    while True:
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        chunks.append(chunk)
                head = b"".join(chunks)[:16]
                if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")):
                    errors += 1
            except OSError:
                errors += 1
            local.append((time.perf_counter_ns() - started) // 1000)
        with lock:
            counts["errors"] += errors
            for value in local:
                histogram.record_value(max(1, min(value, HIGHEST_US)))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 10)
    elapsed = time.perf_counter() - started
    return LoadResult(
        "python-loader", histogram.get_total_count(), elapsed, counts["errors"], histogram
    )


def load(
    url: str,
    seconds: int,
    connections: int,
    tmp: str,
    *,
    threads: int = 1,
    max_requests: int = 2_000_000,
) -> LoadResult:
    """Load ``url`` for ``seconds`` with wrk if present, else with our own loader."""
    if have_wrk():
        return _wrk(url, seconds, connections, threads, tmp)
    return _own(url, float(seconds), connections, max_requests)


class Gunicorn:
    """A gunicorn master on 127.0.0.1 (sync workers), stopped by its pid."""

    def __init__(
        self, app: str, *, workers: int, tmp: str, hooks: bool, env: dict[str, str]
    ) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(tmp, f"gunicorn-{app.rsplit(':', 1)[-1]}-{self.port}.log")
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(workers),
            "--worker-class",
            "sync",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--chdir",
            ROOT,
            "--log-level",
            "warning",
            "--graceful-timeout",
            "5",
            "--timeout",
            "30",
        ]
        self.hooks = hooks
        if hooks:
            command += ["-c", "python:wsgi_observe.gunicorn"]
        command.append(app)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )

    @staticmethod
    def hooks_available() -> bool:
        try:
            return importlib.util.find_spec("wsgi_observe.gunicorn") is not None
        except ImportError:
            return False

    def wait_ready(self, path: str = "/", timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                    if sock.recv(16).split(b" ")[1:2] == [b"200"]:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn not ready after {timeout_s}s: {self.log_tail()}")

    def workers_cpu_s(self) -> Optional[float]:
        """CPU seconds used so far by the master's worker processes (None without psutil)."""
        try:
            import psutil

            total = 0.0
            for child in psutil.Process(self.process.pid).children():
                times = child.cpu_times()
                total += times.user + times.system
            return total
        except Exception:
            return None

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                return handle.read()[-1500:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def gunicorn_available() -> Optional[str]:
    """None if gunicorn can be run, else why not."""
    if importlib.util.find_spec("gunicorn") is None:
        return "gunicorn not installed"
    if importlib.util.find_spec("hdrh") is None:
        return "hdrhistogram not installed"
    return None


if __name__ == "__main__":  # a manual smoke test: python -m benchmarks.http_load URL
    with tempfile.TemporaryDirectory() as directory:
        result = load(sys.argv[1], 1, 2, directory)
        print(result, f"{result.rps:.0f} req/s, p99 {result.percentile_ms(99):.3f} ms")
