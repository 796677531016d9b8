"""A small leads/customers API like the guide's CRM, wrapped by the middleware.

Served by ``python -m wsgi_observe demo`` under gunicorn on 127.0.0.1:5000. It uses
werkzeug routing (already a dependency) and names each request after its route template
through ``environ["wsgi_observe.endpoint"]``, the adapter hook any framework can use.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import sqlite3
import tempfile
import time
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import checks, kpis
from .config import Config
from .logs import log_business_event
from .middleware import ObservabilityMiddleware
from .tracking import performance_tracking

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ._types import StartResponse, WSGIEnvironment

# The demo application's own setting (an app reads its database URL itself), not one of
# wsgi_observe's: those are all read by Config. `wsgi-observe demo` sets it to a file in a
# private folder it made; without it, a private folder of this process. Never a fixed
# name in the shared temp directory, which another local user could plant a link at.
def _private_db() -> str:
    """A database in a private folder of this process, removed when the process that made
    it exits (not by a child it forked)."""
    folder = tempfile.mkdtemp(prefix="wsgi_observe-demo-")
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(remove)
    return os.path.join(folder, "demo.sqlite3")


DB_PATH = os.environ.get("DEMO_DB") or _private_db()

_routes = Map(
    [
        Rule("/", endpoint="index"),
        Rule("/api/leads", endpoint="leads", methods=["GET", "HEAD", "POST"]),
        Rule("/api/leads/statistics", endpoint="statistics"),
        Rule("/api/leads/<int:lead_id>", endpoint="lead"),
        Rule("/api/customers", endpoint="customers"),
        Rule("/api/boom", endpoint="boom"),
    ]
)


# Business KPIs (wsgi_observe.kpis): shown under "kpis" in /metrics and as their own
# Prometheus families, exact across gunicorn workers.
leads_created = kpis.counter("leads_created", "Leads created, by source.", labels=("source",))
lead_score = kpis.distribution("lead_score", "Score of new leads, 0 to 100.", "points")
open_customers = kpis.gauge(
    "open_customers",
    "Customers in the CRM, as last counted.",
    multiprocess_mode="mostrecent",  # a count read from the database: the latest wins
)


def _connect() -> sqlite3.Connection:
    return sqlite3.connect(DB_PATH, timeout=2)


def _init_db() -> None:
    with _connect() as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS leads"
            " (id INTEGER PRIMARY KEY, name TEXT, source TEXT, score INT)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS customers (id INTEGER PRIMARY KEY, name TEXT, tier TEXT)"
        )
        if db.execute("SELECT COUNT(*) FROM leads").fetchone()[0] == 0:
            db.executemany(
                "INSERT INTO leads (name, source, score) VALUES (?, ?, ?)",
                [
                    (
                        f"Lead {i}",
                        random.choice(["website", "referral", "ads"]),
                        random.randint(1, 100),
                    )
                    for i in range(50)
                ],
            )
            db.executemany(
                "INSERT INTO customers (name, tier) VALUES (?, ?)",
                [(f"Customer {i}", random.choice(["gold", "silver"])) for i in range(20)],
            )


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


@performance_tracking(name="demo.lead_statistics", slow_threshold=1.0)
def _statistics() -> dict[str, Any]:
    time.sleep(random.choice([0.01, 0.02, 0.05, 0.3]))  # a deliberately uneven endpoint
    with _connect() as db:
        rows = db.execute(
            "SELECT source, COUNT(*), AVG(score) FROM leads GROUP BY source"
        ).fetchall()
    return {source: {"count": count, "avg_score": round(avg, 1)} for source, count, avg in rows}


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _dispatch(request: Request, endpoint: str, values: Mapping[str, Any]) -> Response:
    if endpoint == "index":
        return _json(
            {
                "service": "wsgi_observe demo",
                "try": ["/health", "/health/ready", "/metrics", "/api/leads"],
            }
        )
    if endpoint == "leads":
        if request.method == "POST":
            payload = request.get_json(silent=True)
            if not isinstance(payload, dict):
                payload = {}
            source = str(payload.get("source", "api"))
            name = str(payload.get("name", "New lead"))
            score = payload.get("score", 50)
            if type(score) is not int or not 0 <= score <= 100:
                return _json({"error": "score: expected a whole number from 0 to 100"}, 400)
            if not (_is_text(source) and _is_text(name)):
                # JSON's "\ud800" is a lone surrogate: no database (nor UTF-8) takes it.
                return _json({"error": "name, source: expected text (no lone surrogates)"}, 400)
            with _connect() as db:
                cursor = db.execute(
                    "INSERT INTO leads (name, source, score) VALUES (?, ?, ?)",
                    (name, source, score),
                )
            leads_created.labels(source=source).inc()  # client text: capped by the KPI
            lead_score.observe(score)
            log_business_event("lead_created", entity_id=cursor.lastrowid, data={"source": source})
            return _json({"id": cursor.lastrowid}, 201)
        with _connect() as db:
            rows = db.execute(
                "SELECT id, name, source, score FROM leads ORDER BY id LIMIT 100"
            ).fetchall()
        return _json([{"id": i, "name": n, "source": s, "score": sc} for i, n, s, sc in rows])
    if endpoint == "lead":
        with _connect() as db:
            row = db.execute(
                "SELECT id, name, source, score FROM leads WHERE id = ?", (values["lead_id"],)
            ).fetchone()
        if row is None:
            raise NotFound()
        return _json(dict(zip(("id", "name", "source", "score"), row)))
    if endpoint == "statistics":
        return _json(_statistics())
    if endpoint == "customers":
        with _connect() as db:
            rows = db.execute("SELECT id, name, tier FROM customers ORDER BY id").fetchall()
        open_customers.set(len(rows))
        return _json([{"id": i, "name": n, "tier": t} for i, n, t in rows])
    if endpoint == "boom":
        raise RuntimeError("demo failure: this endpoint always raises")
    raise NotFound()


def demo_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    request = Request(environ)
    adapter = _routes.bind_to_environ(environ)
    try:
        rule, values = adapter.match(return_rule=True)
        environ["wsgi_observe.endpoint"] = rule.rule  # name the request by its template
        response = _dispatch(request, rule.endpoint, values)
    except HTTPException as error:
        response = error.get_response(environ)
    return response(environ, start_response)


_init_db()
app = ObservabilityMiddleware(
    demo_app,
    # The demo's own defaults; WSGI_OBSERVE_SERVICE_NAME and WSGI_OBSERVE_VERSION still win.
    config=Config.from_env(defaults={"service_name": "iSwitch Roofs CRM API", "version": "1.0.0"}),
    checks={
        "database": checks.database(_connect),
        # Optional: without these keys the demo is "degraded" but ready (200), so it serves
        # traffic out of the box, as a pod whose e-mail provider is down should.
        "external_services": checks.optional(
            {
                "sendgrid": checks.env_configured("SENDGRID_API_KEY"),
                "twilio": checks.env_configured("TWILIO_AUTH_TOKEN"),
            }
        ),
    },
)
