"""mysite/wsgi.py for a Django project, with wsgi_observe: copy it over the wsgi.py that
``django-admin startproject mysite`` wrote (change "mysite" if your project is named
otherwise).

Also add the middleware first in settings.py, so requests are named by their URL pattern
(``/api/users/<int:id>``) instead of their normalised path::

    MIDDLEWARE = [
        "wsgi_observe.django.RouteTemplateMiddleware",
        ...  # the rest, as startproject wrote it
    ]

and, if you prefer settings to environment variables (optional; they win over them)::

    WSGI_OBSERVE = {"service_name": "mysite", "version": "1.0.0"}

Then ``gunicorn mysite.wsgi`` serves the site with /health, /health/live, /health/ready and
/metrics. The middleware lives in the package, not in this file: Django imports it while
this module is still being imported, so a class defined here could not be found.
"""

import os

from django.core.wsgi import get_wsgi_application

from wsgi_observe import checks
from wsgi_observe.django import wrap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = wrap(
    get_wsgi_application(),
    checks={
        # Required: /health/ready answers 503 while the database is down.
        "database": checks.django_database("default"),
        # Optional: a missing key shows as "degraded", but the pod stays ready (200).
        "external_services": checks.optional(
            {
                "sendgrid": checks.env_configured("SENDGRID_API_KEY"),
                "twilio": checks.env_configured("TWILIO_AUTH_TOKEN"),
            }
        ),
    },
)
