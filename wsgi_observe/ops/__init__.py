"""From numbers to on-call: Prometheus rules, a Grafana dashboard and an Alertmanager
configuration, generated from the families ``/metrics`` serves (so they cannot drift).

``wsgi-observe export prometheus-rules|grafana-dashboard|alertmanager`` prints them; the
functions here return them as mappings (and text) for those who build their own files.
"""

from __future__ import annotations

from .alertmanager import AlertmanagerOptions, alertmanager_config, render_alertmanager_config
from .dashboard import grafana_dashboard, render_grafana_dashboard
from .rules import DEFAULT_JOB, RuleOptions, prometheus_rules, render_prometheus_rules

__all__ = [
    "DEFAULT_JOB",
    "AlertmanagerOptions",
    "RuleOptions",
    "alertmanager_config",
    "grafana_dashboard",
    "prometheus_rules",
    "render_alertmanager_config",
    "render_grafana_dashboard",
    "render_prometheus_rules",
]
