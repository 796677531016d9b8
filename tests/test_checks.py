"""Ready-made readiness checks against real SQLite, PostgreSQL, Redis, TCP and HTTP servers."""

from __future__ import annotations

import importlib
import re
import socket
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import urlsplit
from wsgiref.validate import validator

import orjson
import psycopg
import pytest
from conftest import free_port
from wsgi_client import call

from wsgi_observe import ObservabilityMiddleware, checks
from wsgi_observe.health import ReadinessRunner
from wsgi_observe.metrics import MetricsStore

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=2"
REDIS_URL = "redis://127.0.0.1:6379/0"
SLOW_RESPONSE_BOUND_S = 5.0  # the slow HTTP handler never holds a thread longer than this


def run(check: Callable[[], Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """The result of ``check`` as the readiness runner reports it (exceptions included)."""
    return ReadinessRunner({"c": check}, timeout_s=timeout_s, cache_ttl_s=0.0).result()["checks"][
        "c"
    ]


def probe(app: Callable[..., Any]) -> tuple[int, dict[str, Any]]:
    """GET /health/ready through ``wsgiref.validate.validator``; returns status and JSON body."""
    response = call(app, "/health/ready")
    return response.code, orjson.loads(response.body)


def inner_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def middleware(ready_checks: dict[str, Any]) -> ObservabilityMiddleware:
    return ObservabilityMiddleware(
        validator(inner_app),
        store=MetricsStore(),
        access_log=False,
        checks=ready_checks,
        readiness_cache_ttl=0.0,
    )


# database ---------------------------------------------------------------------------------


class ClosingSpy:
    """A DB-API connection proxy that counts ``close()`` calls."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.closed = 0

    def cursor(self) -> Any:
        return self.connection.cursor()

    def close(self) -> None:
        self.closed += 1
        self.connection.close()


def test_database_sqlite_is_healthy() -> None:
    """An SQLite connection that answers SELECT 1 is healthy with the guide's message."""
    result = run(checks.database(lambda: sqlite3.connect(":memory:")))
    assert result["status"] == "healthy"
    assert result["message"] == "Database connection successful"
    assert result["latency_ms"] >= 0


@pytest.mark.parametrize(
    ("connect", "query", "fragment"),
    [
        pytest.param(
            lambda: sqlite3.connect("/nonexistent-dir/sub/app.db"),
            "SELECT 1",
            "unable to open database file",
            id="connect-fails",
        ),
        pytest.param(
            lambda: sqlite3.connect(":memory:"),
            "SELECT * FROM no_such_table",
            "no such table: no_such_table",
            id="bad-query",
        ),
    ],
)
def test_database_sqlite_failure_is_unhealthy_with_driver_message(
    connect: Callable[[], Any], query: str, fragment: str
) -> None:
    """A failing connect or query is unhealthy and reports the driver's own message."""
    result = run(checks.database(connect, query))
    assert result["status"] == "unhealthy"
    assert fragment in result["message"]
    assert "OperationalError" in result["message"]


def test_database_closes_the_connection_when_the_query_fails() -> None:
    """The connection is closed exactly once even when the query raises."""
    spies: list[ClosingSpy] = []

    def connect() -> ClosingSpy:
        spies.append(ClosingSpy(sqlite3.connect(":memory:")))
        return spies[-1]

    for query, status in (("SELECT 1", "healthy"), ("SELEC 1", "unhealthy")):
        assert run(checks.database(connect, query))["status"] == status
    assert [spy.closed for spy in spies] == [1, 1]


def test_database_postgres_is_healthy() -> None:
    """The local PostgreSQL server through psycopg is healthy."""
    result = run(checks.database(lambda: psycopg.connect(PG_DSN)))
    assert result["status"] == "healthy"
    assert result["message"] == "Database connection successful"


@pytest.mark.parametrize(
    ("dsn", "query", "fragment"),
    [
        pytest.param(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=1",
            "SELECT 1",
            "Connection refused",
            id="closed-port",
        ),
        pytest.param(
            "host=127.0.0.1 port=5432 user=postgres dbname=no_such_db connect_timeout=2",
            "SELECT 1",
            'database "no_such_db" does not exist',
            id="missing-database",
        ),
        pytest.param(PG_DSN, "SELECT * FROM no_such_table", "no_such_table", id="bad-query"),
    ],
)
def test_database_postgres_failure_is_unhealthy(dsn: str, query: str, fragment: str) -> None:
    """PostgreSQL on a closed port, a missing database or a bad query is unhealthy, with why."""
    dsn = dsn.format(port=free_port())
    result = run(checks.database(lambda: psycopg.connect(dsn), query))
    assert result["status"] == "unhealthy"
    assert fragment in result["message"]


# redis ------------------------------------------------------------------------------------


def redis_reply(*words: str) -> str:
    """The first reply line the local Redis gives to one raw RESP command (without the ``-``)."""
    payload = b"*%d\r\n" % len(words) + b"".join(
        b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in words
    )
    with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
        sock.sendall(payload)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    line = reply.split(b"\r\n", 1)[0].decode()
    assert line.startswith("-"), f"Redis accepted {words!r}: {line!r}"
    return line[1:]


@pytest.fixture(params=["redis-py", "socket"])
def redis_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each redis test runs twice: with redis-py, and with the no-dependency socket fallback
    (redis-py made unimportable, as on a machine without it)."""
    if request.param == "socket":
        monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    else:
        assert importlib.import_module("redis") is not None
    return str(request.param)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(REDIS_URL, id="db-0"),
        pytest.param("redis://127.0.0.1:6379", id="no-db"),
        pytest.param("redis://127.0.0.1", id="default-port"),
    ],
)
def test_redis_is_healthy(redis_path: str, url: str) -> None:
    """The local Redis server answers PING and is healthy."""
    result = run(checks.redis(url))
    assert result == {
        "status": "healthy",
        "message": "Redis connection successful",
        "latency_ms": result["latency_ms"],
    }


def test_redis_on_closed_port_is_unhealthy(redis_path: str) -> None:
    """Redis on a port nobody listens on is unhealthy with the refused connection."""
    result = run(checks.redis(f"redis://127.0.0.1:{free_port()}/0"))
    assert result["status"] == "unhealthy"
    assert "Connection refused" in result["message"]


def test_redis_wrong_password_reports_redis_error(redis_path: str) -> None:
    """A user and password the server refuses are unhealthy with Redis's own words."""
    expected = redis_reply("AUTH", "nobody", "hunter2")  # "WRONGPASS invalid username-..."
    result = run(checks.redis("redis://nobody:hunter2@127.0.0.1:6379/0"))
    assert result["status"] == "unhealthy"
    if redis_path == "socket":
        assert result["message"] == f"Redis error: {expected}"
    else:  # redis-py drops the error code
        assert result["message"] == f"Redis error: {expected.split(' ', 1)[1]}"
    assert "hunter2" not in result["message"]


def test_redis_socket_fallback_reports_a_refused_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis-py, a password the server does not take is unhealthy with its reply."""
    monkeypatch.setitem(sys.modules, "redis", None)
    expected = redis_reply("AUTH", "hunter2")  # "ERR AUTH <password> called without any ..."
    result = run(checks.redis("redis://:hunter2@127.0.0.1:6379/0"))
    assert result["status"] == "unhealthy"
    assert result["message"] == f"Redis error: {expected}"
    assert "hunter2" not in result["message"]


class ClientSpy:
    """A redis-py client made by a factory, counting ``close()`` calls."""

    made: list[ClientSpy] = []

    def __init__(self, **kwargs: Any) -> None:
        import redis as redis_py
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: redis-py's default retries a refused login three times with backoff,
        # longer than a probe should wait.
        self.client = redis_py.Redis(retry=Retry(NoBackoff(), 0), **kwargs)
        self.closed = 0
        ClientSpy.made.append(self)

    def ping(self) -> Any:
        return self.client.ping()

    def close(self) -> None:
        self.closed += 1
        self.client.close()


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        pytest.param({"host": "127.0.0.1", "port": 6379}, "healthy", "successful", id="healthy"),
        pytest.param(
            {"host": "127.0.0.1", "port": 6379, "username": "nobody", "password": "hunter2"},
            "unhealthy",
            "invalid username-password pair",
            id="wrong-password",
        ),
    ],
)
def test_redis_client_factory_is_called_per_run_and_closed(
    kwargs: dict[str, Any], status: str, fragment: str
) -> None:
    """``client=`` builds a client for each run (Sentinel, TLS, ... through the factory) and
    closes it afterwards."""
    ClientSpy.made = []
    check = checks.redis(client=lambda: ClientSpy(socket_timeout=2, **kwargs))
    first = run(check)
    second = run(check)
    assert (first["status"], second["status"]) == (status, status)
    assert fragment in first["message"]
    assert "hunter2" not in first["message"]
    assert [spy.closed for spy in ClientSpy.made] == [1, 1]


def test_redis_client_factory_works_without_redis_py(monkeypatch: pytest.MonkeyPatch) -> None:
    """A factory needs nothing but an object with ``ping()``; a False answer is unhealthy."""
    monkeypatch.setitem(sys.modules, "redis", None)

    class Answers:
        def __init__(self, answer: bool) -> None:
            self.answer = answer

        def ping(self) -> bool:
            return self.answer

    assert run(checks.redis(client=lambda: Answers(True)))["status"] == "healthy"
    assert run(checks.redis(client=lambda: Answers(False)))["status"] == "unhealthy"


def test_redis_unix_socket_url_is_tried_on_both_paths(redis_path: str, tmp_path: Any) -> None:
    """``unix://`` URLs are accepted; a socket file nobody listens on is unhealthy."""
    result = run(checks.redis(f"unix://{tmp_path}/no-redis.sock"))
    assert result["status"] == "unhealthy"
    assert "No such file or directory" in result["message"]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:6379/0", id="http"),
        pytest.param("127.0.0.1:6379", id="no-scheme"),
        pytest.param("rediss+sentinel://127.0.0.1/0", id="sentinel"),
    ],
)
def test_redis_invalid_scheme_raises_value_error(url: str) -> None:
    """A URL that is not redis://, rediss:// or unix:// is refused when the check is made."""
    with pytest.raises(ValueError, match="redis://"):
        checks.redis(url)


# tcp --------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening TCP socket on 127.0.0.1, closed at teardown."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def test_tcp_listening_port_is_healthy(listener: socket.socket) -> None:
    """A TCP check against a listening socket is healthy."""
    port = listener.getsockname()[1]
    result = run(checks.tcp("127.0.0.1", port))
    assert result["status"] == "healthy"
    assert f"127.0.0.1:{port}" in result["message"]


def test_tcp_closed_port_is_unhealthy() -> None:
    """A TCP check against a closed port is unhealthy with the refused connection."""
    result = run(checks.tcp("127.0.0.1", free_port()))
    assert result["status"] == "unhealthy"
    assert "Connection refused" in result["message"]


# http -------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _answer(self, body: bool) -> None:
        # As a proxy, the server is asked for absolute URLs: answer by their path.
        self.server.requests.append((self.command, self.path))
        self.server.headers.append(dict(self.headers))
        path = urlsplit(self.path).path
        if path == "/slow":
            self.server.release.wait(SLOW_RESPONSE_BOUND_S)
        code = {"/ok": 200, "/slow": 200, "/created": 201, "/fail": 500, "/missing": 404}.get(path)
        redirects = {"/redirect": "/ok", "/redirect-to-fail": "/fail", "/loop": "/loop"}
        if path in redirects:
            self.send_response(302)
            self.send_header("Location", redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = b"hello"
        self.send_response(code or 404)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_GET(self) -> None:  # http.server's naming
        self._answer(body=True)

    def do_HEAD(self) -> None:  # http.server's naming
        self._answer(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.release = threading.Event()
        self.requests: list[tuple[str, str]] = []
        self.headers: list[dict[str, str]] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the slow handler writes to a client that gave up: expected


@pytest.fixture
def http_server() -> Iterator[_Server]:
    """A tiny local HTTP server on 127.0.0.1, stopped at teardown."""
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def url_of(server: _Server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "fragment"),
    [
        pytest.param("/ok", {}, "healthy", "answered 200", id="200"),
        pytest.param("/created", {}, "healthy", "answered 201", id="201"),
        pytest.param("/redirect", {}, "healthy", "answered 302", id="redirect-not-followed"),
        pytest.param(
            "/redirect-to-fail", {}, "healthy", "answered 302", id="redirect-to-fail-not-followed"
        ),
        pytest.param(
            "/redirect-to-fail",
            {"follow_redirects": True},
            "unhealthy",
            "answered 500",
            id="redirect-to-fail-followed",
        ),
        pytest.param(
            "/redirect",
            {"follow_redirects": True},
            "healthy",
            "answered 200",
            id="redirect-followed",
        ),
        pytest.param(
            "/redirect",
            {"expect_status": 200},
            "unhealthy",
            "answered 302",
            id="expect-200-got-302",
        ),
        pytest.param(
            "/loop", {"follow_redirects": True}, "healthy", "answered 302", id="redirect-loop-ends"
        ),
        pytest.param("/fail", {}, "unhealthy", "answered 500", id="500"),
        pytest.param("/missing", {}, "unhealthy", "answered 404", id="404"),
        pytest.param("/slow", {"timeout_s": 0.2}, "unhealthy", "timed out", id="slow"),
        pytest.param("/ok", {"expect_status": 200}, "healthy", "answered 200", id="expect-200"),
        pytest.param(
            "/created", {"expect_status": 200}, "unhealthy", "201", id="expect-200-got-201"
        ),
        pytest.param("/fail", {"expect_status": 500}, "healthy", "answered 500", id="expect-500"),
        pytest.param("/ok", {"method": "HEAD"}, "healthy", "answered 200", id="head"),
    ],
)
def test_http_check_status(
    http_server: _Server, path: str, kwargs: dict[str, Any], status: str, fragment: str
) -> None:
    """An HTTP check is healthy on 2xx/3xx (or ``expect_status``) and unhealthy otherwise."""
    result = run(checks.http(url_of(http_server, path), **kwargs))
    assert result["status"] == status, result
    assert fragment in result["message"]


def test_http_check_uses_method_and_headers(http_server: _Server) -> None:
    """The HTTP check sends the configured method to the configured URL."""
    run(checks.http(url_of(http_server, "/ok"), method="HEAD", headers={"X-Probe": "1"}))
    assert http_server.requests == [("HEAD", "/ok")]


def test_http_check_does_not_follow_redirects_unless_asked(http_server: _Server) -> None:
    """A probe reports the URL's own answer: the redirect target is asked only when told to."""
    run(checks.http(url_of(http_server, "/redirect-to-fail")))
    assert http_server.requests == [("GET", "/redirect-to-fail")]
    run(checks.http(url_of(http_server, "/redirect-to-fail"), follow_redirects=True))
    assert http_server.requests[1:] == [("GET", "/redirect-to-fail"), ("GET", "/fail")]


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_http_check_ignores_proxy_variables(
    http_server: _Server, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """HTTP_PROXY pointing at a dead proxy changes nothing: the probe goes to its URL."""
    monkeypatch.setenv(variable, f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    result = run(checks.http(url_of(http_server, "/ok")))
    assert result["status"] == "healthy", result
    assert http_server.requests == [("GET", "/ok")]


def test_http_check_uses_a_proxy_when_given_one(http_server: _Server) -> None:
    """``proxy=`` sends the probe through that proxy (here the local server plays one)."""
    target = "http://probe-target.invalid/ok"
    result = run(checks.http(target, proxy=url_of(http_server, "")))
    assert result["status"] == "healthy", result
    assert http_server.requests == [("GET", target)]


def test_http_check_bad_proxy_url_raises_value_error() -> None:
    """A proxy that is not an http(s):// URL is refused when the check is made."""
    with pytest.raises(ValueError, match="proxy"):
        checks.http("http://127.0.0.1/ok", proxy="socks5://127.0.0.1:1080")


def test_http_check_sends_url_credentials_as_basic_auth(http_server: _Server) -> None:
    """``user:password@`` in the URL becomes an Authorization header, not part of the host."""
    port = http_server.server_address[1]
    result = run(checks.http(f"http://probe:s%40fe@127.0.0.1:{port}/ok"))
    assert result["status"] == "healthy", result
    assert http_server.headers[0]["Authorization"] == "Basic cHJvYmU6c0BmZQ=="  # probe:s@fe


def test_http_check_on_closed_port_is_unhealthy() -> None:
    """An HTTP check against a closed port is unhealthy with the refused connection."""
    result = run(checks.http(f"http://127.0.0.1:{free_port()}/health"))
    assert result["status"] == "unhealthy"
    assert "Connection refused" in result["message"]


def test_http_check_message_hides_credentials_and_query(http_server: _Server) -> None:
    """The HTTP check's message never shows the URL's password or query string."""
    port = http_server.server_address[1]
    result = run(checks.http(f"http://user:hunter2@127.0.0.1:{port}/ok?token=abc123"))
    assert "hunter2" not in result["message"]
    assert "abc123" not in result["message"]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://127.0.0.1/file", id="ftp"),
        pytest.param("127.0.0.1:8080/health", id="no-scheme"),
        pytest.param("http://", id="no-host"),
    ],
)
def test_http_invalid_url_raises_value_error(url: str) -> None:
    """A URL that is not http(s):// with a host is refused when the check is made."""
    with pytest.raises(ValueError, match="http"):
        checks.http(url)


# env_configured ---------------------------------------------------------------------------


def test_env_configured_unset_is_degraded_like_the_guide(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset API key wired as a group member makes the probe 503 degraded, as in the guide."""
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    app = middleware(
        {
            "database": checks.database(lambda: sqlite3.connect(":memory:")),
            "external_services": {"sendgrid": checks.env_configured("SENDGRID_API_KEY")},
        }
    )
    status, body = probe(app)
    assert status == 503
    assert body["status"] == "degraded"
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$", body["timestamp"])
    database = body["checks"]["database"]
    assert (database["status"], database["message"]) == (
        "healthy",
        "Database connection successful",
    )
    sendgrid = body["checks"]["external_services"]["sendgrid"]
    assert sendgrid["status"] == "degraded"
    assert sendgrid["available"] is False
    assert sendgrid["message"] == "API key not configured"


@pytest.mark.parametrize(
    ("value", "status", "available", "http_status"),
    [
        pytest.param(None, "degraded", False, 503, id="unset"),
        pytest.param("", "degraded", False, 503, id="empty"),
        pytest.param("   ", "degraded", False, 503, id="blank"),
        pytest.param("SG.very-secret-value", "healthy", True, 200, id="set"),
    ],
)
def test_env_configured_follows_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    value: Optional[str],
    status: str,
    available: bool,
    http_status: int,
) -> None:
    """The check is degraded while the variable is unset or blank and healthy once it is set."""
    if value is None:
        monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    else:
        monkeypatch.setenv("SENDGRID_API_KEY", value)
    app = middleware({"external_services": {"sendgrid": checks.env_configured("SENDGRID_API_KEY")}})
    code, body = probe(app)
    sendgrid = body["checks"]["external_services"]["sendgrid"]
    assert (code, body["status"]) == (http_status, status)
    assert (sendgrid["status"], sendgrid["available"]) == (status, available)
    assert "very-secret-value" not in orjson.dumps(body).decode()


def test_env_configured_is_degraded_when_any_variable_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With several variables, one missing credential is enough; the shape stays the guide's."""
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    result = run(checks.env_configured("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"))
    assert result["status"] == "degraded"
    assert result["message"] == "API key not configured"
    assert set(result) == {"status", "available", "message", "latency_ms"}


def test_env_configured_can_be_unhealthy(monkeypatch: pytest.MonkeyPatch) -> None:
    """``status_if_missing="unhealthy"`` makes a missing variable fail the probe."""
    monkeypatch.delenv("PUSHER_KEY", raising=False)
    result = run(checks.env_configured("PUSHER_KEY", status_if_missing="unhealthy"))
    assert (result["status"], result["available"]) == ("unhealthy", False)


@pytest.mark.parametrize(
    ("names", "kwargs"),
    [
        pytest.param((), {}, id="no-names"),
        pytest.param(("X_KEY",), {"status_if_missing": "healthy"}, id="bad-status"),
    ],
)
def test_env_configured_bad_arguments_raise_value_error(
    names: tuple[str, ...], kwargs: dict[str, Any]
) -> None:
    """env_configured refuses no variable names or an unknown missing-status when it is made."""
    with pytest.raises(ValueError):
        checks.env_configured(*names, **kwargs)
