"""Real framework apps for the suite: a Flask API and a Django project, bare and instrumented.

Each builder returns a WSGI callable (and the path its timed request goes to). Flask and
Django are peers here: when one is not installed, its rows say "n/a". The instrumentations:

- Flask: ``prometheus_flask_exporter.PrometheusMetrics(app)`` (its defaults: a latency
  histogram by method, path and status, a request counter and an exceptions counter),
  or ``ObservabilityMiddleware`` around ``app.wsgi_app`` as the README shows.
- Django: ``django-prometheus`` (its Before/After middlewares and app, as its README
  shows), or wsgi_observe the README's way: ``RouteTemplateMiddleware`` first in
  ``MIDDLEWARE`` and ``wsgi_observe.django.wrap(get_wsgi_application())``.

Django's settings are process-wide, so every Django configuration needs its own process
(the suite gives every configuration one anyway).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

from benchmarks.apps import need

__all__ = [
    "DJANGO_PATH",
    "FRAMEWORK_BASES",
    "ERROR_PATH",
    "FLASK_PATH",
    "django_app",
    "flask_app",
    "flask_exporter",
]

#: The framework rows: subject -> (its bare app, the exporter a user of it would pick).
#: Their overhead is over that bare app, their ratio against that exporter.
FRAMEWORK_BASES: dict[str, tuple[str, str]] = {
    "flask_exporter": ("flask_bare", "flask_exporter"),
    "flask_wo_metrics": ("flask_bare", "flask_exporter"),
    "flask_wo_console": ("flask_bare", "flask_exporter"),
    "flask_wo_default": ("flask_bare", "flask_exporter"),
    "django_prometheus": ("django_bare", "django_prometheus"),
    "django_wo_metrics": ("django_bare", "django_prometheus"),
}

#: The timed request of the framework rows: a JSON route with a path parameter.
FLASK_PATH = "/api/leads/17"
DJANGO_PATH = "/api/leads/17"
#: The error route (checked once before timing: a 500, counted and named by its rule).
ERROR_PATH = "/api/fail"


# Flask ------------------------------------------------------------------------------------


def flask_app() -> Any:
    """A small Flask API: ``GET /api/leads/<int:lead_id>`` (JSON) and ``GET /api/fail``
    (raises; Flask answers 500)."""
    flask = need("flask")
    app = flask.Flask("bench_flask")

    @app.get("/api/leads/<int:lead_id>")
    def lead(lead_id: int) -> Any:
        return flask.jsonify(id=lead_id, name="Ada Lovelace", status="new", score=85)

    @app.get("/api/fail")
    def fail() -> Any:
        raise RuntimeError("the error route failed, as it should")

    # Flask logs the error route's traceback once (the check), to stderr: keep it short.
    app.logger.disabled = True
    return app


def flask_exporter() -> Any:
    """The Flask app with ``PrometheusMetrics(app)``: what a Flask user would pick."""
    exporter = need("prometheus_flask_exporter", "prometheus-flask-exporter")
    app = flask_app()
    exporter.PrometheusMetrics(app)
    return app


def observe_flask(**config: Any) -> Any:
    """The Flask app with ``app.wsgi_app = ObservabilityMiddleware(app.wsgi_app, ...)``;
    ``config`` as for :func:`benchmarks.apps.observe` (metrics only unless it says more),
    or ``None`` values for the defaults read from the environment."""
    from benchmarks.apps import default, observe

    app = flask_app()
    if config.pop("defaults", False):
        app.wsgi_app = default(app.wsgi_app)
    else:
        app.wsgi_app = observe(app.wsgi_app, **config)
    return app


# Django -------------------------------------------------------------------------------------

#: A new project's middleware that needs no database (sessions, auth and messages do not
#: touch it unless a view asks; they are left out so nothing in the hot path could).
_DJANGO_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]


def _django_urls() -> types.ModuleType:
    """The project's URLconf, as a module: ``api/leads/<int:lead_id>`` and ``api/fail``."""
    from django.http import JsonResponse
    from django.urls import include, path

    def lead(request: Any, lead_id: int) -> Any:
        return JsonResponse({"id": lead_id, "name": "Ada Lovelace", "status": "new", "score": 85})

    def fail(request: Any) -> Any:
        raise RuntimeError("the error route failed, as it should")

    api = [path("leads/<int:lead_id>", lead), path("fail", fail)]
    module = types.ModuleType("bench_django_urls")
    module.urlpatterns = [path("api/", include(api))]  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    return module


def django_app(kind: str, **config: Any) -> Callable[..., Any]:
    """Django's WSGI application: ``kind`` is "bare", "prometheus" (django-prometheus) or
    "observe" (wsgi_observe the README's way, ``config`` passed to ``wrap()``)."""
    need("django")
    if kind == "prometheus":
        need("django_prometheus", "django-prometheus")
    from django.conf import settings

    middleware = list(_DJANGO_MIDDLEWARE)
    apps: list[str] = []
    if kind == "prometheus":
        # django-prometheus's README: its app, and its two middlewares around the others.
        apps.append("django_prometheus")
        middleware = [
            "django_prometheus.middleware.PrometheusBeforeMiddleware",
            *middleware,
            "django_prometheus.middleware.PrometheusAfterMiddleware",
        ]
    elif kind == "observe":
        middleware = ["wsgi_observe.django.RouteTemplateMiddleware", *middleware]
    elif kind != "bare":
        raise ValueError(kind)
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="bench_django_urls",
        INSTALLED_APPS=apps,
        MIDDLEWARE=middleware,
        DATABASES={},
        USE_TZ=True,
        LOGGING_CONFIG=None,  # Django's own logging setup stays out of it
    )
    import django

    django.setup()
    _django_urls()
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    if kind != "observe":
        return application  # type: ignore[no-any-return]
    from wsgi_observe.django import wrap

    if not config.pop("defaults", False):
        config.setdefault("access_log", False)
        config.setdefault("log_handlers", False)
    return wrap(application, **config)
