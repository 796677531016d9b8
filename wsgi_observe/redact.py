"""One scrubber for secrets: headers, query values, URL credentials (DSNs) and free text.

Used by the logs (every line), Sentry (events) and the UptimeRobot client (errors), so a
secret is recognised the same way everywhere. Everything here is pure and cheap on text
that holds no secret: a fast pre-check skips the regular expressions.

- :func:`redact_headers`: ``Authorization``, ``Cookie``, ``Set-Cookie``, ``X-Api-Key``, and
  any header whose name speaks of a token, secret, password, session or signature.
- :func:`redact_query`: values of ``api_key``, ``token``, ``password``, ``secret``, ``key``,
  ``signature``, ... (case-insensitive), the rest of the query string byte-for-byte.
- :func:`redact_dsn`: the key of ``scheme://key@host`` and the password of
  ``scheme://user:password@host``.
- :func:`redact_text`: all of the URL rules above plus ``name=value`` / ``name: value``
  pairs with a secret name and ``Bearer``/``Basic`` credentials, anywhere in the text.
- :func:`redact_sql`: :func:`redact_text` plus ``password = '...'`` literals in SQL.
- :func:`redact_mapping` / :func:`redact_value`: a copy with text under secret-named keys
  replaced and every string scrubbed, recursively (``extra=`` fields, Sentry event data).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, Union
from urllib.parse import unquote_plus

__all__ = [
    "REDACTED",
    "is_secret_header",
    "is_secret_name",
    "redact_dsn",
    "redact_headers",
    "redact_mapping",
    "redact_query",
    "redact_sql",
    "redact_text",
    "redact_value",
]

REDACTED = "[redacted]"

#: Names (normalised: lower case, ``-`` as ``_``) whose value is a secret wherever it appears.
SECRET_NAMES = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth",
        "auth_token",
        "authorization",
        "client_secret",
        "cookie",
        "credentials",
        "id_token",
        "key",
        "passwd",
        "password",
        "private_key",
        "proxy_authorization",
        "pwd",
        "refresh_token",
        "secret",
        "session",
        "session_id",
        "sessionid",
        "set_cookie",
        "sig",
        "signature",
        "token",
        "x_amz_credential",
        "x_amz_security_token",
        "x_amz_signature",
        "x_api_key",
    }
)
# A name containing one of these is a secret too (``X-Shopify-Access-Token``, ``db_password``).
_SECRET_PARTS = (
    "token",
    "secret",
    "passw",
    "apikey",
    "api_key",
    "signature",
    "credential",
    "authorization",
    "cookie",
)

# Cheap gates: a regular expression runs only when the lower-cased text holds one of these
# (``re.I`` alternations cost microseconds even on text with no secret in it).
_HINTS = ("key", "token", "secret", "passw", "pwd", "sig", "auth", "session", "cookie", "cred")
_COLON_HINTS = ("passw", "pwd", "secret", "key", "token", "cookie")
_SCHEME_HINTS = ("bearer", "basic", "token")


def _has(low: str, words: tuple[str, ...]) -> bool:
    for word in words:
        if word in low:
            return True
    return False


# scheme://user:password@ or scheme://key@ ; the password may itself hold "@".
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)"
    r"(?P<user>[^:@/\s?#\[\]\"'<>]*)"
    r"(?::(?P<password>[^/\s?#\"'<>]*))?@"
)
# name=value, as in query strings, form bodies, cookies and "k=v" log messages.
_PAIR = re.compile(r"(?P<name>[A-Za-z0-9_.\-\[\]%]+)=(?P<value>[^\s&;#\"',}]*)")
# "password: x", "'token': 'x'", '"client_secret": "x"' (JSON, dict reprs, prose).
_COLON = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?P<name>password|passwd|pwd|secret|client[_-]?secret|"
    r"api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|auth[_-]?token|token|cookie)"
    r"(?P<sep>[\"']?\s*:\s*[\"']?)(?P<value>[^\s\"',;}]+)"
)
# "Authorization: Bearer x", "proxy-authorization=Basic x": whatever follows is the secret.
_AUTHORIZATION = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?P<head>(?:proxy[_-])?authorization[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic|token|digest)\s+)?)(?P<value>[^\s\"',;}]+)"
)
# "Bearer eyJhbGciOi...", "Basic dXNlcjpwYXNz": a credential has a digit or a symbol in it,
# which keeps prose such as "Basic authentication" intact.
_SCHEME_CREDENTIALS = re.compile(
    r"(?i)\b(?P<scheme>bearer|basic|token)\s+"
    r"(?P<value>(?=[A-Za-z0-9._~+/=\-]*[0-9._~+/=\-])[A-Za-z0-9._~+/=\-]{8,})"
)


_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest"})


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


@functools.lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """Whether a parameter or field called ``name`` carries a secret (case-insensitive)."""
    low = _normalise(name)
    if low in SECRET_NAMES:
        return True
    return any(part in low for part in _SECRET_PARTS)


def is_secret_header(name: str) -> bool:
    """Whether header ``name`` (``X-Api-Key`` or WSGI's ``HTTP_X_API_KEY``) is a secret."""
    low = _normalise(name)
    if low.startswith("http_"):
        low = low[5:]
    return is_secret_name(low) or "cookie" in low or "auth" in low or "session" in low


Headers = Union[Mapping[str, Any], Iterable[tuple[str, Any]]]


def redact_headers(headers: Headers) -> Any:
    """A copy of ``headers`` (mapping or list of pairs) with secret values replaced.

    Example: ``redact_headers({"Authorization": "Bearer x", "Accept": "*/*"})`` gives
    ``{"Authorization": "[redacted]", "Accept": "*/*"}``. A list of pairs stays a list.
    """
    if isinstance(headers, Mapping):
        return {
            name: REDACTED if is_secret_header(str(name)) else value
            for name, value in headers.items()
        }
    return [(name, REDACTED if is_secret_header(str(name)) else value) for name, value in headers]


def redact_query(query_string: str) -> str:
    """``query_string`` with the values of secret parameters replaced, the rest unchanged.

    ``"q=shoes&api_key=abc&Token=x"`` gives ``"q=shoes&api_key=[redacted]&Token=[redacted]"``.
    """
    if not query_string or "=" not in query_string or not _has(query_string.lower(), _HINTS):
        return query_string
    parts = re.split(r"([&;])", query_string)
    for index in range(0, len(parts), 2):
        name, eq, _value = parts[index].partition("=")
        if eq and is_secret_name(_unquote(name)):
            parts[index] = f"{name}={REDACTED}"
    return "".join(parts)


def _unquote(name: str) -> str:
    try:
        return unquote_plus(name)
    except Exception:  # pragma: no cover - unquote_plus does not raise on str
        return name


def _userinfo(match: re.Match[str]) -> str:
    if match.group("password") is not None:
        return f"{match.group('scheme')}{match.group('user')}:{REDACTED}@"
    return f"{match.group('scheme')}{REDACTED}@"


def redact_dsn(text: str) -> str:
    """``text`` with URL credentials replaced: the key of ``scheme://key@host`` and the
    password of ``scheme://user:password@host``.

    ``"https://abc123@o1.ingest.sentry.io/42"`` gives ``"https://[redacted]@o1.ingest.sentry.io/42"``.
    """
    if "@" not in text or "://" not in text:
        return text
    return _URL_USERINFO.sub(_userinfo, text)


def _pair(match: re.Match[str]) -> str:
    name = match.group("name")
    value = match.group("value")
    if (
        value
        and not value.startswith(REDACTED)
        and value.lower() not in _AUTH_SCHEMES
        and is_secret_name(_unquote(name))
    ):
        return f"{name}={REDACTED}"
    return match.group(0)


def _colon(match: re.Match[str]) -> str:
    if match.group("value").startswith(REDACTED):
        return match.group(0)
    return f"{match.group('name')}{match.group('sep')}{REDACTED}"


def redact_text(text: str) -> str:
    """``text`` with every secret this module knows replaced by ``[redacted]``.

    Applies :func:`redact_dsn`, then ``name=value`` pairs with a secret name (as in query
    strings), ``password: value``-style pairs and ``Bearer``/``Basic`` credentials.
    """
    has_eq = "=" in text
    has_colon = ":" in text
    low = text.lower()
    if not (has_eq or has_colon) and not _has(low, _SCHEME_HINTS):
        return text
    if has_colon and "@" in text and "://" in text:
        text = _URL_USERINFO.sub(_userinfo, text)
    if "authorization" in low:
        text = _AUTHORIZATION.sub(lambda m: f"{m.group('head')}{REDACTED}", text)
    if has_eq and _has(low, _HINTS):
        text = _PAIR.sub(_pair, text)
    if _has(low, _SCHEME_HINTS):
        text = _SCHEME_CREDENTIALS.sub(lambda m: f"{m.group('scheme')} {REDACTED}", text)
    if has_colon and _has(low, _COLON_HINTS):
        text = _COLON.sub(_colon, text)
    return text


# password = 'x', PASSWORD 'x' (CREATE USER), api_key = "x" in SQL text.
_SQL_SECRET = re.compile(
    r"(?i)(?P<head>\b(?:password|passwd|secret|token|api_key|apikey|client_secret)\b\s*(?:=\s*)?)"
    r"(?P<quote>['\"])(?:(?!(?P=quote)).)*(?P=quote)"
)


def redact_sql(query: str) -> str:
    """``query`` with secret literals (``password = '...'``, ``PASSWORD '...'``) and the
    :func:`redact_text` secrets replaced."""
    low = query.lower()
    if _has(low, ("passw", "secret", "token", "key")):
        query = _SQL_SECRET.sub(lambda m: f"{m.group('head')}'{REDACTED}'", query)
    return redact_text(query)


def redact_mapping(data: Mapping[Any, Any], *, depth: int = 6) -> dict[Any, Any]:
    """A copy of ``data``: text under secret-named keys becomes ``[redacted]``, other strings
    are scrubbed with :func:`redact_text`.

    Nested mappings, lists and tuples are followed ``depth`` levels deep.
    """
    return {key: _redact_value(key, value, depth) for key, value in data.items()}


def _redact_value(key: Any, value: Any, depth: int) -> Any:
    # Only text is a secret: ``token_count: 42`` keeps its number.
    if isinstance(value, (str, bytes)) and isinstance(key, str) and is_secret_name(key):
        return REDACTED
    return redact_value(value, depth=depth)


def redact_value(value: Any, *, depth: int = 6) -> Any:
    """``value`` scrubbed: strings through :func:`redact_text`, containers recursively."""
    if isinstance(value, str):
        return redact_text(value)
    if depth <= 0:
        return value
    if isinstance(value, Mapping):
        return {key: _redact_value(key, item, depth - 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(item, depth=depth - 1) for item in value]
    return value
