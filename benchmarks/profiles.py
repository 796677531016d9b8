"""Where the time goes: the profiles kept in ``benchmarks/results/profile.txt``.

Three views, from the most stable to the most detailed:

- **Instructions per request** (callgrind, see :mod:`benchmarks.instructions`): the same on
  a quiet or a loaded machine, so the ratios between configurations can be compared from
  run to run, where CPU times move by 10% or more.
- **Bytecodes per request, by function**: every Python instruction executed while serving
  a few hundred requests (``sys.settrace`` with opcode events), divided by the requests.
  Exact, and it names the function that does the work.
- **cProfile** by own time: what the functions cost in time (cProfile's own overhead
  inflates small functions; read it for proportions).
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any, Optional

from benchmarks.frameworks import FRAMEWORK_BASES

if TYPE_CHECKING:
    from types import FrameType

    from benchmarks.harness import Subject

__all__ = ["bytecodes", "cprofile", "profile_text"]

_HARNESS = "Subject.loop"


def cprofile(subject: Subject, n: int, top: int) -> str:
    """cProfile of ``n`` requests, the ``top`` functions by own time."""
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


def bytecodes(subject: Subject, n: int) -> dict[str, Any]:
    """Python instructions executed per request, by function (the harness loop apart):
    ``n`` requests traced twice, the second time counted."""
    counts: Counter[str] = Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[f"{os.path.basename(code.co_filename)}:{code.co_qualname}"] += 1
        return trace

    # Twice: tracing slows requests down, and the histograms must first meet those
    # longer durations (new buckets), or their one-time cost would be counted as per-request.
    for _pass in ("warm-up", "counted"):
        counts.clear()
        sys.settrace(trace)
        try:
            subject.loop(n)
        finally:
            sys.settrace(None)
    if subject.drain is not None:
        subject.drain()
    harness = sum(v for k, v in counts.items() if k.endswith(_HARNESS))
    total = sum(counts.values()) - harness
    return {
        "n": n,
        "per_request": total / n,
        "harness_per_request": harness / n,
        "functions": [
            [name, count / n] for name, count in counts.most_common() if not name.endswith(_HARNESS)
        ],
    }


def _instruction_lines(instructions: dict[str, Any]) -> list[str]:
    if not instructions:
        return ["(not counted: run without --skip-instructions, with valgrind installed)"]
    if "na" in instructions:
        return [f"(not counted: {instructions['na']})"]
    counted = {k: v for k, v in instructions.items() if isinstance(v, dict) and "per_request" in v}
    bare = counted.get("bare", {}).get("per_request")
    prometheus = counted.get("prometheus", {}).get("per_request")
    lines = [f"{'configuration':<16} {'per request':>12} {'over bare':>10} {'x prometheus':>13}"]
    for name, value in instructions.items():
        if not isinstance(value, dict) or name in FRAMEWORK_BASES or name in _FRAMEWORK_BARE:
            continue
        if "per_request" not in value:
            lines.append(f"{name:<16} error: {str(value.get('error'))[:200]}")
            continue
        per = value["per_request"]
        over = per - bare if bare is not None else None
        ratio = (
            over / (prometheus - bare)
            if over is not None and prometheus is not None and name not in ("bare", "prometheus")
            else None
        )
        lines.append(
            f"{name:<16} {per:>12,.0f} "
            + (f"{over:>+10,.0f}" if over is not None else f"{'':>10}")
            + (f" {ratio:>12.2f}x" if ratio is not None else "")
        )
    steps = (
        ("dispatch (route lookup, exclusion, extra call)", "bare", "wo_excluded"),
        ("metrics (exchange, timing, record_request)", "bare", "wo_metrics"),
        ("request id, X-Request-ID, logging context", "wo_metrics", "wo_context"),
        ("the JSON access line", "wo_context", "wo_default"),
    )
    lines.append("")
    for label, before, after in steps:
        if before in counted and after in counted:
            delta = counted[after]["per_request"] - counted[before]["per_request"]
            lines.append(f"  {label}: {delta:+,.0f} ({before} -> {after})")
    return lines + _framework_instruction_lines(instructions, counted)


_FRAMEWORK_BARE = ("flask_bare", "django_bare")


def _framework_instruction_lines(
    instructions: dict[str, Any], counted: dict[str, Any]
) -> list[str]:
    """The Flask and Django rows: over their own bare app, as a fraction of the exporter's,
    and as a multiple of our overhead on the hello app."""
    names = [n for n in instructions if n in FRAMEWORK_BASES or n in _FRAMEWORK_BARE]
    if not names:
        return []
    ours_hello = None
    if "bare" in counted and "wo_metrics" in counted:
        ours_hello = counted["wo_metrics"]["per_request"] - counted["bare"]["per_request"]
    lines = [
        "",
        f"{'framework row':<18} {'per request':>12} {'over bare':>10} {'x exporter':>11}"
        f" {'x wo_metrics (hello)':>21}",
    ]
    for name in names:
        value = instructions[name]
        if "per_request" not in value:
            lines.append(f"{name:<18} error: {str(value.get('error'))[:200]}")
            continue
        per = value["per_request"]
        base, peer = FRAMEWORK_BASES.get(name, (None, None))
        over = ratio = multiple = None
        if base in counted:
            over = per - counted[base]["per_request"]
            if peer in counted and peer != name:
                theirs = counted[peer]["per_request"] - counted[base]["per_request"]
                ratio = over / theirs if theirs else None
            if ours_hello:
                multiple = over / ours_hello
        lines.append(
            f"{name:<18} {per:>12,.0f} "
            + (f"{over:>+10,.0f}" if over is not None else f"{'':>10}")
            + (f" {ratio:>10.3f}x" if ratio is not None else f" {'':>11}")
            + (f" {multiple:>20.2f}x" if multiple is not None else "")
        )
    return lines


def _bytecode_lines(name: str, data: dict[str, Any], top: int = 14) -> list[str]:
    lines = [
        f"{name}: {data['per_request']:.0f} per request (harness loop apart: "
        f"{data['harness_per_request']:.0f}), {data['n']} requests traced"
    ]
    for function, count in data["functions"][:top]:
        lines.append(f"  {count:8.1f}  {function}")
    return lines


def profile_text(results: dict[str, Any]) -> str:
    """The text of profile.txt: instructions, bytecodes by function, then cProfile."""
    out = [
        "wsgi_observe benchmark profiles "
        f"({results['mode']} run, {results['machine']['date']}, commit "
        f"{results['machine']['commit']})",
        "",
        "== Instructions per request (valgrind --tool=callgrind; the difference of two runs "
        "of N and N2 requests, so start-up cancels out; stable on a shared machine) ==",
        "",
    ]
    out += _instruction_lines(results.get("instructions") or {})
    opcodes: dict[str, Any] = results.get("bytecodes") or {}
    if opcodes:
        out += ["", "== Python bytecodes executed per request, by function ==", ""]
        for name, data in opcodes.items():
            if isinstance(data, dict) and "per_request" in data:
                out += [*_bytecode_lines(name, data), ""]
            else:
                out += [f"{name}: {data}", ""]
    for name, profile in (results.get("profiles") or {}).items():
        out += [f"== {name}: cProfile of {profile['n']:,} requests, by own time ==", ""]
        out += [profile["text"], ""]
    return "\n".join(out).rstrip() + "\n"


def top_bytecodes(data: Optional[dict[str, Any]], top: int = 6) -> str:
    """One line: the functions doing most of a configuration's bytecodes."""
    if not data or "functions" not in data:
        return ""
    functions = data["functions"][:top]
    return ", ".join(f"{name.split(':', 1)[1]} {count:.0f}" for name, count in functions)
