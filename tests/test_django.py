"""Django, for real: the test project (tests/apps/django_site) under webtest and gunicorn.

Names by URL pattern (include()s joined), exact counts, errors logged and reported once,
request ids, settings.WSGI_OBSERVE, the database check on SQLite and PostgreSQL, and the
bad input of issue 11 (no middleware, listed twice, APPEND_SLASH redirects).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import webtest
from conftest import ROOT, Gunicorn, wait_until

from wsgi_observe import ConfigError, checks, logs
from wsgi_observe.health import ReadinessRunner
from wsgi_observe.integrations import django as integration

if TYPE_CHECKING:
    from sentry_receiver import SentryReceiver

pytest_plugins = ("sentry_receiver",)  # its fixtures: sentry_receiver, sentry_init

SETTINGS = "tests.apps.django_site.settings"


@pytest.fixture(scope="module", autouse=True)
def _django() -> Iterator[None]:
    """Django set up once with the test project's settings (read once, then cached)."""
    import django
    from django.conf import settings

    if not settings.configured:
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
        try:
            django.setup()
        finally:
            del os.environ["DJANGO_SETTINGS_MODULE"]
    assert settings.SETTINGS_MODULE == SETTINGS
    yield


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the once-per-process setting warnings afresh."""
    monkeypatch.setattr(integration, "_warned", set())


def site(**overrides: Any) -> webtest.TestApp:
    """The project's WSGI application (a fresh handler, so MIDDLEWARE is read now), wrapped
    by wsgi_observe.django.wrap with a fresh store, behind webtest."""
    from django.core.handlers.wsgi import WSGIHandler

    from wsgi_observe.django import wrap
    from wsgi_observe.metrics import MetricsStore

    overrides.setdefault("store", MetricsStore())
    overrides.setdefault("readiness_cache_ttl", 0.0)
    return webtest.TestApp(wrap(WSGIHandler(), **overrides))


def endpoints(app: webtest.TestApp) -> dict[str, dict[str, Any]]:
    return dict(app.get("/metrics").json["endpoints"])


def counts(app: webtest.TestApp) -> dict[str, int]:
    return {name: series["requests"] for name, series in endpoints(app).items()}


def log_lines(name: str) -> list[dict[str, Any]]:
    logs.flush()
    path = Path(os.environ["LOG_DIR"]) / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


# Names -------------------------------------------------------------------------------


def test_requests_are_named_by_url_pattern_with_includes_joined() -> None:
    """Each request counts once under its pattern as Django joins it, never its raw path."""
    app = site()
    for path in ("/", "/api/users/3", "/api/users/4", "/api/users/5", "/api/legacy/12/"):
        app.get(path)
    assert counts(app) == {
        "/": 1,
        "/api/users/<int:id>": 3,
        "/api/legacy/(?P<pk>[0-9]+)/": 1,
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "name"),
    [
        pytest.param("POST", "/api/only-get", 405, "/api/only-get", id="405"),
        pytest.param("POST", "/api/form", 403, "/api/form", id="csrf-failure"),
        pytest.param("GET", "/api/users/0", 404, "/api/users/<int:id>", id="view-raises-404"),
        pytest.param("GET", "/api/users/3/orders", 301, "/api/users/<int:id>/orders/", id="slash"),
        pytest.param("GET", "/no/such/17", 404, "<unmatched>", id="unmatched"),
    ],
)
def test_rejected_requests_count_under_the_route_they_matched(
    method: str, path: str, status: int, name: str
) -> None:
    """405, a CSRF failure, a view's 404 and an APPEND_SLASH redirect count under the route
    they matched, with their status; nothing is counted under a second, normalised name."""
    app = site()
    response = app.request(path, method=method, expect_errors=True)
    assert response.status_int == status
    series = endpoints(app)
    assert list(series) == [name]
    code_class = f"{status // 100}xx"
    assert series[name]["requests"] == 1
    assert series[name]["status"][code_class] == 1


@pytest.mark.parametrize(
    "position",
    [pytest.param("first", id="first"), pytest.param("last", id="last")],
)
def test_append_slash_redirect_is_named_wherever_the_middleware_sits(position: str) -> None:
    """Outside CommonMiddleware (it sees the 301) or inside it (it sees the 404 that becomes
    the 301), the redirect counts under the route it leads to."""
    from django.test import override_settings

    ours = "wsgi_observe.django.RouteTemplateMiddleware"
    others = [
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
    ]
    middleware = [ours, *others] if position == "first" else [*others, ours]
    with override_settings(MIDDLEWARE=middleware):
        app = site()
        response = app.get("/api/users/7/orders", expect_errors=True)
        assert response.status_int == 301
        assert response.headers["Location"].endswith("/api/users/7/orders/")
        app.get("/api/users/7/orders/")
        assert counts(app) == {"/api/users/<int:id>/orders/": 2}


def test_without_append_slash_an_unslashed_path_is_unmatched() -> None:
    """With APPEND_SLASH off the same path is a plain 404, counted as ``<unmatched>``."""
    from django.test import override_settings

    with override_settings(APPEND_SLASH=False):
        app = site()
        assert app.get("/api/users/7/orders", expect_errors=True).status_int == 404
        assert counts(app) == {"<unmatched>": 1}


def test_a_middleware_that_answers_before_resolution_counts_under_the_route() -> None:
    """A request refused by a middleware before URL resolution (here: a disallowed Host,
    400) is still counted under the route its path matches."""
    from django.test import override_settings

    with override_settings(ALLOWED_HOSTS=["good.example"]):
        app = site()
        response = app.get("/api/users/3", headers={"Host": "evil.example"}, expect_errors=True)
        assert response.status_int == 400
        assert counts(app) == {"/api/users/<int:id>": 1}


def test_without_the_middleware_names_are_normalised_and_a_warning_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A project that forgot the middleware gets normalised names, no error, and one warning."""
    from django.test import override_settings

    with override_settings(MIDDLEWARE=["django.middleware.common.CommonMiddleware"]):
        app = site()
        for path in ("/api/users/3", "/api/users/4"):
            assert app.get(path).status_int == 200
        assert counts(app) == {"/api/users/<int>": 2}
    warnings = [r.getMessage() for r in caplog.records if r.name == "wsgi_observe"]
    assert any("is not in settings.MIDDLEWARE" in message for message in warnings)


def test_middleware_listed_twice_counts_each_request_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Listed first and last, the middleware names each request once, and a warning says so."""
    from django.test import override_settings

    ours = "wsgi_observe.django.RouteTemplateMiddleware"
    with override_settings(MIDDLEWARE=[ours, "django.middleware.common.CommonMiddleware", ours]):
        app = site()
        app.get("/api/users/3")
        app.get("/api/users/3/orders", expect_errors=True)
        assert counts(app) == {"/api/users/<int:id>": 1, "/api/users/<int:id>/orders/": 1}
    warnings = [r.getMessage() for r in caplog.records if r.name == "wsgi_observe"]
    assert any("listed 2 times" in message for message in warnings)


def test_an_app_that_names_its_request_keeps_its_name() -> None:
    """environ["wsgi_observe.endpoint"] set before the middleware runs is left as it is."""
    from django.core.handlers.wsgi import WSGIHandler

    from wsgi_observe.django import wrap
    from wsgi_observe.metrics import MetricsStore

    handler = WSGIHandler()

    def named(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["wsgi_observe.endpoint"] = "/custom"
        return handler(environ, start_response)

    app = webtest.TestApp(wrap(named, store=MetricsStore()))
    app.get("/api/users/3")
    assert counts(app) == {"/custom": 1}


# Errors, request ids and logs ------------------------------------------------------------


def test_view_exception_is_one_error_one_log_line_with_the_request_id() -> None:
    """A view that raises: a 500 counted as an error, and exactly one ERROR line (Django's
    own, with the traceback) carrying the request id the response sent back."""
    app = site()
    response = app.get("/api/boom", expect_errors=True)
    assert response.status_int == 500
    request_id = response.headers["X-Request-ID"]
    series = endpoints(app)["/api/boom"]
    assert (series["requests"], series["errors"], series["status"]["5xx"]) == (1, 1, 1)
    errors = log_lines("errors.log")
    assert len(errors) == 1, errors
    (line,) = errors
    assert line["logger"] == "django.request"
    assert line["request_id"] == request_id
    assert line["exception"]["type"] == "RuntimeError"
    assert "django view failed" in line["exception"]["traceback"]


def test_propagated_exception_is_logged_once_by_us_and_named_by_route() -> None:
    """With DEBUG_PROPAGATE_EXCEPTIONS the exception leaves Django: our one ERROR line names
    the route, and Django writes none."""
    from django.test import override_settings

    with override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True):
        app = site()
        with pytest.raises(RuntimeError, match="django view failed"):
            app.get("/api/boom")
        series = endpoints(app)["/api/boom"]
    assert (series["requests"], series["errors"]) == (1, 1)
    (line,) = log_lines("errors.log")
    assert line["logger"] == "wsgi_observe"
    assert line["endpoint"] == "/api/boom"


def test_lines_logged_in_a_view_carry_the_request_id_and_the_access_line_the_route() -> None:
    """A view's log line and the access line share the request id; the access line is named
    by the route."""
    root = logging.getLogger()
    for handler in list(root.handlers):  # as in production: only our handlers on the root
        if type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    app = site()
    response = app.get("/api/log", headers={"X-Request-ID": "req-django-0001"})
    assert response.headers["X-Request-ID"] == "req-django-0001"
    lines = log_lines("application.log")
    (view_line,) = [line for line in lines if line.get("marker") == "django-view"]
    assert view_line["request_id"] == "req-django-0001"
    (access,) = [line for line in lines if line["logger"] == "wsgi_observe.access"]
    assert (access["endpoint"], access["status"]) == ("/api/log", 200)
    assert access["request_id"] == "req-django-0001"


def test_view_exception_reaches_sentry_once_in_one_transaction(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """With sentry-sdk's DjangoIntegration (on by default): one event and one transaction,
    named by the route, in the same trace."""
    import sentry_sdk

    sentry_init(traces_sample_rate=1.0)
    assert sentry_sdk.get_client().get_integration("django") is not None
    app = site()
    assert app.get("/api/boom", expect_errors=True).status_int == 500
    sentry_sdk.flush(timeout=10)
    (event,) = sentry_receiver.wait_for("event")
    (transaction,) = sentry_receiver.wait_for("transaction")
    sentry_sdk.flush(timeout=5)
    assert len(sentry_receiver.events) == 1
    assert len(sentry_receiver.transactions) == 1
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert event["tags"]["endpoint"] == "/api/boom"
    assert transaction["transaction"] == "/api/boom"
    trace_id = transaction["contexts"]["trace"]["trace_id"]
    assert event["contexts"]["trace"]["trace_id"] == trace_id


def test_without_djangointegration_the_exception_is_reported_once_by_us(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """With DjangoIntegration off (not auto-enabled), got_request_exception reports it (and the
    django.request log line's copy is dropped): still exactly one event."""
    import sentry_sdk

    sentry_init(traces_sample_rate=0.0, auto_enabling_integrations=False)
    assert sentry_sdk.get_client().get_integration("django") is None
    app = site()
    assert app.get("/api/boom", expect_errors=True).status_int == 500
    (event,) = sentry_receiver.wait_for("event")
    sentry_sdk.flush(timeout=5)
    assert len(sentry_receiver.events) == 1
    exception = event["exception"]["values"][-1]
    assert exception["type"] == "RuntimeError"
    assert exception["mechanism"]["type"] == "wsgi_observe"
    assert event["tags"]["endpoint"] == "/api/boom"


# Settings ------------------------------------------------------------------------------


def test_settings_wsgi_observe_configures_and_keywords_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """settings.WSGI_OBSERVE wins over the environment; wrap()'s keywords win over both."""
    monkeypatch.setenv("WSGI_OBSERVE_SERVICE_NAME", "from-env")
    monkeypatch.setenv("WSGI_OBSERVE_VERSION", "9.9.9")
    health = site().get("/health").json
    assert (health["service"], health["version"]) == ("django-site", "2.0.0")
    health = site(version="3.0.0").get("/health").json
    assert (health["service"], health["version"]) == ("django-site", "3.0.0")


def test_settings_only_for_what_they_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable that settings.WSGI_OBSERVE does not name still applies."""
    monkeypatch.setenv("WSGI_OBSERVE_SLOW_REQUEST_THRESHOLD", "4.5")
    app = site()
    assert app.app.config.slow_request_threshold == 4.5


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(["service_name"], "expected a dict of Config keywords", id="not-a-dict"),
        pytest.param({"colour": "blue"}, "unknown key 'colour'", id="unknown-key"),
        pytest.param({"SERVICE_NAME": "x"}, "did you mean 'service_name'", id="upper-case-key"),
        pytest.param(
            {"log_level": "LOUD"}, "log_level='LOUD': expected DEBUG, INFO", id="bad-value"
        ),
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_setting(value: Any, message: str) -> None:
    """A bad settings.WSGI_OBSERVE stops wrap() with one ConfigError line naming it."""
    from django.test import override_settings

    with override_settings(WSGI_OBSERVE=value), pytest.raises(ConfigError) as caught:
        site()
    text = str(caught.value)
    assert text.startswith("settings.WSGI_OBSERVE")
    assert message in text
    assert "\n" not in text


# Readiness: the database check on SQLite and PostgreSQL -------------------------------


def test_wrap_checks_the_default_database_by_default() -> None:
    """Without checks, /health/ready checks the default database (SQLite here)."""
    response = site().get("/health/ready")
    assert response.status_int == 200
    database = response.json["checks"]["database"]
    assert (database["status"], database["message"]) == (
        "healthy",
        "Database connection successful",
    )


@pytest.mark.parametrize("alias", ["sqlite", "postgres"])
def test_django_database_is_healthy_on_sqlite_and_postgres(alias: str) -> None:
    """checks.django_database runs SELECT 1 through Django's own connection to ``alias``."""
    body = ReadinessRunner({"database": checks.django_database(alias)}).result()
    assert body["status"] == "healthy"
    assert body["checks"]["database"]["message"] == "Database connection successful"


def test_django_database_leaves_no_connection_open() -> None:
    """Each probe closes the connection it opened: PostgreSQL shows none of ours afterwards."""
    from django.db import connections

    runner = ReadinessRunner({"database": checks.django_database("postgres")}, cache_ttl_s=0.0)
    for _ in range(5):
        assert runner.result()["status"] == "healthy"
    with connections["sqlite"].cursor():
        pass
    import psycopg

    with psycopg.connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=2"
    ) as admin:
        (open_connections,) = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            ("wsgi_observe_django_site",),
        ).fetchone()
    assert open_connections == 0


@pytest.mark.parametrize(
    ("alias", "fragment"),
    [
        pytest.param("nope", "no database 'nope' in settings.DATABASES", id="unknown-alias"),
        pytest.param("down", "OperationalError", id="server-refuses"),
    ],
)
def test_django_database_failure_is_unhealthy_with_a_message(alias: str, fragment: str) -> None:
    """An unknown alias or a server that refuses gives 503 with a message, never a crash."""
    app = site(checks={"database": checks.django_database(alias)})
    response = app.get("/health/ready", expect_errors=True)
    assert response.status_int == 503
    assert response.json["checks"]["database"]["status"] == "unhealthy"
    assert fragment in response.json["checks"]["database"]["message"]


def test_django_database_refuses_a_bad_alias_at_once() -> None:
    """A non-string alias fails when the check is made, not at probe time."""
    with pytest.raises(ValueError, match="database alias"):
        checks.django_database("")


# Importing -------------------------------------------------------------------------------


def test_importing_wsgi_observe_and_its_integrations_imports_no_framework() -> None:
    """wsgi_observe, wsgi_observe.django and the adapters import no framework until used."""
    code = (
        "import sys, wsgi_observe, wsgi_observe.checks, wsgi_observe.django\n"
        "import wsgi_observe.integrations.falcon, wsgi_observe.integrations.pyramid\n"
        "import wsgi_observe.integrations.bottle\n"
        "wsgi_observe.ObservabilityMiddleware\n"
        "found = sorted(m for m in ('django', 'falcon', 'pyramid', 'bottle', 'flask')"
        " if m in sys.modules)\n"
        "print(','.join(found) or 'none')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "none"


# Under gunicorn --------------------------------------------------------------------------


def _django_server(
    gunicorn: Callable[..., Gunicorn], database: str, settings: str = SETTINGS, **env: str
) -> Gunicorn:
    sqlite = Path(os.environ["LOG_DIR"]) / f"site-{uuid.uuid4().hex}.sqlite3"
    return gunicorn(
        "tests.apps.django_site.wsgi:application",
        "-w",
        "2",
        env={
            "DJANGO_SETTINGS_MODULE": settings,
            "DJANGO_SITE_DATABASE": database,
            "DJANGO_SITE_SQLITE": str(sqlite),
            **env,
        },
    )


def settled(server: Gunicorn, total: int) -> dict[str, Any]:
    """/metrics once ``total`` requests are recorded (never more: then it fails at once)."""

    def document() -> dict[str, Any] | None:
        doc: dict[str, Any] = json.loads(server.get("/metrics")[2])
        seen = doc["application"]["requests"]["total"]
        assert seen <= total, f"{seen} requests recorded, expected {total}"
        return doc if seen == total else None

    return wait_until(document)  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_django_under_gunicorn_counts_names_errors_ids_logs_and_readiness(
    gunicorn: Callable[..., Gunicorn], database: str
) -> None:
    """Two gunicorn workers: exact counts per pattern across workers, the 500 once in
    errors.log with its request id, and /health/ready 200 with an optional check degraded."""
    server = _django_server(gunicorn, database)
    for user in range(1, 21):
        status, _, body = server.get(f"/api/users/{user}")
        assert (status, json.loads(body)) == (200, {"id": user})
    assert server.get("/api/users/3/orders")[0] == 200  # urllib follows the 301
    status, headers, _ = server.get("/api/boom")
    assert status == 500
    request_id = headers["X-Request-ID"]

    # A worker records a request when the server closes the response, just after the client
    # has read it: wait for the last one, then every count must be exact.
    metrics = settled(server, 23)
    series = metrics["endpoints"]
    assert series["/api/users/<int:id>"]["requests"] == 20
    assert series["/api/users/<int:id>/orders/"]["requests"] == 2
    assert series["/api/users/<int:id>/orders/"]["status"]["3xx"] == 1
    assert (series["/api/boom"]["requests"], series["/api/boom"]["errors"]) == (1, 1)
    assert metrics["application"]["requests"]["total"] == 23
    assert metrics["service"] == "django-site"

    status, _, body = server.get("/health/ready")
    ready = json.loads(body)
    assert (status, ready["status"]) == (200, "degraded")
    assert ready["checks"]["database"]["status"] == "healthy"
    assert ready["checks"]["external_services"]["sendgrid"]["required"] is False

    errors_log = Path(server.log_dir or os.environ["LOG_DIR"]) / "errors.log"

    def one_error() -> list[dict[str, Any]]:
        return [json.loads(line) for line in errors_log.read_text().splitlines()]

    (line,) = wait_until(one_error)
    assert (line["logger"], line["request_id"]) == ("django.request", request_id)
    assert line["exception"]["type"] == "RuntimeError"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("settings", "name"),
    [
        pytest.param(SETTINGS + "_without", "/api/users/<int>", id="without-middleware"),
        pytest.param(SETTINGS + "_twice", "/api/users/<int:id>", id="listed-twice"),
    ],
)
def test_django_bad_middleware_settings_under_gunicorn(
    gunicorn: Callable[..., Gunicorn], settings: str, name: str
) -> None:
    """A project without the middleware, or with it twice, serves and counts each request once."""
    server = _django_server(gunicorn, "sqlite", settings)
    for user in range(1, 6):
        assert server.get(f"/api/users/{user}")[0] == 200
    series = settled(server, 5)["endpoints"]
    assert {key: value["requests"] for key, value in series.items()} == {name: 5}
    assert "Traceback" not in server.output()


@pytest.mark.slow
def test_readme_steps_and_example_boot_a_startproject_project(
    gunicorn: Callable[..., Gunicorn], tmp_path: Path
) -> None:
    """``django-admin startproject``, the README's steps followed literally and
    examples/django_wsgi.py copied over wsgi.py: gunicorn boots it, requests are named by
    pattern, and /health/ready is 200 with the optional checks degraded."""
    readme = (ROOT / "README.md").read_text("utf-8")
    middleware_line = '"wsgi_observe.django.RouteTemplateMiddleware",'
    assert middleware_line in readme
    assert "application = wrap(get_wsgi_application())" in readme
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(tmp_path)],
        check=True,
        timeout=60,
        env={key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"},
    )
    settings = tmp_path / "mysite" / "settings.py"
    text = settings.read_text()
    assert "MIDDLEWARE = [\n" in text
    text = text.replace("MIDDLEWARE = [\n", f"MIDDLEWARE = [\n    {middleware_line}\n", 1)
    text += '\nWSGI_OBSERVE = {"service_name": "mysite", "version": "1.0.0"}\n'
    settings.write_text(text)
    (tmp_path / "mysite" / "wsgi.py").write_text((ROOT / "examples" / "django_wsgi.py").read_text())

    server = gunicorn("mysite.wsgi", "--chdir", str(tmp_path), "-w", "2")
    for user in (5, 6):
        assert server.get(f"/admin/auth/user/{user}/change/")[0] == 200  # -> the login page
    assert server.get("/no/such/page")[0] == 404
    status, _, body = server.get("/health/ready")
    ready = json.loads(body)
    assert (status, ready["status"]) == (200, "degraded")
    assert ready["checks"]["database"]["status"] == "healthy"
    metrics = settled(server, 5)  # two redirects, two login pages, one 404
    assert metrics["service"] == "mysite"
    names = {name: data["requests"] for name, data in metrics["endpoints"].items()}
    assert names == {
        "/admin/auth/user/<path:object_id>/change/": 2,
        "/admin/login/": 2,
        "<unmatched>": 1,
    }
    assert "Traceback" not in server.output()


@pytest.mark.slow
def test_gunicorn_wraps_an_unchanged_wsgi_py(gunicorn: Callable[..., Gunicorn]) -> None:
    """``wsgi_observe.django:wrap('mysite.wsgi:application')`` wraps a wsgi.py as startproject
    wrote it: settings.WSGI_OBSERVE applies, names are patterns, the database is checked."""
    server = gunicorn(
        "wsgi_observe.django:wrap('tests.apps.django_site.plain_wsgi:application')", "-w", "2"
    )
    for user in (1, 2, 3):
        assert server.get(f"/api/users/{user}")[0] == 200
    metrics = settled(server, 3)
    assert metrics["service"] == "django-site"
    assert {name: data["requests"] for name, data in metrics["endpoints"].items()} == {
        "/api/users/<int:id>": 3
    }
    status, _, body = server.get("/health/ready")
    assert (status, json.loads(body)["checks"]["database"]["status"]) == (200, "healthy")


# Bodies (issue 18) -------------------------------------------------------------------------


def _observed_handler() -> Any:
    from django.core.handlers.wsgi import WSGIHandler

    from wsgi_observe.django import wrap
    from wsgi_observe.metrics import MetricsStore

    return wrap(WSGIHandler(), store=MetricsStore(), access_log=False, log_handlers=False)


def _environ(path: str) -> dict[str, Any]:
    from wsgi_client import environ_for

    return environ_for(path, headers={"Host": "testserver"})


def test_an_http_response_is_handed_over_as_a_list_closed_once() -> None:
    """Django's HttpResponse goes to the server as our list (the same bytes as iterating
    it); its close(), which sends request_finished, runs exactly once."""
    from django.core.signals import request_finished

    from wsgi_observe import _wsgi

    finished: list[object] = []

    def on_finished(sender: object, **kwargs: object) -> None:
        finished.append(sender)

    request_finished.connect(on_finished)
    try:
        app = _observed_handler()
        body = app(_environ("/api/users/5/orders/"), lambda status, headers, exc=None: None)
        assert type(body) is _wsgi.Exchange and body.inner is not None
        assert b"".join(body) == b'{"user": 5, "orders": []}'
        assert finished == []
        body.close()
        body.close()
        assert len(finished) == 1
    finally:
        request_finished.disconnect(on_finished)
    series = app.snapshot().endpoints["/api/users/<int:id>/orders/"]
    assert (series.count, series.errors) == (1, 0)


def test_a_streaming_response_is_streamed_and_a_failure_half_way_counted() -> None:
    """StreamingHttpResponse is not read ahead; an exception half-way reaches the server,
    close() runs once and the request is an error under its route."""
    app = _observed_handler()
    body = app(_environ("/api/stream/9"), lambda status, headers, exc=None: None)
    assert type(body) is not list
    assert b"".join(body) == b"chunk 0;chunk 1;chunk 2;"
    body.close()
    body = app(_environ("/api/stream/2"), lambda status, headers, exc=None: None)
    received = []
    with pytest.raises(RuntimeError, match="django stream failed"):
        for chunk in body:
            received.append(chunk)
    body.close()
    assert received == [b"chunk 0;", b"chunk 1;"]
    series = app.snapshot().endpoints["/api/stream/<int:fail_at>"]
    assert (series.count, series.errors) == (2, 1)
