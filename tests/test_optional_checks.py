"""Readiness checks that do not block: checks.optional(), "required": false, 200 on degraded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import orjson
import pytest

from wsgi_observe import ObservabilityMiddleware, checks
from wsgi_observe.health import ReadinessRunner, is_ready
from wsgi_observe.metrics import MetricsStore


def returning(outcome: Any) -> Callable[[], Any]:
    return lambda: outcome


def raising(error: BaseException) -> Callable[[], Any]:
    def check() -> Any:
        raise error

    return check


MISSING_KEY = returning(
    {"status": "degraded", "available": False, "message": "API key not configured"}
)


def inner_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def middleware(probe_checks: dict[str, Any], **overrides: Any) -> ObservabilityMiddleware:
    return ObservabilityMiddleware(
        validator(inner_app),
        store=MetricsStore(),
        access_log=False,
        checks=probe_checks,
        readiness_cache_ttl=0.0,
        **overrides,
    )


def get(
    app: Callable[..., Any],
    path: str = "/health/ready",
    *,
    method: str = "GET",
    query: str = "",
    headers: Optional[dict[str, str]] = None,
) -> tuple[int, bytes]:
    """One request through ``wsgiref.validate``; returns status code and body."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    seen: dict[str, str] = {}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen["status"] = status
        return lambda data: None

    body = validator(app)(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        body.close()
    return int(seen["status"][:3]), data


def test_optional_external_service_keeps_the_probe_ready() -> None:
    """A missing SendGrid key in an optional group: 200, status degraded, shown as not required."""
    app = middleware(
        {
            "database": returning({"message": "Database connection successful"}),
            "external_services": checks.optional(
                {"sendgrid": MISSING_KEY, "twilio": returning(True)}
            ),
        }
    )
    status, raw = get(app)
    body = orjson.loads(raw)
    assert status == 200
    assert body["status"] == "degraded"
    assert set(body) == {"status", "timestamp", "checks"}
    assert "required" not in body["checks"]["database"]
    sendgrid = body["checks"]["external_services"]["sendgrid"]
    assert sendgrid["status"] == "degraded"
    assert sendgrid["available"] is False
    assert sendgrid["message"] == "API key not configured"
    assert sendgrid["required"] is False
    assert body["checks"]["external_services"]["twilio"]["required"] is False


@pytest.mark.parametrize(
    ("required", "optional_outcome", "http_status", "overall"),
    [
        pytest.param(True, True, 200, "healthy", id="all-healthy"),
        pytest.param(True, False, 200, "degraded", id="optional-false"),
        pytest.param(True, raising(OSError("refused")), 200, "degraded", id="optional-raises"),
        pytest.param(True, MISSING_KEY, 200, "degraded", id="optional-degraded"),
        pytest.param({"status": "degraded"}, True, 503, "degraded", id="required-degraded"),
        pytest.param(False, True, 503, "unhealthy", id="required-unhealthy"),
        pytest.param(False, False, 503, "unhealthy", id="both-unhealthy"),
    ],
)
def test_required_checks_decide_the_http_status(
    required: Any, optional_outcome: Any, http_status: int, overall: str
) -> None:
    """Only required checks give 503; an optional one can at most make the status degraded."""
    optional_check = optional_outcome if callable(optional_outcome) else returning(optional_outcome)
    app = middleware({"database": returning(required), "cache": checks.optional(optional_check)})
    status, raw = get(app)
    assert (status, orjson.loads(raw)["status"]) == (http_status, overall)


def test_an_unhealthy_optional_check_keeps_its_own_status() -> None:
    """An optional check that raised is shown unhealthy with its message; overall is degraded."""
    runner = ReadinessRunner(
        {"database": returning(True), "search": checks.optional(raising(OSError("refused")))}
    )
    body = runner.result()
    assert body["status"] == "degraded"
    search = body["checks"]["search"]
    assert search["status"] == "unhealthy"
    assert "refused" in search["message"]
    assert search["required"] is False
    assert is_ready(body)


def test_every_check_optional_is_ready_even_when_all_fail() -> None:
    """With only optional checks, even all failing, the probe answers 200 degraded."""
    app = middleware({"a": checks.optional(returning(False)), "b": checks.optional(MISSING_KEY)})
    status, raw = get(app)
    assert (status, orjson.loads(raw)["status"]) == (200, "degraded")


def test_a_check_cannot_make_itself_optional_by_what_it_returns() -> None:
    """A required check returning ``required: False`` stays required: 503 and no such field."""
    app = middleware({"database": returning({"status": "degraded", "required": False})})
    status, raw = get(app)
    body = orjson.loads(raw)
    assert status == 503
    assert "required" not in body["checks"]["database"]


def test_a_callable_with_required_false_is_optional() -> None:
    """Any check whose ``required`` attribute is False counts as optional (no wrapper needed)."""

    def search() -> bool:
        return False

    search.required = False  # type: ignore[attr-defined]
    status, raw = get(middleware({"database": returning(True), "search": search}))
    assert status == 200
    assert orjson.loads(raw)["checks"]["search"]["required"] is False


def test_optional_is_idempotent_and_keeps_the_check_name() -> None:
    """optional(optional(check)) is the same optional check, named like the check."""

    def sendgrid_check() -> bool:
        return True

    once = checks.optional(sendgrid_check)
    assert checks.optional(once) is once
    assert once.__name__ == "sendgrid_check"
    assert once() is True


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("postgres://db", id="string"),
        pytest.param(None, id="none"),
        pytest.param({"sendgrid": 42}, id="group-member"),
    ],
)
def test_optional_refuses_what_is_not_a_check(value: Any) -> None:
    """optional() of something that is not callable fails at once, naming it, not at probe time."""
    with pytest.raises(TypeError, match="not callable"):
        checks.optional(value)


def test_head_probe_and_token_view_keep_the_same_status() -> None:
    """HEAD and the token-less view answer 200 too when only an optional check is degraded."""
    app = middleware(
        {"database": returning(True), "mail": checks.optional(MISSING_KEY)},
        metrics_token="t0ken",
    )
    assert get(app, method="HEAD") == (200, b"")
    status, raw = get(app)
    assert status == 200
    assert orjson.loads(raw).keys() == {"status", "timestamp"}


@pytest.mark.parametrize(
    ("database", "ready"),
    [pytest.param(True, 1, id="required-healthy"), pytest.param(False, 0, id="required-down")],
)
def test_prometheus_ready_agrees_with_the_probe(database: bool, ready: int) -> None:
    """wsgi_observe_ready follows the probe's HTTP status; the required family marks optionals."""
    app = middleware(
        {
            "database": returning(database),
            "external_services": checks.optional({"sms": MISSING_KEY}),
        }
    )
    status, _ = get(app)
    assert status == (200 if ready else 503)
    _, text = get(app, "/metrics", query="format=prometheus")
    lines = set(text.decode().splitlines())
    assert f"wsgi_observe_ready {ready}" in lines
    assert 'wsgi_observe_readiness_check_required{check="database"} 1' in lines
    assert 'wsgi_observe_readiness_check_required{check="sms",group="external_services"} 0' in lines
    assert 'wsgi_observe_readiness_check_healthy{check="sms",group="external_services"} 0' in lines


@pytest.mark.parametrize(
    ("body", "ready"),
    [
        pytest.param({"status": "healthy", "checks": {}}, True, id="healthy"),
        pytest.param({"status": "unhealthy", "checks": {}}, False, id="runner-failed"),
        pytest.param(
            {"status": "degraded", "checks": {"db": {"status": "degraded"}}}, False, id="required"
        ),
        pytest.param(
            {"status": "degraded", "checks": {"db": {"status": "degraded", "required": False}}},
            True,
            id="optional",
        ),
        pytest.param({"status": "degraded"}, False, id="no-checks-field"),
        pytest.param({"status": "sideways", "checks": {}}, False, id="unknown-status"),
    ],
)
def test_is_ready_reads_a_body(body: dict[str, Any], ready: bool) -> None:
    """is_ready() is True for healthy, or degraded only by optional checks; False otherwise."""
    assert is_ready(body) is ready
