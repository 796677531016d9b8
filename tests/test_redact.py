"""wsgi_observe.redact: one scrubber for headers, query strings, DSNs and free text."""

from __future__ import annotations

import pytest

from wsgi_observe.redact import (
    REDACTED,
    is_secret_header,
    is_secret_name,
    redact_dsn,
    redact_headers,
    redact_mapping,
    redact_query,
    redact_sql,
    redact_text,
)


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
