"""Sentry reporting with the real sentry-sdk, sending over HTTP to a receiver on 127.0.0.1."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Optional
from wsgiref.validate import validator

import pytest
import sentry_sdk
import wsgi_client
from flask import Flask
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.integrations.wsgi import SentryWsgiMiddleware

from wsgi_observe import reporting
from wsgi_observe.integrations.sentry import PROBE_PATHS, init_sentry, scrub_event
from wsgi_observe.integrations.sentry_reporter import SentryReporter
from wsgi_observe.metrics import MetricsStore
from wsgi_observe.middleware import ObservabilityMiddleware
from wsgi_observe.redact import REDACTED

if TYPE_CHECKING:
    from sentry_receiver import SentryReceiver

pytest_plugins = ("sentry_receiver",)  # its fixtures: sentry_receiver, sentry_init

SECRETS = {
    "Authorization": "Bearer s3cr3t-t0ken-4711",
    "Cookie": "session=c00kie-v4lue-0815",
}
QUERY = "api_key=k3y-v4lue-1234&page=2"
SECRET_VALUES = ("s3cr3t-t0ken-4711", "c00kie-v4lue-0815", "k3y-v4lue-1234")
TRACE_ID = "771a43a4192642f0b136d5159a501700"
PARENT_SPAN_ID = "1234567890abcdef"


def call(
    app: Any,
    path: str = "/",
    *,
    method: str = "GET",
    query: str = "",
    headers: Optional[dict[str, str]] = None,
) -> tuple[str, bytes]:
    """One request through ``wsgiref.validate``; returns (status, body)."""
    response = wsgi_client.call(app, path, method, query=query, headers=headers)
    return response.status, response.body


def observed(app: Any, **overrides: Any) -> ObservabilityMiddleware:
    """``app`` in the middleware, validated on both sides, with a fresh store."""
    overrides.setdefault("access_log", False)
    return ObservabilityMiddleware(validator(app), store=MetricsStore(), **overrides)


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def leads_app() -> Flask:
    app = Flask("leads")

    @app.get("/api/leads/<int:lead_id>")
    def get_lead(lead_id: int) -> dict[str, int]:
        return {"id": lead_id}

    return app


@pytest.fixture
def no_sentry_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SENTRY_DSN", "SENTRY_ENVIRONMENT", "SENTRY_TRACES_SAMPLE_RATE"):
        monkeypatch.delenv(name, raising=False)


def test_error_reaches_sentry_with_request_context_and_no_secrets(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """An app exception arrives with request data, endpoint, tags and breadcrumbs, and no secret."""
    sentry_init(environment="staging", release="1.2.3", traces_sample_rate=1.0)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        logging.getLogger("tests.leads").warning("lead 17 is locked")
        raise RuntimeError("cannot reach https://abcdef0123456789@o1.example.invalid/42")

    middleware = observed(app)
    with pytest.raises(RuntimeError):
        call(middleware, "/api/leads/17", query=QUERY, headers=SECRETS)

    (event,) = sentry_receiver.wait_for("event")
    sentry_sdk.flush(timeout=10)
    exception = event["exception"]["values"][-1]
    assert exception["type"] == "RuntimeError"
    assert exception["mechanism"]["type"] == "wsgi_observe"
    assert exception["mechanism"]["handled"] is False
    request = event["request"]
    assert request["url"] == "http://127.0.0.1/api/leads/17"
    assert request["method"] == "GET"
    assert request["query_string"] == f"api_key={REDACTED}&page=2"
    assert request["headers"]["Authorization"] == REDACTED
    assert request["headers"]["Cookie"] == REDACTED
    assert event["tags"]["endpoint"] == "/api/leads/<int>"
    assert event["tags"]["environment"] == "staging"
    assert event["tags"]["release"] == "1.2.3"
    assert event["transaction"] == "/api/leads/<int>"
    crumbs = event["breadcrumbs"]["values"]
    assert crumbs[0]["category"] == "request"
    assert crumbs[0]["data"]["url"] == "http://127.0.0.1/api/leads/17"
    assert any(crumb.get("message") == "lead 17 is locked" for crumb in crumbs)
    raw = sentry_receiver.raw_bytes()
    for secret in (*SECRET_VALUES, "abcdef0123456789"):
        assert secret.encode() not in raw


def test_exception_propagates_unchanged_and_counts_as_error(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """The very exception object the app raised leaves the middleware and /metrics counts it."""
    sentry_init()
    error = ValueError("bad lead")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise error

    middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
    with pytest.raises(ValueError) as raised:
        call(middleware, "/api/leads")
    assert raised.value is error
    sentry_receiver.wait_for("event")
    status, body = call(middleware, "/metrics")
    assert status == "200 OK"
    assert json.loads(body)["application"]["requests"]["errors"] == 1


def test_mid_stream_exception_is_captured_in_the_request_scope(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """An exception while the body streams is sent with the request's data; close() runs once."""
    sentry_init(traces_sample_rate=1.0)
    closes: list[int] = []

    class Body:
        def __init__(self) -> None:
            self.chunks = iter([b"first"])

        def __iter__(self) -> Body:
            return self

        def __next__(self) -> bytes:
            chunk = next(self.chunks, None)
            if chunk is None:
                sentry_sdk.add_breadcrumb(message="streaming", category="app")
                raise OSError("disk went away")
            return chunk

        def close(self) -> None:
            closes.append(1)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    middleware = observed(app)
    with pytest.raises(OSError, match="disk went away"):
        call(middleware, "/export/7")
    (event,) = sentry_receiver.wait_for("event")
    (transaction,) = sentry_receiver.wait_for("transaction")
    assert closes == [1]
    assert event["exception"]["values"][-1]["mechanism"]["handled"] is False
    assert event["request"]["url"] == "http://127.0.0.1/export/7"
    assert event["tags"]["endpoint"] == "/export/<int>"
    assert any(crumb.get("message") == "streaming" for crumb in event["breadcrumbs"]["values"])
    assert event["contexts"]["trace"]["trace_id"] == transaction["contexts"]["trace"]["trace_id"]
    assert transaction["contexts"]["trace"]["status"] == "internal_error"


@pytest.mark.parametrize("where", [pytest.param("before", id="before-body"), "mid-stream"])
def test_an_error_is_reported_once_though_it_is_also_logged(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool], where: str
) -> None:
    """The access log's ERROR line for an unhandled exception does not make a second event."""
    sentry_init()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        if where == "before":
            raise OSError("lead store offline")
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        raise OSError("lead store offline")

    middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=True)
    with pytest.raises(OSError):
        call(middleware, "/api/leads")
    sentry_receiver.wait_for("event")
    sentry_sdk.flush(timeout=10)
    mechanisms = [e["exception"]["values"][-1]["mechanism"]["type"] for e in sentry_receiver.events]
    assert mechanisms == ["wsgi_observe"]


@pytest.mark.parametrize(
    "framework_integration",
    [pytest.param(True, id="with-flask-integration"), pytest.param(False, id="ours-only")],
)
def test_transaction_is_named_by_the_route_template(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool], framework_integration: bool
) -> None:
    """A Flask request's transaction is named by its rule, with source route and our tags."""
    options: dict[str, Any] = (
        {} if framework_integration else {"disabled_integrations": [FlaskIntegration()]}
    )
    sentry_init(environment="production", release="2.0.0", traces_sample_rate=1.0, **options)
    app = leads_app()
    app.wsgi_app = observed(app.wsgi_app)  # type: ignore[method-assign]

    status, body = call(app, "/api/leads/17")

    assert status == "200 OK"
    assert json.loads(body) == {"id": 17}
    (transaction,) = sentry_receiver.wait_for("transaction")
    assert transaction["transaction"] == "/api/leads/<int:lead_id>"
    assert transaction["transaction_info"]["source"] == "route"
    assert transaction["contexts"]["trace"]["op"] == "http.server"
    assert transaction["contexts"]["trace"]["status"] == "ok"
    assert transaction["tags"]["endpoint"] == "/api/leads/<int:lead_id>"
    assert transaction["tags"]["environment"] == "production"
    assert transaction["tags"]["release"] == "2.0.0"
    assert transaction["request"]["url"] == "http://127.0.0.1/api/leads/17"


@pytest.mark.parametrize(
    "outer",
    [pytest.param(False, id="ours"), pytest.param(True, id="inside-sentry-wsgi-middleware")],
)
def test_probes_are_never_traced_even_at_full_sampling(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool], outer: bool
) -> None:
    """/health, /health/live, /health/ready and /metrics make no transaction, whoever traces."""
    sentry_init(traces_sample_rate=1.0)
    app: Any = observed(hello)
    if outer:
        app = SentryWsgiMiddleware(app)  # a user's own sentry WSGI integration
    for path in sorted(PROBE_PATHS):
        for method in ("GET", "HEAD"):
            status, _ = call(app, path, method=method)
            assert status.startswith(("200", "503"))
    call(app, "/api/leads")

    sentry_receiver.wait_for("transaction")
    sentry_sdk.flush(timeout=10)
    assert [t["transaction"] for t in sentry_receiver.transactions] == ["/api/leads"]


def test_options_and_head_requests_are_not_traced(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """CORS preflights and HEAD checks make no transaction, as in sentry-sdk's integration."""
    sentry_init(traces_sample_rate=1.0)
    middleware = observed(hello)
    for method in ("OPTIONS", "HEAD", "GET"):
        call(middleware, "/api/leads", method=method)
    sentry_receiver.wait_for("transaction")
    sentry_sdk.flush(timeout=10)
    assert [t["request"]["method"] for t in sentry_receiver.transactions] == ["GET"]


def test_one_in_ten_requests_is_traced_at_rate_0_1(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """At a sample rate of 0.1, about a tenth of 1000 requests become transactions."""
    sentry_init(traces_sample_rate=0.1, transport_queue_size=2000)
    middleware = observed(hello)
    for _ in range(1000):
        call(middleware, "/api/leads")
    sentry_sdk.flush(timeout=20)
    count = len(sentry_receiver.transactions)
    assert 60 <= count <= 150, count  # Binomial(1000, 0.1): mean 100, sd 9.5
    assert {
        t["contexts"]["trace"]["data"].get("http.response.status_code")
        for t in sentry_receiver.transactions
    } == {200}
    assert {t["contexts"]["trace"].get("status") for t in sentry_receiver.transactions} == {"ok"}
    # Each trace's dynamic sampling context tells the truth about the decision.
    contexts = [
        e.headers["trace"] for e in sentry_receiver.envelopes if e.items[0].type == "transaction"
    ]
    assert {c["sample_rate"] for c in contexts} == {"0.1"}
    assert {c["sampled"] for c in contexts} == {"true"}
    assert all(float(c["sample_rand"]) < 0.1 for c in contexts)


def test_sample_rate_defaults_to_full_in_development_and_a_tenth_elsewhere(
    sentry_receiver: SentryReceiver,
    sentry_init: Callable[..., bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guide's defaults: 100% in development, 10% elsewhere, unless the rate is set."""
    monkeypatch.delenv("SENTRY_TRACES_SAMPLE_RATE", raising=False)
    rates = {}
    for environment in ("development", "production"):
        sentry_init(environment=environment)
        rates[environment] = sentry_sdk.get_client().options["traces_sampler"].constant_rate
    monkeypatch.setenv("SENTRY_TRACES_SAMPLE_RATE", "0.25")
    sentry_init(environment="production")
    rates["configured"] = sentry_sdk.get_client().options["traces_sampler"].constant_rate
    assert rates == {"development": 1.0, "production": 0.1, "configured": 0.25}


def test_without_a_dsn_nothing_is_wrapped(no_sentry_env: None) -> None:
    """init_sentry() without SENTRY_DSN returns False and no reporter is installed."""
    assert init_sentry() is False
    middleware = ObservabilityMiddleware(hello, store=MetricsStore(), access_log=False)
    assert middleware.app is hello
    assert reporting.current is None
    assert call(middleware, "/api/leads")[0] == "200 OK"


def test_importing_and_using_the_middleware_without_a_dsn_never_imports_sentry_sdk() -> None:
    """Without SENTRY_DSN a fresh process keeps the plain app and never imports sentry_sdk."""
    code = textwrap.dedent(
        """
        import os, sys
        os.environ.pop("SENTRY_DSN", None)
        import wsgi_observe
        from wsgi_observe.middleware import ObservabilityMiddleware
        def app(environ, start_response):
            start_response("200 OK", [])
            return [b""]
        middleware = ObservabilityMiddleware(app, access_log=False, log_handlers=False)
        assert middleware.app is app, middleware.app
        assert wsgi_observe.init_sentry() is False
        from wsgi_observe import reporting
        assert reporting.current is None
        assert "sentry_sdk" not in sys.modules
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_a_dsn_in_the_config_starts_sentry_once(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool], no_sentry_env: None
) -> None:
    """A middleware with sentry_dsn in its config starts Sentry; a second one reuses the client."""
    observed(hello, sentry_dsn=sentry_receiver.dsn, environment="staging")
    client = sentry_sdk.get_client()
    observed(hello, sentry_dsn=sentry_receiver.dsn)
    assert client.is_active() and sentry_sdk.get_client() is client
    assert isinstance(reporting.current, SentryReporter)  # one slot, nothing patched
    assert client.options["environment"] == "staging"


def test_init_sentry_after_the_middleware_exists_instruments_it(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool], no_sentry_env: None
) -> None:
    """A middleware built before init_sentry() (a gunicorn post_fork hook) reports errors too."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise KeyError("lead")

    middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
    assert reporting.current is None
    assert sentry_init() is True
    assert isinstance(reporting.current, SentryReporter)
    assert middleware.app is app  # nothing patched: the pipeline reads the reporter slot
    with pytest.raises(KeyError):
        call(middleware, "/api/leads")
    (event,) = sentry_receiver.wait_for("event")
    assert event["exception"]["values"][-1]["type"] == "KeyError"


def test_an_incoming_sampled_trace_is_continued(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """A request with a sampled sentry-trace header joins that trace, even at sample rate 0."""
    sentry_init(traces_sample_rate=0.0)
    middleware = observed(hello)
    call(
        middleware,
        "/api/leads",
        headers={
            "sentry-trace": f"{TRACE_ID}-{PARENT_SPAN_ID}-1",
            "baggage": "sentry-sample_rand=0.5",
        },
    )
    (transaction,) = sentry_receiver.wait_for("transaction")
    trace = transaction["contexts"]["trace"]
    assert trace["trace_id"] == TRACE_ID
    assert trace["parent_span_id"] == PARENT_SPAN_ID


def test_an_incoming_unsampled_trace_stays_unsampled_but_errors_join_it(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """A caller's "-0" holds even at sample rate 1.0, and an error joins the caller's trace."""
    sentry_init(traces_sample_rate=1.0)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("lead service down")

    middleware = observed(app)
    with pytest.raises(RuntimeError):
        call(middleware, "/api/leads", headers={"sentry-trace": f"{TRACE_ID}-{PARENT_SPAN_ID}-0"})
    (event,) = sentry_receiver.wait_for("event")
    sentry_sdk.flush(timeout=10)
    assert event["contexts"]["trace"]["trace_id"] == TRACE_ID
    assert sentry_receiver.transactions == []


def test_an_unsampled_request_tells_downstream_it_was_not_sampled(
    sentry_init: Callable[..., bool],
) -> None:
    """Outgoing trace headers of an unsampled request say "-0", with a new trace per request."""
    sentry_init(traces_sample_rate=0.0)
    seen: list[tuple[str, str]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append((sentry_sdk.get_traceparent() or "", sentry_sdk.get_baggage() or ""))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = observed(app)
    call(middleware, "/a")
    call(middleware, "/b")
    (first, first_baggage), (second, _) = seen
    assert first.endswith("-0") and second.endswith("-0")
    assert first.split("-")[0] != second.split("-")[0]
    assert "sentry-sampled=false" in first_baggage
    assert "sentry-sample_rate=0.0" in first_baggage


def test_scrub_event_removes_secrets_from_frames_breadcrumbs_and_messages() -> None:
    """scrub_event redacts secret keys and secrets inside strings wherever they sit."""
    event: dict[str, Any] = {
        "message": "retrying https://user:hunter2pass@db.example.invalid/crm",
        "exception": {
            "values": [
                {
                    "value": "401 for /v2/leads?token=t0k3n-abcdef&page=1",
                    "stacktrace": {
                        "frames": [
                            {
                                "vars": {
                                    "environ": {
                                        "HTTP_AUTHORIZATION": "'Basic dXNlcjpwYXNz'",
                                        "HTTP_COOKIE": "'session=abc'",
                                        "QUERY_STRING": "'api_key=zzz999'",
                                        "PATH_INFO": "'/api/leads'",
                                    },
                                    "password": "'x'",
                                    "count": 3,
                                }
                            }
                        ]
                    },
                }
            ]
        },
        "breadcrumbs": {"values": [{"data": {"url": "https://api.example.invalid/?key=s3cr3t"}}]},
        "sdk": {"name": "sentry.python"},
    }
    scrubbed = scrub_event(event)
    text = json.dumps(scrubbed)
    for secret in (
        "hunter2pass",
        "t0k3n-abcdef",
        "dXNlcjpwYXNz",
        "session=abc",
        "zzz999",
        "s3cr3t",
    ):
        assert secret not in text
    frame_vars = scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]["vars"]
    assert frame_vars["environ"]["PATH_INFO"] == "'/api/leads'"
    assert frame_vars["password"] == REDACTED
    assert frame_vars["count"] == 3


def test_user_hooks_run_before_ours(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """A user's before_send sees the event first; ours still scrubs what it returns."""

    def before_send(event: dict[str, Any], hint: Any) -> dict[str, Any]:
        event.setdefault("extra", {})["note"] = "token=added-by-user-99"
        return event

    sentry_init(before_send=before_send)
    sentry_sdk.capture_message("hello")
    (event,) = sentry_receiver.wait_for("event")
    assert event["extra"]["note"] == f"token={REDACTED}"


def test_concurrent_requests_keep_their_own_scope(
    sentry_receiver: SentryReceiver, sentry_init: Callable[..., bool]
) -> None:
    """Two requests in flight at once never see each other's tags or breadcrumbs."""
    sentry_init()
    both_inside = threading.Barrier(2, timeout=10)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        lead = environ["PATH_INFO"].rsplit("/", 1)[-1]
        sentry_sdk.set_tag("lead", lead)
        sentry_sdk.add_breadcrumb(message=f"loading {lead}")
        both_inside.wait()
        raise LookupError(lead)

    middleware = observed(app)
    failures: list[BaseException] = []

    def run(path: str) -> None:
        try:
            call(middleware, path)
        except LookupError as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(f"/api/leads/{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(failures) == 2
    events = sentry_receiver.wait_for("event", 2)
    for event in events:
        lead = event["exception"]["values"][-1]["value"].strip("'")
        assert event["tags"]["lead"] == lead
        messages = [crumb.get("message") for crumb in event["breadcrumbs"]["values"]]
        assert messages == ["GET /api/leads/<int>", f"loading {lead}"]


def test_a_file_wrapper_body_stays_a_file_wrapper(sentry_init: Callable[..., bool]) -> None:
    """With Sentry on, a wsgi.file_wrapper response still reaches the server as one (sendfile)."""
    sentry_init(traces_sample_rate=1.0)

    class FileWrapper:
        def __init__(self, filelike: Any, blksize: int = 8192) -> None:
            self.filelike = filelike
            self.blksize = blksize

        def __iter__(self) -> Iterator[bytes]:
            return iter(lambda: self.filelike.read(self.blksize), b"")

        def close(self) -> None:
            self.filelike.close()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"report"))

    middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
    environ = wsgi_client.environ_for("/report", **{"wsgi.file_wrapper": FileWrapper})
    body = middleware(environ, lambda status, headers, exc_info=None: None)
    try:
        assert isinstance(body, FileWrapper)
        assert b"".join(body) == b"report"
    finally:
        body.close()  # type: ignore[attr-defined]


def test_a_client_the_application_started_itself_is_used(
    sentry_receiver: SentryReceiver, no_sentry_env: None
) -> None:
    """An app that calls sentry_sdk.init() itself, then wraps with no DSN configured, gets
    its errors reported with our request data and endpoint name."""
    from sentry_receiver import close_sentry

    sentry_sdk.init(dsn=sentry_receiver.dsn, traces_sample_rate=0.0)
    try:

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            environ["wsgi_observe.endpoint"] = "/api/leads/<int:id>"
            raise KeyError("lead")

        middleware = ObservabilityMiddleware(app, store=MetricsStore(), access_log=False)
        assert isinstance(reporting.current, SentryReporter)
        with pytest.raises(KeyError):
            call(middleware, "/api/leads/3")
        (event,) = sentry_receiver.wait_for("event")
        assert event["exception"]["values"][-1]["type"] == "KeyError"
        assert event["tags"]["endpoint"] == "/api/leads/<int:id>"
    finally:
        close_sentry()
