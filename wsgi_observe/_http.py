"""The one HTTP client stack: urllib3, set up the same way for every outgoing request.

Used by :func:`wsgi_observe.checks.http` (readiness probes) and the UptimeRobot client.
What they share, and why:

- Timeouts on connect and on read, always: a probe or an API call never waits forever.
- No redirects unless asked: a readiness probe reports what the URL itself answered, not
  what some other URL it points to answers.
- No proxy unless one is given: urllib3 never reads ``HTTP_PROXY``/``HTTPS_PROXY`` (unlike
  ``urllib.request.urlopen``), so a probe of ``http://127.0.0.1:8000/health`` talks to that
  address, not to whatever proxy the environment names.
- No retries here: the callers decide (a probe answers once; the UptimeRobot client retries
  with its own backoff and budget).

urllib3 is imported on first use, so importing ``wsgi_observe`` stays light.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import urllib3

__all__ = ["describe_error", "new_pool", "request"]

#: Redirects followed when a caller asks to follow them.
MAX_REDIRECTS = 5

_CONN_PREFIX = re.compile(r"^<?[\w.]*Connection(Pool)?[^:]*:\s*")


def new_pool(
    *,
    proxy: Optional[str] = None,
    num_pools: int = 2,
    maxsize: int = 1,
    headers: Optional[Mapping[str, str]] = None,
) -> urllib3.PoolManager:
    """A urllib3 pool manager: direct connections, or through ``proxy`` (an ``http://`` or
    ``https://`` proxy URL) when one is given. The environment is never consulted.

    Example::

        pool = new_pool()
        response = request(pool, "GET", "https://example.com/health", timeout_s=1.5)
    """
    import urllib3

    if proxy is not None:
        parts = urlsplit(proxy)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("proxy: expected an http(s):// proxy URL")
        return urllib3.ProxyManager(
            proxy, num_pools=num_pools, maxsize=maxsize, headers=dict(headers or {})
        )
    return urllib3.PoolManager(num_pools=num_pools, maxsize=maxsize, headers=dict(headers or {}))


def request(
    pool: urllib3.PoolManager,
    method: str,
    url: str,
    *,
    timeout_s: float,
    body: Optional[bytes] = None,
    headers: Optional[Mapping[str, str]] = None,
    follow_redirects: bool = False,
    preload_content: bool = True,
) -> urllib3.BaseHTTPResponse:
    """One request through ``pool`` with a connect and a read timeout of ``timeout_s``, no
    retries, and redirects followed (at most :data:`MAX_REDIRECTS`) only when asked.

    Raises urllib3's errors as they are (``NewConnectionError``, ``ReadTimeoutError``, ...):
    :func:`describe_error` turns one into a short message.
    """
    import urllib3

    timeout = max(timeout_s, 0.001)
    if follow_redirects:
        retries: Any = urllib3.Retry(
            total=None,
            connect=0,
            read=0,
            status=0,
            other=0,
            redirect=MAX_REDIRECTS,
            raise_on_redirect=False,
        )
    else:
        retries = False
    return pool.request(
        method,
        url,
        body=body,
        headers=dict(headers) if headers is not None else None,
        timeout=urllib3.Timeout(connect=timeout, read=timeout),
        retries=retries,
        redirect=follow_redirects,
        preload_content=preload_content,
    )


def describe_error(error: BaseException) -> str:
    """A short reason for a urllib3 error (``Failed to establish a new connection: [Errno
    111] Connection refused``, ``Read timed out. (read timeout=1.5)``, ...).

    urllib3's own text starts with the connection's repr (``HTTPConnection(host=...,
    port=...): ``, ``<... object at 0x...>: ``); callers name the host themselves.
    """
    reason = getattr(error, "reason", None)
    text = str(reason if reason is not None else error) or type(error).__name__
    return _CONN_PREFIX.sub("", text) or text
