"""One scrubber for secrets: headers, query values, URL credentials (DSNs) and free text.

Used by the logs (every line), Sentry (events and breadcrumbs), the UptimeRobot client
(errors) and the readiness runner (what checks say), so a secret is recognised the same way
everywhere. Everything here is pure and cheap on text that holds no secret: a fast
pre-check skips the regular expressions (percent-encoded text is decoded for it, so
``%70assword=`` is caught too).

- :func:`redact_headers`: ``Authorization``, ``Cookie``, ``Set-Cookie``, ``X-Api-Key``, and
  any header whose name speaks of a token, secret, password, session or signature.
- :func:`redact_query`: values of ``api_key``, ``token``, ``password``, ``secret``, ``key``,
  ``signature``, ... (case-insensitive), the rest of the query string byte-for-byte.
- :func:`redact_dsn`: the key of ``scheme://key@host`` and the password of
  ``scheme://user:password@host``.
- :func:`redact_text`: all of the URL rules above plus ``name=value`` / ``name: value``
  pairs with a secret name and ``Bearer``/``Basic`` credentials, anywhere in the text.
- :func:`redact_sql`: :func:`redact_text` plus ``password = '...'`` literals in SQL.
- :func:`redact_value` / :func:`redact_mapping`: the one walker. Text and objects under
  secret-named keys (``password``, ``HTTP_AUTHORIZATION``, ...) become ``[redacted]`` (numbers
  stay: ``token_count: 42``), every other string goes through :func:`redact_text`, into
  nested mappings, lists and tuples. It returns a copy (log fields, readiness results) or,
  with ``in_place=True``, rewrites dicts and lists where they are (Sentry events, which are
  large and already private to the event).
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
    "is_secret_key",
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
        "pass",
        "passphrase",
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
    "passphrase",
    "apikey",
    "api_key",
    "signature",
    "credential",
    "authorization",
    "cookie",
)

# Cheap gates: a regular expression runs only when the lower-cased text holds one of these
# (``re.I`` alternations cost microseconds even on text with no secret in it).
_HINTS = ("key", "token", "secret", "pass", "pwd", "sig", "auth", "session", "cookie", "cred")
_COLON_HINTS = ("pass", "pwd", "secret", "key", "token", "cookie")
_SCHEME_HINTS = ("bearer", "basic", "token")


def _has(low: str, words: tuple[str, ...]) -> bool:
    for word in words:
        if word in low:
            return True
    return False


# A letter or "_" written percent-encoded (%41-%7A), or an encoded "%" (%25, double
# encoding): the only escapes that can hide a hint word. Encoders leave letters alone, so
# everyday queries (%20, %2F, %3D, ...) skip the decoding below.
_LETTER_ESCAPE = re.compile(r"%(?:[4-7]|25)").search  # one C-level scan: cheaper than five "in"


def _has_encoded_hint(low: str) -> bool:
    """Whether ``low`` hides a hint word behind percent-encoding (``%70assword=x``).

    Called only when the plain text has a ``%`` and no hint: the cost for everyday queries
    is one scan for letter escapes, which they do not have.
    """
    return _LETTER_ESCAPE(low) is not None and _has(_unquote(low), _HINTS)


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
    r"(?i)(?<![A-Za-z0-9])(?P<name>password|passwd|passphrase|pwd|secret|client[_-]?secret|"
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
    if not query_string or "=" not in query_string:
        return query_string
    low = query_string.lower()
    if not _has(low, _HINTS) and ("%" not in low or not _has_encoded_hint(low)):
        return query_string
    parts = re.split(r"([&;])", query_string)
    for index in range(0, len(parts), 2):
        name, eq, _value = parts[index].partition("=")
        if eq and is_secret_name(_unquote(name)):
            parts[index] = f"{name}={REDACTED}"
    return "".join(parts)


def _unquote(name: str) -> str:
    """``name`` percent-decoded until it stops changing (at most three rounds), so that a
    doubly encoded ``%2570assword`` is recognised as well."""
    for _ in range(3):
        if "%" not in name and "+" not in name:
            break
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
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
    hinted = has_eq and _has(low, _HINTS)
    if has_eq and not hinted and "%" in low and _has_encoded_hint(low):
        hinted = True
        low = f"{low} {_unquote(low)}"  # the decoded name must meet the gates below too
    if has_colon and "@" in text and "://" in text:
        text = _URL_USERINFO.sub(_userinfo, text)
    if "authorization" in low:
        text = _AUTHORIZATION.sub(lambda m: f"{m.group('head')}{REDACTED}", text)
    if hinted:
        text = _PAIR.sub(_pair, text)
    if _has(low, _SCHEME_HINTS):
        text = _SCHEME_CREDENTIALS.sub(lambda m: f"{m.group('scheme')} {REDACTED}", text)
    if has_colon and _has(low, _COLON_HINTS):
        text = _COLON.sub(_colon, text)
    return text


# password = 'x', PASSWORD 'x' (CREATE USER), api_key = "x" in SQL text.
_SQL_SECRET = re.compile(
    r"(?i)(?P<head>\b(?:password|passwd|passphrase|secret|token|api_key|apikey|client_secret)\b"
    r"\s*(?:=\s*)?)"
    r"(?P<quote>['\"])(?:(?!(?P=quote)).)*(?P=quote)"
)


def redact_sql(query: str) -> str:
    """``query`` with secret literals (``password = '...'``, ``PASSWORD '...'``) and the
    :func:`redact_text` secrets replaced."""
    low = query.lower()
    if _has(low, ("pass", "secret", "token", "key")):
        query = _SQL_SECRET.sub(lambda m: f"{m.group('head')}'{REDACTED}'", query)
    return redact_text(query)


# Whether a key names a secret, remembered: events and log fields repeat the same keys, and
# a dict lookup is the cheapest test there is. Bounded, whatever keys the data carries.
_SECRET_KEYS: dict[Any, bool] = {}


def _remember(key: Any) -> bool:
    if not isinstance(key, str):
        secret = False
    elif key[:5].upper() == "HTTP_":
        secret = is_secret_header(key)
    else:
        secret = is_secret_name(key)
    if len(_SECRET_KEYS) >= 4096:
        _SECRET_KEYS.clear()
    _SECRET_KEYS[key] = secret
    return secret


def is_secret_key(key: Any) -> bool:
    """Whether a mapping key names a secret: a secret name (``api_key``, ``db_password``) or a
    WSGI header key (``HTTP_AUTHORIZATION``, ``HTTP_X_SESSION_ID``). Keys that are not text
    are never secret."""
    secret = _SECRET_KEYS.get(key)
    return _remember(key) if secret is None else secret


#: How many levels of nested containers the walker follows by default.
DEPTH = 6

_KEPT = (int, float)  # numbers (and bools) stay, even under a secret name: token_count=42


def redact_value(value: Any, *, key: Any = None, depth: int = DEPTH, in_place: bool = False) -> Any:
    """``value`` with its secrets replaced: the walker that logs, Sentry, readiness results
    and the UptimeRobot client share.

    - Under a secret-named ``key`` (see :func:`is_secret_key`), text, bytes and other
      objects become ``[redacted]``, and so does everything inside a container there
      (a list of tokens is a list of secrets); numbers, bools and ``None`` stay.
    - Every other string goes through :func:`redact_text`.
    - Mappings, lists, tuples and sets are followed ``depth`` levels deep; a container deeper
      than that becomes its scrubbed text (never a secret passed through unread).

    By default the result is a copy (mappings become dicts, tuples and sets lists) and
    ``value`` is left alone. ``in_place=True`` rewrites dicts and lists where they are and
    returns ``value`` (other containers are still copied): Sentry events are big and ours to
    change.

    Example: ``redact_value({"password": "x", "url": "redis://:pw@h", "n": 3})`` gives
    ``{"password": "[redacted]", "url": "redis://:[redacted]@h", "n": 3}``.
    """
    secret = key is not None and is_secret_key(key)
    return _walk(value, secret, depth, in_place)


def redact_mapping(
    data: Mapping[Any, Any], *, depth: int = DEPTH, in_place: bool = False
) -> dict[Any, Any]:
    """:func:`redact_value` for a mapping (a dict comes back)."""
    result = _walk(data, False, depth, in_place)
    return result if type(result) is dict else dict(result)


def _walk(value: Any, secret: bool, depth: int, in_place: bool) -> Any:
    # Exact type checks first: nearly every node is a str, dict, list, number or None.
    kind = type(value)
    if kind is str:
        return REDACTED if secret else redact_text(value)
    if kind is dict or kind is list:
        return _container(value, secret, depth, in_place)
    if value is None or kind is int or kind is float or kind is bool:
        return value
    if isinstance(value, str):
        return REDACTED if secret else redact_text(str(value))
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        return _container(value, secret, depth, False)
    if isinstance(value, _KEPT):
        return value
    return REDACTED if secret else value


def _container(value: Any, secret: bool, depth: int, in_place: bool) -> Any:
    if depth <= 0:
        return REDACTED if secret else redact_text(_text_of(value))
    depth -= 1
    if in_place:
        kind = type(value)
        if kind is dict:
            return _dict_in_place(value, secret, depth)
        if kind is list:
            return _list_in_place(value, secret, depth)
    if isinstance(value, Mapping):
        return {
            name: _walk(item, secret or is_secret_key(name), depth, False)
            for name, item in value.items()
        }
    return [_walk(item, secret, depth, False) for item in value]


# The in-place walk is Sentry's, once per event sent: strings, dicts and lists (nearly every
# node) are handled inline, without a call per node.


def _dict_in_place(value: dict[Any, Any], secret: bool, depth: int) -> dict[Any, Any]:
    # Assigning existing keys while iterating is safe: the dict's size never changes.
    known = _SECRET_KEYS
    for name, item in value.items():
        kind = type(item)
        if item is None or kind is int or kind is float or kind is bool:
            continue
        if secret:
            hidden = True
        else:
            remembered = known.get(name)
            hidden = _remember(name) if remembered is None else remembered
        if kind is str:
            if hidden:
                value[name] = REDACTED
            else:
                text = redact_text(item)
                if text is not item:
                    value[name] = text
        elif depth <= 0 and (kind is dict or kind is list):
            value[name] = REDACTED if hidden else redact_text(_text_of(item))
        elif kind is dict:
            _dict_in_place(item, hidden, depth - 1)
        elif kind is list:
            _list_in_place(item, hidden, depth - 1)
        else:
            done = _walk(item, hidden, depth, True)
            if done is not item:
                value[name] = done
    return value


def _list_in_place(value: list[Any], secret: bool, depth: int) -> list[Any]:
    for index, item in enumerate(value):
        kind = type(item)
        if kind is str:
            if secret:
                value[index] = REDACTED
            else:
                text = redact_text(item)
                if text is not item:
                    value[index] = text
        elif depth <= 0 and (kind is dict or kind is list):
            value[index] = REDACTED if secret else redact_text(_text_of(item))
        elif kind is dict:
            _dict_in_place(item, secret, depth - 1)
        elif kind is list:
            _list_in_place(item, secret, depth - 1)
        elif item is not None and kind is not int and kind is not float and kind is not bool:
            done = _walk(item, secret, depth, True)
            if done is not item:
                value[index] = done
    return value


def _text_of(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
