"""An app for the KPI edge cases under gunicorn: KPIs set at import (``--preload`` runs
that in the master), label values from JSON bodies, gauges in each multiprocess mode."""

from __future__ import annotations

import json
import os

from wsgi_observe import ObservabilityMiddleware, kpis

customers = kpis.gauge("customers", "Customers, as counted.", multiprocess_mode="mostrecent")
imported = kpis.counter("imports", "Times this module was imported.")
sources = kpis.counter("sources", "Leads by source.", labels=("source",))
parts = {
    mode: kpis.gauge(f"part_{mode}", f"A gauge in mode {mode}.", multiprocess_mode=mode)
    for mode in ("sum", "livesum", "mostrecent")
}

customers.set(20)  # the README's open_customers.set(db.count_customers()), at import
imported.inc()


def _app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/lead":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        payload = json.loads(environ["wsgi.input"].read(size) or b"{}")
        sources.labels(source=payload.get("source", "api")).inc()
    elif path == "/part":
        for gauge in parts.values():
            gauge.inc()  # mostrecent: this worker's own last value, plus one
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = ObservabilityMiddleware(_app, service_name="kpi-edges", version="1.0.0", access_log=False)
