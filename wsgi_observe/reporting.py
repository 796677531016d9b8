"""The error and trace reporter of the request pipeline: one slot, filled by an integration.

The middleware runs every observed request through whatever reporter is installed here at
the moment the request arrives (Sentry's, from :func:`wsgi_observe.init_sentry`), and lets
it finish once the request has ended. It is one slot per process, like the SDK client it
stands for; so installing a reporter before or after middlewares are built gives the same
result, and no module keeps a list of middlewares to patch. With no reporter installed the
cost is one attribute read per request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Optional, Protocol

if TYPE_CHECKING:
    from ._types import WSGIApplication, WSGIEnvironment
    from ._wsgi import Exchange
    from .endpoints import EndpointNames

__all__ = ["Reporter", "current", "install", "uninstall"]


class Reporter(Protocol):
    """Runs an observed request inside its own error-reporting scope."""

    def run(
        self,
        app: WSGIApplication,
        environ: WSGIEnvironment,
        exchange: Exchange,
        names: EndpointNames,
    ) -> Iterable[bytes]:
        """Call ``app(environ, exchange.start_response)``; report an exception it raises (or
        one raised while its body is iterated), then let it propagate unchanged. May keep
        per-request state in ``exchange.reporter``."""
        ...

    def finish(self, exchange: Exchange, name: str, duration_ns: int) -> None:
        """The request has ended (called once, after the metrics were recorded)."""
        ...


#: The installed reporter (read per request by the middleware).
current: Optional[Reporter] = None


def install(reporter: Reporter) -> None:
    """Make ``reporter`` the one every middleware of this process uses from now on."""
    global current
    current = reporter


def uninstall(reporter: Optional[Reporter] = None) -> None:
    """Remove the reporter (only ``reporter``, when given)."""
    global current
    if reporter is None or current is reporter:
        current = None
