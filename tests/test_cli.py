"""The command line: the demo under real gunicorn, and the uptimerobot dispatch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest
from conftest import ROOT, free_port, http_get, stop_process, wait_until

from wsgi_observe.cli import main


@pytest.mark.slow
def test_demo_serves_the_crm_api_under_gunicorn(tmp_path):
    """`python -m wsgi_observe demo` answers the API, the probes and /metrics."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEMO_DB": str(tmp_path / "demo.sqlite3")}
    for key in ("SENDGRID_API_KEY", "TWILIO_AUTH_TOKEN"):
        env.pop(key, None)
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "wsgi_observe", "demo", "--port", str(port), "--workers", "2"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_get(base + "/health/live", timeout=1)[0] == 200, timeout=30)
            status, _, body = http_get(base + "/api/leads/3")
            assert status == 200 and json.loads(body)["id"] == 3
            assert http_get(base + "/api/boom")[0] == 500
            status, _, body = http_get(base + "/health/ready")
            ready = json.loads(body)
            assert ready["checks"]["database"]["status"] == "healthy"
            # Ready out of the box: the missing SendGrid and Twilio keys are optional checks.
            assert (status, ready["status"]) == (200, "degraded")
            sendgrid = ready["checks"]["external_services"]["sendgrid"]
            assert (sendgrid["status"], sendgrid["required"]) == ("degraded", False)
            doc = json.loads(http_get(base + "/metrics")[2])
            assert doc["application"]["requests"]["total"] == 2
            assert doc["endpoints"]["/api/leads/<int:lead_id>"]["requests"] == 1
            assert doc["endpoints"]["/api/boom"]["errors"] == 1
        finally:
            stop_process(process, timeout=20, group=True)


def test_version_flag(capsys):
    """--version prints the package version."""
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert "wsgi_observe" in capsys.readouterr().out


def test_uptimerobot_setup_without_a_key_exits_2(monkeypatch, capsys):
    """The uptimerobot command is wired in: a missing key is a configuration error."""
    monkeypatch.delenv("UPTIMEROBOT_API_KEY", raising=False)
    monkeypatch.setenv("APP_BASE_URL", "https://api.example.com")
    assert main(["uptimerobot", "setup", "--dry-run"]) == 2
    assert "UPTIMEROBOT_API_KEY" in capsys.readouterr().err
