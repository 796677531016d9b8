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

from benchmarks.inprocess import PEERS, SUBJECTS

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
#: Issue 10: wsgi_observe's overhead as a fraction of the prometheus_client-style
#: middleware's, measured in the same run (median of the per-round ratios).
PEER_RATIO_TARGETS = {"wo_metrics": 0.40, "wo_default": 1.0}
#: Issue 6's absolute overheads (µs, on its reference machine), reported in the notes.
ABSOLUTE_TARGETS_US = {"wo_metrics": 1.0, "wo_default": 2.5}
PEER_PACKAGES = (
    "wsgi_observe",
    "prometheus-client",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-wsgi",
    "sentry-sdk",
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


def _overhead_ratios(subjects: dict[str, Any], name: str, peer: str, key: str) -> list[float]:
    """Per round: ``name``'s overhead over bare divided by ``peer``'s, both from that round
    (the rounds are interleaved, so each ratio compares batches run seconds apart)."""
    bare = subjects.get("bare", {}).get(key) or []
    ours = subjects.get(name, {}).get(key) or []
    theirs = subjects.get(peer, {}).get(key) or []
    ratios = []
    for b, o, t in zip(bare, ours, theirs):
        if t - b > 0:
            ratios.append((o - b) / (t - b))
    return ratios


def _subject_rows(inproc: dict[str, Any], clock: str) -> list[dict[str, Any]]:
    subjects = inproc["subjects"]
    key = "cpu_us" if clock == "cpu" else "wall_us"
    bare = subjects.get("bare", {})
    rows = []
    for name, (label, section) in SUBJECTS.items():
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
                n=data.get("n"),
                info=data.get("info", {}),
            )
            if data.get("envelopes"):
                row["envelopes_per_request"] = median(data["envelopes"])
                row["envelopes_rounds"] = data["envelopes"]
            if section == "request" and bare.get(key):
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
            f"overhead ≤ 0.25 x SentryWsgiMiddleware's ({_fmt_us(limit)})",
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
    _judge(by_id["merge_json"], by_id["merge_json"]["median"], 20000.0, "8-worker merge ≤ 20 ms")
    return rows


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
    return [row]


def _http_rows(http: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    why = http.get("na") or http.get("error")
    status = "n/a" if "na" in http else "error"
    rps = http.get("rps", {})
    for name, label in (
        ("bare", "gunicorn 2 sync workers: bare app"),
        ("wrapped", "gunicorn 2 sync workers: wrapped app (default configuration)"),
    ):
        row = _row(f"http_{name}", "http", label, unit="req/s", ours=name == "wrapped")
        values = rps.get(name) or []
        if not values:
            row.update(status=status, why=why or "no measurement")
        else:
            row.update(median=median(values), min=min(values), max=max(values), rounds=values)
        rows.append(row)
    wrapped = rows[1]
    ratios = http.get("ratio_rounds") or []
    if ratios:
        wrapped["ratio"] = median(ratios)
    server_cpu = http.get("server_cpu_us") or {}
    for row, name in ((rows[0], "bare"), (wrapped, "wrapped")):
        if server_cpu.get(name):
            row["extra"] = f"server CPU {median(server_cpu[name]):.0f} µs/req"
    cpu_ratios = http.get("cpu_ratio_rounds") or []
    if cpu_ratios and wrapped["extra"]:
        wrapped["extra"] += f" (CPU-derived ratio {median(cpu_ratios):.3f})"
    wrapped_text = "throughput ratio ≥ 0.97"
    _judge(wrapped, wrapped["ratio"], 0.97, wrapped_text, higher_is_better=True)
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
    notes = _notes(rows, inproc, memory, http)
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
        "ratios": ratios(rows),
        "targets": [
            {"id": r["id"], "target": r["target"], "judged": r["judged"], "result": r["result"]}
            for r in rows
            if r["target"]
        ],
        "memory": memory,
        "http": http_public,
        "profiles": inproc.get("profiles", {}),
        "sentry_sink_envelopes": inproc.get("sink"),
        "notes": notes,
    }


def _notes(
    rows: list[dict[str, Any]], inproc: dict[str, Any], memory: dict[str, Any], http: dict[str, Any]
) -> list[str]:
    notes = []
    by_id = {row["id"]: row for row in rows}
    for row in rows:
        if row["status"] != "ok" and row["why"]:
            first = row["why"].strip().splitlines()
            text = first[-1] if row["status"] == "error" else first[0]
            notes.append(f"{row['id']}: {row['status']}: {text[:240]}")
    wm, ex, bare = by_id["wo_metrics"], by_id["wo_excluded"], by_id["bare"]
    ctx, default = by_id["wo_context"], by_id["wo_default"]
    if wm["status"] == ex["status"] == bare["status"] == "ok":
        dispatch = ex["overhead_us"] or 0.0
        text = (
            "where the overhead goes: dispatch (route lookup, exclusion check, extra call) "
            f"{_signed_us(dispatch)}; timing, exchange, body wrapper and record_request() "
            f"{_signed_us((wm['overhead_us'] or 0.0) - dispatch)}"
        )
        if ctx["status"] == "ok" and ctx["overhead_us"] is not None:
            text += (
                "; request id, X-Request-ID and the logging context "
                f"{_signed_us(ctx['overhead_us'] - (wm['overhead_us'] or 0.0))}"
            )
            if default["status"] == "ok" and default["overhead_us"] is not None:
                text += (
                    "; the JSON access line (built, serialised, buffered, written) "
                    f"{_signed_us(default['overhead_us'] - ctx['overhead_us'])}"
                )
        table_row = by_id["wo_worker_table"]
        if table_row["status"] == "ok" and table_row["overhead_us"] is not None:
            text += (
                "; recording into gunicorn's memory-mapped WorkerTable instead of a list "
                f"{_signed_us(table_row['overhead_us'] - (wm['overhead_us'] or 0.0))}"
            )
        notes.append(text + " (profile.txt)")
    for name, limit in ABSOLUTE_TARGETS_US.items():
        row = by_id[name]
        if row["status"] == "ok" and row["overhead_us"] is not None:
            notes.append(
                f"{name}: overhead {_signed_us(row['overhead_us'])} against issue 6's absolute "
                f"{_fmt_us(limit)} (set on a machine where the prometheus_client-style "
                "middleware adds ≈ +3.3 µs; this run's: "
                f"{_signed_us(by_id['prometheus']['overhead_us'])})"
            )
    for peer in ("prometheus", "otel", "sentry_sdk"):
        row = by_id[peer]
        if wm["status"] == row["status"] == "ok" and row["overhead_us"]:
            notes.append(
                f"wsgi_observe metrics-only overhead = {wm['overhead_us'] / row['overhead_us']:.3f}"
                f" x {peer}'s (ratio of the medians)"
            )
    for name in ("sentry_sdk", "wo_sentry"):
        row = by_id[name]
        if row.get("envelopes_per_request") is not None:
            rounds = [f"{value:.3f}" for value in row.get("envelopes_rounds") or []]
            notes.append(
                f"{name}: {row['envelopes_per_request']:.3f} envelopes/request reached the "
                f"local sink (rounds: {', '.join(rounds)}; transactions sampled at 0.1, "
                "transport queue deep enough for all, flushed before each batch's CPU time "
                "is read)"
            )
    if default["status"] == "ok":
        counted = (default.get("info") or {}).get("access_lines") or {}
        if counted.get("requests"):
            lines, requests = counted["lines"], counted["requests"]
            notes.append(
                f"access lines: {lines:,} in LOG_DIR/application.log* (rotated files included) "
                f"for {requests:,} timed requests ({lines / requests:.3f} per request"
                + (
                    f"; {counted['batches_rotated_away']} batches not counted: rotated away)"
                    if counted.get("batches_rotated_away")
                    else ")"
                )
            )
    for name in ("metrics_json", "merge_json"):
        row = by_id[name]
        if row["status"] == "ok":
            info = row.get("info", {})
            keys = ("endpoints", "recorded", "expected", "buckets_per_endpoint", "response_bytes")
            notes.append(f"{name}: " + ", ".join(f"{k} {info[k]}" for k in keys if k in info))
    if "wrapped" in memory and "growth_mb" in memory.get("wrapped", {}):
        w, b = memory["wrapped"], memory.get("bare", {})
        notes.append(
            f"memory: wrapped {w['rss_before_mb']} → {w['rss_after_mb']} MB "
            f"({w.get('endpoints', '?')} endpoint names kept, {w['seconds']} s); "
            f"bare harness growth {b.get('growth_mb', '?')} MB"
        )
    if http.get("latency"):
        parts = []
        for name, values in http["latency"].items():
            parts.append(name + " " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
        notes.append(
            f"HTTP ({http.get('tool')}, {http.get('connections')} connections, "
            f"hooks {http.get('hooks')}) latency ms: " + "; ".join(parts)
        )
        errors = http.get("errors", {})
        if any(errors.values()):
            notes.append(f"HTTP errors (non-2xx or socket): {errors}")
    server_cpu = (http.get("server_cpu_us") or {}).get("bare")
    if server_cpu and default["status"] == "ok" and default["overhead_cpu_us"] is not None:
        per_request = median(server_cpu)
        predicted = per_request / (per_request + default["overhead_cpu_us"])
        notes.append(
            "throughput ratio expected from the in-process overhead of the default "
            f"configuration: {per_request:.0f} µs server CPU per bare request / "
            f"({per_request:.0f} + {default['overhead_cpu_us']:.2f}) = {predicted:.3f} "
            "(measured ratios on a shared VM swing by ±10% or more: see Spread)"
        )
    notes.extend(http.get("notes", []))
    return notes


# Output ---------------------------------------------------------------------------------


def _fmt_us(value: Optional[float]) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value / 1000:.2f} ms"
    if abs(value) >= 100:
        return f"{value:.0f} µs"
    if abs(value) >= 10:
        return f"{value:.1f} µs"
    return f"{value:.2f} µs"


def _fmt(row: dict[str, Any], value: Optional[float]) -> str:
    if value is None:
        return "—"
    unit = row["unit"]
    if unit == "us":
        return _fmt_us(value)
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    if unit == "MB":
        return f"{value:.2f} MB"
    return f"{value:.3f} {unit}"


def _signed_us(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return ("+" if value >= 0 else "-") + _fmt_us(abs(value))


_SECTIONS = {
    "request": "In-process, per request (hello app, list body)",
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
                overhead = f"{_signed_us(row['overhead_us'])} ({_signed_us(second_overhead)})"
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
        f"{m['platform']}; load average at start {m['loadavg_at_start']}; {m['date']}; "
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
        + ". HTTP: "
        f"{s['http_rounds']} x {s['http_seconds']} s per app, alternating, "
        f"{s['connections']} connections; probes {s['health_seconds']} s at 2 connections.",
        "",
        table(results),
        "",
        *_ratio_lines(results),
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


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The same-run ratios issue 10 asks for, with their targets and results."""
    by_id = {row["id"]: row for row in rows}
    out: dict[str, Any] = {}
    for name, limit in PEER_RATIO_TARGETS.items():
        row = by_id[name]
        rounds = row.get("peer_ratio_rounds") or []
        out[name] = {
            "of": "prometheus_client-style overhead",
            "median": row.get("peer_ratio"),
            "min": min(rounds) if rounds else None,
            "max": max(rounds) if rounds else None,
            "rounds": rounds,
            "target": limit,
            "result": row["result"],
        }
    ours, sentry = by_id["wo_sentry"], by_id["sentry_sdk"]
    out["wo_sentry"] = {
        "of": "SentryWsgiMiddleware overhead",
        "median": ours.get("sentry_ratio"),
        "envelopes_per_request": ours.get("envelopes_per_request"),
        "peer_envelopes_per_request": sentry.get("envelopes_per_request"),
        "target": 0.25,
        "result": ours["result"],
    }
    return out


def _ratio_lines(results: dict[str, Any]) -> list[str]:
    found = results.get("ratios") or {}
    lines = []
    labels = {"wo_metrics": "metrics only", "wo_default": "default configuration"}
    for name, label in labels.items():
        data = found.get(name) or {}
        if data.get("median") is None:
            lines.append(f"- {label}: no ratio ({data.get('result') or 'not measured'})")
            continue
        lines.append(
            f"- {label}: overhead {data['median']:.2f} x the prometheus_client-style "
            f"middleware's (rounds {data['min']:.2f}-{data['max']:.2f}); target ≤ "
            f"{data['target']:.2f}: {data['result']}"
        )
    sentry = found.get("wo_sentry") or {}
    if sentry.get("median") is not None:
        lines.append(
            f"- Sentry at 0.1: overhead {sentry['median']:.2f} x SentryWsgiMiddleware's, "
            f"with {sentry.get('envelopes_per_request') or 0:.3f} envelopes/request at the "
            f"sink against its {sentry.get('peer_envelopes_per_request') or 0:.3f}; target ≤ "
            f"0.25: {sentry['result']}"
        )
    if not lines:
        return []
    return [
        "Same-run ratios (median of the per-round ratios of overheads over bare):",
        "",
        *lines,
        "",
    ]


def write(results: dict[str, Any], directory: str) -> None:
    with open(os.path.join(directory, "latest.json"), "w") as handle:
        json.dump(results, handle, indent=2, default=str)
        handle.write("\n")
    with open(os.path.join(directory, "latest.md"), "w") as handle:
        handle.write(markdown(results))
    profiles = results.get("profiles") or {}
    if profiles:
        with open(os.path.join(directory, "profile.txt"), "w") as handle:
            for name, profile in profiles.items():
                handle.write(f"== {name}: cProfile of {profile['n']:,} requests, by own time ==\n")
                handle.write(profile["text"] + "\n\n")


def write_png(http: dict[str, Any], path: str) -> Optional[str]:
    hists = http.get("hists")
    if not hists:
        return "no HTTP latencies (" + str(http.get("na") or http.get("error") or "?") + ")"
    from benchmarks.plot import plot_latency

    rps = http.get("rps", {})
    series = {}
    for name in ("bare", "wrapped"):
        values = rps.get(name) or [0]
        legend = f"{name} (median {median(values):,.0f} req/s, n={hists[name].get_total_count():,})"
        series[name] = (hists[name], legend)
    title = (
        f"hello app under gunicorn (2 sync workers), {http.get('tool')}, "
        f"{http.get('connections')} connections, 127.0.0.1"
    )
    return plot_latency(series, path, title)
