"""``/metrics/dashboard`` in a real browser: headless Chromium (Debian's ``chromium``) loads
the page from the demo under a real gunicorn (two workers, our config module), dumps the DOM
and takes a screenshot (issue 14).

One server for the module, with a metrics token that the browser sends as ``?token=``
(``WSGI_OBSERVE_METRICS_TOKEN_IN_QUERY``: a browser cannot send the header). Every wait has
a deadline; every process is stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import urllib.parse
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Optional

import pytest
from conftest import Gunicorn, http_get, wait_until

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium")
TOKEN = "dash-9c1e5f27"
HOSTILE = "/<script>alert(1)</script>"
HEADINGS = ("Overview", "Endpoints", "Timed functions", "Readiness", "Workers", "System", "KPIs")
_BROWSER_TIMEOUT_S = 60.0  # a generous bound: a page load takes about a second


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """The demo under gunicorn with some traffic: every route, an error, a hostile name, and
    one readiness probe."""
    env = {
        "DEMO_DB": str(tmp_path_factory.mktemp("demo") / "demo.sqlite3"),
        "WSGI_OBSERVE_METRICS_TOKEN": TOKEN,
        "WSGI_OBSERVE_METRICS_TOKEN_IN_QUERY": "true",
    }
    server = Gunicorn("tests.apps.dashboard_demo:app", "-w", "2", env=env)
    try:
        server.wait_ready()
        paths = ["/api/leads", "/api/customers", "/api/leads/3", "/api/leads/statistics"]
        for path in paths * 3 + ["/api/boom"]:
            server.get(path)
        server.get("/catchall" + urllib.parse.quote(HOSTILE))
        wait_until(lambda: server.get("/health/ready")[0] == 200, timeout=20)
        yield server
    finally:
        server.stop()


def chromium(*args: str) -> subprocess.CompletedProcess[bytes]:
    """One headless Chromium run (its own profile folder), bounded in time; its stderr
    carries the page's console messages (``--enable-logging=stderr``)."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (scripts/test installs Debian's package)")
    profile = tempfile.mkdtemp(prefix="wsgi_observe-chromium-")
    try:
        return subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",  # root in CI: Chromium refuses its sandbox there
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--enable-logging=stderr",
                "--v=0",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            timeout=_BROWSER_TIMEOUT_S,
            check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Dom(HTMLParser):
    """Chromium's serialised DOM: elements, heading texts and all text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.headings: list[str] = []
        self.text: list[str] = []
        self._in: Optional[str] = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.tags.append(tag)
        if tag in ("h1", "h2"):
            self._in = tag
            self.headings.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in is not None:
            self.headings[-1] += data


def page_url(server: Gunicorn, query: str = "") -> str:
    return f"{server.url}/metrics/dashboard?token={TOKEN}{'&' + query if query else ''}"


class Browsed:
    """What one Chromium run made of the page: the DOM, the console, the screenshot."""

    def __init__(self, run: subprocess.CompletedProcess[bytes], screenshot: bytes) -> None:
        self.dom = Dom(run.stdout.decode("utf-8"))
        self.console = run.stderr.decode("utf-8", "replace")
        self.screenshot = screenshot


@pytest.fixture(scope="module")
def browsed(demo: Gunicorn, tmp_path_factory: pytest.TempPathFactory) -> Browsed:
    """One Chromium run: the page's DOM dumped and a screenshot taken."""
    shot = tmp_path_factory.mktemp("screenshot") / "dashboard.png"
    run = chromium("--window-size=1280,1400", f"--screenshot={shot}", "--dump-dom", page_url(demo))
    assert run.returncode == 0, run.stderr.decode("utf-8", "replace")[-2000:]
    return Browsed(run, shot.read_bytes())


def test_chromium_renders_the_page_with_every_section_and_no_policy_violation(
    browsed: Browsed,
) -> None:
    """The DOM Chromium builds has the service, every section's heading and the demo's
    endpoints; the browser reports no Content-Security-Policy violation (the style's hash
    matches, nothing else tries to load or run)."""
    dom = browsed.dom
    assert dom.headings[0] == "iSwitch Roofs CRM API"
    assert list(dom.headings[1:]) == list(HEADINGS)
    text = "".join(dom.text)
    for name in ("/api/leads", "/api/customers", "/api/leads/<int:lead_id>", "/api/boom"):
        assert name in text
    assert "database" in text and "Database connection successful" in text
    assert text.count("worker") >= 2  # both gunicorn workers, with the master
    assert "Content Security Policy" not in browsed.console, browsed.console[-3000:]


def test_a_hostile_endpoint_name_shows_as_text_in_the_browser(browsed: Browsed) -> None:
    """An endpoint named ``/<script>alert(1)</script>`` is text in the DOM: the browser made
    no script element of it."""
    assert "script" not in browsed.dom.tags
    assert HOSTILE in "".join(browsed.dom.text)


def _png_rows(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the (filtered) scanlines of a non-interlaced 8-bit PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat = 8, []
    width = height = channels = 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            idat.append(chunk)
        position += 12 + length
    raw = zlib.decompress(b"".join(idat))
    stride = 1 + width * channels
    return width, height, [raw[i : i + stride] for i in range(0, len(raw), stride)]


def test_a_screenshot_of_the_page_is_not_blank(browsed: Browsed) -> None:
    """Chromium's screenshot has the window's size and is far from blank: a blank page has a
    handful of distinct scanlines, this one hundreds (text, tables, badges)."""
    width, height, rows = _png_rows(browsed.screenshot)
    assert (width, height) == (1280, 1400)
    assert len(set(rows)) > 200


def _logged(log_dir: str) -> str:
    return "".join(
        Path(log_dir, name).read_text("utf-8", "replace") for name in sorted(os.listdir(log_dir))
    )


def test_the_token_never_reaches_the_servers_output_or_logs(demo: Gunicorn) -> None:
    """The token the browser sent in the URL is in no log line: not in gunicorn's output
    (its access log is off) nor in the log files, where a request to the app with a
    ``token`` query value (sent after the page, so its line proves the files are written)
    shows it redacted."""
    assert http_get(page_url(demo))[0] == 200
    assert http_get(f"{demo.url}/metrics/dashboard?token=wrong")[0] == 401
    assert demo.get(f"/api/customers?token={TOKEN}")[0] == 200
    log_dir = demo.log_dir or ""
    wait_until(lambda: "/api/customers?token=[redacted]" in _logged(log_dir), timeout=20)
    assert TOKEN not in _logged(log_dir)
    assert TOKEN not in demo.output()
