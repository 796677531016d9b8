"""The benchmark suite's --quick mode still runs end to end (it asserts nothing about speed),
and a wsgi_observe configuration it cannot build fails the run instead of hiding as n/a."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from benchmarks import report, run
from benchmarks.inprocess import PEERS, SUBJECTS


@pytest.mark.slow
def test_quick_benchmark_runs_and_writes_its_reports(tmp_path):
    """`benchmarks/run.py --quick` measures every configuration and writes JSON and Markdown."""
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (tmp_path / "latest.md").read_text()
    data = json.loads((tmp_path / "latest.json").read_text())
    assert "wsgi_observe, metrics only" in table
    assert "wsgi_observe, default configuration" in table
    assert "PASS" in table or "MISS" in table
    ours = [row for row in data["rows"] if row["ours"] and row["section"] != "http"]
    assert [(row["id"], row["status"]) for row in ours if row["status"] != "ok"] == []
    assert {"wo_metrics", "wo_default", "wo_sentry"} <= set(data["ratios"])
    # The framework rows (issue 18): ours measured over the same app bare, with their ratios.
    framework = {row["id"]: row for row in data["rows"] if row["section"] == "framework"}
    for name in ("flask_bare", "flask_wo_metrics", "flask_wo_default", "django_bare"):
        assert framework[name]["status"] == "ok", framework[name]["why"]
    assert framework["flask_wo_metrics"]["overhead_us"] is not None
    assert {"flask_wo_metrics", "flask_wo_default", "django_wo_metrics"} <= set(data["ratios"])
    flask_default = framework["flask_wo_default"]["info"]["access_lines"]
    assert flask_default["lines"] == flask_default["requests"] > 0
    default = next(row for row in data["rows"] if row["id"] == "wo_default")
    lines = default["info"]["access_lines"]
    assert lines["lines"] == lines["requests"] > 0
    # The console copy (the worker's stderr, a regular file emptied after each batch) is
    # counted too: every timed request wrote its line there as well.
    for row in (default, framework["flask_wo_default"], framework["flask_wo_console"]):
        console = row["info"]["console_lines"]
        assert console["lines"] == console["requests"] > 0, row["id"]
    assert default["kernel_median"] is not None and len(default["kernel_rounds"]) == 1
    # Every in-process worker ran on the one CPU chosen at the start (benchmarks/cpus.py).
    pinning = data["machine"]["cpu_pinning"]
    assert pinning["cpu"] in os.sched_getaffinity(0)
    assert set(pinning["speeds_ms"]) == {str(cpu) for cpu in os.sched_getaffinity(0)}
    assert f"in-process workers pinned to CPU {pinning['cpu']}" in table
    assert default["info"]["cpus"] == [pinning["cpu"]]


def _measured() -> dict[str, object]:
    return {"status": "ok", "wall_us": [2.0], "cpu_us": [2.0], "info": {}}


def test_a_wsgi_observe_configuration_that_cannot_be_built_fails_the_run(tmp_path, monkeypatch):
    """A wsgi_observe row in error exits 1 (a peer's error alone does not), naming the row."""
    subjects = {name: _measured() for name in SUBJECTS}
    subjects["otel"] = {"status": "error", "why": "ImportError: opentelemetry broke"}
    inproc = {"subjects": subjects, "profiles": {}, "sink": None}
    monkeypatch.setattr(run, "run_inprocess", lambda args, tmp, env: inproc)
    argv = ["--quick", "--skip-http", "--skip-memory", "--out", str(tmp_path)]
    assert run.main(argv) == 0
    assert report.broken(json.loads((tmp_path / "latest.json").read_text())) == []
    subjects["wo_default"] = {"status": "error", "why": "ModuleNotFoundError: wsgi_observe.x"}
    assert run.main(argv) == 1
    broken = report.broken(json.loads((tmp_path / "latest.json").read_text()))
    assert [row["id"] for row in broken] == ["wo_default"]
    assert "wo_default" not in PEERS


def test_kpi_benchmark_runs_and_writes_its_table(tmp_path):
    """`benchmarks/kpis.py --quick` times every KPI record and writes its table and JSON."""
    result = subprocess.run(
        [sys.executable, "benchmarks/kpis.py", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "kpis.json").read_text())
    for name in ("wo_inc", "wo_labels", "wo_observe", "mm_inc", "mm_observe", "request"):
        assert data["medians_ns"][name] >= 0
    assert "| counter.inc() |" in (tmp_path / "kpis.md").read_text()


def test_a_row_that_skipped_its_access_lines_passes_no_target():
    """A configuration that got fast by not writing its access lines (an error swallowed on
    the request path, say) is a MISS, whatever its ratio: the count must be one per request."""

    def row(lines, console):
        info = {
            "access_lines": {"lines": lines, "requests": 1000, "batches_rotated_away": 0},
            "console_lines": {"lines": console, "requests": 1000},
        }
        return {"status": "ok", "info": info}

    good, no_file, no_console = row(1000, 1000), row(0, 1000), row(1000, 999)
    for subject in (good, no_file, no_console):
        report._judge(subject, 0.9, 1.0, "overhead ≤ 1.00 x prometheus_client-style's")
    assert good["result"] == "PASS"
    assert no_file["result"] == "MISS" and "0 access lines in LOG_DIR" in no_file["target"]
    assert no_console["result"] == "MISS"
    assert "999 access lines in the console" in no_console["target"]


def test_the_fixed_millisecond_of_the_instruction_count_holds(monkeypatch):
    """``--fixed-millisecond``: every later access line falls in the held millisecond (so a
    count under callgrind does no timestamp work), and the flusher's tick cannot end it."""
    from benchmarks.inprocess import _hold_the_millisecond
    from wsgi_observe.logs import access, files

    monkeypatch.setattr(files, "tick_hooks", list(files.tick_hooks))
    monkeypatch.setattr(access, "_now", access._now)
    _hold_the_millisecond()
    first, after, _stamp, _head = access._now
    assert first < 0 < 10**15 < after
    assert access._resync_clock not in files.tick_hooks


def test_cpu_choice_is_checked_and_a_pinned_worker_pins_its_later_threads():
    """``--cpu``: a bad value is one clear line; a worker pinned at its start runs every
    thread it starts afterwards (the log flusher, Sentry's transport) on that CPU only."""
    from benchmarks import cpus

    for bad in ("x", "-1", "99999"):
        with pytest.raises(ValueError, match="--cpu"):
            cpus.check(bad)
    assert cpus.choose("none")["cpu"] is None
    allowed = sorted(os.sched_getaffinity(0))
    chosen = cpus.choose("fastest")
    assert chosen["cpu"] in allowed and len(chosen["speeds_ms"]) == len(allowed)
    assert os.sched_getaffinity(0) == set(allowed)  # timing the CPUs put this process back
    last = allowed[-1]
    code = (
        "import os, threading\n"
        "from benchmarks import cpus\n"
        f"cpus.pin({last})\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))\n"
        "t.start(); t.join()\n"
        "print(sorted(os.sched_getaffinity(0)), sorted(seen[0]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == [f"[{last}]", f"[{last}]"], done.stderr
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--cpu", "banana"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--cpu 'banana': expected 'fastest', 'none' or a CPU number" in result.stderr
