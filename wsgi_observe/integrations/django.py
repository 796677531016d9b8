"""Django: requests named by their URL pattern, settings from ``settings.WSGI_OBSERVE``,
the database readiness check, and Django's 500s reported once.

The public face is :mod:`wsgi_observe.django`; three steps (see the README)::

    # settings.py
    MIDDLEWARE = ["wsgi_observe.django.RouteTemplateMiddleware", *MIDDLEWARE]
    WSGI_OBSERVE = {"service_name": "CRM API", "version": "1.4.2"}   # optional

    # wsgi.py
    from django.core.wsgi import get_wsgi_application
    from wsgi_observe.django import wrap
    application = wrap(get_wsgi_application())

Naming. :class:`RouteTemplateMiddleware` puts the resolved URL pattern, with its
``include()`` prefixes joined as Django joins them, into ``environ["wsgi_observe.endpoint"]``
(``/api/users/<int:id>``; a ``re_path`` shows its regex without ``^`` and ``$``). It reads
the pattern after the response is made, wherever it sits in ``MIDDLEWARE``, so a request
that Django answers instead of the view (405, a CSRF failure, a middleware's 401) is
counted under the route it matched; a request redirected by ``APPEND_SLASH`` is counted
under the route it is redirected to. A request that matches nothing stays unnamed (a 404
is then ``<unmatched>``). Without the middleware requests are named by normalised path.

Errors. Django turns a view's exception into a 500 page itself, so the WSGI app never
raises: the one log line is Django's own ``django.request`` ERROR ("Internal Server Error:
/path", with the traceback and the request id), which reaches ``errors.log``; the one Sentry
event comes from sentry-sdk's ``DjangoIntegration`` (on by default when Django is installed),
inside our request scope and trace. With that integration switched off, the
``got_request_exception`` receiver here reports it instead, and the log line's copy is
dropped, so it is still sent once.

Django is imported inside functions only: importing this module costs nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Optional

from .. import checks as _checks
from .. import reporting
from .._guard import guarded
from ..config import Config, ConfigError

if TYPE_CHECKING:
    from .._types import WSGIApplication
    from ..health import Checks
    from ..middleware import ObservabilityMiddleware

__all__ = [
    "MIDDLEWARE_PATHS",
    "RouteTemplateMiddleware",
    "default_checks",
    "name_request",
    "route_name",
    "settings_overrides",
    "wrap",
]

_log = logging.getLogger("wsgi_observe")
_KEY = "wsgi_observe.endpoint"
#: The dotted paths that name :class:`RouteTemplateMiddleware` in ``settings.MIDDLEWARE``.
MIDDLEWARE_PATHS = (
    "wsgi_observe.django.RouteTemplateMiddleware",
    "wsgi_observe.integrations.django.RouteTemplateMiddleware",
)
_COMMON_MIDDLEWARE = "django.middleware.common.CommonMiddleware"
_REDIRECTS = frozenset({301, 302, 307, 308})
_DISPATCH_UID = "wsgi_observe.django.got_request_exception"
_warned: set[str] = set()  # the setting problems already logged in this process


# Naming --------------------------------------------------------------------------------


def route_name(match: Any) -> str:
    """The endpoint name of a ``ResolverMatch``: its route, ``include()`` prefixes joined,
    with a leading ``/`` (``/api/users/<int:id>``); a regex route without ``^`` and ``$``."""
    route = getattr(match, "route", None)
    if not isinstance(route, str):
        route = ""
    name = _route_names.get(route)
    if name is None:
        name = _route_name(route)
        if len(_route_names) < _MAX_ROUTE_NAMES:
            _route_names[route] = name
    return name


def _route_name(route: str) -> str:
    if route.startswith("^"):
        route = route[1:]
    if route.endswith("\\Z"):
        route = route[:-2]
    elif route.endswith("$"):
        route = route[:-1]
    return route if route.startswith("/") else "/" + route


#: route -> endpoint name, worked out once per route (bounded: routes are the project's).
_route_names: dict[str, str] = {}
_MAX_ROUTE_NAMES = 4096


def name_request(request: Any, response: Any = None) -> None:
    """Name ``request`` (a Django ``HttpRequest``) after the URL pattern it matched, unless
    it is named already. ``response`` is what Django answered (None if it raised)."""
    environ = getattr(request, "environ", None)
    if type(environ) is not dict:
        if not isinstance(environ, dict):
            return  # not a WSGI request
    if _KEY in environ:
        return  # named already (by an inner copy, or by the app)
    match = getattr(request, "resolver_match", None)
    if match is None:
        match = _match_without_view(request, response)
        if match is None:
            return
    route: Any = getattr(match, "route", None)
    name = _route_names.get(route) if type(route) is str else None  # route_name(), once
    environ[_KEY] = name if name is not None else route_name(match)


def _match_without_view(request: Any, response: Any) -> Any:
    """The route of a request that never reached URL resolution (a middleware answered
    first), or the route an ``APPEND_SLASH`` redirect leads to; None if there is none."""
    from django.conf import settings
    from django.urls import Resolver404, resolve

    urlconf = getattr(request, "urlconf", None)
    path = getattr(request, "path_info", None)
    if not isinstance(path, str):
        return None
    status = getattr(response, "status_code", None)
    if status != 404:
        # Resolved already when Django answered 404; anything else may have been answered
        # by a middleware before resolution (401, 403, PREPEND_WWW's redirect, ...).
        try:
            return resolve(path, urlconf)
        except Resolver404:
            pass
    if path.endswith("/") or not getattr(settings, "APPEND_SLASH", False):
        return None
    # CommonMiddleware turns this 404 into a redirect to path + "/" (when it sits outside
    # us, we still see the 404; when inside, the redirect).
    if status in _REDIRECTS or (
        status == 404 and _COMMON_MIDDLEWARE in getattr(settings, "MIDDLEWARE", ())
    ):
        try:
            return resolve(path + "/", urlconf)
        except Resolver404:
            return None
    return None


class RouteTemplateMiddleware:
    """Django middleware: names each request after its URL pattern (``/api/users/<int:id>``).

    Add it to ``MIDDLEWARE`` by its dotted path, first is best::

        MIDDLEWARE = ["wsgi_observe.django.RouteTemplateMiddleware", *MIDDLEWARE]

    It sets ``environ["wsgi_observe.endpoint"]``, which the ``ObservabilityMiddleware``
    around Django's WSGI application reads. Listed twice, the inner copy names the request
    and the outer one leaves it. It never raises: a naming failure is logged once and the
    request keeps its normalised name. Reads: nothing from the environment.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        connect_signals()

    def __call__(self, request: Any) -> Any:
        response = None
        try:
            response = self.get_response(request)
            return response
        finally:
            # Named after Django answered: resolution (and any rejection) is over by then.
            try:
                name_request(request, response)
            except Exception as error:
                guarded("django route name", error)


# Errors ----------------------------------------------------------------------------------


def connect_signals() -> None:
    """Listen to ``got_request_exception`` (once per process, however often called)."""
    from django.core.signals import got_request_exception

    got_request_exception.connect(_report_exception, dispatch_uid=_DISPATCH_UID)


def _report_exception(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    """Send the exception Django is turning into a 500 page to Sentry, when our Sentry
    reporter is on and sentry-sdk's DjangoIntegration (which reports it itself) is not."""
    sentry_sdk = sys.modules.get("sentry_sdk")
    if sentry_sdk is None or reporting.installed("errors") is None:
        return
    try:
        client = sentry_sdk.get_client()
        if not client.is_active() or client.get_integration("django") is not None:
            return
        error = sys.exc_info()[1]
        if error is None:
            return
        from .sentry import _capture

        _capture(error)  # marked as reported: the django.request log line's copy is dropped
    except Exception as failure:
        guarded("django exception report", failure)


# Settings and wrapping ------------------------------------------------------------------


def settings_overrides() -> dict[str, Any]:
    """``settings.WSGI_OBSERVE`` (a dict of :class:`~wsgi_observe.Config` keywords), checked.

    Raises :class:`~wsgi_observe.ConfigError` with one line naming the setting when it is
    not a dict, has a key that is not a ``Config`` keyword, or a value ``Config`` refuses.
    """
    from django.conf import settings

    raw = getattr(settings, "WSGI_OBSERVE", None)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"settings.WSGI_OBSERVE={raw!r}: expected a dict of Config keywords"
            " (service_name, version, log_level, ...)"
        )
    known = {field.name for field in dataclasses.fields(Config)}
    for key in raw:
        if key not in known:
            hint = f"; did you mean {key.lower()!r}?" if str(key).lower() in known else ""
            raise ConfigError(
                f"settings.WSGI_OBSERVE: unknown key {key!r}{hint}"
                " (expected Config keywords: service_name, version, log_level, ...)"
            )
    try:
        Config.from_env({}, **raw)  # the values alone, so an error names the setting
    except ConfigError as error:
        raise ConfigError(f"settings.WSGI_OBSERVE: {error}") from None
    return dict(raw)


def default_checks() -> dict[str, Any]:
    """The readiness checks of a Django project that gives none: its ``default`` database
    (unless it has none, or Django's dummy backend)."""
    from django.conf import settings

    databases = getattr(settings, "DATABASES", None) or {}
    default = databases.get("default") if isinstance(databases, Mapping) else None
    engine = default.get("ENGINE", "") if isinstance(default, Mapping) else ""
    if not engine or engine.endswith(".dummy"):
        return {}
    return {"database": _checks.django_database("default")}


def wrap(
    app: WSGIApplication | str | None = None,
    *,
    checks: Optional[Checks] = None,
    **overrides: Any,
) -> ObservabilityMiddleware:
    """Wrap Django's WSGI application in :class:`~wsgi_observe.ObservabilityMiddleware`.

    ``app``: the application (default: ``get_wsgi_application()``), or ``"module:attr"``
    (for gunicorn, changing no code: ``"wsgi_observe.django:wrap('mysite.wsgi:application')"``).
    Configuration: keyword arguments over ``settings.WSGI_OBSERVE`` over environment
    variables over defaults. ``checks``: the readiness checks (default: the ``default``
    database through :func:`wsgi_observe.checks.django_database`). Example::

        application = wrap(get_wsgi_application(), checks={
            "database": checks.django_database(),
            "sendgrid": checks.optional(checks.env_configured("SENDGRID_API_KEY")),
        })

    Logs a warning when :class:`RouteTemplateMiddleware` is missing from ``MIDDLEWARE`` or
    listed twice. Reads: ``settings.WSGI_OBSERVE``, ``settings.DATABASES``,
    ``settings.MIDDLEWARE`` and the variables of :class:`~wsgi_observe.Config`.
    """
    from ..middleware import _load, _stop_server_worker
    from ..middleware import wrap as wrap_app

    if isinstance(app, str):
        app = _load(app)  # first: importing mysite.wsgi is what names the settings module
    try:
        keywords = {**settings_overrides(), **overrides}
    except ConfigError as error:
        _stop_server_worker(error)  # under gunicorn: one line, and gunicorn stops
        raise
    if app is None:
        from django.core.wsgi import get_wsgi_application

        app = get_wsgi_application()
    observed = wrap_app(app, checks=default_checks() if checks is None else checks, **keywords)
    connect_signals()
    check_middleware_setting()
    return observed


def check_middleware_setting(middleware: Optional[Iterable[Any]] = None) -> list[str]:
    """Warn (once per process) when :class:`RouteTemplateMiddleware` is missing from
    ``settings.MIDDLEWARE`` or listed more than once; return the problems found."""
    if middleware is None:
        from django.conf import settings

        middleware = getattr(settings, "MIDDLEWARE", None) or ()
    entries = [entry for entry in middleware if isinstance(entry, str)]
    listed = sum(1 for entry in entries if entry in MIDDLEWARE_PATHS)
    problems: list[str] = []
    if listed == 0:
        problems.append(
            f"{MIDDLEWARE_PATHS[0]} is not in settings.MIDDLEWARE: requests are named by"
            " their normalised path, not their URL pattern"
        )
    elif listed > 1:
        problems.append(
            f"{MIDDLEWARE_PATHS[0]} is listed {listed} times in settings.MIDDLEWARE;"
            " once (first) is enough"
        )
    for problem in problems:
        if problem not in _warned:
            _warned.add(problem)
            _log.warning(problem)
    return problems
