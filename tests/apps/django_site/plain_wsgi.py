"""wsgi.py as ``django-admin startproject`` writes it: the application, not wrapped."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.django_site.settings")

application = get_wsgi_application()
