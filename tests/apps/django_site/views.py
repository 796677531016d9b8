"""Views of the test project: database round trips, an exception, and rejections."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import connections
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

log = logging.getLogger("tests.django_site")


def _echo(alias: str, value: int) -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT %s", [value])
        return int(cursor.fetchone()[0])


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("home")


def user(request: HttpRequest, id: int) -> HttpResponse:
    if id == 0:
        raise Http404("no user 0")
    return JsonResponse({"id": _echo("default", id)})


def pg_user(request: HttpRequest, id: int) -> HttpResponse:
    return JsonResponse({"id": _echo("postgres", id)})


def orders(request: HttpRequest, id: int) -> HttpResponse:
    return JsonResponse({"user": id, "orders": []})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("django view failed")


@csrf_exempt
@require_GET
def only_get(request: HttpRequest) -> HttpResponse:
    return HttpResponse("get only")


def form(request: HttpRequest) -> HttpResponse:
    return HttpResponse("posted")  # CsrfViewMiddleware rejects a POST without a token first


def log_line(request: HttpRequest) -> HttpResponse:
    log.info("inside the view", extra={"marker": "django-view"})
    return HttpResponse("logged")


def legacy(request: HttpRequest, pk: str) -> HttpResponse:
    return HttpResponse(pk)


def stream(request: HttpRequest, fail_at: int) -> StreamingHttpResponse:
    """Three chunks, produced one by one; the one at ``fail_at`` raises instead."""

    def chunks() -> Iterator[bytes]:
        for index in range(3):
            if index == fail_at:
                raise RuntimeError("django stream failed")
            yield b"chunk %d;" % index

    return StreamingHttpResponse(chunks(), content_type="text/plain")
