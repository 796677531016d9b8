"""Integrations with third-party tools (imported only when used).

- :mod:`.sentry`: :func:`~wsgi_observe.init_sentry` and the Sentry reporter.
"""
