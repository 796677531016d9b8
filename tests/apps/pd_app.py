"""A wrapped app whose in-process alerts page PagerDuty, served by gunicorn in the tests.

Every worker starts its own monitor (checking every 0.1 s); PAGERDUTY_ROUTING_KEY and
PAGERDUTY_EVENTS_URL come from the environment through Config, as in production.
"""

from __future__ import annotations

from wsgi_observe import Config, ObservabilityMiddleware
from wsgi_observe.alerts import AlertMonitor, error_rate_alert


def _app(environ, start_response):
    failed = environ.get("PATH_INFO", "") == "/api/boom"
    start_response("500 Internal Server Error" if failed else "200 OK", [("Content-Length", "2")])
    return [b"{}"]


app = ObservabilityMiddleware(
    _app, config=Config.from_env(service_name="pd-test", access_log=False)
)
monitor = AlertMonitor(app, [error_rate_alert(min_requests=10)]).start(interval_s=0.1)
