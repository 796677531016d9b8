"""Step 2 of the README, literally: wrap Django's application in wsgi.py."""

import os

from django.core.wsgi import get_wsgi_application

from wsgi_observe import checks
from wsgi_observe.django import wrap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.django_site.settings")

application = wrap(
    get_wsgi_application(),
    checks={
        "database": checks.django_database(),
        "external_services": checks.optional(
            {"sendgrid": checks.env_configured("SENDGRID_API_KEY")}
        ),
    },
)
