"""An Alertmanager configuration: critical alerts page PagerDuty, the rest go to a receiver
the user names (pure functions).

Alerts are grouped by alert name and job. ``severity="critical"`` goes to PagerDuty's
Events API v2 with ``send_resolved``, so an incident is resolved when the alert ends (with
the same ``dedup_key``, which Alertmanager derives from the group). The routing key is
read by Alertmanager from a file (``routing_key_file``), never written into this config:
put it there from a secret store, a Kubernetes Secret, or the environment at start-up
(``printf %s "$PAGERDUTY_ROUTING_KEY" > /etc/alertmanager/pagerduty_routing_key``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from ..config import DEFAULT_PAGERDUTY_EVENTS_URL
from . import _yaml
from .promql import check_duration

__all__ = ["AlertmanagerOptions", "alertmanager_config", "render_alertmanager_config"]

_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


@dataclass(frozen=True)
class AlertmanagerOptions:
    """What the export command's options set: ``receiver`` (where non-critical alerts go;
    add your e-mail, Slack or webhook settings to it), ``routing_key_file``,
    ``pagerduty_url``, ``group_wait``, ``group_interval``, ``repeat_interval`` and
    ``resolve_timeout``. A bad value raises ``ValueError`` naming the field."""

    receiver: str = "default"
    routing_key_file: str = "/etc/alertmanager/pagerduty_routing_key"
    pagerduty_url: str = DEFAULT_PAGERDUTY_EVENTS_URL
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"
    resolve_timeout: str = "5m"

    def __post_init__(self) -> None:
        if not _NAME.match(self.receiver) or self.receiver == "pagerduty":
            raise ValueError(
                f"receiver={self.receiver!r}: expected a name of letters, digits, '_', '.' "
                "or '-' (not 'pagerduty')"
            )
        if not self.routing_key_file.startswith("/") or not self.routing_key_file.isprintable():
            raise ValueError(
                f"routing_key_file={self.routing_key_file!r}: expected an absolute path"
            )
        if not self.pagerduty_url.startswith(("http://", "https://")) or "@" in self.pagerduty_url:
            # Not echoed: an URL with "@" may carry credentials.
            raise ValueError("pagerduty_url: expected an http(s):// URL without credentials")
        for name in ("group_wait", "group_interval", "repeat_interval", "resolve_timeout"):
            value = getattr(self, name)
            try:
                check_duration(value)
            except ValueError as error:
                raise ValueError(f"{name}={value!r}: {error}") from None


def alertmanager_config(options: AlertmanagerOptions = AlertmanagerOptions()) -> dict[str, Any]:
    """The Alertmanager configuration for ``options``, as a mapping."""
    return {
        "global": {"resolve_timeout": options.resolve_timeout},
        "route": {
            "receiver": options.receiver,
            "group_by": ["alertname", "job"],
            "group_wait": options.group_wait,
            "group_interval": options.group_interval,
            "repeat_interval": options.repeat_interval,
            "routes": [
                {
                    "receiver": "pagerduty",
                    "matchers": ['severity="critical"'],
                }
            ],
        },
        "receivers": [
            {"name": options.receiver},
            {
                "name": "pagerduty",
                "pagerduty_configs": [
                    {
                        "routing_key_file": options.routing_key_file,
                        "url": options.pagerduty_url,
                        "send_resolved": True,
                        "severity": "critical",
                        "description": '{{ template "pagerduty.default.description" . }}',
                        "details": {
                            "summary": "{{ .CommonAnnotations.summary }}",
                            "description": "{{ .CommonAnnotations.description }}",
                            "runbook_url": "{{ .CommonAnnotations.runbook_url }}",
                            "firing": '{{ template "pagerduty.default.instances" .Alerts.Firing }}',
                            "num_firing": "{{ .Alerts.Firing | len }}",
                        },
                        "links": [
                            {"href": "{{ .CommonAnnotations.runbook_url }}", "text": "Runbook"}
                        ],
                    }
                ],
            },
        ],
    }


def render_alertmanager_config(options: AlertmanagerOptions = AlertmanagerOptions()) -> str:
    """The configuration as YAML, with a comment on what to fill in."""
    changed = [
        f"{f.name}={getattr(options, f.name)!r}"
        for f in fields(options)
        if getattr(options, f.name) != f.default
    ]
    header = (
        "Alertmanager configuration for wsgi_observe, made by:"
        " wsgi-observe export alertmanager\n"
        f"Options: {', '.join(changed) if changed else 'the defaults'}\n"
        'severity="critical" pages PagerDuty (Events API v2); the rest goes to the\n'
        f"receiver {options.receiver!r}: add your e-mail, Slack or webhook settings to it.\n"
        f"The routing key is read from {options.routing_key_file} (never put it here).\n"
        "Check it with: amtool check-config <file>"
    )
    return _yaml.dump(alertmanager_config(options), header=header)
