"""Settings of the test project. ``DJANGO_SITE_DATABASE=postgres`` makes PostgreSQL on
127.0.0.1:5432 (database ``test``, user ``postgres``) the default database; SQLite otherwise.
The ``postgres`` alias always points there, the ``sqlite`` alias at SQLite."""

from __future__ import annotations

import os

SECRET_KEY = "tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.apps.django_site.urls"
USE_TZ = True
INSTALLED_APPS: list[str] = []

# Step 1 of the README: the middleware, first.
MIDDLEWARE = [
    "wsgi_observe.django.RouteTemplateMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

_SQLITE = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": os.environ.get("DJANGO_SITE_SQLITE", ":memory:"),
}
_POSTGRES = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "test",
    "USER": "postgres",
    "HOST": "127.0.0.1",
    "PORT": "5432",
    "OPTIONS": {"connect_timeout": 2, "application_name": "wsgi_observe_django_site"},
}
DATABASES = {
    "default": _POSTGRES if os.environ.get("DJANGO_SITE_DATABASE") == "postgres" else _SQLITE,
    "sqlite": _SQLITE,
    "postgres": _POSTGRES,
    # Nothing listens on port 1: a database that refuses (only the readiness tests use it).
    "down": {**_POSTGRES, "PORT": "1", "OPTIONS": {"connect_timeout": 1}},
}

# Step 3 of the README: our settings, as Config keywords.
WSGI_OBSERVE = {"service_name": "django-site", "version": "2.0.0"}
