"""The demo (``wsgi_observe.demo``) as gunicorn serves it, for the dashboard's browser test.

One addition in front of it: a request under ``/catchall/`` is named after the rest of its
path, as an app with a catch-all route that names requests after the path would do. That is
how a client gets to choose an endpoint name (``/catchall/<script>alert(1)</script>``), which
the dashboard must then show as text.
"""

from __future__ import annotations

from typing import Any

from wsgi_observe import demo

_PREFIX = "/catchall"


def app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ.get("PATH_INFO", "")
    if path.startswith(_PREFIX + "/"):
        environ["wsgi_observe.endpoint"] = path[len(_PREFIX) :]
    return demo.app(environ, start_response)
