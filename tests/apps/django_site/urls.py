"""URL patterns with include()s, a re_path, a trailing-slash route and views that reject."""

from __future__ import annotations

from django.urls import include, path, re_path

from . import views

api = [
    path("users/<int:id>", views.user),
    path("users/<int:id>/orders/", views.orders),
    path("pg/users/<int:id>", views.pg_user),
    path("boom", views.boom),
    path("only-get", views.only_get),
    path("form", views.form),
    path("log", views.log_line),
    path("stream/<int:fail_at>", views.stream),
    re_path(r"^legacy/(?P<pk>[0-9]+)/$", views.legacy),
]

urlpatterns = [
    path("", views.home),
    path("api/", include(api)),
]
