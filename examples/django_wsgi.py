"""myproject/wsgi.py for Django: wrap `application` the same way.

Django does not put its resolver match in the WSGI environ, so the middleware names
requests by normalised path (ids collapsed). For route templates, add the small Django
middleware below to MIDDLEWARE; it hands the matched route to wsgi_observe.
"""

import os

from django.core.wsgi import get_wsgi_application

from wsgi_observe import ObservabilityMiddleware, checks

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")


def database_check():
    """SELECT 1 on Django's default database, in the check's own thread, then close."""
    from django.db import connections

    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # checks run in their own thread: don't leave its connection open
    return {"status": "healthy", "message": "Database connection successful"}


application = ObservabilityMiddleware(
    get_wsgi_application(),
    service_name="myproject",
    checks={
        "database": database_check,
        "external_services": {"sendgrid": checks.env_configured("SENDGRID_API_KEY")},
    },
)


class RouteTemplateMiddleware:
    """Django middleware: name each request by its URL pattern (e.g. api/leads/<int:pk>)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        if match is not None and match.route:
            request.environ["wsgi_observe.endpoint"] = "/" + match.route
