"""Ready-made readiness checks: small zero-argument callables, each with its own timeout.

Each factory returns a callable that the readiness runner calls; it returns a dict with
``status`` and ``message`` (the runner adds ``latency_ms``) or raises, which the runner
reports as unhealthy with the exception's message. Example::

    checks = {
        "database": wsgi_observe.checks.database(lambda: psycopg.connect(DSN)),
        "external_services": wsgi_observe.checks.optional(
            {"sendgrid": wsgi_observe.checks.env_configured("SENDGRID_API_KEY")}
        ),
    }

:func:`optional` marks checks that must not block readiness (a missing e-mail API key should
not keep a pod out of its Service): they are run and shown, and make the status ``degraded``,
but ``/health/ready`` still answers 200.
"""

from __future__ import annotations

import base64
import importlib
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Optional, overload
from urllib.parse import unquote, urlsplit, urlunsplit

from . import _http
from .redact import redact_text

__all__ = ["database", "django_database", "env_configured", "http", "optional", "redis", "tcp"]

CheckResult = dict[str, Any]


def database(
    connect: Callable[[], Any], query: str = "SELECT 1", *, name: str = "Database"
) -> Callable[[], CheckResult]:
    """Open a DB-API connection with ``connect()``, run ``query``, fetch, close.

    Works with any DB-API 2.0 driver (sqlite3, psycopg, pymysql, ...). Put the driver's own
    connect timeout in ``connect`` (``psycopg.connect(dsn, connect_timeout=2)``); the runner's
    timeout bounds the probe in any case.
    """

    def check() -> CheckResult:
        connection = connect()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(query)
                cursor.fetchone()
            finally:
                close = getattr(cursor, "close", None)
                if close is not None:
                    close()
        finally:
            connection.close()
        return {"status": "healthy", "message": f"{name} connection successful"}

    check.__name__ = "database_check"
    return check


def django_database(alias: str = "default", query: str = "SELECT 1") -> Callable[[], CheckResult]:
    """Run ``query`` on Django's database ``alias`` through Django's own connection handling
    (``django.db.connections[alias]``: its settings, driver, ``OPTIONS`` and timeouts).

    The check runs in a thread of its own, where Django opens a connection just for it; the
    check closes it again, so a probe never leaves a connection behind (nor touches the
    connections of request threads). Bound the connect time with the driver's option, e.g.
    ``"OPTIONS": {"connect_timeout": 2}`` for PostgreSQL; the runner's timeout bounds the
    probe in any case. Django is imported when the check runs, never before.
    """
    if not isinstance(alias, str) or not alias:
        raise ValueError(f"django_database: expected a database alias, got {alias!r}")

    def check() -> CheckResult:
        from django.db import connections

        if alias not in connections:  # a typo in the alias: say which, not a KeyError
            raise LookupError(f"no database {alias!r} in settings.DATABASES")
        connection = connections[alias]
        try:
            with connection.cursor() as cursor:
                cursor.execute(query)
                cursor.fetchone()
        finally:
            connection.close()
        return {"status": "healthy", "message": "Database connection successful"}

    check.__name__ = "django_database_check"
    return check


class _Optional:
    """A readiness check that is run and shown, but never blocks readiness."""

    required = False

    def __init__(self, check: Callable[[], Any]) -> None:
        if not callable(check):
            raise TypeError(f"readiness check is not callable: {check!r}")
        self.check = check
        self.__name__ = getattr(check, "__name__", type(check).__name__)

    def __call__(self) -> Any:
        return self.check()

    def __repr__(self) -> str:
        return f"optional({self.check!r})"


@overload
def optional(check: Callable[[], Any]) -> Callable[[], Any]: ...


@overload
def optional(check: Mapping[str, Callable[[], Any]]) -> dict[str, Callable[[], Any]]: ...


def optional(
    check: Callable[[], Any] | Mapping[str, Callable[[], Any]],
) -> Callable[[], Any] | dict[str, Callable[[], Any]]:
    """Mark a readiness check (or every member of a group) as not blocking.

    An optional check runs with the others and is shown with its status and
    ``"required": false``. When it is not healthy the overall status is ``degraded`` (never
    ``unhealthy``), but ``/health/ready`` answers 200 as long as every required check is
    healthy, so a Kubernetes pod whose e-mail provider is down still gets traffic::

        checks = {
            "database": checks.database(connect),                   # required: 503 if down
            "external_services": checks.optional({
                "sendgrid": checks.env_configured("SENDGRID_API_KEY"),
                "twilio": checks.http("https://status.twilio.com/api/v2/status.json"),
            }),
        }

    Any callable whose ``required`` attribute is ``False`` counts as optional too.
    """
    if isinstance(check, Mapping):
        return {str(name): optional(member) for name, member in check.items()}
    if isinstance(check, _Optional):
        return check
    return _Optional(check)


def tcp(host: str, port: int, *, timeout_s: float = 1.5) -> Callable[[], CheckResult]:
    """Healthy when a TCP connection to ``host:port`` opens within ``timeout_s``."""

    def check() -> CheckResult:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
        return {"status": "healthy", "message": f"TCP connection to {host}:{port} successful"}

    check.__name__ = "tcp_check"
    return check


def http(
    url: str,
    *,
    method: str = "GET",
    expect_status: Optional[int] = None,
    timeout_s: float = 1.5,
    headers: Optional[dict[str, str]] = None,
    follow_redirects: bool = False,
    proxy: Optional[str] = None,
) -> Callable[[], CheckResult]:
    """Healthy when ``url`` answers ``expect_status`` (default: any 2xx or 3xx).

    The probe reports what ``url`` itself answers: a redirect is not followed unless
    ``follow_redirects=True`` (then at most 5), and ``HTTP_PROXY``/``HTTPS_PROXY`` are not
    used; give ``proxy="http://proxy:3128"`` to go through one. Each run opens a fresh
    connection (through urllib3, like every request of the package) and closes it.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"http check: expected an http(s):// URL, got {url!r}")
    port = f":{parts.port}" if parts.port else ""
    shown = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"  # never the query or userinfo
    request_headers = dict(headers or {})
    if parts.username is not None or parts.password is not None:
        # urllib3 does not turn URL credentials into a header: do it, as urllib did.
        user = unquote(parts.username or "")
        password = unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        request_headers.setdefault("Authorization", f"Basic {token}")
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        url = urlunsplit(parts._replace(netloc=f"{netloc}{port}"))
    if proxy is not None:
        _http.new_pool(proxy=proxy).clear()  # refuse a bad proxy URL now, not at each probe

    def check() -> CheckResult:
        import urllib3

        pool = _http.new_pool(proxy=proxy)
        try:
            response = _http.request(
                pool,
                method,
                url,
                headers=request_headers,
                timeout_s=timeout_s,
                follow_redirects=follow_redirects,
                preload_content=False,  # the status is the answer; the body is not read
            )
            code = response.status
            response.close()
        except urllib3.exceptions.HTTPError as error:
            raise ConnectionError(f"{shown}: {_http.describe_error(error)}") from None
        finally:
            pool.clear()
        ok = code == expect_status if expect_status is not None else 200 <= code < 400
        return {
            "status": "healthy" if ok else "unhealthy",
            "message": f"{shown} answered {code}",
        }

    check.__name__ = "http_check"
    return check


def redis(
    url: str = "redis://127.0.0.1:6379/0",
    *,
    client: Optional[Callable[[], Any]] = None,
    timeout_s: float = 1.5,
) -> Callable[[], CheckResult]:
    """Healthy when Redis answers PING.

    Give a URL (``redis://``, ``rediss://`` for TLS, ``unix:///run/redis.sock``; a
    password and user name in it) or ``client``, a factory that returns a client with a
    ``ping()`` method, for everything a URL cannot say (Sentinel, TLS certificates,
    cluster)::

        checks.redis(client=lambda: Sentinel([("s1", 26379)]).master_for("main"))

    With ``redis-py`` installed (``pip install wsgi_observe[redis]``) the URL goes to
    ``redis.Redis.from_url`` with ``timeout_s`` as its socket timeouts. Without it, the check
    speaks RESP itself over a socket (``redis://``, ``rediss://`` and ``unix://``: AUTH and
    PING only). Each run makes a new client and closes it.
    """
    if client is not None:
        if not callable(client):
            raise TypeError(f"redis check: client must be a factory (a callable), got {client!r}")
        return _redis_client_check(client)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"redis check: expected a redis://, rediss:// or unix:// URL, got {redact_text(url)!r}"
        )
    try:
        redis_py = importlib.import_module("redis")
    except ImportError:
        return _redis_socket_check(url, timeout_s)

    def connect() -> Any:
        return redis_py.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )

    return _redis_client_check(connect)


def _redis_client_check(connect: Callable[[], Any]) -> Callable[[], CheckResult]:
    def check() -> CheckResult:
        client = connect()
        try:
            answer = client.ping()
        except Exception as error:
            # redis-py's errors (RedisError and its ConnectionError, AuthenticationError,
            # TimeoutError) carry the server's words; any other client's error is raised.
            if not any(c.__module__.startswith("redis") for c in type(error).__mro__):
                raise
            return {"status": "unhealthy", "message": f"Redis error: {error}"}
        finally:
            close = getattr(client, "close", None)
            if close is not None:
                close()
        if answer is False:
            return {"status": "unhealthy", "message": "Redis did not answer PONG"}
        return {"status": "healthy", "message": "Redis connection successful"}

    check.__name__ = "redis_check"
    return check


def _redis_socket_check(url: str, timeout_s: float) -> Callable[[], CheckResult]:
    """The no-dependency fallback: AUTH (when the URL has a password) and PING over RESP."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 6379
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None

    def command(*words: str) -> bytes:
        out = [f"*{len(words)}\r\n".encode()]
        for word in words:
            data = word.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(out)

    def open_socket() -> socket.socket:
        if parts.scheme == "unix":
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                raw.settimeout(timeout_s)
                raw.connect(unquote(parts.path))
            except BaseException:
                raw.close()
                raise
            return raw
        raw = socket.create_connection((host, port), timeout=timeout_s)
        if parts.scheme == "rediss":
            try:
                return ssl.create_default_context().wrap_socket(raw, server_hostname=host)
            except BaseException:
                raw.close()
                raise
        return raw

    def check() -> CheckResult:
        sock = open_socket()
        try:
            payload = b""
            if password is not None:
                auth = ("AUTH", username, password) if username else ("AUTH", password)
                payload += command(*auth)
            payload += command("PING")
            sock.sendall(payload)
            reply = b""
            expected = 2 if password is not None else 1
            while reply.count(b"\r\n") < expected:
                data = sock.recv(4096)
                if not data:
                    break
                reply += data
        finally:
            sock.close()
        lines = reply.split(b"\r\n")
        for line in lines[:expected]:
            if line.startswith(b"-"):
                message = line[1:].decode("utf-8", "replace")
                return {"status": "unhealthy", "message": f"Redis error: {message}"}
        if b"+PONG" not in lines:
            return {"status": "unhealthy", "message": "Redis did not answer PONG"}
        return {"status": "healthy", "message": "Redis connection successful"}

    check.__name__ = "redis_check"
    return check


def env_configured(*names: str, status_if_missing: str = "degraded") -> Callable[[], CheckResult]:
    """``degraded`` (by default) with "API key not configured" while a variable is unset.

    The guide's SendGrid example: a service whose credentials are missing is reported as
    ``{"status": "degraded", "available": false, "message": "API key not configured"}``.
    """
    if not names:
        raise ValueError("env_configured needs at least one variable name")
    if status_if_missing not in ("degraded", "unhealthy"):
        raise ValueError("status_if_missing must be 'degraded' or 'unhealthy'")

    def check() -> CheckResult:
        # The one read of os.environ outside Config, on purpose: this check's job is to look
        # at the environment as it is when the probe runs, not as it was at start-up.
        missing = [name for name in names if not os.environ.get(name, "").strip()]
        if missing:
            secret = ("KEY", "TOKEN", "SECRET", "PASSWORD", "DSN", "CREDENTIAL")
            is_credential = any(word in name.upper() for name in missing for word in secret)
            return {
                "status": status_if_missing,
                "available": False,
                "message": "API key not configured" if is_credential else "Not configured",
            }
        return {"status": "healthy", "message": "Configured"}

    check.__name__ = "env_configured_check"
    return check
