"""``/metrics/dashboard``: one self-contained HTML page (issue 14), in-process.

The page is parsed with the standard library's HTML parser, as a browser would tokenise it:
what a hostile name could inject (an element, an attribute) is looked for in the parsed
tree, not in the raw text. The real browser test is ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import pytest
from wsgi_client import call, environ_for, run

from wsgi_observe import ObservabilityMiddleware, checks, configure_logging, logs
from wsgi_observe.config import Config, ConfigError
from wsgi_observe.exposition import html_view
from wsgi_observe.exposition.html import (
    CONTENT_SECURITY_POLICY,
    DashboardView,
    render_dashboard,
    sparklines,
)
from wsgi_observe.histograms import highest_equivalent
from wsgi_observe.metrics import MetricsStore, SeriesData, Snapshot
from wsgi_observe.windows import WindowError

HOSTILE = "/<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


class Page(HTMLParser):
    """The page as a browser's tokeniser sees it: elements with attributes, text by element."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, Optional[str]]]] = []
        self.text: list[str] = []
        self.style: list[str] = []
        self._stack: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        while self._stack and self._stack.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self._stack and self._stack[-1] == "style":
            self.style.append(data)
        else:
            self.text.append(data)

    def tags(self, name: str) -> list[dict[str, Optional[str]]]:
        return [attrs for tag, attrs in self.elements if tag == name]

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def endpoint_names(html: str) -> list[str]:
    """The endpoint table's names, in the order shown."""
    section = html.split('id="endpoints"', 1)[1].split("<h2", 1)[0]
    body = section.split("<tbody>", 1)[1]
    names = re.findall(r'<tr><td class="name">(.*?)</td>', body)
    return [Page(name).all_text for name in names]


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    status = environ.get("test.status", "200 OK")
    start_response(status, [("Content-Type", "text/plain")])
    return [b"ok"]


def middleware(**overrides: Any) -> ObservabilityMiddleware:
    overrides.setdefault("access_log", False)
    overrides.setdefault("log_handlers", False)
    return ObservabilityMiddleware(hello, store=MetricsStore(), **overrides)


def send(app: ObservabilityMiddleware, name: str, times: int = 1, status: str = "200 OK") -> None:
    for _ in range(times):
        run(app, environ_for("/x", **{"wsgi_observe.endpoint": name, "test.status": status}))


def page_of(app: ObservabilityMiddleware, query: str = "", **kwargs: Any) -> tuple[Any, str]:
    response = call(app, "/metrics/dashboard", query=query, **kwargs)
    return response, response.body.decode("utf-8")


# The page and its headers -----------------------------------------------------------------


def test_the_page_is_html_with_a_strict_policy_and_no_store() -> None:
    """200, HTML, ``no-store``, ``nosniff``, no framing, no Referer, and a CSP that lets
    nothing load or run but the page's own style."""
    app = middleware()
    send(app, "/api/leads", 3)
    response, _ = page_of(app)
    assert response.code == 200
    assert response.header("Content-Type") == "text/html; charset=utf-8"
    assert response.header("Cache-Control") == "no-store"
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.header("X-Frame-Options") == "DENY"
    assert response.header("Referrer-Policy") == "no-referrer"
    assert response.header("Content-Length") == str(len(response.body))
    policy = dict(
        [*part.split(" ", 1), ""][:2]
        for part in (p.strip() for p in response.header("Content-Security-Policy").split(";"))
    )
    assert policy["default-src"] == "'none'"
    assert policy["img-src"] == "data:"
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert "script-src" not in policy  # default-src 'none': no script at all
    assert "unsafe" not in response.header("Content-Security-Policy")
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]+=*'", policy["style-src"])


def test_the_style_hash_in_the_policy_is_the_pages_one_style_element() -> None:
    """The CSP's style hash is the SHA-256 of the page's only ``<style>``: the browser
    applies it (a stale hash would leave the page unstyled)."""
    _, html = page_of(middleware())
    page = Page(html)
    assert len(page.tags("style")) == 1
    digest = base64.b64encode(hashlib.sha256("".join(page.style).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in CONTENT_SECURITY_POLICY


def test_the_page_is_self_contained() -> None:
    """No script, no external style sheet, font or image: every URL in the page is a
    ``data:`` URL or a link to the page itself (a query)."""
    app = middleware()
    send(app, "/api/leads", 2)
    _, html = page_of(app)
    page = Page(html)
    assert page.tags("script") == [] and page.tags("iframe") == [] and page.tags("img") == []
    assert "@import" not in "".join(page.style) and "url(" not in "".join(page.style)
    for tag, attrs in page.elements:
        for name in ("src", "href", "action", "xlink:href", "data"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "?")), (tag, name, value)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "style" not in attrs, (tag, attrs)  # style attributes would need 'unsafe-inline'
    assert page.tags("link") == [{"rel": "icon", "href": "data:,"}]


def test_the_page_shows_service_version_uptime_and_every_section() -> None:
    """Service, version and uptime up top, then the sections in order."""
    app = middleware(service_name="CRM API", version="2.4.1")
    send(app, "/api/leads")
    _, html = page_of(app)
    page = Page(html)
    headings = [attrs.get("id") for attrs in page.tags("h2")]
    assert headings == ["overview", "endpoints", "readiness", "workers", "system", "kpis"]
    text = page.all_text
    assert "CRM API" in text and "2.4.1" in text
    assert re.search(r"up \d+s", text)


def test_head_answers_with_the_same_headers_and_no_body() -> None:
    """HEAD: the status and headers of GET (Content-Length of the page), no body."""
    app = middleware()
    get, _ = page_of(app)
    head = call(app, "/metrics/dashboard", method="HEAD")
    assert head.code == 200 and head.body == b""
    assert head.header("Content-Type") == get.header("Content-Type")
    assert head.header("Content-Security-Policy") == get.header("Content-Security-Policy")
    assert int(head.header("Content-Length")) > 1000


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "BREW"])
def test_other_methods_get_405_with_allow(method: str) -> None:
    """Like our other paths: 405 with ``Allow: GET, HEAD``."""
    response = call(middleware(), "/metrics/dashboard", method=method, validate=False)
    assert response.code == 405
    assert response.header("Allow") == "GET, HEAD"
    assert response.header("Cache-Control") == "no-store"


def test_the_dashboard_is_not_counted_as_traffic_and_cannot_be_taken_over() -> None:
    """Our own page never shows in the numbers, and ``add_route`` can't replace it."""
    app = middleware()
    page_of(app)
    send(app, "/api/leads")
    document = json.loads(call(app, "/metrics").body)
    assert list(document["endpoints"]) == ["/api/leads"]
    with pytest.raises(ValueError, match="answered by wsgi_observe"):
        app.add_route("/metrics/dashboard", hello)


# Escaping ---------------------------------------------------------------------------------


def test_a_hostile_endpoint_name_shows_as_text() -> None:
    """An endpoint named ``/<script>...`` (clients choose paths) is text in the table and in
    the sparklines' labels: no element or attribute comes out of it."""
    app = middleware()
    send(app, HOSTILE, 3)
    app.routes.windows = FakeWindows(app)
    _, html = page_of(app)
    page = Page(html)
    assert page.tags("script") == [] and page.tags("img") == []
    assert HOSTILE in page.all_text
    labels = [attrs.get("aria-label") or "" for attrs in page.tags("svg")]
    assert any(HOSTILE in label for label in labels)  # the attribute holds it, as text
    assert all(
        set(attrs) <= {"class", "width", "height", "viewbox", "role", "aria-label"}
        for attrs in page.tags("svg")
    )


def test_hostile_service_check_and_kpi_values_show_as_text() -> None:
    """The service name, check names and messages, and KPI names and label values are all
    escaped; control characters are shown as escapes."""
    app = middleware(
        service_name="<b>CRM</b>",
        checks={
            "<i>db</i>": lambda: {"status": "unhealthy", "message": "<img src=x onerror=alert(1)>"},
            "external": checks.optional({"<u>mail</u>": lambda: False}),
        },
    )
    call(app, "/health/ready")
    view = app.routes.dashboard_view()
    view.kpis = {
        "<s>leads</s>": {
            "type": "counter",
            "description": "<em>new leads</em>",
            "series": [{"labels": {"source": '<script>alert("k")</script>'}, "value": 3}],
        },
        "bell\x07": 1,
    }
    page = Page(render_dashboard(view).decode())
    for tag in ("i", "img", "u", "s", "em", "script"):
        assert page.tags(tag) == [], tag
    text = page.all_text  # a hostile "<b>" the parser took for an element would be missing
    for shown in (
        "<b>CRM</b>",
        "<i>db</i>",
        "<img src=x onerror=alert(1)>",
        "<u>mail</u>",
        "<s>leads</s>",
        "<em>new leads</em>",
        'source=<script>alert("k")</script>',
        "bell\\x07",
    ):
        assert shown in text, shown
    assert "<title><b>CRM</b>" not in render_dashboard(view).decode()


def test_bidirectional_controls_in_names_show_as_escapes() -> None:
    """An endpoint or KPI label value holding a right-to-left override (clients choose paths
    and label values) can't reorder what the page shows after it: every bidirectional
    control is shown as an escape, like control characters."""
    app = middleware()
    send(app, "/files/\u202egnp.exe", 2)
    view = app.routes.dashboard_view()
    view.kpis = {
        "leads": {
            "type": "counter",
            "series": [{"labels": {"source": "ad\u2067\u200fs"}, "value": 3}],
        }
    }
    html = render_dashboard(view).decode()
    bidi = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
    assert not bidi & {ord(c) for c in html}
    text = Page(html).all_text
    assert "/files/\\u202egnp.exe" in text
    assert "source=ad\\u2067\\u200fs" in text


# Sorting, periods, refresh ----------------------------------------------------------------


def _document(endpoints: dict[str, tuple[int, int, float]]) -> dict[str, Any]:
    return {
        "application": {"requests": {"total": 0}, "response_times": {}, "uptime_seconds": 60},
        "endpoints": {
            name: {
                "requests": requests,
                "errors": errors,
                "error_rate": errors / requests,
                "p50": p99 / 2,
                "p95": p99,
                "p99": p99,
            }
            for name, (requests, errors, p99) in endpoints.items()
        },
    }


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        pytest.param("traffic", ["/b", "/a", "/c", "/d"], id="traffic"),
        pytest.param("errors", ["/c", "/a", "/b", "/d"], id="errors"),
        pytest.param("p99", ["/d", "/c", "/a", "/b"], id="p99"),
    ],
)
def test_the_endpoint_table_sorts_by_traffic_errors_or_p99(sort: str, order: list[str]) -> None:
    """Each sort is descending; ties go by name."""
    document = _document(
        {"/a": (50, 2, 0.1), "/b": (90, 1, 0.05), "/c": (10, 5, 0.2), "/d": (10, 0, 1.5)}
    )
    view = DashboardView("svc", "1", {"all": document}, sort=sort)
    assert endpoint_names(render_dashboard(view).decode()) == order


def test_sort_links_work_without_javascript_and_keep_the_other_choices() -> None:
    """The headers are links (``?sort=...``) that keep the period and refresh chosen."""
    app = middleware()
    send(app, "/a", 2)
    send(app, "/b", 1, status="500 Internal Server Error")
    _, html = page_of(app, "sort=errors&refresh=30")
    assert endpoint_names(html) == ["/b", "/a"]
    links = [parse_qs(urlsplit(a["href"] or "").query) for a in Page(html).tags("a")]
    sorts = [link for link in links if link["sort"] != ["errors"]]
    assert {link["sort"][0] for link in sorts} == {"traffic", "p99"}
    assert all(link["refresh"] == ["30"] for link in sorts)


def test_refresh_is_a_meta_refresh_only_when_asked() -> None:
    """No reload by default; ``?refresh=10`` reloads every 10 s, with JavaScript off too."""
    app = middleware()
    assert Page(page_of(app)[1]).tags("meta")[-1].get("http-equiv") != "refresh"
    metas = Page(page_of(app, "refresh=10")[1]).tags("meta")
    assert {"http-equiv": "refresh", "content": "10"} in metas


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("sort=name", id="sort"),
        pytest.param("window=2h", id="window"),
        pytest.param("refresh=7", id="refresh"),
        pytest.param("refresh=-1", id="refresh-negative"),
        pytest.param("&".join(f"x{i}=1" for i in range(40)), id="too-many-fields"),
    ],
)
def test_a_bad_choice_gets_400_with_one_line(query: str) -> None:
    """A value the page does not offer is a 400 with a one-line message, never a 500."""
    response, body = page_of(middleware(), query)
    assert response.code == 400
    message = json.loads(body)["error"]
    assert message and "\n" not in message


# Recent windows and sparklines ------------------------------------------------------------


class FakeWindows:
    """A stand-in for the recent windows: every window is the numbers so far, and the
    series is 15 steps of which the first has no requests."""

    enabled = True
    interval_s = 10.0
    span_s = 900.0

    def __init__(self, app: ObservabilityMiddleware) -> None:
        self.app = app

    def window_snapshot_for(self, seconds: float, now: Optional[Snapshot] = None) -> Snapshot:
        if seconds > 900:
            raise WindowError("longer than kept")
        return self.app.store.snapshot()

    def series(
        self, step_s: float = 60, span_s: float = 900, now: Optional[Snapshot] = None
    ) -> list[tuple[float, Snapshot]]:
        at = time.time()
        empty = Snapshot({}, {}, 0, at, at)
        steps = int(span_s // step_s)
        return [(at - span_s + step_s, empty)] + [
            (at - span_s + step_s * (i + 1), self.app.store.snapshot()) for i in range(1, steps)
        ]

    def tick(self, snapshot: Optional[Snapshot] = None) -> bool:
        return False


def test_overview_says_when_windows_are_not_kept() -> None:
    """With recent windows off (``window_span=0``) the 1/5/15 minute rows say "not kept",
    the table shows the numbers since start and there are no sparklines."""
    app = middleware(window_span=0)
    send(app, "/api/leads", 4)
    _, html = page_of(app)
    assert html.count("not kept") == 3
    assert "<b>since start</b>" in html
    assert Page(html).tags("polyline") == []


def test_overview_and_table_show_the_recent_windows() -> None:
    """The real ring (a test clock, one snapshot a minute): the 1, 5 and 15 minute rows count
    only their minutes, the table shows the last 15 minutes by default, and each endpoint's
    sparklines have one point a minute."""
    now = [1_000_000.0]
    app = middleware(clock=lambda: now[0])
    send(app, "/api/old", 7)  # before the 15 minutes the page shows
    app.windows.tick()
    for minute in range(16):
        now[0] += 60.0
        send(app, "/api/leads", 1 + minute % 3)
        app.windows.tick()
    send(app, "/api/leads", 5)  # the current, unfinished step
    _, html = page_of(app)
    overview = {
        row[0]: row[1]
        for row in (
            [Page(cell).all_text for cell in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
            for tr in html.split('id="overview"', 1)[1].split("</table>", 1)[0].split("<tr>")[2:]
        )
    }
    # Minute m sent 1 + m % 3 before the snapshot at its end; the clock stands at the last
    # one, so a window of W minutes holds minutes 16 - W to 15, and the 5 sent since.
    for label, minutes in (("last 1 min", 1), ("last 5 min", 5), ("last 15 min", 15)):
        assert overview[label] == str(5 + sum(1 + m % 3 for m in range(16 - minutes, 16)))
    assert overview["since start"] == str(7 + 5 + sum(1 + m % 3 for m in range(16)))
    assert "<b>last 15 min</b>" in html
    rate_points = [a["points"] for a in Page(html).tags("polyline") if a.get("class") == "rate"]
    assert len(rate_points) == 2  # /api/leads, and /api/old (flat at 0)
    # The whole minutes the ring reaches back to in 15 minutes, and the newest, shorter step:
    # the same points for the idle endpoint (flat at 0) as for the busy one.
    drawn = [len((points or "").split()) for points in rate_points]
    assert drawn[0] == drawn[1] and 14 <= drawn[0] <= 16


def test_each_endpoint_has_p95_and_rate_sparklines() -> None:
    """Two inline SVG lines per endpoint; a step without requests is a gap in the p95 line."""
    app = middleware()
    send(app, "/api/leads", 2)
    send(app, "/api/customers", 1)
    app.routes.windows = FakeWindows(app)
    _, html = page_of(app)
    page = Page(html)
    classes = [attrs.get("class") for attrs in page.tags("polyline")]
    assert classes.count("p95") == 2 and classes.count("rate") == 2
    rate_points = [a["points"] for a in page.tags("polyline") if a.get("class") == "rate"]
    # 15 steps of a whole minute back from the last whole minute, and the newest, shorter one
    # (the clock stands 40 s past a whole minute) when it has any point of its own.
    assert all(len((points or "").split()) == 15 for points in rate_points)
    p95_points = [a["points"] for a in page.tags("polyline") if a.get("class") == "p95"]
    assert all(len((points or "").split()) == 14 for points in p95_points)


def test_sparklines_turn_steps_into_points() -> None:
    """p95 (seconds) and rate (per second) of each step; no requests: rate 0, no p95."""
    busy = SeriesData(count=120, hist={1000: 120})
    steps = [
        (60.0, Snapshot({"/a": busy}, {}, 0, 0.0, 60.0)),
        (120.0, Snapshot({}, {}, 0, 0.0, 120.0)),
    ]
    lines = sparklines(steps, 60.0)
    assert lines["/a"].rate == [2.0, 0.0]
    assert lines["/a"].p95[1] is None
    assert lines["/a"].p95[0] == highest_equivalent(1000) / 1e6


# The token --------------------------------------------------------------------------------


def test_the_dashboard_needs_the_metrics_token() -> None:
    """With ``metrics_token``: 401 without it, 200 with the bearer header; a ``?token=`` is
    ignored unless ``metrics_token_in_query`` is on."""
    app = middleware(metrics_token="s3cret")
    assert page_of(app)[0].code == 401
    assert page_of(app, headers={"Authorization": "Bearer s3cret"})[0].code == 200
    assert page_of(app, "token=s3cret")[0].code == 401
    assert call(app, "/metrics", query="token=s3cret").code == 401


def test_token_in_query_when_opted_in_and_every_link_keeps_it() -> None:
    """With ``metrics_token_in_query``, a browser opens ``?token=...``; a wrong one is 401;
    the page's links carry the token so sorting keeps working."""
    app = middleware(metrics_token="s3cret", metrics_token_in_query=True)
    assert page_of(app, "token=wrong")[0].code == 401
    assert page_of(app, "token=")[0].code == 401
    response, html = page_of(app, "token=s3cret&sort=p99")
    assert response.code == 200
    links = [parse_qs(urlsplit(a["href"] or "").query) for a in Page(html).tags("a")]
    assert links and all(link.get("token") == ["s3cret"] for link in links)
    assert call(app, "/metrics", query="token=s3cret").code == 401  # the page only


def test_a_token_in_the_url_never_reaches_a_log_line(tmp_path: Path) -> None:
    """The dashboard is never logged; a ``token`` query value on any other path is redacted."""
    console = io.StringIO()
    configure_logging("DEBUG", log_dir=tmp_path, stream=console, fmt="json")
    app = ObservabilityMiddleware(
        hello, store=MetricsStore(), metrics_token="tok-9f8e7d", metrics_token_in_query=True
    )
    assert page_of(app, "token=tok-9f8e7d")[0].code == 200
    call(app, "/api/leads", query="token=tok-9f8e7d")
    logs.flush()
    written = (tmp_path / "application.log").read_text("utf-8") + console.getvalue()
    assert "/api/leads?token=[redacted]" in written
    assert "tok-9f8e7d" not in written and "dashboard" not in written


def test_metrics_token_in_query_is_read_from_the_environment() -> None:
    """``WSGI_OBSERVE_METRICS_TOKEN_IN_QUERY`` takes a boolean; anything else is refused."""
    assert Config.from_env({"WSGI_OBSERVE_METRICS_TOKEN_IN_QUERY": "true"}).metrics_token_in_query
    assert not Config.from_env({}).metrics_token_in_query
    with pytest.raises(ConfigError, match="WSGI_OBSERVE_METRICS_TOKEN_IN_QUERY"):
        Config.from_env({"WSGI_OBSERVE_METRICS_TOKEN_IN_QUERY": "maybe"})


# Workers, readiness, KPIs -----------------------------------------------------------------


def test_readiness_shows_the_last_result_without_running_the_checks() -> None:
    """Before any probe the page says so; afterwards it shows each check's last result. The
    page itself never runs a check."""
    runs: list[int] = []

    def database() -> bool:
        runs.append(1)
        return True

    app = middleware(checks={"database": database})
    assert "No readiness probe has run yet" in page_of(app)[1]
    assert runs == []
    call(app, "/health/ready")
    _, html = page_of(app)
    assert len(runs) == 1
    section = Page(html.split('id="readiness"', 1)[1].split("<h2", 1)[0]).all_text
    assert "database" in section and "healthy" in section


def test_workers_show_this_process_when_alone() -> None:
    """Outside gunicorn the one process is shown with its RSS and CPU."""
    _, html = page_of(middleware())
    section = Page(html.split('id="workers"', 1)[1].split("<h2", 1)[0]).all_text
    assert str(os.getpid()) in section and "MB" in section


def test_kpis_render_as_rows_with_their_figures() -> None:
    """KPIs come from the JSON document's ``kpis``: one row per labelled series, with the
    counter's value or the distribution's count and percentiles (in the KPI's unit)."""
    kpis = {
        "leads_created": {
            "type": "counter",
            "help": "Leads created",
            "labels": ["source"],
            "total": 15,
            "series": [
                {"labels": {"source": "website"}, "value": 12},
                {"labels": {"source": "ads"}, "value": 3},
            ],
        },
        "open_customers": {
            "type": "gauge",
            "help": "",
            "labels": [],
            "series": [{"labels": {}, "value": 20}],
        },
        "lead_score": {
            "type": "distribution",
            "help": "Lead score",
            "unit": "points",
            "labels": [],
            "count": 5,
            "series": [
                {
                    "labels": {},
                    "count": 5,
                    "sum": 300,
                    "avg": 60.0,
                    "p50": 40,
                    "p95": 90,
                    "p99": 90,
                    "max": 90,
                }
            ],
        },
    }
    view = DashboardView("svc", "1", {"all": _document({})}, kpis=kpis)
    section = render_dashboard(view).decode().split('id="kpis"', 1)[1]
    rows = [
        [Page(cell).all_text for cell in row.split("<td")[1:]]
        for row in section.split("</thead>", 1)[1].split("</tbody>", 1)[0].split("<tr>")[1:]
    ]
    cells = [[cell.split(">", 1)[-1] for cell in row] for row in rows]
    # KPI, series, value, count, avg, p50, p95, p99, max
    assert cells[0][0].startswith("leads_created counter") and "Leads created" in cells[0][0]
    assert cells[0][1:3] == ["all", "15"]
    assert cells[1][1:3] == ["source=website", "12"]
    assert cells[2][1:3] == ["source=ads", "3"]
    assert cells[3][0].startswith("open_customers gauge") and cells[3][2] == "20"
    assert cells[4][0].startswith("lead_score distribution points")
    assert cells[4][3:] == ["5", "60", "40", "90", "90", "90"]


def test_kpis_of_another_shape_still_render() -> None:
    """A KPI block of a shape the page does not know is shown flattened, escaped."""
    kpis = {"odd<i>": {"type": "custom", "buckets": {"a": {"n": 1}}, "note": "<b>x</b>"}, "n": 2}
    view = DashboardView("svc", "1", {"all": _document({})}, kpis=kpis)
    page = Page(render_dashboard(view).decode().split('id="kpis"', 1)[1])
    assert page.tags("i") == []
    text = page.all_text
    assert "odd<i>" in text and "note <b>x</b>" in text and "buckets / a" in text


@pytest.mark.parametrize(
    ("settings", "points", "label"),
    [
        pytest.param({"window_span": "5m"}, 5, "last 5 min", id="span-5m"),
        pytest.param({"window_span": "30m", "window_interval": "2m"}, 7, "last 14 min", id="2m"),
    ],
)
def test_sparklines_follow_what_the_ring_keeps(
    settings: dict[str, str], points: int, label: str
) -> None:
    """A ring that keeps less than 15 minutes gives shorter sparklines; snapshots further
    apart than a minute give one point each."""
    now = [1_000_000.0]
    app = middleware(clock=lambda: now[0], **settings)
    for _ in range(40):  # more than the span kept
        send(app, "/api/leads", 2)
        app.windows.tick()
        now[0] += app.windows.interval_s
    _, html = page_of(app)
    rate = [a["points"] for a in Page(html).tags("polyline") if a.get("class") == "rate"]
    (drawn,) = [len((p or "").split()) for p in rate]
    # The whole steps the ring reaches back to, and the newest one that runs on to now.
    assert points - 1 <= drawn <= points + 1
    assert f"p95, {label}" in Page(html).all_text


def test_a_ring_that_fails_leaves_the_page_without_windows(
    _raise_guarded_errors: list[BaseException],
) -> None:
    """A ring that raises (a state file gone bad) costs the page what it could not read
    (here the sparklines), never the answer: 200, the endpoints, the error logged."""
    app = middleware()
    send(app, "/api/leads", 3)

    class Broken(FakeWindows):
        def series(self, *args: Any, **kwargs: Any) -> list[tuple[float, Snapshot]]:
            raise OSError("state file unreadable")

    app.routes.windows = Broken(app)
    response, html = page_of(app)
    assert response.code == 200
    assert endpoint_names(html) == ["/api/leads"]
    assert Page(html).tags("polyline") == []
    assert [type(error) for error in _raise_guarded_errors] == [OSError]
    _raise_guarded_errors.clear()


def test_sparklines_compute_a_finished_step_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a memo, a step handed out again (the ring reuses finished steps) is not
    computed again; only new steps are, and the memo keeps just the current ones."""
    computed: list[object] = []
    real = html_view.step_points

    def counting(snapshot: Any) -> Any:
        computed.append(snapshot)
        return real(snapshot)

    monkeypatch.setattr(html_view, "step_points", counting)
    steps = [
        Snapshot({"/a": SeriesData(count=i + 1, hist={10: i + 1})}, {}, 0, 0.0, 0.0)
        for i in range(4)
    ]
    memo: dict[int, Any] = {}
    first = sparklines([(60.0 * i, s) for i, s in enumerate(steps[:3])], 60.0, memo=memo)
    second = sparklines([(60.0 * i, s) for i, s in enumerate(steps[1:])], 60.0, memo=memo)
    assert computed == steps  # each step once
    assert first["/a"].rate == [1 / 60, 2 / 60, 3 / 60]
    assert second["/a"].rate == [2 / 60, 3 / 60, 4 / 60]
    assert {id(s) for s in steps[1:]} == set(memo)
