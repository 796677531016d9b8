"""wsgi_observe.redact: one scrubber for headers, query strings, DSNs and free text."""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from wsgi_observe.integrations.sentry import scrub_breadcrumb, scrub_event
from wsgi_observe.logs import JsonFormatter
from wsgi_observe.redact import (
    REDACTED,
    is_secret_header,
    is_secret_key,
    is_secret_name,
    redact_dsn,
    redact_headers,
    redact_mapping,
    redact_query,
    redact_sql,
    redact_text,
    redact_value,
)
from wsgi_observe.uptimerobot import UptimeRobotClient, UptimeRobotError


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Authorization", id="authorization"),
        pytest.param("Proxy-Authorization", id="proxy-authorization"),
        pytest.param("Cookie", id="cookie"),
        pytest.param("Set-Cookie", id="set-cookie"),
        pytest.param("X-Api-Key", id="x-api-key"),
        pytest.param("x-shopify-access-token", id="access-token-lowercase"),
        pytest.param("HTTP_AUTHORIZATION", id="wsgi-environ-form"),
        pytest.param("HTTP_X_API_KEY", id="wsgi-environ-api-key"),
    ],
)
def test_secret_headers_are_recognised(name: str) -> None:
    """Credential-carrying headers are secret whatever their spelling or WSGI form."""
    assert is_secret_header(name)


def test_redact_headers_keeps_harmless_headers_and_shape() -> None:
    """A mapping stays a mapping, a list of pairs stays a list, harmless values are untouched."""
    as_dict = redact_headers(
        {"Authorization": "Bearer abc", "Cookie": "sid=1", "Accept": "text/html", "X-Api-Key": "k"}
    )
    assert as_dict == {
        "Authorization": REDACTED,
        "Cookie": REDACTED,
        "Accept": "text/html",
        "X-Api-Key": REDACTED,
    }
    as_list = redact_headers([("Set-Cookie", "sid=1"), ("Content-Type", "text/plain")])
    assert as_list == [("Set-Cookie", REDACTED), ("Content-Type", "text/plain")]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(
            "q=shoes&api_key=abc&page=2",
            f"q=shoes&api_key={REDACTED}&page=2",
            id="api-key",
        ),
        pytest.param(
            "API_KEY=a&Token=b&PassWord=c",
            f"API_KEY={REDACTED}&Token={REDACTED}&PassWord={REDACTED}",
            id="case-insensitive",
        ),
        pytest.param(
            "access_token=a;client_secret=b&signature=c&key=d&apikey=e&passwd=f&secret=g",
            f"access_token={REDACTED};client_secret={REDACTED}&signature={REDACTED}"
            f"&key={REDACTED}&apikey={REDACTED}&passwd={REDACTED}&secret={REDACTED}",
            id="all-guide-names",
        ),
        pytest.param("api%5Fkey=zz&x=1", f"api%5Fkey={REDACTED}&x=1", id="percent-encoded-name"),
        pytest.param(
            "monkey=1&sort_key=2&flag", "monkey=1&sort_key=2&flag", id="no-false-positive"
        ),
        pytest.param("", "", id="empty"),
    ],
)
def test_redact_query_replaces_only_secret_values(query: str, expected: str) -> None:
    """Values of secret parameters are replaced; everything else is kept byte for byte."""
    assert redact_query(query) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "https://abc123def456@o1.ingest.sentry.io/42",
            f"https://{REDACTED}@o1.ingest.sentry.io/42",
            id="sentry-dsn",
        ),
        pytest.param(
            "postgres://bob:hunter2@db:5432/crm",
            f"postgres://bob:{REDACTED}@db:5432/crm",
            id="user-password",
        ),
        pytest.param(
            "redis://:s3cret@cache:6379/0", f"redis://:{REDACTED}@cache:6379/0", id="password-only"
        ),
        pytest.param(
            "postgres://bob:p@ss@db/crm", f"postgres://bob:{REDACTED}@db/crm", id="at-in-password"
        ),
        pytest.param(
            "see http://example.com/a?email=bob@example.com",
            "see http://example.com/a?email=bob@example.com",
            id="no-userinfo",
        ),
    ],
)
def test_redact_dsn_hides_url_credentials(text: str, expected: str) -> None:
    """The key of scheme://key@host and the password of user:password@ are replaced."""
    assert redact_dsn(text) == expected


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        pytest.param("calling https://k3y@sentry.io/1 now", "k3y", id="dsn"),
        pytest.param("GET /x?q=1&api_key=SECRET123", "SECRET123", id="query"),
        pytest.param("Authorization: Bearer eyJhbGciOi.J9.xyz", "eyJhbGciOi", id="bearer-header"),
        pytest.param("authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", id="basic"),
        pytest.param('{"password": "hunter2", "user": "bob"}', "hunter2", id="json"),
        pytest.param("{'client_secret': 'cs-991'}", "cs-991", id="dict-repr"),
        pytest.param("login failed, password: letmein", "letmein", id="prose"),
        pytest.param("Cookie: session=abc123; theme=dark", "abc123", id="cookie"),
    ],
)
def test_redact_text_removes_secrets_anywhere(text: str, secret: str) -> None:
    """Every rule applies inside free text, whatever surrounds the secret."""
    redacted = redact_text(text)
    assert secret not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Lead created successfully", id="plain"),
        pytest.param("Processing order 42 for customer: bob", id="colon"),
        pytest.param("Basic authentication required", id="basic-prose"),
        pytest.param("x=1 y=2 monkey=banana", id="harmless-pairs"),
        pytest.param("mailto:bob@example.com", id="email"),
    ],
)
def test_redact_text_leaves_ordinary_text_alone(text: str) -> None:
    """Text without a secret comes back unchanged."""
    assert redact_text(text) == text


def test_redact_sql_hides_password_literals() -> None:
    """Secret literals in SQL are replaced; other literals stay."""
    query = "ALTER USER bob WITH PASSWORD 'hunter2'; SELECT * FROM t WHERE token = 'tk' AND n = 'z'"
    redacted = redact_sql(query)
    assert "hunter2" not in redacted
    assert "'tk'" not in redacted
    assert "n = 'z'" in redacted


def test_redact_mapping_handles_names_nesting_and_numbers() -> None:
    """Secret-named text fields are replaced, nested values scrubbed, counts left alone."""
    data = {
        "password": "pw",
        "token_count": 42,
        "nested": {"api_key": "k", "note": "dsn https://key9@host/1"},
        "items": ["token=abc", 3],
    }
    assert redact_mapping(data) == {
        "password": REDACTED,
        "token_count": 42,
        "nested": {"api_key": REDACTED, "note": f"dsn https://{REDACTED}@host/1"},
        "items": [f"token={REDACTED}", 3],
    }


def test_is_secret_name_matches_parts_but_not_lookalikes() -> None:
    """Names containing token/secret/password are secret; monkey and sort_key are not."""
    assert is_secret_name("db_password")
    assert is_secret_name("X-Refresh-Token")
    assert not is_secret_name("monkey")
    assert not is_secret_name("sort_key")


# Issue 9: names the scrubber missed ------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("passphrase=correct-horse&x=1", f"passphrase={REDACTED}&x=1", id="passphrase"),
        pytest.param("%70assword=hunter2", f"%70assword={REDACTED}", id="encoded-p-alone"),
        pytest.param(
            "q=1&%70%61ssword=hunter2", f"q=1&%70%61ssword={REDACTED}", id="encoded-two-letters"
        ),
        pytest.param("%2570assword=hunter2", f"%2570assword={REDACTED}", id="double-encoded"),
        pytest.param("pass=hunter2", f"pass={REDACTED}", id="pass"),
        pytest.param("q=%70izza&compass=north", "q=%70izza&compass=north", id="encoded-harmless"),
    ],
)
def test_redact_query_catches_passphrases_and_encoded_names(query: str, expected: str) -> None:
    """``passphrase=`` and percent-encoded secret names are redacted with no other hint word."""
    assert redact_query(query) == expected
    assert redact_text(f"GET /login?{query} HTTP/1.1") == f"GET /login?{expected} HTTP/1.1"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"passphrase": "correct-horse"}', id="json"),
        pytest.param("gpg passphrase: correct-horse", id="prose"),
        pytest.param("passphrase=correct-horse", id="pair"),
    ],
)
def test_redact_text_hides_passphrases(text: str) -> None:
    """A passphrase is a password: hidden in JSON, prose and pairs alike."""
    assert "correct-horse" not in redact_text(text)


def test_passphrase_is_a_secret_name_and_sql_literal() -> None:
    """``passphrase`` names a secret as a key and as an SQL literal."""
    assert is_secret_name("passphrase")
    assert is_secret_name("GPG_PASSPHRASE")
    assert "s3cret" not in redact_sql("SELECT pgp_sym_decrypt(data, passphrase = 's3cret')")


# The one walker ------------------------------------------------------------------------

SAMPLE: dict[str, Any] = {
    "url": "connect to postgres://app:pw-1@db/crm failed",
    "login": "GET /x?%70assword=hunter2",
    "HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz",
    "HTTP_X_SESSION_ID": "s-0815",
    "HTTP_ACCEPT": "text/html",
    "passphrase": "correct-horse",
    "token_count": 42,
    "enabled": True,
    "nothing": None,
    "tokens": ["tk-1", "tk-2", 7],
    "nested": {"client_secret": "cs-9", "items": ["token=abc", 3, ("key=zz", "fine")]},
    "note": "nothing secret here",
}
SAMPLE_REDACTED: dict[str, Any] = {
    "url": f"connect to postgres://app:{REDACTED}@db/crm failed",
    "login": f"GET /x?%70assword={REDACTED}",
    "HTTP_AUTHORIZATION": REDACTED,
    "HTTP_X_SESSION_ID": REDACTED,
    "HTTP_ACCEPT": "text/html",
    "passphrase": REDACTED,
    "token_count": 42,
    "enabled": True,
    "nothing": None,
    "tokens": [REDACTED, REDACTED, 7],
    "nested": {
        "client_secret": REDACTED,
        "items": [f"token={REDACTED}", 3, [f"key={REDACTED}", "fine"]],
    },
    "note": "nothing secret here",
}


def test_redact_value_copies_by_default() -> None:
    """The walker returns a scrubbed copy and leaves its input alone."""
    data = copy.deepcopy(SAMPLE)
    assert redact_value(data) == SAMPLE_REDACTED
    assert data == SAMPLE


def test_redact_value_in_place_rewrites_dicts_and_lists() -> None:
    """In place, the same dicts and lists come back rewritten, with the copy's result."""
    data = copy.deepcopy(SAMPLE)
    nested = data["nested"]
    result = redact_value(data, in_place=True)
    assert result is data
    assert data["nested"] is nested
    assert data == SAMPLE_REDACTED


@pytest.mark.parametrize(
    "in_place", [pytest.param(False, id="copy"), pytest.param(True, id="in-place")]
)
def test_redact_value_under_a_secret_key_hides_everything_but_numbers(in_place: bool) -> None:
    """Under a secret key, text, bytes and objects are hidden, numbers kept, at any depth."""

    class Opaque:
        def __str__(self) -> str:
            return "opaque-secret"

    value = {"a": ["x", b"y", Opaque(), 1.5, None], "b": {"c": "d"}}
    assert redact_value(value, key="credentials", in_place=in_place) == {
        "a": [REDACTED, REDACTED, REDACTED, 1.5, None],
        "b": {"c": REDACTED},
    }
    assert redact_value("plain", key="HTTP_COOKIE") == REDACTED
    assert redact_value(7, key="password") == 7


def test_redact_value_past_its_depth_scrubs_the_text_of_what_is_left() -> None:
    """A container deeper than ``depth`` becomes its text, scrubbed: no secret passes unread."""
    deep: dict[str, Any] = {"password": "hunter2"}
    for _ in range(8):
        deep = {"down": deep}
    text = json.dumps(redact_value(deep, depth=3))
    assert "hunter2" not in text
    assert REDACTED in text


def test_redact_value_survives_a_cycle() -> None:
    """A self-referencing structure ends at the depth limit instead of recursing forever."""
    loop: dict[str, Any] = {"api_key": "k-1"}
    loop["self"] = loop
    assert "k-1" not in json.dumps(redact_value(loop))


def test_is_secret_key_knows_wsgi_header_keys() -> None:
    """``HTTP_*`` keys use the header rules; text keys only; ordinary keys are not secret."""
    assert is_secret_key("HTTP_AUTHORIZATION")
    assert is_secret_key("HTTP_X_SESSION_ID")
    assert is_secret_key("http_cookie")
    assert not is_secret_key("HTTP_ACCEPT")
    assert not is_secret_key(42)
    assert not is_secret_key("PATH_INFO")


# The three users of the walker: logs, Sentry, the UptimeRobot client ---------------------


def _log_line(**extra: Any) -> dict[str, Any]:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "%s", (extra.pop("msg", ""),), None)
    for name, value in extra.items():
        setattr(record, name, value)
    return orjson.loads(JsonFormatter().format(record))


class _FailingApi(ThreadingHTTPServer):
    """Answers every UptimeRobot call with ``stat: fail`` and the next queued message."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FailingApiHandler)
        self.messages: list[str] = []


class _FailingApiHandler(BaseHTTPRequestHandler):
    server: _FailingApi

    def do_POST(self) -> None:  # http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        message = self.server.messages.pop(0)
        body = json.dumps({"stat": "fail", "error": {"type": "x", "message": message}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet


@pytest.fixture
def failing_api() -> Iterator[_FailingApi]:
    """A local API that fails each call with a message the test chooses."""
    server = _FailingApi()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


TEXTS = [
    pytest.param(SAMPLE["url"], id="dsn"),
    pytest.param(SAMPLE["login"], id="encoded-name"),
    pytest.param("passphrase=correct-horse", id="passphrase"),
    pytest.param("Authorization: Bearer eyJhbGciOi.J9.xyz", id="bearer"),
    pytest.param("nothing secret here", id="plain"),
]


@pytest.mark.parametrize("text", TEXTS)
def test_logs_sentry_and_uptimerobot_scrub_text_alike(failing_api: _FailingApi, text: str) -> None:
    """One text comes out the same from a log line, a Sentry event and an UptimeRobot error."""
    expected = redact_value(text)
    logged = _log_line(msg=text, note=text)
    event = scrub_event({"message": text, "extra": {"note": text}})
    failing_api.messages.append(text)
    base_url = f"http://127.0.0.1:{failing_api.server_address[1]}/v2"
    with UptimeRobotClient("u123-test-key", base_url=base_url) as client:
        with pytest.raises(UptimeRobotError) as caught:
            client.call("getMonitors")
    assert (logged["message"], logged["note"]) == (expected, expected)
    assert (event["message"], event["extra"]["note"]) == (expected, expected)
    assert caught.value.message == expected


def test_logs_and_sentry_scrub_structures_alike() -> None:
    """The same nested fields come out the same from a log line and a Sentry event."""
    logged = _log_line(data=copy.deepcopy(SAMPLE))
    event = scrub_event({"extra": {"data": copy.deepcopy(SAMPLE)}})
    breadcrumb = scrub_breadcrumb({"data": copy.deepcopy(SAMPLE)})
    assert logged["data"] == SAMPLE_REDACTED
    assert event["extra"]["data"] == SAMPLE_REDACTED
    assert breadcrumb["data"] == SAMPLE_REDACTED
