"""Turn raw measurements into rows, targets, latest.json, latest.md and the console table."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from statistics import median
from typing import Any, Optional

from benchmarks.frameworks import FRAMEWORK_BASES
from benchmarks.inprocess import PEERS, SUBJECTS, base_of
from benchmarks.profiles import profile_text
from benchmarks.summary import (
    FRAMEWORK_TARGETS,
    HELLO_MULTIPLE_TARGETS,
    PEER_RATIO_TARGETS,
    fmt_us,
    notes,
    ratio_lines,
    ratios,
    signed_us,
)

__all__ = [
    "broken",
    "build",
    "machine_info",
    "markdown",
    "ratios",
    "table",
    "write",
    "write_png",
]

#: Figures from the issue, for context (µs per request, or overhead over bare).
REFERENCES = {
    "bare": "≈ 0.27 µs",
    "prometheus": "≈ +3.3 µs",
    "otel": "≈ +88 µs",
    "sentry_sdk": "≈ +112 µs",
}
PEER_PACKAGES = (
    "wsgi_observe",
    "prometheus-client",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-wsgi",
    "sentry-sdk",
    "flask",
    "werkzeug",
    "prometheus-flask-exporter",
    "django",
    "django-prometheus",
    "gunicorn",
    "hdrhistogram",
    "psutil",
    "matplotlib",
)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for name in PEER_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    wrk = None
    if shutil.which("wrk"):
        try:
            text = subprocess.run(
                ["wrk", "--version"], capture_output=True, text=True, timeout=5, check=False
            ).stdout
            wrk = text.split("Copyright")[0].strip() or None
        except Exception:
            wrk = "wrk"
    commit = None
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        commit = (
            subprocess.run(
                ["git", "-C", root, "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
            or None
        )
    except Exception:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_at_start": load,
        "versions": versions,
        "wrk": wrk,
        "commit": commit,
        "executable": sys.executable,
    }


# Rows -----------------------------------------------------------------------------------


def _med(values: list[float]) -> Optional[float]:
    return median(values) if values else None


def _paired(a: list[float], b: list[float], op: str) -> Optional[float]:
    pairs = list(zip(a, b))
    if not pairs:
        return None
    if op == "-":
        return median(x - y for x, y in pairs)
    return median(x / y for x, y in pairs if y)


def _row(row_id: str, section: str, label: str, **fields: Any) -> dict[str, Any]:
    row = {
        "id": row_id,
        "section": section,
        "label": label,
        "status": "ok",
        "why": None,
        "unit": "us",
        "median": None,
        "min": None,
        "max": None,
        "rounds": [],
        "wall_median": None,
        "cpu_median": None,
        "ratio": None,
        "overhead_us": None,
        "overhead_wall_us": None,
        "overhead_cpu_us": None,
        "extra": None,
        "reference": None,
        "target": None,
        "limit": None,
        "judged": None,
        "result": None,
        "ours": False,  # a wsgi_observe configuration: an error there fails the run
    }
    row.update(fields)
    return row


def _judge(
    row: dict[str, Any],
    value: Optional[float],
    limit: float,
    text: str,
    higher_is_better: bool = False,
) -> None:
    row["target"] = text
    row["limit"] = limit
    if row["status"] != "ok" or value is None:
        row["result"] = "n/a"
        return
    row["judged"] = value
    ok = value >= limit if higher_is_better else value <= limit
    row["result"] = "PASS" if ok else "MISS"
    wrong = _wrong_line_count(row)
    if wrong is not None:  # a faster row that skipped its work passes nothing
        row["result"] = "MISS"
        row["target"] = f"{text}; not met: {wrong}"


def _wrong_line_count(row: dict[str, Any]) -> Optional[str]:
    """Why a row that writes one access line per request did not, or None."""
    info = row.get("info") or {}
    counts = (("access_lines", "LOG_DIR/application.log"), ("console_lines", "the console"))
    for key, where in counts:
        counted = info.get(key) or {}
        requests = counted.get("requests")
        if requests and counted.get("lines") != requests:
            return f"{counted.get('lines'):,} access lines in {where} for {requests:,} requests"
    return None


def _overhead_ratios(
    subjects: dict[str, Any],
    name: str,
    peer: str,
    key: str,
    base: str = "bare",
    peer_base: str | None = None,
) -> list[float]:
    """Per round: ``name``'s overhead over ``base`` divided by ``peer``'s over ``peer_base``
    (default: the same base), both from that round (the rounds are interleaved, so each
    ratio compares batches run seconds apart)."""
    bare = subjects.get(base, {}).get(key) or []
    other = subjects.get(peer_base or base, {}).get(key) or []
    ours = subjects.get(name, {}).get(key) or []
    theirs = subjects.get(peer, {}).get(key) or []
    ratios = []
    for b, o, pb, t in zip(bare, ours, other, theirs):
        if t - pb > 0:
            ratios.append((o - b) / (t - pb))
    return ratios


def _subject_rows(inproc: dict[str, Any], clock: str) -> list[dict[str, Any]]:
    subjects = inproc["subjects"]
    key = "cpu_us" if clock == "cpu" else "wall_us"
    rows = []
    for name, (label, section) in SUBJECTS.items():
        base_name = base_of(name)
        bare = subjects.get(base_name, {}) if base_name else {}
        data = subjects.get(name, {"status": "error", "why": "not run"})
        row = _row(name, section, label, reference=REFERENCES.get(name), ours=name not in PEERS)
        if data.get("status") != "ok" or not data.get(key):
            row["status"] = data.get("status", "error") if data.get("status") != "ok" else "error"
            row["why"] = (data.get("why") or "no measurement").strip()
        else:
            chosen = data[key]
            row.update(
                median=median(chosen),
                min=min(chosen),
                max=max(chosen),
                rounds=chosen,
                wall_median=median(data["wall_us"]),
                cpu_median=median(data["cpu_us"]),
                wall_rounds=data["wall_us"],
                cpu_rounds=data["cpu_us"],
                kernel_median=median(data["kernel_us"]) if data.get("kernel_us") else None,
                kernel_rounds=data.get("kernel_us") or [],
                n=data.get("n"),
                info=data.get("info", {}),
            )
            if data.get("envelopes"):
                row["envelopes_per_request"] = median(data["envelopes"])
                row["envelopes_rounds"] = data["envelopes"]
            if section in ("request", "framework") and bare.get(key):
                row["ratio"] = _paired(chosen, bare[key], "/")
                row["overhead_us"] = _paired(chosen, bare[key], "-")
                row["overhead_wall_us"] = _paired(data["wall_us"], bare["wall_us"], "-")
                row["overhead_cpu_us"] = _paired(data["cpu_us"], bare["cpu_us"], "-")
        rows.append(row)
    by_id = {row["id"]: row for row in rows}
    prometheus = by_id["prometheus"]
    for name, limit in PEER_RATIO_TARGETS.items():
        row = by_id[name]
        text = f"overhead ≤ {limit:.2f} x prometheus_client-style's"
        rounds = _overhead_ratios(subjects, name, "prometheus", key)
        if rounds and row["status"] == "ok" and prometheus["status"] == "ok":
            row["peer_ratio"] = median(rounds)
            row["peer_ratio_rounds"] = rounds
            row["extra"] = (
                f"{row['peer_ratio']:.2f} x prometheus_client-style's "
                f"(rounds {min(rounds):.2f}-{max(rounds):.2f})"
            )
        _judge(row, row.get("peer_ratio"), limit, text)
    _framework_targets(subjects, key, by_id)
    sentry = by_id["sentry_sdk"]
    ours = by_id["wo_sentry"]
    if sentry.get("envelopes_per_request") is not None:
        sentry["extra"] = f"{sentry['envelopes_per_request']:.3f} envelopes/req at the sink"
    if sentry["overhead_us"] and sentry["status"] == "ok":
        limit = 0.25 * sentry["overhead_us"]
        _judge(
            ours,
            ours["overhead_us"],
            limit,
            f"overhead ≤ 0.25 x SentryWsgiMiddleware's ({fmt_us(limit)})",
        )
        if ours["overhead_us"] is not None:
            ours["sentry_ratio"] = ours["overhead_us"] / sentry["overhead_us"]
            ours["extra"] = f"{ours['sentry_ratio']:.2f} x Sentry's"
            if ours.get("envelopes_per_request") is not None:
                ours["extra"] += (
                    f"; {ours['envelopes_per_request']:.3f} envelopes/req at the sink "
                    f"(Sentry's {sentry.get('envelopes_per_request') or 0:.3f})"
                )
    else:
        _judge(ours, None, 0.0, "overhead ≤ 0.25 x SentryWsgiMiddleware's")
    _judge(by_id["health"], by_id["health"]["median"], 1.5, "≤ 1.5 µs per call")
    _judge(by_id["live"], by_id["live"]["median"], 1.5, "≤ 1.5 µs per call")
    _judge(by_id["metrics_json"], by_id["metrics_json"]["median"], 5000.0, "≤ 5 ms")
    _judge(by_id["metrics_prom"], by_id["metrics_prom"]["median"], 10000.0, "≤ 10 ms")
    _judge(by_id["dashboard"], by_id["dashboard"]["median"], 50000.0, "≤ 50 ms")
    _judge(by_id["merge_json"], by_id["merge_json"]["median"], 20000.0, "8-worker merge ≤ 20 ms")
    return rows


def _framework_targets(
    subjects: dict[str, Any], key: str, by_id: dict[str, dict[str, Any]]
) -> None:
    """Issue 18: each framework row's overhead as a fraction of its exporter's (same run,
    per round), judged where a target is set; and the Flask metrics-only overhead as a
    multiple of the hello app's."""
    for name, (base, peer) in FRAMEWORK_BASES.items():
        row, theirs = by_id[name], by_id[peer]
        if name == peer:
            continue
        limit = FRAMEWORK_TARGETS.get(name)
        rounds = _overhead_ratios(subjects, name, peer, key, base=base)
        if rounds and row["status"] == "ok" and theirs["status"] == "ok":
            row["peer_ratio"] = median(rounds)
            row["peer_ratio_rounds"] = rounds
            row["extra"] = (
                f"{row['peer_ratio']:.2f} x {_PEER_NAMES[peer]}'s "
                f"(rounds {min(rounds):.2f}-{max(rounds):.2f})"
            )
        if limit is not None:
            _judge(
                row, row.get("peer_ratio"), limit, f"overhead ≤ {limit:.2f} x {_PEER_NAMES[peer]}'s"
            )
    for name, (hello, limit) in HELLO_MULTIPLE_TARGETS.items():
        row = by_id[name]
        rounds = _overhead_ratios(
            subjects, name, hello, key, base=FRAMEWORK_BASES[name][0], peer_base="bare"
        )
        if rounds and row["status"] == "ok" and by_id[hello]["status"] == "ok":
            row["hello_multiple"] = median(rounds)
            row["hello_multiple_rounds"] = rounds
            row["hello_result"] = "PASS" if row["hello_multiple"] <= limit else "MISS"
            row["extra"] = (row["extra"] + "; " if row["extra"] else "") + (
                f"{row['hello_multiple']:.2f} x our hello-app overhead "
                f"(rounds {min(rounds):.2f}-{max(rounds):.2f}; target ≤ {limit:.1f}: "
                f"{row['hello_result']})"
            )
        else:
            row["hello_result"] = "n/a"
        row["hello_limit"] = limit


_PEER_NAMES = {
    "flask_exporter": "prometheus_flask_exporter",
    "django_prometheus": "django-prometheus",
}


def _memory_rows(memory: dict[str, Any]) -> list[dict[str, Any]]:
    label = "memory: RSS growth after 100,000 distinct random paths (wrapped)"
    if memory.get("skipped"):
        row = _row("memory", "memory", label, status="n/a", why="skipped (--skip-memory)")
        _judge(row, None, 10.0, "≤ 10 MB")
        return [row]
    wrapped = memory.get("wrapped", {})
    paths = wrapped.get("paths")
    if paths and paths != 100_000:
        label = label.replace("100,000", f"{paths:,}")
    row = _row("memory", "memory", label, unit="MB", ours=True)
    if "growth_mb" not in wrapped:
        row["status"] = "n/a" if "na" in wrapped else "error"
        row["why"] = wrapped.get("na") or wrapped.get("error") or "no result"
    else:
        row.update(median=wrapped["growth_mb"], info=memory)
    _judge(row, row["median"], 10.0, "≤ 10 MB")
    return [row, _windows_row(memory.get("windows", {}))]


def _windows_row(ring: dict[str, Any]) -> dict[str, Any]:
    """The ring of recent windows: its memory (one process), its disk (several), and what
    reading it costs (``benchmarks/windows.py``)."""
    label = (
        f"memory: ring of recent windows, {ring.get('endpoints', '?')} endpoints x "
        f"{ring.get('snapshots', '?')} snapshots ({ring.get('buckets_per_endpoint', '?')} "
        "HDR buckets each)"
    )
    row = _row("windows_ring", "memory", label, unit="MB", ours=True)
    if "memory_ring_mb" not in ring:
        row["status"] = "error"
        row["why"] = ring.get("error") or "no result"
    else:
        row.update(median=ring["memory_ring_mb"], info=ring)
        row["extra"] = (
            f"{ring['disk_ring_mb']:.2f} MB as files; snapshot {ring['tick_disk_us'] / 1000:.1f} "
            f"ms; ?window=5m {ring['window_disk_us'] / 1000:.1f} ms + JSON "
            f"{ring['window_json_us'] / 1000:.1f} ms; series(60, 900) "
            f"{ring['series_disk_us'] / 1000:.1f} ms ({ring['series_cold_us'] / 1000:.0f} ms cold)"
        )
    _judge(row, row["median"], 10.0, "≤ 10 MB")
    return row


def _http_rows(http: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    why = http.get("na") or http.get("error")
    status = "n/a" if "na" in http else "error"
    rps = http.get("rps", {})
    server_cpu = http.get("server_cpu_us") or {}
    for name, label in (
        ("bare", "gunicorn 2 sync workers: bare app"),
        ("wrapped", "gunicorn 2 sync workers: wrapped app, metrics only"),
        ("default", "gunicorn 2 sync workers: wrapped app, default configuration"),
    ):
        row = _row(f"http_{name}", "http", label, unit="req/s", ours=name != "bare")
        values = rps.get(name) or []
        if not values:
            row.update(status=status, why=why or "no measurement")
        else:
            row.update(median=median(values), min=min(values), max=max(values), rounds=values)
        if server_cpu.get(name):
            row["extra"] = f"server CPU {median(server_cpu[name]):.0f} µs/req"
        rows.append(row)
    for row, prefix in ((rows[1], ""), (rows[2], "default_")):
        ratios = http.get(f"{prefix}ratio_rounds") or []
        if ratios:
            row["ratio"] = median(ratios)
        cpu_ratios = http.get(f"{prefix}cpu_ratio_rounds") or []
        if cpu_ratios and row["extra"]:
            row["extra"] += f" (CPU-derived ratio {median(cpu_ratios):.3f})"
    _judge(rows[1], rows[1]["ratio"], 0.97, "throughput ratio ≥ 0.97", higher_is_better=True)
    probes = http.get("probes", {})
    for probe in ("/health", "/health/live"):
        label = f"GET {probe} p99 over HTTP (gunicorn)"
        row = _row(f"http_p99_{probe}", "http", label, unit="ms", ours=True)
        data = probes.get(probe)
        if not data:
            row.update(status=status, why=why or "no measurement")
        else:
            row.update(median=data["p99_ms"], info=data)
        _judge(row, row["median"], 10.0, "p99 ≤ 10 ms (design)")
        rows.append(row)
    return rows


def broken(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The wsgi_observe rows that errored: a configuration of ours could not be built or run."""
    return [row for row in results["rows"] if row["ours"] and row["status"] == "error"]


def build(
    args: Any,
    machine: dict[str, Any],
    inproc: dict[str, Any],
    memory: dict[str, Any],
    http: dict[str, Any],
    duration_s: float,
) -> dict[str, Any]:
    rows = _subject_rows(inproc, args.clock) + _memory_rows(memory) + _http_rows(http)
    run_notes = notes(rows, inproc, memory, http)
    http_public = {k: v for k, v in http.items() if k != "hists"}
    return {
        "mode": "quick" if args.quick else "full",
        "settings": {
            "rounds": args.rounds,
            "batch_target_s": args.target_s,
            "http_rounds": args.http_rounds,
            "http_seconds": args.http_seconds,
            "health_seconds": args.health_seconds,
            "connections": args.connections,
            "memory_paths": args.paths,
            "clock": args.clock,
        },
        "machine": machine,
        "duration_s": round(duration_s, 1),
        "rows": rows,
        "ratios": ratios(rows, inproc.get("instructions") or {}),
        "targets": [
            {"id": r["id"], "target": r["target"], "judged": r["judged"], "result": r["result"]}
            for r in rows
            if r["target"]
        ]
        + [
            {
                "id": r["id"],
                "target": f"overhead ≤ {r['hello_limit']:.1f} x the hello app's (wo_metrics)",
                "judged": r.get("hello_multiple"),
                "result": r["hello_result"],
            }
            for r in rows
            if r.get("hello_result")
        ],
        "memory": memory,
        "http": http_public,
        "profiles": inproc.get("profiles", {}),
        "bytecodes": inproc.get("bytecodes", {}),
        "instructions": inproc.get("instructions", {}),
        "sentry_sink_envelopes": inproc.get("sink"),
        "notes": run_notes,
    }


# Output ---------------------------------------------------------------------------------


def _fmt(row: dict[str, Any], value: Optional[float]) -> str:
    if value is None:
        return "—"
    unit = row["unit"]
    if unit == "us":
        return fmt_us(value)
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    if unit == "MB":
        return f"{value:.2f} MB"
    return f"{value:.3f} {unit}"


_SECTIONS = {
    "request": "In-process, per request (hello app, list body)",
    "framework": "In-process, per request, real frameworks (overhead over the same app bare)",
    "endpoint": "In-process, per call",
    "memory": "Memory (fresh process)",
    "http": "HTTP on 127.0.0.1 under gunicorn",
}


def table(results: dict[str, Any]) -> str:
    clock = results["settings"]["clock"]
    other = "wall" if clock == "cpu" else "CPU"
    label = "CPU" if clock == "cpu" else "wall"
    header = (
        f"| Measurement | Median ({label}) | Median ({other}) | Spread (min-max) | "
        f"x bare | Overhead {label} ({other}) | Ref. | Target | Result |"
    )
    lines = [header, "|" + "---|" * 9]
    section = None
    for row in results["rows"]:
        if row["section"] != section:
            section = row["section"]
            lines.append(f"| **{_SECTIONS[section]}** |" + " |" * 8)
        if row["status"] != "ok":
            cells = [
                row["label"],
                row["status"],
                "",
                "",
                "",
                "",
                row["reference"] or "",
                row["target"] or "",
                row["result"] or "",
            ]
        else:
            spread = ""
            if row["min"] is not None and len(row["rounds"]) > 1:
                spread = f"{_fmt(row, row['min'])} - {_fmt(row, row['max'])}"
            second = row["wall_median"] if clock == "cpu" else row["cpu_median"]
            ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else ""
            overhead = ""
            if row["overhead_us"] is not None and row["id"] != "bare":
                second_overhead = row["overhead_wall_us" if clock == "cpu" else "overhead_cpu_us"]
                overhead = f"{signed_us(row['overhead_us'])} ({signed_us(second_overhead)})"
            if row["extra"]:
                overhead = (overhead + "; " if overhead else "") + row["extra"]
            cells = [
                row["label"],
                _fmt(row, row["median"]),
                _fmt(row, second) if second is not None else "",
                spread,
                ratio,
                overhead,
                row["reference"] or "",
                row["target"] or "",
                row["result"] or "",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pinning(machine: dict[str, Any]) -> str:
    """How the in-process workers were placed (benchmarks/cpus.py), for the Method line."""
    pinning = machine.get("cpu_pinning") or {}
    speeds = ", ".join(f"CPU {cpu} {ms} ms" for cpu, ms in pinning.get("speeds_ms", {}).items())
    why = pinning.get("why", "not pinned")
    return f"{why} (a fixed Python loop: {speeds})" if speeds else why


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    s = results["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    used_wrk = results["http"].get("tool", "wrk") == "wrk"
    loader = m["wrk"] if used_wrk and m["wrk"] else "python-loader (benchmarks/http_load.py)"
    out = [
        f"# wsgi_observe benchmarks ({results['mode']} run)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['implementation']} {m['python']}, "
        f"{m['platform']}; load average at start {m['loadavg_at_start']}, at end "
        f"{m.get('loadavg_at_end', '?')}; {m['date']}; "
        f"commit {m['commit']}; run took {results['duration_s']:.0f} s.",
        f"Versions: {versions}; load generator {loader}.",
        "",
        f"Method: every configuration measured in this run, interleaved over {s['rounds']} "
        f"round(s) of ~{s['batch_target_s']} s batches in a rotating order, one process per "
        "configuration, GC off while timed; medians of per-request times. Overhead = median "
        "of the per-round differences to bare. Times and targets use "
        + (
            "process CPU time (all threads, read after background work such as Sentry's "
            "transport or log writers is drained; immune to being descheduled on a shared "
            "machine), wall time beside it"
            if s["clock"] == "cpu"
            else "wall time (perf_counter_ns), CPU beside it"
        )
        + f"; in-process workers {_pinning(m)}. HTTP: "
        f"{s['http_rounds']} x {s['http_seconds']} s per app, alternating, "
        f"{s['connections']} connections; probes {s['health_seconds']} s at 2 connections.",
        "",
        table(results),
        "",
        *ratio_lines(results),
        "Notes:",
        "",
    ]
    out += [f"- {note}" for note in results["notes"]]
    out += [
        "- Reference figures from the issue: bare ≈ 0.27 µs, prometheus_client-style "
        "≈ +3.3 µs, OTel ≈ +88 µs, SentryWsgiMiddleware ≈ +112 µs, Flask hello ≈ 39 µs."
    ]
    for name in ("wo_metrics", "wo_default"):
        profile = results.get("profiles", {}).get(name)
        if profile and profile.get("text"):
            top = profile["text"].splitlines()[:9]
            out += [
                "",
                f"Where time goes, {name} (cProfile of {profile['n']:,} requests, "
                "by own time; full profiles in profile.txt):",
                "",
                "```",
                *top,
                "```",
            ]
    misses = [t for t in results["targets"] if t["result"] == "MISS"]
    out += [
        "",
        f"Targets: {sum(t['result'] == 'PASS' for t in results['targets'])} PASS, "
        f"{len(misses)} MISS, {sum(t['result'] == 'n/a' for t in results['targets'])} n/a"
        + (" (quick mode: indicative only)" if results["mode"] == "quick" else "")
        + ".",
    ]
    return "\n".join(out) + "\n"


def write(results: dict[str, Any], directory: str) -> None:
    with open(os.path.join(directory, "latest.json"), "w") as handle:
        json.dump(results, handle, indent=2, default=str)
        handle.write("\n")
    with open(os.path.join(directory, "latest.md"), "w") as handle:
        handle.write(markdown(results))
    if results.get("profiles") or results.get("bytecodes") or results.get("instructions"):
        with open(os.path.join(directory, "profile.txt"), "w") as handle:
            handle.write(profile_text(results))


def write_png(http: dict[str, Any], path: str) -> Optional[str]:
    hists = http.get("hists")
    if not hists:
        return "no HTTP latencies (" + str(http.get("na") or http.get("error") or "?") + ")"
    from benchmarks.plot import plot_latency

    rps = http.get("rps", {})
    series = {}
    for name in ("bare", "wrapped", "default"):
        if name not in hists:
            continue
        values = rps.get(name) or [0]
        legend = f"{name} (median {median(values):,.0f} req/s, n={hists[name].get_total_count():,})"
        series[name] = (hists[name], legend)
    title = (
        f"hello app under gunicorn (2 sync workers), {http.get('tool')}, "
        f"{http.get('connections')} connections, 127.0.0.1"
    )
    return plot_latency(series, path, title)
