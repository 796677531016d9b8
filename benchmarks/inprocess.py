"""In-process timing: each configuration lives in its own worker process, driven by run.py.

Sentry, OpenTelemetry and logging all keep process-wide state, so every configuration gets
a process of its own; run.py starts them all, then asks each in turn to time a batch, round
after round (interleaved), one at a time so they never compete for the CPU. The timed loop
is in :mod:`benchmarks.harness`; the subjects that need recorded metrics first are in
:mod:`benchmarks.filled`.

Protocol (one JSON object per line): the worker first answers ``{"ok": info}``,
``{"na": reason}`` or ``{"error": text}``, then serves ``{"cmd": "calibrate" | "run" |
"profile" | "bytecodes" | "info" | "exit", "subject": name, ...}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import stat
import sys
import traceback
from collections.abc import Callable
from typing import Any, Optional

if __package__ in (None, ""):  # run as a file: make "benchmarks" importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import apps, cpus, frameworks, profiles
from benchmarks.apps import Unavailable, need
from benchmarks.filled import (
    ENDPOINTS,
    KEEP,
    MERGE_WORKERS,
    build_endpoints,
    build_merge,
    fill_worker,
    stop_children,
)
from benchmarks.frameworks import FRAMEWORK_BASES
from benchmarks.harness import Subject, check, make_environ

__all__ = [
    "FRAMEWORK_BASES",
    "GROUPS",
    "PEERS",
    "SUBJECTS",
    "Subject",
    "base_of",
    "make_environ",
]


#: subject -> (label, section). Sections: "request" (overhead on the hello app),
#: "framework" (overhead on a Flask or Django app, over that app bare: FRAMEWORK_BASES),
#: "endpoint" (per-call cost of our own endpoints and the merge).
SUBJECTS: dict[str, tuple[str, str]] = {
    "bare": ("bare hello app (harness: environ copy, call, iterate, close)", "request"),
    "prometheus": ("prometheus_client-style (labelled Counter.inc + Histogram.observe)", "request"),
    "otel": ("OpenTelemetry OpenTelemetryMiddleware + SDK TracerProvider", "request"),
    "sentry_sdk": ("sentry-sdk SentryWsgiMiddleware, traces_sample_rate=0.1", "request"),
    "wo_metrics": (
        "wsgi_observe, metrics only (access_log=False, log_handlers=False)",
        "request",
    ),
    "wo_default": (
        "wsgi_observe, default configuration (request id, log context, JSON access line "
        "to LOG_DIR/application.log)",
        "request",
    ),
    "wo_sentry": ("wsgi_observe metrics only + Sentry, traces_sample_rate=0.1", "request"),
    "wo_excluded": ("stage: wsgi_observe dispatch only (excluded path)", "request"),
    "wo_context": (
        "stage: metrics + request id and log context (access_log=False, handlers installed)",
        "request",
    ),
    "wo_default_pipe": (
        "stage: default configuration, its console (stderr) a pipe drained like a supervisor",
        "request",
    ),
    "wo_worker_table": ("stage: metrics only, gunicorn state table (WorkerTable)", "request"),
    "otel_01": (
        "OpenTelemetry OpenTelemetryMiddleware, ParentBased(TraceIdRatioBased(0.1)), batch",
        "request",
    ),
    "wo_otel": ("wsgi_observe metrics only + OpenTelemetry at 0.1 (its batch queue)", "request"),
    "wo_traceparent": (
        "stage: metrics only, a traceparent comes in, tracing off (W3C continuation only)",
        "request",
    ),
    # Real frameworks (issue 18): each against its own bare app and its own exporter.
    "flask_bare": ("Flask app, bare (JSON route /api/leads/<int:lead_id>)", "framework"),
    "flask_exporter": ("Flask + prometheus_flask_exporter PrometheusMetrics(app)", "framework"),
    "flask_wo_metrics": ("Flask + wsgi_observe, metrics only", "framework"),
    "flask_wo_console": (
        "Flask + wsgi_observe, defaults without files (LOG_DIR='': request id, log context, "
        "JSON access line to the console)",
        "framework",
    ),
    "flask_wo_default": (
        "Flask + wsgi_observe, defaults with the JSON file logs (LOG_DIR/application.log "
        "and the console)",
        "framework",
    ),
    "django_bare": (
        "Django app, bare (URL pattern api/leads/<int:lead_id>, no database)",
        "framework",
    ),
    "django_prometheus": ("Django + django-prometheus (its middlewares and app)", "framework"),
    "django_wo_metrics": (
        "Django + wsgi_observe the README's way (RouteTemplateMiddleware + wrap()), metrics only",
        "framework",
    ),
    "health": ("GET /health", "endpoint"),
    "live": ("GET /health/live", "endpoint"),
    "ready": ("GET /health/ready (cached)", "endpoint"),
    "metrics_json": (f"GET /metrics JSON, {ENDPOINTS} endpoints", "endpoint"),
    "metrics_prom": (f"GET /metrics?format=prometheus, {ENDPOINTS} endpoints", "endpoint"),
    "metrics_proto": (f"GET /metrics?format=protobuf, {ENDPOINTS} endpoints", "endpoint"),
    "dashboard": (f"GET /metrics/dashboard (HTML), {ENDPOINTS} endpoints", "endpoint"),
    "merge": (
        f"{MERGE_WORKERS}-worker merge: collect_snapshot ({ENDPOINTS} endpoints each)",
        "endpoint",
    ),
    "merge_json": (f"{MERGE_WORKERS}-worker merge + JSON render", "endpoint"),
}

#: The peers: every other subject is a wsgi_observe configuration, which must be built (a
#: failure to build one fails the run; only a peer may be "n/a").
PEERS = frozenset(
    {
        "bare",
        "prometheus",
        "otel",
        "sentry_sdk",
        "otel_01",
        "flask_bare",
        "flask_exporter",
        "django_bare",
        "django_prometheus",
    }
)


def base_of(name: str) -> str | None:
    """The subject ``name``'s overhead is measured over: its framework's bare app, the hello
    app for the hello-app rows, None for a bare app itself."""
    if name in FRAMEWORK_BASES:
        return FRAMEWORK_BASES[name][0]
    if name in ("bare", "flask_bare", "django_bare"):
        return None
    return "bare"


#: worker process -> the subjects it hosts (one process each where global state differs).
GROUPS: dict[str, list[str]] = {
    "bare": ["bare"],
    "prometheus": ["prometheus"],
    "otel": ["otel"],
    "sentry_sdk": ["sentry_sdk"],
    "wo_metrics": ["wo_metrics"],
    "wo_default": ["wo_default"],
    "wo_sentry": ["wo_sentry"],
    "wo_excluded": ["wo_excluded"],
    "wo_context": ["wo_context"],
    "wo_default_pipe": ["wo_default_pipe"],
    "wo_worker_table": ["wo_worker_table"],
    "otel_01": ["otel_01"],
    "wo_otel": ["wo_otel"],
    "wo_traceparent": ["wo_traceparent"],
    "flask_bare": ["flask_bare"],
    "flask_exporter": ["flask_exporter"],
    "flask_wo_metrics": ["flask_wo_metrics"],
    "flask_wo_console": ["flask_wo_console"],
    "flask_wo_default": ["flask_wo_default"],
    "django_bare": ["django_bare"],
    "django_prometheus": ["django_prometheus"],
    "django_wo_metrics": ["django_wo_metrics"],
    "endpoints": [
        "health",
        "live",
        "ready",
        "metrics_json",
        "metrics_prom",
        "metrics_proto",
        "dashboard",
    ],
    "merge": ["merge", "merge_json"],
}

REQUEST_PATH = "/api/hello"


# Setting things up ------------------------------------------------------------------


def _request_subject(app: Callable[..., Any], drain: Any = None, **info: Any) -> Subject:
    subject = Subject(app, make_environ(REQUEST_PATH), drain=drain, info=dict(info))
    check(subject)
    return subject


class _AccessLines:
    """Counts the access lines each timed batch added to ``LOG_DIR/application.log``.

    Read after the batch's CPU time (never timed). A batch may rotate the file (10 MB), so
    the count follows the marked file into its backups: the newer files whole, the marked
    one from where the batch began. ``lost`` counts batches whose start was rotated away.
    """

    def __init__(self, log_dir: str) -> None:
        self.path = os.path.join(log_dir, "application.log")
        self.mark: Optional[tuple[int, int, int]] = None
        self.lines = 0
        self.requests = 0
        self.lost = 0

    def start(self) -> None:
        try:
            st = os.stat(self.path)
            self.mark = (st.st_dev, st.st_ino, st.st_size)
        except FileNotFoundError:
            self.mark = (0, 0, 0)

    def stop(self, n: int) -> None:
        mark, self.mark = self.mark, None
        if mark is None:
            return
        counted = 0
        for index in range(64):
            path = self.path if index == 0 else f"{self.path}.{index}"
            try:
                st = os.stat(path)
            except FileNotFoundError:
                break
            marked = (st.st_dev, st.st_ino) == mark[:2]
            with open(path, "rb") as handle:
                if marked:
                    handle.seek(mark[2])
                counted += handle.read().count(b'"wsgi_observe.access"')
            if marked:
                break
        else:
            marked = False
        if not marked and mark != (0, 0, 0):
            self.lost += 1
            return
        self.lines += counted
        self.requests += n

    def describe(self, info: dict[str, Any]) -> None:
        info["access_lines"] = {
            "lines": self.lines,
            "requests": self.requests,
            "batches_rotated_away": self.lost,
        }


class _ConsoleFile:
    """The worker's stderr when it is a regular file: the console the default configuration
    also writes every line to. After each timed batch (outside its CPU time) the lines the
    batch added are counted and the file is emptied, as ``logrotate``'s ``copytruncate``
    does, so it stays a few MB instead of growing by ~25 MB a batch.

    Why: a file that only grows keeps taking fresh pages of page cache, and on this suite's
    VM (Firecracker, its balloon reporting free pages to the host; our reading: host page
    faults) those got dear: the kernel's part of the default configuration rose from ~0.3 to
    1-2 µs per request and swung from round to round, measuring the host's memory, not the
    library. Emptied, the file's pages are reused, like those of ``application.log``'s
    rotated backups. Every byte is still written through the same ``write()`` calls. (run.py
    opens the file with ``O_APPEND``, so writes after the truncation start at 0.)
    """

    MARK = b'"wsgi_observe.access"'

    def __init__(self) -> None:
        try:
            self.regular = stat.S_ISREG(os.fstat(2).st_mode)
        except OSError:
            self.regular = False
        self.offset = 0
        self.lines = 0
        self.requests = 0

    def start(self) -> None:
        if self.regular:
            self.offset = os.fstat(2).st_size  # what calibration wrote is not counted

    def stop(self, n: int) -> None:
        if not self.regular:
            return
        sys.stderr.flush()
        with open("/proc/self/fd/2", "rb") as handle:  # fd 2 itself is write-only
            handle.seek(self.offset)
            self.lines += handle.read().count(self.MARK)
        self.requests += n
        os.ftruncate(2, 0)
        self.offset = 0

    def describe(self, info: dict[str, Any]) -> None:
        if self.regular:
            info["console_lines"] = {"lines": self.lines, "requests": self.requests}


def _drain_log_handlers() -> None:
    """Write every buffered line now and wait for a write the flusher thread may be doing,
    so the lines' cost lands in this batch's CPU time and the line count is exact."""
    for handler in logging.getLogger().handlers:
        sink = getattr(handler, "sink", None)
        if sink is not None:
            sink.flush()
            with sink.lock:
                pass


def _sentry_drain(sentry_sdk: Any) -> Callable[[], None]:
    def drain() -> None:
        # Every sampled transaction reaches the sink before the batch's CPU time is read.
        sentry_sdk.flush(timeout=120)

    return drain


def _default_subject(
    tmp: str, console: str, build_app: Optional[Callable[[], Any]] = None, path: str = ""
) -> Subject:
    """``ObservabilityMiddleware(app)`` with ``LOG_DIR`` (from the environment) under ``tmp``;
    its access lines are counted after every batch. ``build_app`` builds another app than
    the hello app (a framework's, returning its middleware's config), requested at ``path``."""
    log_dir = os.environ.get("LOG_DIR", "")
    if not log_dir or not log_dir.startswith(tmp):
        raise RuntimeError(f"LOG_DIR={log_dir!r}: expected a folder under {tmp}")
    if build_app is None:
        app = apps.default(apps.hello_app)
        config = app.config
    else:
        app = build_app()
        config = app.wsgi_app.config
    if not (config.access_log and config.log_handlers) or config.log_dir != log_dir:
        raise RuntimeError(f"not the default configuration: {config!r}")
    counter = _AccessLines(log_dir)
    if build_app is None:
        subject = _request_subject(app, _drain_log_handlers, log_dir=log_dir, console=console)
    else:
        subject = _framework_subject(
            app, path, _drain_log_handlers, log_dir=log_dir, console=console
        )
    _drain_log_handlers()
    if not os.path.exists(counter.path):
        raise RuntimeError(f"the default configuration wrote no {counter.path}")
    console = _ConsoleFile()

    def before() -> None:
        counter.start()
        console.start()

    def after(n: int) -> None:
        counter.stop(n)
        console.stop(n)

    def describe(info: dict[str, Any]) -> None:
        counter.describe(info)
        console.describe(info)

    subject.before = before
    subject.after = after
    subject.on_info = describe
    return subject


def _framework_subject(
    app: Callable[..., Any], path: str, drain: Any = None, **info: Any
) -> Subject:
    """A framework app timed on ``path``; its error route is checked first (a 500)."""
    check(Subject(app, make_environ(frameworks.ERROR_PATH)), expect="500")
    subject = Subject(app, make_environ(path), drain=drain, info=dict(info))
    check(subject)
    subject.info["path"] = path
    return subject


def _check_named(app: Any, name: str) -> None:
    """wsgi_observe named the checked requests by the framework's route: ``name`` and the
    error route were counted (else the row would time a fallback, not the real path)."""
    middleware = getattr(app, "wsgi_app", app)
    endpoints = middleware.store.snapshot().endpoints
    for wanted in (name, frameworks.ERROR_PATH):
        if wanted not in endpoints:
            raise RuntimeError(f"{wanted!r} not among the endpoints counted: {sorted(endpoints)}")


def build_framework(name: str, tmp: str) -> Subject:
    """A framework row (issue 18); raises Unavailable when the framework or peer is missing."""
    route = "/api/leads/<int:lead_id>"
    if name == "flask_bare":
        return _framework_subject(frameworks.flask_app(), frameworks.FLASK_PATH)
    if name == "flask_exporter":
        return _framework_subject(frameworks.flask_exporter(), frameworks.FLASK_PATH)
    if name == "flask_wo_metrics":
        app = frameworks.observe_flask()
        subject = _framework_subject(app, frameworks.FLASK_PATH)
        _check_named(app, route)
        return subject
    if name == "flask_wo_console":
        os.environ["LOG_DIR"] = ""  # the defaults, with no files: the console only
        app = frameworks.observe_flask(defaults=True)
        config = app.wsgi_app.config
        if not (config.access_log and config.log_handlers) or config.log_dir:
            raise RuntimeError(f"not the defaults without files: {config!r}")
        subject = _framework_subject(app, frameworks.FLASK_PATH, _drain_log_handlers)
        _check_named(app, route)
        console = _ConsoleFile()
        subject.before = console.start
        subject.after = console.stop
        subject.on_info = console.describe
        return subject
    if name == "flask_wo_default":
        os.environ["LOG_DIR"] = os.path.join(tmp, "logs-flask-default")
        return _default_subject(
            tmp,
            "the worker's stderr, a regular file",
            lambda: frameworks.observe_flask(defaults=True),
            frameworks.FLASK_PATH,
        )
    if name == "django_bare":
        return _framework_subject(frameworks.django_app("bare"), frameworks.DJANGO_PATH)
    if name == "django_prometheus":
        return _framework_subject(frameworks.django_app("prometheus"), frameworks.DJANGO_PATH)
    if name == "django_wo_metrics":
        app = frameworks.django_app("observe")
        subject = _framework_subject(app, frameworks.DJANGO_PATH)
        _check_named(app, "/api/leads/<int:lead_id>")
        return subject
    raise KeyError(name)


def build(name: str, opts: dict[str, Any]) -> Subject:
    """Set up subject ``name``; raises Unavailable only for a missing peer or sink."""
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
        from wsgi_observe.metrics import MetricsStore
        from wsgi_observe.multiprocess import WorkerTable

        state_dir = os.path.join(tmp, "worker-table-state")
        os.makedirs(state_dir, exist_ok=True)
        store = MetricsStore()
        store.use_table(WorkerTable(state_dir))
        return _request_subject(apps.observe(apps.hello_app, store=store))
    if name == "wo_context":
        log_dir = os.path.join(tmp, "logs-context")
        app = apps.observe(apps.hello_app, log_handlers=True, log_dir=log_dir)
        return _request_subject(app, _drain_log_handlers, log_dir=log_dir)
    if name == "wo_default":
        return _default_subject(tmp, console="the worker's stderr, a regular file")
    if name == "wo_default_pipe":
        # The same configuration, its stderr (the console) a pipe the suite drains, as a
        # supervisor would (run.PIPED); its own LOG_DIR.
        os.environ["LOG_DIR"] = os.path.join(tmp, "logs-default-pipe")
        return _default_subject(tmp, console="a pipe, drained by the suite like a supervisor")
    if name == "wo_sentry":
        if not dsn:
            raise RuntimeError("no local Sentry sink (benchmarks/sink.py did not start)")
        sentry_sdk = need("sentry_sdk", "sentry-sdk")
        from wsgi_observe.integrations.sentry import init_sentry

        if not init_sentry(
            dsn=dsn, traces_sample_rate=0.1, transport_queue_size=apps.SENTRY_QUEUE_SIZE
        ):
            raise RuntimeError("init_sentry(dsn=...) did not start Sentry")
        if not sentry_sdk.get_client().is_active():
            raise RuntimeError("init_sentry(dsn=...) left no active Sentry client")
        app = apps.observe(apps.hello_app, sentry_dsn=dsn, traces_sample_rate=0.1)
        return _request_subject(app, _sentry_drain(sentry_sdk), uses_sink=True)
    if name in ("otel_01", "wo_otel"):
        return _otel_subject(name)
    if name.startswith(("flask_", "django_")):
        return build_framework(name, tmp)
    if name == "wo_traceparent":
        subject = _request_subject(apps.observe(apps.hello_app))
        subject.environ["HTTP_TRACEPARENT"] = TRACEPARENT
        check(subject)
        return subject
    raise KeyError(name)


#: The caller's trace of the "wo_traceparent" stage (sampled).
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _otel_subject(name: str) -> Subject:
    """OpenTelemetry at 0.1, ours or OpenTelemetryMiddleware: spans sampled per batch are
    counted (``spans_per_request``), so both are seen to do the same work."""
    build_app = apps.opentelemetry_ratio if name == "otel_01" else apps.observe_otel
    app, drain, exporter = build_app(apps.hello_app)
    counted = {"requests": 0, "spans": 0, "start": 0}

    def before() -> None:
        drain()
        counted["start"] = exporter.spans

    def after(n: int) -> None:
        drain()
        counted["requests"] += n
        counted["spans"] += exporter.spans - counted["start"]

    def describe(info: dict[str, Any]) -> None:
        requests = counted["requests"]
        info["spans_per_request"] = counted["spans"] / requests if requests else None

    subject = _request_subject(app, drain, exporter="batch processor, discarding exporter")
    subject.before = before
    subject.after = after
    subject.on_info = describe
    return subject


def build_group(group: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Subjects of ``group``: name -> Subject, or name -> ("na"|"error", reason)."""
    out: dict[str, Any] = {}
    if group == "endpoints":
        return build_endpoints(opts, GROUPS[group])
    if group == "merge":
        return build_merge(opts, GROUPS[group])
    for name in GROUPS[group]:
        try:
            out[name] = build(name, opts)
        except Unavailable as why:
            out[name] = ("na", str(why))
        except Exception:
            out[name] = ("error", traceback.format_exc(limit=4))
    return out


# The worker loop --------------------------------------------------------------------


def serve(group: str, opts: dict[str, Any]) -> None:
    cpus.pin(opts.get("cpu"))  # first: every thread started from here on is pinned too
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
                send({"text": profiles.cprofile(subject, int(cmd["n"]), int(cmd.get("top", 15)))})
            elif cmd["cmd"] == "bytecodes":
                send(profiles.bytecodes(subject, int(cmd["n"])))
            elif cmd["cmd"] == "info":
                if subject.on_info is not None:
                    subject.on_info(subject.info)
                if hasattr(os, "sched_getaffinity"):  # where it ran (benchmarks/cpus.py)
                    subject.info["cpus"] = sorted(os.sched_getaffinity(0))
                send({"info": subject.info})
            else:
                send({"error": f"unknown command {cmd['cmd']!r}"})
        except Exception:
            send({"error": traceback.format_exc(limit=4)})
    stop_children(KEEP)


#: Set to "1" (``python -m benchmarks.instructions --fixed-millisecond``): count with the
#: access line's millisecond held fixed (see :func:`_hold_the_millisecond`).
FIXED_MILLISECOND = "BENCHMARKS_FIXED_MILLISECOND"


def _hold_the_millisecond() -> None:
    """Make every later access line of this process fall in the current millisecond.

    Under callgrind a request takes about 50 times longer than natively, so the access
    line's once-per-millisecond timestamp work runs every few requests instead of about
    every 200 (the hello app), as often as valgrind's speed allows: the count then moves by
    up to 1,300 instructions per request from run to run. Held fixed, the count leaves that
    work out (natively a few dozen instructions per hello-app request)."""
    from wsgi_observe.logs import access, files

    if access._resync_clock in files.tick_hooks:
        files.tick_hooks.remove(access._resync_clock)  # it would start a new millisecond
    access._now = (-(1 << 62), 1 << 62, access._now[2], access._now[3])


def count(name: str, n: int, warmup: int, opts: dict[str, Any]) -> None:
    """Build ``name``, warm it up, then serve ``n`` requests and drain (for instructions.py,
    which runs this under callgrind twice and takes the difference)."""
    subject = build(name, opts)
    subject.loop(warmup)
    if subject.drain is not None:
        subject.drain()
    if os.environ.get(FIXED_MILLISECOND) == "1":
        _hold_the_millisecond()
    subject.loop(n)
    if subject.drain is not None:
        subject.drain()
    print(json.dumps({"ok": n}), flush=True)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="in-process benchmark worker (run.py uses it)")
    sub = parser.add_subparsers(dest="mode", required=True)
    worker = sub.add_parser("worker")
    worker.add_argument("group", choices=sorted(GROUPS))
    worker.add_argument("--opts", default="{}")
    fill = sub.add_parser("fill-worker")
    fill.add_argument("state_dir")
    fill.add_argument("--seed", type=int, default=1)
    counter = sub.add_parser("count")
    counter.add_argument(
        "subject",
        choices=[s for s, (_, where) in SUBJECTS.items() if where in ("request", "framework")],
    )
    counter.add_argument("--n", type=int, required=True)
    counter.add_argument("--warmup", type=int, default=2000)
    counter.add_argument("--opts", default="{}")
    args = parser.parse_args(argv)
    if args.mode == "worker":
        serve(args.group, json.loads(args.opts))
    elif args.mode == "count":
        count(args.subject, args.n, args.warmup, json.loads(args.opts))
    else:
        fill_worker(args.state_dir, args.seed)


if __name__ == "__main__":
    main()
