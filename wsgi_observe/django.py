"""Django support: the public names (the code lives in :mod:`wsgi_observe.integrations.django`).

Three steps::

    # 1. settings.py: name requests by their URL pattern
    MIDDLEWARE = ["wsgi_observe.django.RouteTemplateMiddleware", *MIDDLEWARE]

    # 2. wsgi.py: wrap the application
    from django.core.wsgi import get_wsgi_application
    from wsgi_observe.django import wrap
    application = wrap(get_wsgi_application())

    # 3. settings.py, optional: Config keywords (they win over environment variables)
    WSGI_OBSERVE = {"service_name": "CRM API", "version": "1.4.2"}

``wrap()`` checks the ``default`` database on ``/health/ready`` unless given ``checks``
(:func:`django_database` is ``wsgi_observe.checks.django_database``). Importing this module
does not import Django; using it does.
"""

from __future__ import annotations

from .checks import django_database
from .integrations.django import (
    RouteTemplateMiddleware,
    default_checks,
    settings_overrides,
    wrap,
)

__all__ = [
    "RouteTemplateMiddleware",
    "default_checks",
    "django_database",
    "settings_overrides",
    "wrap",
]
