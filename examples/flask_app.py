"""A Flask app wrapped by wsgi_observe.

gunicorn -c python:wsgi_observe.gunicorn -w 4 examples.flask_app:app
"""

import sqlite3

from flask import Flask, jsonify

from wsgi_observe import ObservabilityMiddleware, checks, performance_tracking

app = Flask(__name__)


@app.route("/api/leads/<int:lead_id>")
@performance_tracking
def get_lead(lead_id):
    return jsonify(id=lead_id)


app.wsgi_app = ObservabilityMiddleware(
    app.wsgi_app,
    service_name="iSwitch Roofs CRM API",
    version="1.0.0",
    checks={
        "database": checks.database(lambda: sqlite3.connect("crm.sqlite3")),
        # Optional: a missing key shows as "degraded", /health/ready still answers 200.
        "external_services": checks.optional(
            {"sendgrid": checks.env_configured("SENDGRID_API_KEY")}
        ),
    },
)
