"""The run's summary beside the table: the same-run ratios issue 10 asks for, and notes.

The ratios are wsgi_observe's overhead over the bare app divided by the prometheus_client-
style middleware's, per interleaved round (so each compares batches run seconds apart), and
their median; beside them the same ratio in instructions per request (callgrind), which does
not move with the machine's load. The notes say where the overhead goes, how many Sentry
envelopes and access lines were really delivered, and what the run could not measure.
"""

from __future__ import annotations

from statistics import median
from typing import Any, Optional

__all__ = [
    "ABSOLUTE_TARGETS_US",
    "FRAMEWORK_TARGETS",
    "HELLO_MULTIPLE_TARGETS",
    "PEER_RATIO_TARGETS",
    "fmt_us",
    "notes",
    "ratio_lines",
    "ratios",
    "signed_us",
]

#: Issue 10: wsgi_observe's overhead as a fraction of the prometheus_client-style
#: middleware's, measured in the same run (median of the per-round ratios).
PEER_RATIO_TARGETS = {"wo_metrics": 0.40, "wo_default": 1.0}
#: Issue 18: on real apps, wsgi_observe's overhead as a fraction of the exporter a user of
#: that framework would pick (prometheus_flask_exporter, django-prometheus), same run.
FRAMEWORK_TARGETS = {"flask_wo_metrics": 0.10, "flask_wo_default": 0.40, "django_wo_metrics": 0.10}
#: Issue 18: the Flask metrics-only overhead at most this multiple of the hello app's (same run).
HELLO_MULTIPLE_TARGETS = {"flask_wo_metrics": ("wo_metrics", 2.0)}
#: Issue 6's absolute overheads (µs, on its reference machine), reported in the notes.
ABSOLUTE_TARGETS_US = {"wo_metrics": 1.0, "wo_default": 2.5}


def fmt_us(value: Optional[float]) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value / 1000:.2f} ms"
    if abs(value) >= 100:
        return f"{value:.0f} µs"
    if abs(value) >= 10:
        return f"{value:.1f} µs"
    return f"{value:.2f} µs"


def signed_us(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return ("+" if value >= 0 else "-") + fmt_us(abs(value))


def notes(
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
            f"{signed_us(dispatch)}; timing, exchange, body wrapper and record_request() "
            f"{signed_us((wm['overhead_us'] or 0.0) - dispatch)}"
        )
        if ctx["status"] == "ok" and ctx["overhead_us"] is not None:
            text += (
                "; request id, X-Request-ID and the logging context "
                f"{signed_us(ctx['overhead_us'] - (wm['overhead_us'] or 0.0))}"
            )
            if default["status"] == "ok" and default["overhead_us"] is not None:
                text += (
                    "; the JSON access line (built, serialised, buffered, written) "
                    f"{signed_us(default['overhead_us'] - ctx['overhead_us'])}"
                )
        table_row = by_id["wo_worker_table"]
        if table_row["status"] == "ok" and table_row["overhead_us"] is not None:
            text += (
                "; recording into gunicorn's memory-mapped WorkerTable instead of a list "
                f"{signed_us(table_row['overhead_us'] - (wm['overhead_us'] or 0.0))}"
            )
        notes.append(text + " (profile.txt)")
    for name, limit in ABSOLUTE_TARGETS_US.items():
        row = by_id[name]
        if row["status"] == "ok" and row["overhead_us"] is not None:
            notes.append(
                f"{name}: overhead {signed_us(row['overhead_us'])} against issue 6's absolute "
                f"{fmt_us(limit)} (set on a machine where the prometheus_client-style "
                "middleware adds ≈ +3.3 µs; this run's: "
                f"{signed_us(by_id['prometheus']['overhead_us'])})"
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
    for row in (default, by_id["wo_default_pipe"]):
        counted = (row.get("info") or {}).get("access_lines") or {}
        if row["status"] == "ok" and counted.get("requests"):
            lines, requests = counted["lines"], counted["requests"]
            notes.append(
                f"{row['id']}: {lines:,} access lines in LOG_DIR/application.log* (rotated files "
                f"included) for {requests:,} timed requests ({lines / requests:.3f} per request"
                + (
                    f"; {counted['batches_rotated_away']} batches not counted: rotated away)"
                    if counted.get("batches_rotated_away")
                    else ")"
                )
                + f"; console: {(row.get('info') or {}).get('console', '?')}"
            )
    for row in (default, by_id["flask_wo_console"], by_id["flask_wo_default"]):
        console = (row.get("info") or {}).get("console_lines") or {}
        if row["status"] == "ok" and console.get("requests"):
            notes.append(
                f"{row['id']}: {console['lines']:,} access lines on the console (the worker's "
                f"stderr, a regular file, emptied after each batch outside the timing) for "
                f"{console['requests']:,} timed requests "
                f"({console['lines'] / console['requests']:.3f} per request)"
            )
    kernel = [
        f"{row['id']} {row['kernel_median']:.2f} of {row['cpu_median']:.2f} µs"
        for row in rows
        if row["status"] == "ok"
        and row["section"] in ("request", "framework")
        and (row.get("kernel_median") or 0) >= 0.05
    ]
    if kernel:
        notes.append(
            "kernel (system) CPU time per request, median of rounds, where it is 0.05 µs or "
            "more (write() into the page cache or a pipe; the kernel's tick-sampled split): "
            + "; ".join(kernel)
        )
    piped = by_id["wo_default_pipe"]
    if default["status"] == piped["status"] == "ok" and default["overhead_us"] is not None:
        notes.append(
            "the console's copy of each line written to a pipe (drained by the suite, as "
            "systemd or Docker would) instead of a regular file: "
            f"{signed_us(piped['overhead_us'] - default['overhead_us'])} per request (a pipe "
            "is written PIPE_BUF bytes at a time, so lines of several workers never mix)"
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
    for row, server in ((wm, "wrapped"), (default, "default")):
        if server_cpu and row["status"] == "ok" and row["overhead_cpu_us"] is not None:
            per_request = median(server_cpu)
            predicted = per_request / (per_request + row["overhead_cpu_us"])
            notes.append(
                f"gunicorn {server}: throughput ratio expected from the in-process overhead "
                f"({row['id']}): {per_request:.0f} µs server CPU per bare request / "
                f"({per_request:.0f} + {row['overhead_cpu_us']:.2f}) = {predicted:.3f} "
                "(measured ratios on a shared VM swing by ±10% or more: see Spread)"
            )
    notes.extend(http.get("notes", []))
    return notes


def _instruction_ratio(
    instructions: dict[str, Any],
    name: str,
    base: str = "bare",
    peer: str = "prometheus",
    peer_base: Optional[str] = None,
) -> Optional[float]:
    """``name``'s instructions per request over ``base``, as a fraction of ``peer``'s over
    ``peer_base`` (default: the same base)."""
    try:
        bare = instructions[base]["per_request"]
        theirs = instructions[peer]["per_request"] - instructions[peer_base or base]["per_request"]
        return float((instructions[name]["per_request"] - bare) / theirs)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def ratios(rows: list[dict[str, Any]], instructions: dict[str, Any]) -> dict[str, Any]:
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
            "by_instructions": _instruction_ratio(instructions, name),
        }
    for name, limit in FRAMEWORK_TARGETS.items():
        row = by_id[name]
        rounds = row.get("peer_ratio_rounds") or []
        out[name] = {
            "of": ("prometheus_flask_exporter" if name.startswith("flask") else "django-prometheus")
            + " overhead (over the same app bare)",
            "median": row.get("peer_ratio"),
            "min": min(rounds) if rounds else None,
            "max": max(rounds) if rounds else None,
            "rounds": rounds,
            "target": limit,
            "result": row["result"],
            "by_instructions": _instruction_ratio(
                instructions,
                name,
                base=name.split("_")[0] + "_bare",
                peer="flask_exporter" if name.startswith("flask") else "django_prometheus",
            ),
        }
    for name, (hello, limit) in HELLO_MULTIPLE_TARGETS.items():
        row = by_id[name]
        rounds = row.get("hello_multiple_rounds") or []
        out[name + "_vs_hello"] = {
            "of": f"{hello} overhead (the hello app)",
            "median": row.get("hello_multiple"),
            "min": min(rounds) if rounds else None,
            "max": max(rounds) if rounds else None,
            "rounds": rounds,
            "target": limit,
            "result": row.get("hello_result"),
            "by_instructions": _instruction_ratio(
                instructions, name, base="flask_bare", peer=hello, peer_base="bare"
            ),
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


def ratio_lines(results: dict[str, Any]) -> list[str]:
    found = results.get("ratios") or {}
    lines = []
    labels = {"wo_metrics": "metrics only", "wo_default": "default configuration"}
    for name, label in labels.items():
        data = found.get(name) or {}
        if data.get("median") is None:
            lines.append(f"- {label}: no ratio ({data.get('result') or 'not measured'})")
            continue
        by_instructions = data.get("by_instructions")
        lines.append(
            f"- {label}: overhead {data['median']:.2f} x the prometheus_client-style "
            f"middleware's in CPU time (rounds {data['min']:.2f}-{data['max']:.2f}"
            + (
                f"; {by_instructions:.2f} x in instructions, callgrind"
                if by_instructions is not None
                else ""
            )
            + f"); target ≤ {data['target']:.2f}: {data['result']}"
        )
    framework_labels = {
        "flask_wo_metrics": "Flask, metrics only",
        "flask_wo_default": "Flask, defaults with the JSON file logs",
        "django_wo_metrics": "Django, metrics only (the README's way)",
        "flask_wo_metrics_vs_hello": "Flask, metrics only, against our hello-app overhead",
    }
    for name, label in framework_labels.items():
        data = found.get(name) or {}
        if not data:
            continue
        if data.get("median") is None:
            lines.append(f"- {label}: no ratio ({data.get('result') or 'not measured'})")
            continue
        by_instructions = data.get("by_instructions")
        lines.append(
            f"- {label}: overhead {data['median']:.2f} x the {data['of']} in CPU time "
            f"(rounds {data['min']:.2f}-{data['max']:.2f}"
            + (
                f"; {by_instructions:.2f} x in instructions, callgrind"
                if by_instructions is not None
                else ""
            )
            + f"); target ≤ {data['target']:.2f}: {data['result']}"
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
