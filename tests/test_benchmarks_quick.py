"""The benchmark suite's --quick mode still runs end to end (it asserts nothing about speed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


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
    assert "PASS" in table or "MISS" in table
    assert data
