"""A bare WSGI app (not wrapped) that breaks PEP 3333's status on request, for gunicorn tests.

``/status/empty`` answers with the status ``""``, ``/status/bytes`` with ``b"200 OK"`` and
``/status/int`` with ``200``; any other path gets ``200 OK``. Served as
``wsgi_observe:wrap('tests.apps.bad_status:app')``.
"""

from __future__ import annotations

STATUSES: dict[str, object] = {
    "/status/empty": "",
    "/status/bytes": b"200 OK",
    "/status/int": 200,
}


def app(environ, start_response):
    status = STATUSES.get(environ.get("PATH_INFO", ""), "200 OK")
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
