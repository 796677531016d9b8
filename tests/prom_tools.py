"""promtool for the tests: where it is, and backfilling OpenMetrics text through it (the
way to have Prometheus's own OpenMetrics parser read what we render)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def backfill_openmetrics(om: str, folder: Path) -> subprocess.CompletedProcess[bytes]:
    """``promtool tsdb create-blocks-from openmetrics`` over ``om`` (backfilling needs
    timestamps: every sample gets one, and the text stays valid OpenMetrics)."""
    stamped = "".join(
        line + ("\n" if line.startswith("#") else " 1759838400\n") for line in om[:-1].split("\n")
    )
    source = folder / "metrics.om"
    source.write_text(stamped, encoding="utf-8")
    return subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(folder / "b")],
        capture_output=True,
        timeout=60,
        check=False,
    )
