"""A small wrapped WSGI app for the Prometheus scrape tests, served by gunicorn."""

from __future__ import annotations

from wsgi_observe import ObservabilityMiddleware, kpis, performance_tracking

leads_shown = kpis.counter("leads_shown", "Lead lists served, by source.", labels=("source",))
lead_score = kpis.distribution("lead_score", "Score of the leads served.", "points")


@performance_tracking(name="leads.load")
def _load_leads() -> bytes:
    return b'[{"id": 1}]'


def _app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    status = "200 OK"
    if path == "/api/leads":
        body = _load_leads()
        leads_shown.labels(source="web").inc()
        lead_score.observe(42)
    elif path == "/api/customers":
        body = b"[]"
    elif path == "/api/boom":
        status, body = "500 Internal Server Error", b"boom"
    else:
        status, body = "404 Not Found", b"not found"
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


app = ObservabilityMiddleware(_app, service_name="prom-test", version="9.9.9", access_log=False)
