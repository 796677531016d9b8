"""A wrapped WSGI app that records business KPIs, served by gunicorn in the KPI tests."""

from __future__ import annotations

import os
from urllib.parse import parse_qs

from wsgi_observe import ObservabilityMiddleware, kpis, log_business_event

leads_created = kpis.counter("leads_created", "Leads created, by source.", labels=("source",))
lead_score = kpis.distribution("lead_score", "Score of new leads.", "points")
open_customers = kpis.gauge("open_customers", "Customers with an open deal.")
stock = kpis.gauge("stock_level", "Items in stock.", multiprocess_mode="mostrecent")


def _app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/lead":
        leads_created.labels(source=query.get("source", "api")).inc()
        lead_score.observe(int(query.get("score", "0")))
        log_business_event("lead_created")
    elif path == "/open":
        open_customers.inc()
    elif path == "/close":
        open_customers.dec()
    elif path == "/stock":
        stock.set(float(query["n"]))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = ObservabilityMiddleware(_app, service_name="kpi-test", version="1.0.0", access_log=False)
