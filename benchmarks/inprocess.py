"""In-process timing: each configuration lives in its own worker process, driven by run.py.

Sentry, OpenTelemetry and logging all keep process-wide state, so every configuration gets
a process of its own; run.py starts them all, then asks each in turn to time a batch, round
after round (interleaved), one at a time so they never compete for the CPU.

The timed loop is what a server does: copy the environ, call the app, iterate the body, call
``close()``. GC is disabled during a batch; process CPU time is read after the subject has
drained its background work (Sentry's transport, span processors, log writers), so work
moved off the request thread is still counted.

Protocol (one JSON object per line): the worker first answers ``{"ok": info}``,
``{"na": reason}`` or ``{"error": text}``, then serves ``{"cmd": "calibrate" | "run" |
"profile" | "info" | "exit", "subject": name, ...}``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import random
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from time import perf_counter_ns, process_time_ns
from typing import Any, Optional
from wsgiref.util import setup_testing_defaults

if __package__ in (None, ""):  # run as a file: make "benchmarks" importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import apps
from benchmarks.apps import Unavailable, need

__all__ = ["GROUPS", "SUBJECTS", "Subject", "make_environ"]

ENDPOINTS = 200  # endpoints recorded before timing /metrics
REQUESTS_PER_ENDPOINT = 100
MERGE_WORKERS = 8
MAX_N = 5_000_000

#: subject -> (label, section). Sections: "request" (overhead on the hello app),
#: "endpoint" (per-call cost of our own endpoints and the merge).
SUBJECTS: dict[str, tuple[str, str]] = {
    "bare": ("bare hello app (harness: environ copy, call, iterate, close)", "request"),
    "prometheus": ("prometheus_client-style (labelled Counter.inc + Histogram.observe)", "request"),
    "otel": ("OpenTelemetry OpenTelemetryMiddleware + SDK TracerProvider", "request"),
    "sentry_sdk": ("sentry-sdk SentryWsgiMiddleware, traces_sample_rate=0.1", "request"),
    "wo_metrics": ("wsgi_observe, metrics only", "request"),
    "wo_access_log": ("wsgi_observe + JSON access log (file)", "request"),
    "wo_sentry": ("wsgi_observe + Sentry, traces_sample_rate=0.1", "request"),
    "wo_excluded": ("stage: wsgi_observe dispatch only (excluded path)", "request"),
    "wo_worker_table": ("stage: metrics only, gunicorn state table (WorkerTable)", "request"),
    "health": ("GET /health", "endpoint"),
    "live": ("GET /health/live", "endpoint"),
    "ready": ("GET /health/ready (cached)", "endpoint"),
    "metrics_json": (f"GET /metrics JSON, {ENDPOINTS} endpoints", "endpoint"),
    "metrics_prom": (f"GET /metrics?format=prometheus, {ENDPOINTS} endpoints", "endpoint"),
    "metrics_proto": (f"GET /metrics?format=protobuf, {ENDPOINTS} endpoints", "endpoint"),
    "merge": (
        f"{MERGE_WORKERS}-worker merge: collect_snapshot ({ENDPOINTS} endpoints each)",
        "endpoint",
    ),
    "merge_json": (f"{MERGE_WORKERS}-worker merge + JSON render", "endpoint"),
}

#: worker process -> the subjects it hosts (one process each where global state differs).
GROUPS: dict[str, list[str]] = {
    "bare": ["bare"],
    "prometheus": ["prometheus"],
    "otel": ["otel"],
    "sentry_sdk": ["sentry_sdk"],
    "wo_metrics": ["wo_metrics"],
    "wo_access_log": ["wo_access_log"],
    "wo_sentry": ["wo_sentry"],
    "wo_excluded": ["wo_excluded"],
    "wo_worker_table": ["wo_worker_table"],
    "endpoints": ["health", "live", "ready", "metrics_json", "metrics_prom", "metrics_proto"],
    "merge": ["merge", "merge_json"],
}

REQUEST_PATH = "/api/hello"


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
        cpu0 = process_time_ns()
        wall = self.loop(n)
        if self.drain is not None:
            self.drain()
        cpu = process_time_ns() - cpu0
        gc.collect()
        return {"wall_ns": wall, "cpu_ns": cpu, "n": n}

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


# Setting things up ------------------------------------------------------------------


def _check(subject: Subject, expect: str = "200") -> None:
    """One request before timing: the configuration must answer as expected."""
    if subject.app is None:
        return
    try:
        status, body = drive(subject.app, subject.environ.copy())  # type: ignore[union-attr]
    except ImportError as error:
        raise Unavailable(f"{error}") from None
    subject.info["requests"] += 1
    if not status.startswith(expect):
        raise RuntimeError(f"answered {status!r}: {body[:200]!r}")
    subject.info["response_bytes"] = len(body)


class _FakeClock:
    """A perf_counter_ns stand-in that moves on by a lognormal step (median 2 ms) per call.

    Used only while filling the metrics, so the histograms hold a realistic spread of
    buckets rather than the single microsecond bucket a hello app would give.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = perf_counter_ns()

    def __call__(self) -> int:
        self.now += int(self.rng.lognormvariate(math.log(2e6), 1.1))
        return self.now


_STATUS_CYCLE = (
    ("200 OK",) * 14
    + ("201 Created", "304 Not Modified", "400 Bad Request")
    + (
        "200 OK",
        "200 OK",
        "500 Internal Server Error",
    )
)


def populate(middleware: Any, seed: int = 1) -> dict[str, Any]:
    """Record ``ENDPOINTS`` endpoints x ``REQUESTS_PER_ENDPOINT`` requests into ``middleware``."""
    clock = _FakeClock(seed)
    patched = []
    for name in ("wsgi_observe.middleware", "wsgi_observe._wsgi"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "perf_counter_ns"):
            patched.append((module, module.perf_counter_ns))
            module.perf_counter_ns = clock
    try:
        for i in range(ENDPOINTS):
            path = f"/api/v1/resource_{i:03d}/items"
            for j in range(REQUESTS_PER_ENDPOINT):
                environ = make_environ(path, method="POST" if j % 6 == 5 else "GET")
                environ["bench.status"] = _STATUS_CYCLE[(i + j) % len(_STATUS_CYCLE)]
                drive(middleware, environ)
    finally:
        for module, original in patched:
            module.perf_counter_ns = original
    return describe_store(middleware.store)


def describe_store(store: Any) -> dict[str, Any]:
    try:
        snap = store.snapshot()
        endpoints = snap.endpoints
        buckets = sum(len(s.hist) for s in endpoints.values())
        return {
            "endpoints": len(endpoints),
            "recorded": sum(s.count for s in endpoints.values()),
            "buckets_per_endpoint": round(buckets / max(len(endpoints), 1), 1),
        }
    except Exception as error:  # the description is informative only
        return {"describe_error": repr(error)}


def _request_subject(app: Callable[..., Any], drain: Any = None, **info: Any) -> Subject:
    subject = Subject(app, make_environ(REQUEST_PATH), drain=drain, info=dict(info))
    _check(subject)
    return subject


def _settle(directory: str, timeout_s: float = 3.0) -> None:
    """Wait until no file in ``directory`` grows for 50 ms (log writers that use a thread)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        sizes = []
        for root, _dirs, files in os.walk(directory):
            for name in files:
                try:
                    sizes.append(os.path.getsize(os.path.join(root, name)))
                except OSError:
                    pass
        if sizes == last:
            return
        last = sizes
        time.sleep(0.05)


def _count_lines(directory: str) -> dict[str, int]:
    counts = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                counts[name] = sum(1 for _ in handle)
    return counts


def build(name: str, opts: dict[str, Any]) -> Subject:
    """Set up subject ``name``; raises Unavailable for a missing peer or piece."""
    dsn = opts.get("dsn")
    tmp = opts["tmp"]
    if name == "bare":
        return _request_subject(apps.hello_app)
    if name == "prometheus":
        return _request_subject(apps.prometheus_style(apps.hello_app))
    if name == "otel":
        app, drain = apps.opentelemetry(apps.hello_app)
        return _request_subject(app, drain, exporter="SimpleSpanProcessor, discarding exporter")
    if name == "sentry_sdk":
        if not dsn:
            raise Unavailable("no local Sentry sink")
        app, drain = apps.sentry_wsgi(apps.hello_app, dsn, 0.1)
        return _request_subject(app, drain, uses_sink=True)
    if name == "wo_metrics":
        return _request_subject(apps.observe(apps.hello_app))
    if name == "wo_excluded":
        return _request_subject(apps.observe(apps.hello_app, exclude_paths=("/api/",)))
    if name == "wo_worker_table":
        workers = need("wsgi_observe.workers")
        if not hasattr(workers, "WorkerTable"):
            raise Unavailable("wsgi_observe.workers.WorkerTable not written yet")
        state_dir = os.path.join(tmp, "worker-table-state")
        os.makedirs(state_dir, exist_ok=True)
        store = need("wsgi_observe.metrics").MetricsStore()
        store.use_table(workers.WorkerTable(state_dir))
        return _request_subject(apps.observe(apps.hello_app, store=store))
    if name == "wo_access_log":
        logs = need("wsgi_observe.logs")
        if not hasattr(logs, "configure_logging"):
            raise Unavailable("wsgi_observe.logs.configure_logging not written yet")
        log_dir = os.path.join(tmp, "logs-access")
        os.makedirs(log_dir, exist_ok=True)
        logs.configure_logging(level="INFO", log_dir=log_dir, fmt="json")
        app = apps.observe(apps.hello_app, access_log=True, log_dir=log_dir)

        def drain() -> None:
            # Lines are buffered (flushed by a thread within flush_interval_s): write them
            # now, so their cost lands in this batch's CPU time and the line count is exact.
            flush = getattr(logs, "flush", None)
            if flush is not None:
                flush()
            _settle(log_dir)

        subject = _request_subject(app, drain, log_dir=log_dir)

        def add_lines(info: dict[str, Any]) -> None:
            info["log_lines"] = _count_lines(log_dir)

        subject.on_info = add_lines
        return subject
    if name == "wo_sentry":
        if not dsn:
            raise Unavailable("no local Sentry sink")
        sentry = need("wsgi_observe.sentry")
        if not hasattr(sentry, "init_sentry"):
            raise Unavailable("wsgi_observe.init_sentry not written yet")
        sentry_sdk = need("sentry_sdk", "sentry-sdk")
        sentry.init_sentry(dsn=dsn, traces_sample_rate=0.1)
        if not sentry_sdk.get_client().is_active():
            raise RuntimeError("init_sentry(dsn=...) left no active Sentry client")
        app = apps.observe(apps.hello_app, sentry_dsn=dsn, traces_sample_rate=0.1)
        return _request_subject(app, lambda: sentry_sdk.flush(timeout=5), uses_sink=True)
    raise KeyError(name)


def build_group(group: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Subjects of ``group``: name -> Subject, or name -> ("na"|"error", reason)."""
    out: dict[str, Any] = {}
    if group == "endpoints":
        return _build_endpoints(opts)
    if group == "merge":
        return _build_merge(opts)
    for name in GROUPS[group]:
        try:
            out[name] = build(name, opts)
        except Unavailable as why:
            out[name] = ("na", str(why))
        except Exception:
            out[name] = ("error", traceback.format_exc(limit=4))
    return out


def _build_endpoints(opts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        # A long readiness TTL: every timed call takes the cached path.
        middleware = apps.observe(
            apps.status_app,
            checks={"database": lambda: True},
            readiness_cache_ttl=3600.0,
            slow_request_threshold=3600.0,
            max_endpoints=1000,
        )
        filled = populate(middleware)
    except Unavailable as why:
        return {name: ("na", str(why)) for name in GROUPS["endpoints"]}
    except Exception:
        text = traceback.format_exc(limit=4)
        return {name: ("error", text) for name in GROUPS["endpoints"]}
    targets = {
        "health": ("/health", ""),
        "live": ("/health/live", ""),
        "ready": ("/health/ready", ""),
        "metrics_json": ("/metrics", ""),
        "metrics_prom": ("/metrics", "format=prometheus"),
        "metrics_proto": ("/metrics", "format=protobuf"),
    }
    for name, (path, query) in targets.items():
        try:
            subject = Subject(middleware, make_environ(path, query), info=dict(filled))
            _check(subject)
            out[name] = subject
        except Unavailable as why:
            out[name] = ("na", str(why))
        except Exception:
            out[name] = ("error", traceback.format_exc(limit=4))
    return out


def _build_merge(opts: dict[str, Any]) -> dict[str, Any]:
    names = GROUPS["merge"]
    try:
        workers = need("wsgi_observe.workers")
        missing = [n for n in ("collect_snapshot", "WorkerTable") if not hasattr(workers, n)]
        if missing:
            raise Unavailable(f"wsgi_observe.workers.{' and '.join(missing)} not written yet")
        exposition = need("wsgi_observe.exposition")
    except Unavailable as why:
        return {name: ("na", str(why)) for name in names}
    state_dir = os.path.join(opts["tmp"], "merge-state")
    os.makedirs(state_dir, exist_ok=True)
    children: list[subprocess.Popen[str]] = []
    try:
        for index in range(MERGE_WORKERS):
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.inprocess",
                        "fill-worker",
                        state_dir,
                        "--seed",
                        str(index + 1),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for child in children:
            line = _readline(child, 120.0)
            answer = json.loads(line) if line else {"error": "no answer from a fill worker"}
            if "na" in answer:
                raise Unavailable(answer["na"])
            if "error" in answer:
                raise RuntimeError(answer["error"])
        snapshot = workers.collect_snapshot(state_dir)
        info = {
            "workers": MERGE_WORKERS,
            "endpoints": len(snapshot.endpoints),
            "recorded": sum(s.count for s in snapshot.endpoints.values()),
            "expected": MERGE_WORKERS * ENDPOINTS * REQUESTS_PER_ENDPOINT,
        }

        def merge() -> Any:
            return workers.collect_snapshot(state_dir)

        try:  # what the middleware adds to a scrape: psutil's process and system figures
            reader = need("wsgi_observe.system").SystemMetrics()
            read_system: Callable[[], Any] = reader.read
        except Exception:
            read_system = lambda: None  # noqa: E731

        def merge_json() -> bytes:
            document = exposition.json_document(
                workers.collect_snapshot(state_dir),
                service="bench",
                version="0",
                system=read_system(),
            )
            return bytes(exposition.render_json(document))

        out: dict[str, Any] = {
            "merge": Subject(call=merge, info=dict(info)),
            "merge_json": Subject(call=merge_json, info=dict(info)),
        }
        # The fill workers stay alive (their state files too) until this worker exits.
        _KEEP.extend(children)
        return out
    except Unavailable as why:
        _stop_children(children)
        return {name: ("na", str(why)) for name in names}
    except Exception:
        _stop_children(children)
        text = traceback.format_exc(limit=4)
        return {name: ("error", text) for name in names}


_KEEP: list[subprocess.Popen[str]] = []


def _stop_children(children: list[subprocess.Popen[str]]) -> None:
    for child in children:
        try:
            if child.stdin:
                child.stdin.close()
            child.wait(timeout=10)
        except Exception:
            child.kill()
            child.wait(timeout=10)


def _readline(child: subprocess.Popen[str], timeout_s: float) -> str:
    import selectors

    assert child.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return ""
    return child.stdout.readline()


def fill_worker(state_dir: str, seed: int) -> None:
    """One gunicorn-like worker: its own state table in ``state_dir``, filled, kept open."""
    try:
        workers = need("wsgi_observe.workers")
        metrics = need("wsgi_observe.metrics")
        if not hasattr(workers, "WorkerTable"):
            raise Unavailable("wsgi_observe.workers.WorkerTable not written yet")
        store = metrics.MetricsStore()
        store.use_table(workers.WorkerTable(state_dir))
        middleware = apps.observe(
            apps.status_app, store=store, slow_request_threshold=3600.0, max_endpoints=1000
        )
        populate(middleware, seed=seed)
        answer: dict[str, Any] = {"ok": True}
    except Unavailable as why:
        answer = {"na": str(why)}
    except Exception:
        answer = {"error": traceback.format_exc(limit=4)}
    print(json.dumps(answer), flush=True)
    sys.stdin.read()  # stay alive (state file open) until the parent closes our stdin


# The worker loop --------------------------------------------------------------------


def _profile(subject: Subject, n: int, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    subject.loop(n)
    profiler.disable()
    if subject.drain is not None:
        subject.drain()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    # Keep the table; strip the header noise before "ncalls".
    for i, line in enumerate(lines):
        if line.lstrip().startswith("ncalls"):
            return "\n".join(lines[i:])
    return "\n".join(lines)


def serve(group: str, opts: dict[str, Any]) -> None:
    # Protocol on a private copy of stdout; anything the libraries print goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    random.seed(12345)

    def send(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    subjects = build_group(group, opts)
    ready: dict[str, Any] = {}
    for name, value in subjects.items():
        if isinstance(value, Subject):
            ready[name] = {"ok": value.info}
        else:
            ready[name] = {value[0]: value[1]}
    send({"subjects": ready})
    for line in sys.stdin:
        try:
            cmd = json.loads(line)
            if cmd["cmd"] == "exit":
                break
            subject = subjects[cmd["subject"]]
            if cmd["cmd"] == "calibrate":
                send({"n": subject.calibrate(float(cmd["target_s"]))})
            elif cmd["cmd"] == "run":
                send(subject.run(int(cmd["n"])))
            elif cmd["cmd"] == "profile":
                send({"text": _profile(subject, int(cmd["n"]), int(cmd.get("top", 15)))})
            elif cmd["cmd"] == "info":
                if subject.on_info is not None:
                    subject.on_info(subject.info)
                send({"info": subject.info})
            else:
                send({"error": f"unknown command {cmd['cmd']!r}"})
        except Exception:
            send({"error": traceback.format_exc(limit=4)})
    _stop_children(_KEEP)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="in-process benchmark worker (run.py uses it)")
    sub = parser.add_subparsers(dest="mode", required=True)
    worker = sub.add_parser("worker")
    worker.add_argument("group", choices=sorted(GROUPS))
    worker.add_argument("--opts", default="{}")
    fill = sub.add_parser("fill-worker")
    fill.add_argument("state_dir")
    fill.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.mode == "worker":
        serve(args.group, json.loads(args.opts))
    else:
        fill_worker(args.state_dir, args.seed)


if __name__ == "__main__":
    main()
